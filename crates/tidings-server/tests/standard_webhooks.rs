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

use base64::Engine;
use common::{Client, Receiver, TestServer};
use serde_json::json;
use tidings_embedded::EmbeddedBroker;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_verifier_accepts_our_signatures() {
    let Some(python) = python() else { return };
    let server = TestServer::start(Arc::new(EmbeddedBroker::in_memory())).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    let secret = "subscriber-secret-0123456789";
    assert_eq!(
        c.post(
            "/v1/applications",
            json!({"application": "shop", "address": "http://shop.invalid"})
        )
        .await
        .status,
        201
    );
    assert_eq!(
        c.post(
            "/v1/applications",
            json!({"application": "mailer", "address": receiver.base, "secret": secret})
        )
        .await
        .status,
        201
    );
    c.post(
        "/v1/actions",
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
    )
    .await;
    c.post(
        "/v1/subscriptions",
        json!({"application": "mailer", "action": "shop.sold", "handler": "/hook"}),
    )
    .await;
    // Floats, unicode and key order that a re-serialising signer would change.
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

    let hit = receiver.next().await;
    let headers: serde_json::Map<String, serde_json::Value> = hit
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap())))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("delivery.json");
    let record = json!({
        "headers": headers,
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&hit.body),
    });
    std::fs::write(&file, serde_json::to_vec(&record).unwrap()).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_webhook.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&file)
        .arg(secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "verifier failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop().await;
}
