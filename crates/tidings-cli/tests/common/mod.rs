//! `tidings serve` as a child process, for tests that kill and restart it.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `tidings serve` on `port` over the data directory `dir`, with `extra` arguments.
pub fn spawn_server(dir: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("TIDINGS_BROKER", dir)
        .env("TIDINGS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Waits until the server at `base` answers `/readyz` (10 s at most).
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the server did not start");
}
