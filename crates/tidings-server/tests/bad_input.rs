//! Bad input and bad credentials: always the right 4xx and a JSON body,
//! never a 500, never a half-written state.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{Client, TestServer, eventually};
use serde_json::json;
use tidings_embedded::EmbeddedBroker;

const ADMIN: &str = "admin-key-for-tests-0123456789";

async fn setup() -> (TestServer, Client, String) {
    let server = TestServer::start_with(Arc::new(EmbeddedBroker::in_memory()), Some(ADMIN)).await;
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    let shop = admin
        .post("/v1/applications", json!({"application": "shop", "address": "http://shop.invalid", "secret": "shop-secret-0123456789"}))
        .await;
    assert_eq!(shop.status, 201);
    let r = admin
        .post(
            "/v1/actions",
            json!({"action": "shop.sold", "application": "shop", "schemata": {
                "type": "object", "required": ["id"], "additionalProperties": false,
                "properties": {"id": {"type": "string"}, "total": {"type": "number", "minimum": 0},
                               "email": {"type": "string", "format": "email"}}}}),
        )
        .await;
    assert_eq!(r.status, 201);
    let key = shop.body["apikey"].as_str().unwrap().to_owned();
    (server, admin, key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_request_gets_its_status_and_a_json_error() {
    let (server, admin, _) = setup().await;
    let raw = |body: &'static [u8], ct: &'static str| {
        let admin = &admin;
        async move {
            admin
                .send("POST", "/v1/events", Some(body), &[("content-type", ct)])
                .await
        }
    };
    let cases: Vec<(u16, common::Answer)> = vec![
        (
            400,
            raw(
                br#"{"action": "shop.sold", "payload": "#,
                "application/json",
            )
            .await,
        ),
        (400, raw(b"[1, 2]", "application/json").await),
        (400, raw(b"", "application/json").await),
        (
            400,
            raw(br#"{"action": "shop.sold"}"#, "application/json").await,
        ),
        (415, raw(b"<xml/>", "application/xml").await),
        (
            415,
            raw(b"action=shop.sold", "application/x-www-form-urlencoded").await,
        ),
        (
            422,
            raw(
                br#"{"action": "nope.nothing", "payload": {}}"#,
                "application/json",
            )
            .await,
        ),
        (
            400,
            raw(
                br#"{"action": "shop.sold", "payload": {"id": "1"}, "sleep_until": -5}"#,
                "application/json",
            )
            .await,
        ),
        (
            400,
            raw(
                br#"{"action": "shop.sold", "payload": {"id": "1"}, "metadata": [1]}"#,
                "application/json",
            )
            .await,
        ),
        (
            400,
            raw(
                br#"{"action": "shop.sold", "payload": "{not json"}"#,
                "application/json",
            )
            .await,
        ),
        // A key twice in one object, anywhere: refused, naming it.
        (
            400,
            raw(
                br#"{"action": "shop.sold", "payload": {"id": "1", "total": -5, "total": 1}}"#,
                "application/json",
            )
            .await,
        ),
        (
            400,
            raw(
                br#"{"action": "shop.sold", "payload": "{\"id\": \"1\", \"id\": \"2\"}"}"#,
                "application/json",
            )
            .await,
        ),
    ];
    for (i, (status, answer)) in cases.iter().enumerate() {
        assert_eq!(answer.status, *status, "case {i}: {}", answer.body);
        assert!(
            answer.body["error"].is_string(),
            "case {i}: {}",
            answer.body
        );
    }
    assert_eq!(cases[3].1.body["error"], "payload - Field required");
    let twice = cases[cases.len() - 2].1.body["error"]
        .as_str()
        .unwrap_or_default();
    assert!(twice.contains("\"total\" appears twice"), "{twice}");
    let twice = cases[cases.len() - 1].1.body["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        twice.contains("payload - the key \"id\" appears twice"),
        "{twice}"
    );

    // Every violation, with its path, in one answer.
    let r = admin
        .post("/v1/events", json!({"action": "shop.sold", "payload": {"id": 4, "total": -3, "extra": true, "email": "nope"}}))
        .await;
    assert_eq!(r.status, 406);
    let errors: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    for path in ["$: ", "$.email: ", "$.id: ", "$.total: "] {
        assert!(
            errors.iter().any(|e| e.starts_with(path)),
            "{path} in {errors:?}"
        );
    }

    // Oversized body: 413 before it is read. Only the head is sent (over a
    // socket of its own), so that the answer cannot race the client's write
    // of a body the server will never read.
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: tidings\r\nx-amebo-admin-key: {ADMIN}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        600 * 1024
    );
    let answer = raw_exchange(&server.base, head.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert!(body["error"].is_string(), "{body}");

    // Duplicates, conflicts and refusals: each its status, with reasons
    // where the body names several.
    let cases = [
        (
            "/v1/applications",
            json!({"application": "shop", "address": "http://x.invalid"}),
            409,
            "a name taken",
        ),
        (
            "/v1/applications",
            json!({"application": "bad name", "address": "http://x.invalid"}),
            422,
            "a bad name",
        ),
        (
            "/v1/applications",
            json!({"application": "ok", "address": "not a url"}),
            400,
            "a bad address",
        ),
        (
            "/v1/applications",
            json!({"application": "ok", "address": "http://x.invalid", "secret": "short"}),
            422,
            "a short secret",
        ),
        (
            "/v1/actions",
            json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
            409,
            "another schema",
        ),
        (
            "/v1/actions",
            json!({"action": "shop.other", "application": "shop", "schemata": {"type": "nonsense"}}),
            422,
            "a schema that does not compile",
        ),
        (
            "/v1/actions",
            json!({"action": "shop.ref", "application": "shop", "schemata": {"$ref": "https://example.com/s.json"}}),
            422,
            "remote refs are never fetched",
        ),
        (
            "/v1/actions",
            json!({"action": "ghost.made", "application": "ghost", "schemata": {"type": "object"}}),
            404,
            "an unknown application",
        ),
        (
            "/v1/actions",
            json!({"action": "shop.slow", "application": "shop", "schemata": {"type": "string", "pattern": "^(a|a)*\\1b$"}}),
            422,
            "a pattern that needs backtracking",
        ),
        (
            "/v1/subscriptions",
            json!({"application": "ghost", "action": "shop.sold", "handler": "/h"}),
            417,
            "an unknown subscriber",
        ),
        (
            "/v1/subscriptions",
            json!({"application": "shop", "action": "shop.sold", "handler": "/h", "max_retries": 0}),
            400,
            "no attempts",
        ),
        (
            "/v1/subscriptions",
            json!({"application": "shop", "action": "shop.sold", "handler": "no-slash"}),
            400,
            "a handler neither path nor URL",
        ),
        (
            "/v1/applications",
            json!({"application": "based", "address": "http://b.invalid/base/"}),
            201,
            "an application with a base path",
        ),
        (
            "/v1/subscriptions",
            json!({"application": "based", "action": "shop.sold", "handler": "/../../x"}),
            400,
            "a path climbing out of the address",
        ),
        (
            "/v1/subscriptions",
            json!({"application": "based", "action": "shop.sold", "handler": "/%2e%2e/x"}),
            400,
            "the same, encoded",
        ),
        (
            "/v1/subscriptions",
            json!({"application": "shop", "action": "shop.sold", "handler": "http://user:pw@h.invalid/x"}),
            400,
            "credentials in a handler URL",
        ),
        (
            "/v1/applications",
            json!({"application": "creds", "address": "http://user:pw@x.invalid/"}),
            400,
            "credentials in an address",
        ),
    ];
    for (path, body, status, what) in cases {
        let r = admin.post(path, body).await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if path == "/v1/actions" && matches!(status, 409 | 422) {
            assert!(r.body["reasons"].is_array(), "{what}: {}", r.body);
        }
    }

    // Unknown routes and methods answer JSON too.
    let r = admin.get("/v1/nothing").await;
    assert_eq!(r.status, 404);
    assert!(r.body["error"].is_string());
    let r = admin.send("PUT", "/v1/events", None, &[]).await;
    assert_eq!(r.status, 405);
    let r = admin.get("/v1/events/abc").await;
    assert_eq!(r.status, 404);
    // A path segment that does not decode: the JSON error body too.
    for path in [
        "/v1/events/%ff",
        "/v1/queues/%ff",
        "/v1/applications/%ff/apikey",
    ] {
        let r = admin.send("GET", path, None, &[]).await;
        let r = if r.status == 405 {
            admin.post(path, json!({})).await
        } else {
            r
        };
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(r.body["error"].is_string(), "{path}: {}", r.body);
    }
    let r = admin.send("OPTIONS", "/v1/events", None, &[]).await;
    assert_eq!(r.status, 204);
    assert_eq!(r.headers["access-control-allow-origin"], "*");

    // Nothing half-written: no event was stored by any failed publish.
    let events = admin.get("/v1/events").await;
    assert_eq!(events.body.as_array().unwrap().len(), 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_decide_who_may_do_what() {
    let (server, admin, key) = setup().await;
    let anonymous = Client::new(&server.base);
    let wrong = Client::new(&server.base).with_header("x-amebo-admin-key", "wrong");
    let shop = Client::new(&server.base).with_header("authorization", &format!("Bearer {key}"));
    let event = json!({"action": "shop.sold", "payload": {"id": "1"}});

    assert_eq!(
        anonymous.post("/v1/events", event.clone()).await.status,
        401
    );
    assert_eq!(anonymous.get("/v1/applications").await.status, 401);
    assert_eq!(wrong.get("/v1/applications").await.status, 401);
    let bad_key = Client::new(&server.base).with_header("authorization", "Bearer tidings_nope");
    assert_eq!(bad_key.post("/v1/events", event.clone()).await.status, 401);
    // Authentication comes before the body is read, on every route.
    let r = anonymous
        .post("/v1/queues", json!({"name": "not a name!"}))
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // An application publishes its own actions, with its API key...
    assert_eq!(shop.post("/v1/events", event.clone()).await.status, 201);
    // ...but not another's, and it cannot manage applications.
    let other = admin
        .post(
            "/v1/applications",
            json!({"application": "other", "address": "http://o.invalid"}),
        )
        .await;
    let other_key = other.body["apikey"].as_str().unwrap().to_owned();
    let other =
        Client::new(&server.base).with_header("authorization", &format!("Bearer {other_key}"));
    assert_eq!(other.post("/v1/events", event.clone()).await.status, 403);
    assert_eq!(
        other
            .post(
                "/v1/applications",
                json!({"application": "x", "address": "http://x.invalid"})
            )
            .await
            .status,
        403
    );

    // Request signatures (`v1=`): HMAC over method, path with query,
    // timestamp and body; each accepted once, within 300 s.
    let body = serde_json::to_vec(&json!({"action": "shop.sold", "payload": {"id": "2"}})).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sign = |method: &str, path: &str, ts: &str, body: &[u8]| {
        let head = format!("v1\n{method}\n{path}\n{ts}\n");
        format!(
            "v1={}",
            hub_hmac("shop-secret-0123456789", &[head.as_bytes(), body])
        )
    };
    let send =
        |method: &'static str, path: &'static str, ts: String, sig: String, body: Vec<u8>| {
            let anonymous = &anonymous;
            async move {
                let headers = [
                    ("content-type", "application/json"),
                    ("x-amebo-application", "shop"),
                    ("x-amebo-timestamp", ts.as_str()),
                    ("x-amebo-signature", sig.as_str()),
                ];
                anonymous.send(method, path, Some(&body), &headers).await
            }
        };
    let sig = sign("POST", "/v1/events", &now, &body);
    let r = send("POST", "/v1/events", now.clone(), sig.clone(), body.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["publisher"], "service:shop");
    let r = send("POST", "/v1/events", now.clone(), sig, body.clone()).await;
    assert_eq!(r.status, 401, "the same signed request again: a replay");
    // A captured signed request is no good for another method or path.
    let sig = sign("GET", "/v1/subscriptions", &now, b"");
    let r = send(
        "DELETE",
        "/v1/subscriptions/x",
        now.clone(),
        sig,
        Vec::new(),
    )
    .await;
    assert_eq!(r.status, 401, "replayed as another request");
    let sig = sign("POST", "/v1/events", "1000", &body);
    let r = send("POST", "/v1/events", "1000".to_owned(), sig, body.clone()).await;
    assert_eq!(r.status, 401, "a stale timestamp is refused");
    // Amebo's signature over the body alone: refused unless the server
    // was told to accept it (--accept-legacy-signatures).
    let legacy = hub_hmac("shop-secret-0123456789", &[&body]);
    let headers = [
        ("content-type", "application/json"),
        ("x-amebo-application", "shop"),
        ("x-amebo-signature", legacy.as_str()),
    ];
    let r = anonymous
        .send("POST", "/v1/events", Some(&body), &headers)
        .await;
    assert_eq!(r.status, 401, "a body-only signature");
    // A signed request may not ask for a generated secret (its answer would
    // hand the new secret to whoever holds the signature); nothing changes.
    let sig = sign("PUT", "/v1/applications/shop/secret", &now, b"{}");
    let r = send(
        "PUT",
        "/v1/applications/shop/secret",
        now.clone(),
        sig,
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let sig = sign("POST", "/v1/events", &now, &body[..body.len() - 1]);
    let mut shorter = body.clone();
    shorter.pop();
    let r = send("POST", "/v1/events", now.clone(), sig, shorter).await;
    assert_eq!(
        r.status, 400,
        "the old secret still signs (malformed body, but authenticated)"
    );

    // A new API key replaces the old one; a deactivated application cannot authenticate.
    let fresh = admin.post("/v1/applications/shop/apikey", json!({})).await;
    assert_eq!(fresh.status, 200);
    assert_eq!(shop.post("/v1/events", event.clone()).await.status, 401);
    let shop = Client::new(&server.base).with_header(
        "authorization",
        &format!("Bearer {}", fresh.body["apikey"].as_str().unwrap()),
    );
    assert_eq!(shop.post("/v1/events", event.clone()).await.status, 201);
    let r = admin
        .send(
            "PATCH",
            "/v1/applications/shop",
            Some(br#"{"active": false}"#),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.body["active"], false);
    assert_eq!(shop.post("/v1/events", event.clone()).await.status, 401);
    server.stop().await;
}

fn hub_hmac(secret: &str, parts: &[&[u8]]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn without_an_admin_key_only_loopback_is_allowed() {
    let hub = tidings_hub::Hub::open(Arc::new(EmbeddedBroker::in_memory()), Default::default())
        .await
        .unwrap();
    let config = tidings_server::ServerConfig {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let err = tidings_server::Server::bind(hub, config)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("admin key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_tokens_authenticate_by_cookie_or_bearer() {
    let (server, _admin, _) = setup().await;
    let anonymous = Client::new(&server.base);
    let wrong = anonymous
        .post(
            "/v1/tokens",
            json!({"username": "shop", "password": "not-the-secret-000", "scheme": "token"}),
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.body["error"], "could not authenticate microservice");
    let missing = anonymous
        .post("/v1/tokens", json!({"username": "shop", "password": "x"}))
        .await;
    assert_eq!(missing.status, 400);
    assert_eq!(missing.body["error"], "scheme - Field required");

    let ok = anonymous
        .post(
            "/v8/tokens",
            json!({"username": "shop", "password": "shop-secret-0123456789", "scheme": "token"}),
        )
        .await;
    assert_eq!(ok.status, 202, "{}", ok.body);
    let token = ok.body["token"].as_str().unwrap().to_owned();
    let cookie = ok.headers["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with(&format!("Authentication={token};")),
        "{cookie}"
    );
    assert!(cookie.contains("HttpOnly"));

    let event = json!({"action": "shop.sold", "payload": {"id": "1"}});
    let by_cookie = Client::new(&server.base)
        .with_header("cookie", &format!("theme=dark; Authentication={token}"));
    let r = by_cookie.post("/v1/events", event.clone()).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["publisher"], "service:shop");
    let by_bearer =
        Client::new(&server.base).with_header("authorization", &format!("Bearer {token}"));
    assert_eq!(
        by_bearer.post("/v1/events", event.clone()).await.status,
        201
    );
    let forged = Client::new(&server.base).with_header("cookie", "Authentication=forged");
    assert_eq!(forged.post("/v1/events", event).await.status, 401);

    // Five attempts a minute per address, then 429.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = anonymous
            .post(
                "/v1/tokens",
                json!({"username": "shop", "password": "wrong-password-000", "scheme": "token"}),
            )
            .await;
        statuses.push(r.status);
    }
    assert_eq!(
        statuses,
        [401, 401, 429, 429],
        "three attempts were made above"
    );
    server.stop().await;
}

/// A failure of the server's own (here a storage error naming a path) is a
/// 503 whose body says nothing of it but the request id, under which the
/// log has the detail; a refusal of the storage's (`Denied`) is a 403 with
/// its code, not a "storage failure".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_failures_answer_a_request_id_and_no_internal_detail() {
    use tidings_core::testing::{Call, Hooked};
    let broker = Hooked::new(Arc::new(EmbeddedBroker::in_memory()), |call: Call| {
        Box::pin(async move {
            match call.queue.as_ref().map(|q| q.as_str()) {
                Some("broken") => Err(tidings_core::Error::storage(std::io::Error::other(
                    "write failed: /var/lib/secret-data/journal: Poisoned",
                ))),
                Some("refused") => Err(tidings_core::Error::Denied(
                    "the key may not write to this queue".into(),
                )),
                _ => Ok(()),
            }
        })
    });
    let server = TestServer::start(Arc::new(broker)).await;
    let c = Client::new(&server.base);
    let send = json!({"payload": {"n": 1}});

    let broken = c
        .send(
            "POST",
            "/v1/queues/broken/messages",
            Some(send.to_string().as_bytes()),
            &[
                ("content-type", "application/json"),
                ("x-request-id", "req-42"),
            ],
        )
        .await;
    assert_eq!(broken.status, 503, "{}", broken.body);
    assert_eq!(broken.body["code"], "unavailable");
    assert_eq!(broken.body["request_id"], "req-42");
    let text = broken.body.to_string();
    for secret in ["secret-data", "Poisoned", "storage failure", "write failed"] {
        assert!(
            !text.contains(secret),
            "the answer shows {secret:?}: {text}"
        );
    }

    let refused = c.post("/v1/queues/refused/messages", send.clone()).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["code"], "denied");

    server.stop().await;
}

/// In protected mode (no admin key) a loopback caller is admin only if it
/// reached the server directly: a request through a proxy on the same host
/// (any forwarding header) is refused, and told to set an admin key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_mode_is_not_admin_through_a_proxy() {
    let server = TestServer::start_with(Arc::new(EmbeddedBroker::in_memory()), None).await;
    let direct = Client::new(&server.base);
    let app = json!({"application": "direct", "address": "http://d.invalid"});
    assert_eq!(direct.post("/v1/applications", app).await.status, 201);
    for (header, value) in [
        ("x-forwarded-for", "203.0.113.5"),
        ("forwarded", "for=203.0.113.5;proto=https"),
        ("x-real-ip", "203.0.113.5"),
        ("x-forwarded-host", "hub.example.com"),
    ] {
        let proxied = Client::new(&server.base).with_header(header, value);
        let app = json!({"application": "proxied", "address": "http://p.invalid"});
        let r = proxied.post("/v1/applications", app).await;
        assert_eq!(r.status, 401, "{header}: {}", r.body);
        let message = r.body["error"].as_str().unwrap_or_default();
        assert!(message.contains("admin key"), "{header}: {message}");
        assert_eq!(
            proxied.get("/v1/applications").await.status,
            401,
            "{header}"
        );
    }
    server.stop().await;
}

/// Sends `bytes` on a connection of its own and reads the answer to the end.
async fn raw_exchange(base: &str, bytes: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(bytes).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// With an admin key, `/metrics` (which names every application, action
/// and subscription) needs the admin key or the metrics token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_credential_on_a_server_with_an_admin_key() {
    let (server, _admin, key) = setup().await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.base);
    let status = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().status().as_u16()
    };
    assert_eq!(status(http.get(&url)).await, 401, "anonymous");
    let app = http
        .get(&url)
        .header("authorization", format!("Bearer {key}"));
    assert_eq!(status(app).await, 401, "an application");
    let admin = http.get(&url).header("x-amebo-admin-key", ADMIN);
    assert_eq!(status(admin).await, 200, "the admin");
    let scraper = http
        .get(&url)
        .header("authorization", format!("Bearer {}", common::METRICS_TOKEN));
    assert_eq!(status(scraper).await, 200, "the metrics token");
    let wrong = http
        .get(&url)
        .header("authorization", "Bearer not-the-token");
    assert_eq!(status(wrong).await, 401, "a wrong token");
    server.stop().await;
}

/// A session belongs to one incarnation of its application and the secret
/// it was opened with: a rotation without a grace period (after a leak)
/// ends it at once (with one, at the end of it: see standard_webhooks.rs),
/// and a deleted application's sessions do not come back with a new
/// application of the same name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_with_a_new_secret_and_with_the_application() {
    let (server, admin, _) = setup().await;
    let login = |secret: &'static str| {
        let server = &server;
        async move {
            let r = Client::new(&server.base)
                .post(
                    "/v1/tokens",
                    json!({"username": "shop", "password": secret, "scheme": "token"}),
                )
                .await;
            assert_eq!(r.status, 202, "{}", r.body);
            let token = r.body["token"].as_str().unwrap_or_default().to_owned();
            Client::new(&server.base).with_header("authorization", &format!("Bearer {token}"))
        }
    };
    let event = json!({"action": "shop.sold", "payload": {"id": "1"}});
    let old = login("shop-secret-0123456789").await;
    assert_eq!(old.post("/v1/events", event.clone()).await.status, 201);

    let rotated = admin
        .send(
            "PUT",
            "/v1/applications/shop/secret",
            Some(br#"{"secret": "a-new-shop-secret-98765", "grace_period": 0}"#),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(rotated.status, 202, "{}", rotated.body);
    assert!(rotated.body.get("previous_valid_until").is_none());
    assert!(
        rotated.body["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("weak")),
        "a 23-character secret is accepted with a warning: {}",
        rotated.body
    );
    assert_eq!(
        old.post("/v1/events", event.clone()).await.status,
        401,
        "ended by the rotation"
    );
    let new = login("a-new-shop-secret-98765").await;
    assert_eq!(new.post("/v1/events", event.clone()).await.status, 201);

    let deleted = admin
        .send("DELETE", "/v1/applications/shop", None, &[])
        .await;
    assert_eq!(deleted.status, 202, "{}", deleted.body);
    let again = admin
        .post(
            "/v1/applications",
            json!({"application": "shop", "address": "http://shop.invalid", "secret": "a-new-shop-secret-98765"}),
        )
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(
        new.get("/v1/applications").await.status,
        401,
        "a session of the deleted application, the same name and secret notwithstanding"
    );
    server.stop().await;
}

/// An application reads the events of the actions it owns or subscribes
/// to, the deliveries of its own subscriptions and its own subscriptions;
/// the admin reads everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_reads_only_its_own_events_deliveries_and_subscriptions() {
    let (server, admin, _) = setup().await;
    let mut keys = Vec::new();
    for name in ["alpha", "beta"] {
        let app = json!({"application": name, "address": "http://a.invalid/"});
        let r = admin.post("/v1/applications", app).await;
        assert_eq!(r.status, 201, "{}", r.body);
        let key = r.body["apikey"].as_str().unwrap_or_default().to_owned();
        keys.push(Client::new(&server.base).with_header("authorization", &format!("Bearer {key}")));
        let action = json!({"action": format!("{name}.act"), "application": name, "schemata": {"type": "object"}});
        assert_eq!(admin.post("/v1/actions", action).await.status, 201);
    }
    let (alpha, beta) = (&keys[0], &keys[1]);
    let sub = json!({"application": "beta", "action": "beta.act", "handler": "/h"});
    assert_eq!(beta.post("/v1/subscriptions", sub).await.status, 201);
    let published = beta
        .post(
            "/v1/events",
            json!({"action": "beta.act", "payload": {"secret": "beta's"}}),
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.body);
    let event = published.body["event"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let count = |answer: common::Answer| match &answer.body["data"] {
        serde_json::Value::Array(rows) => rows.len(),
        _ => answer.body.as_array().map_or(usize::MAX, Vec::len),
    };
    // Alpha sees none of it.
    assert_eq!(count(alpha.get("/v1/events?action=beta.act").await), 0);
    assert_eq!(count(alpha.get("/v1/events").await), 0);
    assert_eq!(alpha.get(&format!("/v1/events/{event}")).await.status, 404);
    assert_eq!(count(alpha.get(&format!("/v1/events?id={event}")).await), 0);
    assert_eq!(count(alpha.get("/v1/gists").await), 0);
    assert_eq!(count(alpha.get("/v1/subscriptions").await), 0);
    // Beta sees its own.
    assert_eq!(count(beta.get("/v1/events").await), 1);
    assert_eq!(beta.get(&format!("/v1/events/{event}")).await.status, 200);
    assert_eq!(count(beta.get("/v1/gists").await), 1);
    assert_eq!(count(beta.get("/v1/subscriptions").await), 1);
    // Subscribing to an action opens its events to the subscriber, not the
    // other subscriptions or their deliveries.
    let sub = json!({"application": "alpha", "action": "beta.act", "handler": "/mine"});
    assert_eq!(alpha.post("/v1/subscriptions", sub).await.status, 201);
    assert_eq!(count(alpha.get("/v1/events?action=beta.act").await), 1);
    assert_eq!(count(alpha.get("/v1/subscriptions").await), 1);
    assert_eq!(count(alpha.get("/v1/gists").await), 0, "beta's delivery");
    // The admin reads everything.
    assert_eq!(count(admin.get("/v1/subscriptions").await), 2);
    assert_eq!(count(admin.get("/v1/gists").await), 1);
    assert_eq!(count(admin.get("/v1/events?action=beta.act").await), 1);
    server.stop().await;
}

/// With `--accept-legacy-signatures`, Amebo's signature over the body alone
/// is accepted (for old clients; documented as unsafe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_signatures_only_when_the_server_accepts_them() {
    let auth = tidings_server::AuthConfig {
        admin_key: Some(ADMIN.to_owned()),
        accept_legacy_signatures: true,
        ..Default::default()
    };
    let broker = Arc::new(EmbeddedBroker::in_memory());
    let server = TestServer::start_authenticated(broker, auth, Default::default()).await;
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    let app = json!({"application": "old", "address": "http://o.invalid", "secret": "old-client-secret-0123"});
    assert_eq!(admin.post("/v1/applications", app).await.status, 201);
    let action =
        json!({"action": "old.thing", "application": "old", "schemata": {"type": "object"}});
    assert_eq!(admin.post("/v1/actions", action).await.status, 201);
    let body = serde_json::to_vec(&json!({"action": "old.thing", "payload": {}})).unwrap();
    let legacy = hub_hmac("old-client-secret-0123", &[&body]);
    let headers = [
        ("content-type", "application/json"),
        ("x-amebo-application", "old"),
        ("x-amebo-signature", legacy.as_str()),
    ];
    let r = Client::new(&server.base)
        .send("POST", "/v1/events", Some(&body), &headers)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    server.stop().await;
}

/// Logins are limited per client address (believed from X-Forwarded-For
/// only behind a trusted proxy) and, for failures, per application name
/// whatever the address: a proxy's clients do not lock each other out, and
/// spreading guesses over addresses does not help.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_limited_per_client_and_per_application() {
    let auth = tidings_server::AuthConfig {
        admin_key: Some(ADMIN.to_owned()),
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Default::default()
    };
    let broker = Arc::new(EmbeddedBroker::in_memory());
    let server = TestServer::start_authenticated(broker, auth, Default::default()).await;
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    for name in ["shop", "other"] {
        let app = json!({"application": name, "address": "http://x.invalid", "secret": format!("{name}-secret-0123456789")});
        assert_eq!(admin.post("/v1/applications", app).await.status, 201);
    }
    let login = |client: String, name: &'static str, password: &'static str| {
        let base = server.base.clone();
        async move {
            Client::new(&base)
                .with_header("x-forwarded-for", &client)
                .post(
                    "/v1/tokens",
                    json!({"username": name, "password": password, "scheme": "token"}),
                )
                .await
                .status
        }
    };
    // One client behind the proxy: five attempts a minute, then 429; the
    // proxy's other clients are not held up.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(login("203.0.113.1".into(), "nobody", "wrong-password-000").await);
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    assert_eq!(
        login("203.0.113.2".into(), "shop", "shop-secret-0123456789").await,
        202
    );
    // Guesses at one application from many addresses: ten failures a
    // minute, then 429 for that name only, even with the right secret.
    for i in 0..10 {
        assert_eq!(
            login(format!("198.51.100.{i}"), "shop", "wrong-password-000").await,
            401
        );
    }
    assert_eq!(
        login("198.51.100.200".into(), "shop", "shop-secret-0123456789").await,
        429
    );
    assert_eq!(
        login("198.51.100.201".into(), "other", "other-secret-0123456789").await,
        202
    );
    server.stop().await;
}

/// With an admin key, webhooks go only to public addresses: every form of
/// a loopback, private, link-local or unique-local address is refused at
/// subscribe (422, naming the setting), and one allowed by
/// `--allow-destination` is delivered to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_go_only_to_public_addresses_unless_allowed() {
    let (server, admin, key) = setup().await;
    let shop = Client::new(&server.base).with_header("authorization", &format!("Bearer {key}"));
    let mut receiver = common::Receiver::start().await;
    let port = receiver
        .base
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let handlers = [
        format!("{}/hook", receiver.base),
        format!("http://localhost:{port}/hook"),
        "http://0.0.0.0/".to_owned(),
        "http://2130706433/".to_owned(),
        "http://127.1/".to_owned(),
        "http://[::ffff:127.0.0.1]/".to_owned(),
        "http://[::1]/".to_owned(),
        "http://10.0.0.1/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://metadata.google.internal/computeMetadata/v1/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[2002:a9fe:a9fe::1]/".to_owned(),
    ];
    for handler in &handlers {
        let sub = json!({"application": "shop", "action": "shop.sold", "handler": handler});
        let r = shop.post("/v1/subscriptions", sub).await;
        assert_eq!(r.status, 422, "{handler}: {}", r.body);
        let message = r.body["error"].as_str().unwrap_or_default();
        assert!(message.contains("--allow-destination"), "{message}");
    }
    // A path handler under an address that is loopback: refused too.
    let app = json!({"address": receiver.base});
    assert_eq!(admin.put("/v1/applications/shop", app).await.status, 202);
    let sub = json!({"application": "shop", "action": "shop.sold", "handler": "/hook"});
    assert_eq!(shop.post("/v1/subscriptions", sub).await.status, 422);
    assert_eq!(
        admin
            .get("/v1/subscriptions")
            .await
            .body
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    server.stop().await;

    // Allowed by the operator: subscribed and delivered.
    let hub = tidings_hub::HubConfig {
        destinations: tidings_hub::DestinationPolicy {
            allow_private: false,
            allowed: vec!["127.0.0.1/32".parse().unwrap()],
        },
        ..tidings_hub::HubConfig::default()
    };
    let server =
        TestServer::start_hub(Arc::new(EmbeddedBroker::in_memory()), Some(ADMIN), hub).await;
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    let app = json!({"application": "shop", "address": receiver.base});
    assert_eq!(admin.post("/v1/applications", app).await.status, 201);
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(admin.post("/v1/actions", action).await.status, 201);
    let sub = json!({"application": "shop", "action": "shop.sold", "handler": "/hook"});
    assert_eq!(admin.post("/v1/subscriptions", sub).await.status, 201);
    let sub = json!({"application": "shop", "action": "shop.sold", "handler": "http://[::1]:9/"});
    assert_eq!(
        admin.post("/v1/subscriptions", sub).await.status,
        422,
        "::1 is not in 127.0.0.1/32"
    );
    let event = json!({"action": "shop.sold", "payload": {"id": "1"}});
    assert_eq!(admin.post("/v1/events", event).await.status, 201);
    assert_eq!(receiver.next().await.path, "/hook");
    server.stop().await;
}

/// No subscription can make the hub post to itself: its own listen address
/// is refused, even in protected mode where loopback is otherwise allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_never_delivers_to_itself() {
    let server = TestServer::start(Arc::new(EmbeddedBroker::in_memory())).await;
    let admin = Client::new(&server.base);
    let port = server
        .base
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let app = json!({"application": "shop", "address": "http://127.0.0.1:9"});
    assert_eq!(admin.post("/v1/applications", app).await.status, 201);
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(admin.post("/v1/actions", action).await.status, 201);
    for handler in [
        format!("{}/v1/events", server.base),
        format!("http://localhost:{port}/v1/events"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1/events"),
    ] {
        let sub = json!({"application": "shop", "action": "shop.sold", "handler": handler});
        let r = admin.post("/v1/subscriptions", sub).await;
        assert_eq!(r.status, 422, "{handler}: {}", r.body);
        let message = r.body["error"].as_str().unwrap_or_default();
        assert!(message.contains("own listen address"), "{message}");
    }
    // Another loopback port is fine in protected mode.
    let sub = json!({"application": "shop", "action": "shop.sold", "handler": "/hook"});
    assert_eq!(admin.post("/v1/subscriptions", sub).await.status, 201);
    server.stop().await;
}

/// A subscription whose destination becomes refused (here: the operator
/// tightened the policy) fails its attempt at once and is dead-lettered,
/// not retried; the subscriber is told only that it was refused, the admin
/// which address and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destination_is_dead_lettered_with_a_reason() {
    let broker: Arc<EmbeddedBroker> = Arc::new(EmbeddedBroker::in_memory());
    let mut receiver = common::Receiver::start().await;
    // Protected mode: loopback allowed; subscribed.
    let server = TestServer::start(broker.clone()).await;
    let local = Client::new(&server.base);
    let app = json!({"application": "shop", "address": receiver.base, "secret": "shop-secret-0123456789"});
    let registered = local.post("/v1/applications", app).await;
    assert_eq!(registered.status, 201);
    let key = registered.body["apikey"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(local.post("/v1/actions", action).await.status, 201);
    let sub =
        json!({"application": "shop", "action": "shop.sold", "handler": "/hook", "max_retries": 5});
    assert_eq!(local.post("/v1/subscriptions", sub).await.status, 201);
    server.stop().await;

    // The same data behind an admin key: public destinations only.
    let server = TestServer::start_with(broker, Some(ADMIN)).await;
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    let shop = Client::new(&server.base).with_header("authorization", &format!("Bearer {key}"));
    let event = json!({"action": "shop.sold", "payload": {"id": "1"}});
    assert_eq!(shop.post("/v1/events", event).await.status, 201);
    eventually("the delivery to be dead-lettered", || async {
        admin.get("/v1/gists?status=failed").await.body["total"] == 1
    })
    .await;
    let seen = admin.get("/v1/gists").await.body["data"][0].clone();
    assert_eq!(seen["attempts"], 1, "refused once, not retried: {seen}");
    let detail = seen["last_error"].as_str().unwrap_or_default();
    assert!(detail.contains("127.0.0.1 is loopback"), "{detail}");
    let told = shop.get("/v1/gists").await.body["data"][0]["last_error"].clone();
    assert_eq!(told, "destination refused by the hub's address policy");
    assert!(
        receiver
            .quiet_for(std::time::Duration::from_millis(200))
            .await
    );
    server.stop().await;
}

/// Reads from `socket` until the server closes it (or PATIENCE passes:
/// then the test fails). Returns what was read.
async fn read_until_closed(socket: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut seen = Vec::new();
    let read = tokio::time::timeout(common::PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&seen).into_owned()
}

fn limits(header_ms: u64, body_ms: u64) -> tidings_server::ConnectionLimits {
    tidings_server::ConnectionLimits {
        header_timeout: std::time::Duration::from_millis(header_ms),
        body_timeout: std::time::Duration::from_millis(body_ms),
        ..tidings_server::ConnectionLimits::default()
    }
}

/// A connection that sends nothing, sends its headers a byte at a time, stays
/// idle after an answer, or sends its body too slowly is closed (the body:
/// with a 408 and the JSON error body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_connections_are_closed() {
    use tokio::io::AsyncWriteExt;
    let broker = Arc::new(EmbeddedBroker::in_memory());
    let server = TestServer::start_limited(broker, ADMIN, limits(300, 300)).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let connect = || tokio::net::TcpStream::connect(addr.clone());

    // Silent.
    let mut silent = connect().await.unwrap();
    assert_eq!(read_until_closed(&mut silent).await, "");

    // Slowloris: a header byte every 50 ms never completes in time.
    let mut slow = connect().await.unwrap();
    let dripping = async {
        for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if slow.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    assert!(
        tokio::time::timeout(common::PATIENCE, dripping)
            .await
            .is_ok(),
        "a header sent a byte at a time was still being read"
    );

    // Idle after an answer (keep-alive).
    let mut idle = connect().await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // A body that stops arriving.
    let mut stalled = connect().await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nx-amebo-admin-key: {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"action\""
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let answered = read_until_closed(&mut stalled).await;
    assert!(answered.starts_with("HTTP/1.1 408"), "{answered}");
    assert!(
        answered.contains("\"error\":\"the body did not arrive within"),
        "{answered}"
    );
    server.stop().await;
}

/// Open connections are capped in all and per client address; when a cap is
/// reached, the connection idle longest is closed to make room, so idle
/// connections cannot keep a caller with a request out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_idle_ones_make_room() {
    /// A server capped at `max` connections, `per_client` per address, and
    /// `idle` connections opened to it that send nothing.
    async fn flooded(
        max: usize,
        per_client: usize,
        idle: usize,
    ) -> (TestServer, Vec<tokio::net::TcpStream>) {
        let capped = tidings_server::ConnectionLimits {
            max: Some(max),
            per_client,
            ..limits(60_000, 60_000)
        };
        let server =
            TestServer::start_limited(Arc::new(EmbeddedBroker::in_memory()), ADMIN, capped).await;
        let addr = server.base.trim_start_matches("http://").to_owned();
        let mut sockets = Vec::new();
        for _ in 0..idle {
            sockets.push(tokio::net::TcpStream::connect(addr.clone()).await.unwrap());
        }
        (server, sockets)
    }
    let (server, mut idle) = flooded(8, 100, 20).await;
    // A caller with a request gets in, and is answered.
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    assert_eq!(admin.get("/v1/applications").await.status, 200);
    // The oldest idle ones were closed to make room: at most 8 are open.
    for socket in idle.iter_mut().take(12) {
        read_until_closed(socket).await;
    }
    server.stop().await;

    // Per client address.
    let (server, mut idle) = flooded(1000, 4, 6).await;
    for socket in idle.iter_mut().take(2) {
        read_until_closed(socket).await;
    }
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    assert_eq!(admin.get("/v1/applications").await.status, 200);
    server.stop().await;
}

/// An application may have a bounded number of actions, each schema a
/// bounded size, and all its schemas a bounded total (422 naming the
/// setting): one application cannot fill the hub's memory with schemas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_and_schemas_are_limited_per_application() {
    let config = tidings_hub::HubConfig {
        max_actions_per_application: 3,
        max_schema_bytes: 2_000,
        max_schema_bytes_per_application: 3_000,
        ..tidings_hub::HubConfig::default()
    };
    let server =
        TestServer::start_hub(Arc::new(EmbeddedBroker::in_memory()), Some(ADMIN), config).await;
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", ADMIN);
    for name in ["shop", "mail"] {
        let app = json!({"application": name, "address": "http://a.invalid/"});
        assert_eq!(admin.post("/v1/applications", app).await.status, 201);
    }
    let enumerated =
        |n: usize| json!({"enum": (0..n).map(|i| format!("v{i:04}")).collect::<Vec<_>>()});
    let register = |action: &str, app: &str, schema: serde_json::Value| {
        admin.post(
            "/v1/actions",
            json!({"action": action, "application": app, "schemata": schema}),
        )
    };
    // One schema too large.
    let r = register("shop.big", "shop", enumerated(400)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-schema-bytes"),
        "{}",
        r.body
    );
    // Three fit; a fourth is one too many.
    for n in 0..3 {
        assert_eq!(
            register(&format!("shop.a{n}"), "shop", json!({"type": "object"}))
                .await
                .status,
            201
        );
    }
    let r = register("shop.a3", "shop", json!({"type": "object"})).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-actions-per-application")
    );
    // Another application has its own count; its schemas share one budget.
    assert_eq!(
        register("mail.a", "mail", enumerated(150)).await.status,
        201
    );
    assert_eq!(
        register("mail.b", "mail", enumerated(150)).await.status,
        201
    );
    let r = register("mail.c", "mail", enumerated(150)).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-schema-bytes-per-application")
    );
    // Editing a schema counts what it replaces once.
    let r = admin
        .send(
            "PATCH",
            "/v1/actions/mail.b",
            Some(&serde_json::to_vec(&json!({"schemata": enumerated(160)})).unwrap()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    server.stop().await;
}

/// Every change, reveal, replay and requeue, and every refused admin key,
/// is in the audit log with who, what, when, from where and the request id;
/// refused changes are not; only the admin reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_who_changed_what() {
    let (server, admin, shop_key) = setup().await;
    let shop =
        Client::new(&server.base).with_header("authorization", &format!("Bearer {shop_key}"));
    let mailer = json!({"application": "mailer", "address": "http://mailer.invalid/"});
    assert_eq!(
        admin.post("/v1/applications", mailer.clone()).await.status,
        201
    );
    assert_eq!(
        admin.post("/v1/applications", mailer).await.status,
        409,
        "refused: not recorded"
    );
    let r = admin
        .put("/v1/applications/mailer/secret", json!({"grace_period": 0}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let sub = json!({"application": "mailer", "action": "shop.sold", "handler": "/hook"});
    let r = admin.post("/v1/subscriptions", sub).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["subscription"].as_str().unwrap().to_owned();
    assert_eq!(
        admin
            .get(&format!("/v1/subscriptions/{id}/signing-key"))
            .await
            .status,
        200
    );
    let action =
        json!({"action": "shop.refunded", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(shop.post("/v1/actions", action).await.status, 201);
    assert_eq!(admin.post("/v1/requeues", json!({})).await.status, 200);
    let wrong = Client::new(&server.base)
        .with_header("x-amebo-admin-key", "not-the-admin-key")
        .with_header("x-request-id", "req-wrong-key-1");
    assert_eq!(wrong.get("/v1/applications").await.status, 401);

    let log = admin.get("/v1/audit?pagination=100").await;
    assert_eq!(log.status, 200, "{}", log.body);
    let entries = log.body.as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "admin.authentication.failed",
            "delivery.requeue",
            "action.register",
            "subscription.signing_key.reveal",
            "subscription.create",
            "application.secret.rotate",
            "application.create",
            // setup(): shop and its action.
            "action.register",
            "application.create",
        ],
        "newest first, refused changes left out"
    );
    let refused = &entries[0];
    assert_eq!(refused["actor"], "anonymous");
    assert_eq!(refused["status"], 401);
    assert_eq!(refused["request_id"], "req-wrong-key-1");
    assert_eq!(refused["address"], "127.0.0.1");
    let by_shop = &entries[2];
    assert_eq!(by_shop["actor"], "application");
    assert_eq!(by_shop["application"], "shop");
    assert_eq!(by_shop["credential"], "bearer");
    let rotated = &entries[5];
    assert_eq!(rotated["actor"], "admin");
    assert_eq!(rotated["credential"], "admin_key");
    assert_eq!(rotated["target"], "mailer");
    assert_eq!(rotated["status"], 202);
    assert!(
        rotated["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty())
    );
    assert!(rotated["timestamped"].as_str().is_some());
    assert_eq!(entries[3]["target"], id.as_str());

    // Filters and paging.
    let apps = admin.get("/v1/audit?action=application.").await;
    assert_eq!(apps.body.as_array().map(Vec::len), Some(3), "{}", apps.body);
    let of_shop = admin.get("/v1/audit?application=shop").await;
    assert_eq!(of_shop.body.as_array().map(Vec::len), Some(1));
    let second_page = admin.get("/v1/audit?pagination=2&page=2").await;
    assert_eq!(second_page.body[0]["action"], "action.register");
    let future = admin.get("/v1/audit?from=2999-01-01").await;
    assert_eq!(future.body.as_array().map(Vec::len), Some(0));
    let past = admin.get("/v1/audit?to=2000-01-01").await;
    assert_eq!(past.body.as_array().map(Vec::len), Some(0));
    // Only the admin reads it.
    assert_eq!(shop.get("/v1/audit").await.status, 403);
    // A flood of wrong keys writes at most 60 entries a minute (the rest
    // are counted in the next entry written).
    for _ in 0..70 {
        assert_eq!(wrong.get("/v1/applications").await.status, 401);
    }
    let refusals = admin
        .get("/v1/audit?action=admin.authentication&pagination=100")
        .await;
    assert_eq!(
        refusals.body.as_array().map(Vec::len),
        Some(tidings_server::audit::REFUSALS_PER_MINUTE)
    );
    server.stop().await;
}

/// `Idempotency-Key` is the deduper's other form: a repeat returns the
/// original event; reused for another payload it is a conflict; a body
/// deduper that differs from it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_dedupe_and_check_the_payload() {
    let (server, admin, _) = setup().await;
    let keyed = admin.clone().with_header("idempotency-key", "sale-7");
    let sale = json!({"action": "shop.sold", "payload": {"id": "7"}});
    let first = keyed.post("/v1/events", sale.clone()).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["deduper"], "sale-7");
    let again = keyed.post("/v1/events", sale.clone()).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["event"], first.body["event"]);
    assert_eq!(again.body["duplicate"], true);
    let other = json!({"action": "shop.sold", "payload": {"id": "8"}});
    let conflict = keyed.post("/v1/events", other).await;
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    let mismatched = json!({"action": "shop.sold", "payload": {"id": "7"}, "deduper": "else"});
    assert_eq!(keyed.post("/v1/events", mismatched).await.status, 400);
    let matching = json!({"action": "shop.sold", "payload": {"id": "7"}, "deduper": "sale-7"});
    assert_eq!(keyed.post("/v1/events", matching).await.status, 200);
    // The body's deduper keeps Amebo's rule: a repeat is the original,
    // whatever its payload.
    let amebo = json!({"action": "shop.sold", "payload": {"id": "9"}, "deduper": "sale-7"});
    assert_eq!(admin.post("/v1/events", amebo).await.status, 200);
    server.stop().await;
}
