//! Deliveries verified by the reference Standard Webhooks verifier (Python,
//! from PyPI) and Python's hmac: an implementation that shares no code with ours.
//!
//! Needs a Python with `standardwebhooks` installed: `TIDINGS_PYTHON` names it
//! (`.ci/run` makes one). Under `CI=true` a missing one fails the test;
//! elsewhere the test is skipped with a message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::{Client, Hit, Receiver, TestServer};
use serde_json::{Value, json};
use tidings_core::{Clock, ManualClock, Timestamp};
use tidings_embedded::EmbeddedBroker;
use tidings_hub::HubConfig;

fn python() -> Option<String> {
    let candidate = std::env::var("TIDINGS_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let ok = Command::new(&candidate)
        .args(["-c", "import standardwebhooks"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(candidate);
    }
    let message = format!(
        "{candidate} cannot import standardwebhooks (pip install standardwebhooks; set TIDINGS_PYTHON)"
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
    eprintln!("skipped: {message}");
    None
}

/// Runs the Python verifier on a delivery with what it must find (see
/// verify_webhook.py).
fn verify(python: &str, hit: &Hit, expect: Value) {
    let headers: serde_json::Map<String, Value> = hit
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap())))
        .collect();
    let mut job = expect;
    job["headers"] = Value::Object(headers);
    job["body_b64"] = json!(base64::engine::general_purpose::STANDARD.encode(&hit.body));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("job.json");
    std::fs::write(&file, serde_json::to_vec(&job).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_webhook.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verifier failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A hub on a clock the test moves, delivering to loopback.
async fn server_on(clock: &ManualClock) -> TestServer {
    let config = HubConfig {
        clock: Clock::Manual(clock.clone()),
        destinations: tidings_hub::DestinationPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        ..HubConfig::default()
    };
    TestServer::start_hub(Arc::new(EmbeddedBroker::in_memory()), None, config).await
}

/// Registers `shop` (publisher of `shop.sold`) and `mailer` (its
/// subscriber at `receiver`, with `secret`); returns the subscription.
async fn shop_and_mailer(c: &Client, receiver: &Receiver, secret: &str) -> Value {
    let shop = json!({"application": "shop", "address": "http://shop.invalid"});
    assert_eq!(c.post("/v1/applications", shop).await.status, 201);
    let mailer = c
        .post(
            "/v1/applications",
            json!({"application": "mailer", "address": receiver.base, "secret": secret}),
        )
        .await;
    assert_eq!(mailer.status, 201, "{}", mailer.body);
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(c.post("/v1/actions", action).await.status, 201);
    let sub = c
        .post(
            "/v1/subscriptions",
            json!({"application": "mailer", "action": "shop.sold", "handler": "/hook"}),
        )
        .await;
    assert_eq!(sub.status, 201, "{}", sub.body);
    sub.body
}

/// Publishes a `shop.sold` with floats, unicode and key order that a
/// re-serialising signer would change.
async fn sell(c: &Client) {
    let body = r#"{"action":"shop.sold","payload":{"z":1e-7,"name":"ann ✓","a":[1.50,2]}}"#;
    let r = c
        .send(
            "POST",
            "/v1/events",
            Some(body.as_bytes()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_verifier_accepts_our_signatures() {
    let Some(python) = python() else { return };
    let server = TestServer::start(Arc::new(EmbeddedBroker::in_memory())).await;
    let receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    let secret = "subscriber-secret-0123456789";
    let sub = shop_and_mailer(&c, &receiver, secret).await;
    // The subscription's own key, shown once at creation; the weak
    // application secret still signs x-amebo-signature.
    let key = sub["signing_key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("whsec_"), "{key}");
    let mut receiver = receiver;
    sell(&c).await;
    let hit = receiver.next().await;
    let other = tidings_hub::model::secret::new_signing_key();
    verify(
        &python,
        &hit,
        json!({"accept": [key], "reject": [other], "amebo": secret, "amebo_previous": null}),
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_sign_alongside_the_new_ones_for_the_grace_period() {
    let Some(python) = python() else { return };
    let clock = ManualClock::new(Timestamp::now());
    let server = server_on(&clock).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    let old_secret = "user-service-secret";
    let sub = shop_and_mailer(&c, &receiver, old_secret).await;
    let id = sub["subscription"].as_str().unwrap().to_owned();
    let old_key = sub["signing_key"].as_str().unwrap().to_owned();

    sell(&c).await;
    verify(
        &python,
        &receiver.next().await,
        json!({"accept": [old_key], "amebo": old_secret, "amebo_previous": null}),
    );

    // Both rotated with the default grace period (24 h).
    let rotated = c
        .post(
            &format!("/v1/subscriptions/{id}/signing-key/rotate"),
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_key = rotated.body["signing_key"].as_str().unwrap().to_owned();
    assert_ne!(new_key, old_key);
    assert!(rotated.body["previous_valid_until"].is_string());
    let revealed = c.get(&format!("/v1/subscriptions/{id}/signing-key")).await;
    assert_eq!(revealed.body["signing_key"], new_key.as_str());
    let new_secret = "a-new-and-much-stronger-mailer-secret-0123456789";
    let r = c
        .put(
            "/v1/applications/mailer/secret",
            json!({"secret": new_secret}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(r.body["previous_valid_until"].is_string(), "{}", r.body);
    let session =
        |password: &str| json!({"username": "mailer", "password": password, "scheme": "token"});
    let old_session = c.post("/v1/tokens", session(old_secret)).await;
    assert_eq!(
        old_session.status, 202,
        "the old secret opens sessions during the grace period: {}",
        old_session.body
    );
    let token = old_session.body["token"].as_str().unwrap().to_owned();
    let as_mailer =
        Client::new(&server.base).with_header("authorization", &format!("Bearer {token}"));
    assert_eq!(as_mailer.get("/v1/subscriptions").await.status, 200);

    sell(&c).await;
    let hit = receiver.next().await;
    assert_eq!(
        hit.header("webhook-signature").split(' ').count(),
        2,
        "{}",
        hit.header("webhook-signature")
    );
    verify(
        &python,
        &hit,
        json!({"accept": [new_key, old_key], "amebo": new_secret, "amebo_previous": old_secret}),
    );

    // After the grace period: only the new key and secret.
    clock.advance(Duration::from_secs(24 * 3600 + 1));
    sell(&c).await;
    let hit = receiver.next().await;
    verify(
        &python,
        &hit,
        json!({"accept": [new_key], "reject": [old_key], "amebo": new_secret, "amebo_previous": null}),
    );
    assert_eq!(c.post("/v1/tokens", session(old_secret)).await.status, 401);
    assert_eq!(c.post("/v1/tokens", session(new_secret)).await.status, 202);
    assert_eq!(
        as_mailer.get("/v1/subscriptions").await.status,
        401,
        "a session opened with the old secret ends with its grace period"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_keys_are_per_subscription_and_only_their_owners_see_them() {
    let clock = ManualClock::new(Timestamp::now());
    let server = server_on(&clock).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    let sub = shop_and_mailer(&c, &receiver, "user-service-secret").await;
    let id = sub["subscription"].as_str().unwrap().to_owned();
    let key = sub["signing_key"].as_str().unwrap().to_owned();

    // A weak application secret is accepted, with a warning; a generated
    // one earns none.
    let weak = c
        .post(
            "/v1/applications",
            json!({"application": "weakling", "address": "http://w.invalid", "secret": "user-service-secret"}),
        )
        .await;
    assert_eq!(weak.status, 201, "{}", weak.body);
    assert!(
        weak.body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("weak")),
        "{}",
        weak.body
    );
    let strong = c
        .post(
            "/v1/applications",
            json!({"application": "other", "address": "http://o.invalid"}),
        )
        .await;
    assert!(strong.body.get("warnings").is_none(), "{}", strong.body);
    let apikey = strong.body["apikey"].as_str().unwrap();
    let other = Client::new(&server.base).with_header("authorization", &format!("Bearer {apikey}"));

    // Only its owner (and the admin) may see or rotate it; lists never show it.
    let reveal = format!("/v1/subscriptions/{id}/signing-key");
    assert_eq!(c.get(&reveal).await.body["signing_key"], key.as_str());
    assert_eq!(other.get(&reveal).await.status, 403);
    let rotate = format!("/v1/subscriptions/{id}/signing-key/rotate");
    assert_eq!(other.post(&rotate, json!({})).await.status, 403);
    assert_eq!(
        c.get("/v1/subscriptions/nope/signing-key").await.status,
        404
    );
    let listed = c.get("/v1/subscriptions").await;
    assert!(!listed.body.to_string().contains(&key), "{}", listed.body);

    // A key of the caller's: accepted when of spec strength.
    let given = tidings_hub::model::secret::new_signing_key();
    let second = json!({"application": "mailer", "action": "shop.sold", "handler": "/second",
                        "signing_key": given, "amebo_signature": false});
    let r = c.post("/v1/subscriptions", second.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["signing_key"], given.as_str());
    assert_eq!(r.body["amebo_signature"], false);
    let short = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([1u8; 16])
    );
    for bad in [
        short.as_str(),
        "user-service-secret-that-is-long",
        "whsec_!!",
    ] {
        let mut body = second.clone();
        body["handler"] = json!("/third");
        body["signing_key"] = json!(bad);
        let r = c.post("/v1/subscriptions", body).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
    for bad in [
        json!({"grace_period": "soon"}),
        json!({"grace_period": "31d"}),
    ] {
        assert_eq!(c.post(&rotate, bad).await.status, 400);
    }
    // Subscribing again: the same key is fine, another is a conflict
    // (keys change by rotation, with its grace period).
    let again = c.post("/v1/subscriptions", second.clone()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.body.get("signing_key").is_none(), "shown once");
    let mut other_key = second.clone();
    other_key["signing_key"] = json!(tidings_hub::model::secret::new_signing_key());
    assert_eq!(c.post("/v1/subscriptions", other_key).await.status, 409);

    // x-amebo-signature can be turned off per subscription.
    sell(&c).await;
    let (a, b) = (receiver.next().await, receiver.next().await);
    let (hook, second_hit) = if a.path == "/hook" { (a, b) } else { (b, a) };
    assert!(hook.headers.contains_key("x-amebo-signature"));
    assert!(!second_hit.headers.contains_key("x-amebo-signature"));
    // Each subscription signs with its own key.
    let signed_with = |hit: &Hit, key: &str| {
        let bytes = tidings_hub::model::secret::signing_key_bytes(key).unwrap();
        let ts: u64 = hit.header("webhook-timestamp").parse().unwrap();
        tidings_hub::signature::standard(&bytes, hit.header("webhook-id"), ts, &hit.body)
            == hit.header("webhook-signature")
    };
    assert!(signed_with(&hook, &key) && !signed_with(&hook, &given));
    assert!(signed_with(&second_hit, &given) && !signed_with(&second_hit, &key));
    server.stop().await;
}
