//! `tidings serve` on a Redis that stops answering writes for a while
//! (`CLIENT PAUSE ... WRITE`, on a Redis of the test's own): a publish whose
//! script was sent but not answered in time is a 503 that says its outcome
//! is unknown; the event is stored once Redis resumes; a retry with the same
//! `Idempotency-Key` gets that event back instead of a second one, and the
//! key reused for another payload is a conflict.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, wait_ready};
use serde_json::{Value, json};

/// A `redis-server` of the test's own, killed when dropped.
struct OwnRedis {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl OwnRedis {
    /// `None` (skip) where there is no redis-server, except under CI=true.
    fn start() -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "redis-server is required under CI=true: {e}"
                );
                eprintln!("skipped: no redis-server ({e})");
                return None;
            }
        };
        let url = format!("redis://127.0.0.1:{port}");
        let redis = Self {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.connection().is_none() {
            assert!(Instant::now() < deadline, "redis-server never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }

    fn connection(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url.as_str())
            .ok()?
            .get_connection_with_timeout(Duration::from_millis(200))
            .ok()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_write_says_its_outcome_is_unknown_and_a_retry_is_safe() {
    let Some(redis) = OwnRedis::start() else {
        return;
    };
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let broker = format!("{}/?timeout=1s", redis.url);
    let dir = tempfile::tempdir().unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_tidings"))
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("TIDINGS_BROKER", &broker)
        .env("TIDINGS_LOG", "warn")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    wait_ready(&http, &base).await;
    let call = |path: &str, body: Value, key: Option<&str>| {
        let mut request = http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        async move {
            let r = request.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            (status, body)
        }
    };
    let app = json!({"application": "shop", "address": "http://shop.invalid"});
    assert_eq!(call("/v1/applications", app, None).await.0, 201);
    let action =
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}});
    assert_eq!(call("/v1/actions", action, None).await.0, 201);

    // Redis holds writes for 3 s: the publish's script waits, and the
    // server gives up after its 1 s timeout.
    let mut con = redis.connection().unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query(&mut con)
        .unwrap();
    let sale = json!({"action": "shop.sold", "payload": {"order": 1}});
    let (status, body) = call("/v1/events", sale.clone(), Some("order-1")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "outcome_unknown", "{body}");
    assert_eq!(body["outcome"], "unknown", "{body}");
    assert!(body["request_id"].is_string());

    // Once Redis resumes, the write it held is applied: the event is there.
    let stored = {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = http
                .get(format!("{base}/v1/events?deduper=order-1"))
                .send()
                .await
                .unwrap();
            let rows: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            if let Some(id) = rows[0]["event"].as_str() {
                break id.to_owned();
            }
            assert!(Instant::now() < deadline, "the held write never landed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    // The client's retry with the same key: that event, not a second one.
    let (status, body) = call("/v1/events", sale, Some("order-1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["duplicate"], true);
    assert_eq!(body["event"], stored.as_str());
    // The same key for another payload: a conflict, not a silent duplicate.
    let other = json!({"action": "shop.sold", "payload": {"order": 2}});
    let (status, body) = call("/v1/events", other, Some("order-1")).await;
    assert_eq!(status, 409, "{body}");

    server.kill().unwrap();
    server.wait().unwrap();
}
