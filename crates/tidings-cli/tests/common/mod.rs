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

/// The Redis crate's test servers (its three-node cluster).
#[path = "../../../tidings-redis/tests/common/server.rs"]
pub mod redis_server;

/// Asked by `redis_server` when it cannot start one: fail under CI, skip
/// elsewhere.
pub fn skip_or_fail<T>(e: &dyn std::fmt::Display) -> Option<T> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(!ci, "a Redis server is required under CI=true: {e}");
    eprintln!("skipped: no Redis server could be started ({e})");
    None
}

/// Key prefixes of one test on the test Redis (`TIDINGS_REDIS_URL`), whose
/// keys are deleted when this is dropped.
pub struct RedisPrefix {
    url: String,
    base: String,
    con: redis::Connection,
}

impl RedisPrefix {
    /// Prefixes named after `test`; `None` (skip) when Redis cannot be
    /// reached outside CI; under CI=true, a failure.
    pub fn new(test: &str) -> Option<Self> {
        let url =
            std::env::var("TIDINGS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let con = match redis::Client::open(url.as_str()).and_then(|c| c.get_connection()) {
            Ok(con) => con,
            Err(e) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
                assert!(!ci, "Redis is required under CI=true ({url}): {e}");
                eprintln!("skipped: Redis not reachable at {url} ({e})");
                return None;
            }
        };
        Some(Self {
            base: format!("tidings_{test}_{}_", std::process::id()),
            url,
            con,
        })
    }

    /// The broker URL of prefix `name` (one test may use several).
    pub fn url(&self, name: &str) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}prefix={}{name}:", self.url, self.base)
    }
}

impl Drop for RedisPrefix {
    fn drop(&mut self) {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.base))
            .query(&mut self.con)
            .unwrap_or_default();
        for key in keys {
            let _: Result<(), _> = redis::cmd("DEL").arg(key).query(&mut self.con);
        }
    }
}
