//! `tidings verify-receiver` against two real receivers: one built with
//! `tidings_signatures::Verified` that drops repeats, and a naive one that
//! re-serialises the JSON before checking the signature and ignores the
//! timestamp.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use serde_json::Value;
use tidings_signatures::{Verified, Verifier};

const KEY: &str = "whsec_dmVyaWZ5LXJlY2VpdmVyLXRlc3Qta2V5LTMyYnl0ZXM=";

#[derive(Clone)]
struct Good {
    verifier: Arc<Verifier>,
    seen: Arc<Mutex<HashSet<String>>>,
    handled: Arc<Mutex<Vec<String>>>,
}

impl FromRef<Good> for Arc<Verifier> {
    fn from_ref(good: &Good) -> Self {
        good.verifier.clone()
    }
}

/// Verifies over the raw body, then handles each event once.
async fn good(State(state): State<Good>, Verified(delivery): Verified) -> StatusCode {
    let event = delivery.event.unwrap_or_default();
    if state.seen.lock().unwrap().insert(event.clone()) {
        state.handled.lock().unwrap().push(event);
    }
    StatusCode::OK
}

/// Parses the body, serialises it again (keys sorted) and checks the
/// signature over that; never looks at the timestamp.
async fn naive(headers: HeaderMap, body: Bytes) -> StatusCode {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let canonical = canonical(&value);
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let key = Verifier::new(KEY).unwrap().signing_key().unwrap().to_vec();
    let stamp: u64 = text("webhook-timestamp").parse().unwrap_or(0);
    let expected =
        tidings_signatures::standard(&key, text("webhook-id"), stamp, canonical.as_bytes());
    if text("webhook-signature") == expected {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// Compact JSON with every object's keys sorted.
fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        other => other.to_string(),
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

async fn verify_receiver(url: &str) -> (bool, Vec<Value>) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["verify-receiver", url, "--secret", KEY, "--json"])
        .output()
        .await
        .unwrap();
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), reports)
}

fn verdicts(reports: &[Value]) -> Vec<(String, bool)> {
    reports
        .iter()
        .map(|r| {
            (
                r["check"].as_str().unwrap().to_owned(),
                r["passed"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_careful_receiver_passes_every_check_and_handles_the_event_once() {
    let state = Good {
        verifier: Arc::new(Verifier::new(KEY).unwrap()),
        seen: Arc::default(),
        handled: Arc::default(),
    };
    let url = serve(
        Router::new()
            .route("/hook", post(good))
            .with_state(state.clone()),
    )
    .await;
    let (success, reports) = verify_receiver(&url).await;
    let expected: Vec<(String, bool)> = [
        "valid",
        "replay",
        "tampered",
        "wrong_signature",
        "stale",
        "reordered",
    ]
    .iter()
    .map(|c| ((*c).to_owned(), true))
    .collect();
    assert_eq!(verdicts(&reports), expected, "{reports:?}");
    assert!(success);
    assert_eq!(reports[2]["status"], 401);
    assert_eq!(state.handled.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_naive_receiver_is_caught_accepting_stale_and_reordered_deliveries() {
    let url = serve(Router::new().route("/hook", post(naive))).await;
    let (success, reports) = verify_receiver(&url).await;
    let got = verdicts(&reports);
    assert_eq!(
        got,
        vec![
            ("valid".to_owned(), true),
            ("replay".to_owned(), true),
            ("tampered".to_owned(), true),
            ("wrong_signature".to_owned(), true),
            ("stale".to_owned(), false),
            ("reordered".to_owned(), false),
        ],
        "{reports:?}"
    );
    assert!(!success, "a receiver that failed checks fails the command");
    assert_eq!(reports[4]["status"], 200);
}

#[tokio::test]
async fn an_unreachable_receiver_fails_every_check() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    drop(listener);
    let (success, reports) = verify_receiver(&url).await;
    assert!(!success);
    assert!(
        reports
            .iter()
            .all(|r| r["passed"] == false && r["error"].is_string())
    );
}
