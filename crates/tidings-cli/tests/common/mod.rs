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
    spawn_on(&dir.to_string_lossy(), port, extra)
}

/// `tidings serve` on `port` over the shared store at `broker` (a Redis or
/// PostgreSQL URL), with `extra` arguments.
pub fn spawn_on(broker: &str, port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("TIDINGS_BROKER", broker)
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

/// Spawns `command` with its stderr read line by line (and echoed) into
/// the returned channel, which ends when the process does.
pub fn spawn_logged(command: &mut Command) -> (Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("serve: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits (20 s at most) for a log line containing `needle`.
pub fn expect_log(log: &std::sync::mpsc::Receiver<String>, needle: &str) {
    loop {
        match log.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains(needle) => return,
            Ok(_) => {}
            Err(e) => panic!("no log line with {needle:?}: {e}"),
        }
    }
}
