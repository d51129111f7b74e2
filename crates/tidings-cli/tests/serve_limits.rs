//! `tidings serve` under a low limit on open files, flooded with idle
//! connections: it keeps descriptors for its storage and for callers with
//! requests, so publishing keeps working and /readyz stays true.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port, wait_ready};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_do_not_exhaust_the_servers_files() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    // 512 files (soft and hard: the server cannot raise it), as `ulimit -n` does.
    let mut server = Command::new("sh")
        .args([
            "-c",
            "ulimit -n 512 && exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_tidings"),
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--max-in-flight",
            "16",
        ])
        .env("TIDINGS_BROKER", dir.path())
        .env("TIDINGS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    wait_ready(&http, &base).await;

    // Twice as many idle connections as the server has files.
    let mut idle = Vec::new();
    for _ in 0..1024 {
        if let Ok(socket) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(socket);
        }
    }
    let post = |path: &str, body: serde_json::Value| {
        http.post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
    };
    let r = post(
        "/v1/applications",
        json!({"application": "shop", "address": "http://shop.invalid"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let r = post(
        "/v1/actions",
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    for n in 0..200 {
        let r = post(
            "/v1/events",
            json!({"action": "shop.sold", "payload": {"n": n}}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201, "publish {n}");
    }
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    drop(idle);
    server.kill().unwrap();
    server.wait().unwrap();
}
