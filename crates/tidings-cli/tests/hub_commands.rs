//! `tidings hub ...` against a real `tidings serve` process (protected
//! mode: the test, on loopback, is the admin).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Output;

use axum::Router;
use axum::routing::post;
use serde_json::Value;

fn hub(base: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidings"))
        .arg("hub")
        .args(args)
        .env("TIDINGS_URL", base)
        .env_remove("TIDINGS_API_KEY")
        .env_remove("TIDINGS_ADMIN_KEY")
        .output()
        .unwrap()
}

fn ok(base: &str, args: &[&str]) -> String {
    let out = hub(base, args);
    assert!(
        out.status.success(),
        "tidings hub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn json(base: &str, args: &[&str]) -> Value {
    let mut with = vec!["--json"];
    with.extend_from_slice(args);
    serde_json::from_str(&ok(base, &with)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_manage_the_hub_from_the_command_line() {
    let port = common::free_port();
    let mut server = common::spawn_on("memory:", port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    common::wait_ready(&reqwest::Client::new(), &base).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = Router::new().route("/hook", post(|| async { "ok" }));
        axum::serve(listener, app).await.unwrap()
    });

    let made = ok(&base, &["apps", "create", "crm", &hook]);
    assert!(made.contains("apikey  tidings_"), "{made}");
    assert!(ok(&base, &["apps", "list"]).contains("crm"));
    let schema = r#"{"type":"object","required":["n"]}"#;
    ok(
        &base,
        &[
            "actions",
            "create",
            "crm.lead",
            "--application",
            "crm",
            "--schema",
            schema,
        ],
    );
    assert_eq!(
        json(&base, &["actions", "show", "crm.lead"])["schemata"]["required"][0],
        "n"
    );
    let sub = json(
        &base,
        &[
            "subscriptions",
            "create",
            "--application",
            "crm",
            "--action",
            "crm.lead",
            "--handler",
            &hook,
        ],
    );
    assert!(sub["signing_key"].as_str().unwrap().starts_with("whsec_"));

    let first = json(
        &base,
        &[
            "events",
            "publish",
            "crm.lead",
            r#"{"n":1}"#,
            "--deduper",
            "l1",
        ],
    );
    let again = json(
        &base,
        &[
            "events",
            "publish",
            "crm.lead",
            r#"{"n":1}"#,
            "--deduper",
            "l1",
        ],
    );
    assert_eq!(first["event"], again["event"]);
    assert_eq!(again["duplicate"], true);
    let listed = json(&base, &["events", "list", "--action", "crm.lead"]);
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let refused = hub(&base, &["events", "publish", "crm.lead", r#"{"m":1}"#]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("406") && why.contains("\"n\" is a required property"),
        "{why}"
    );

    let event = first["event"].as_str().unwrap();
    let delivered =
        || json(&base, &["gists", "list", "--event", event])["data"][0]["status"] == "delivered";
    for _ in 0..200 {
        if delivered() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(delivered());
    let replayed = ok(&base, &["gists", "replay", "--event", event]);
    assert!(replayed.contains("1 of 1 delivered"), "{replayed}");
    let counted = ok(
        &base,
        &[
            "events",
            "backfill",
            sub["subscription"].as_str().unwrap(),
            "--since",
            "today",
            "--dry-run",
        ],
    );
    assert!(counted.contains("1 events would be delivered"), "{counted}");
    assert!(ok(&base, &["gists", "requeue", "--status", "failed"]).contains("0 deliveries"));
    assert!(ok(&base, &["gists", "purge", "--status", "failed"]).contains("0 dead deliveries"));

    server.kill().unwrap();
    server.wait().unwrap();
}
