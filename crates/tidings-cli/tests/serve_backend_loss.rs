//! A `tidings serve` process that loses its backend (issue 18): reached
//! through a TCP relay the test cuts (every connection closed, new ones
//! refused), it reports not ready (`/readyz` 503), so a load balancer stops
//! sending to it, and answers requests that need the store with 503, not
//! 500; once the relay is back it is ready again and publishes. A key
//! revoked through another process while it was cut off stops working on it
//! once it is back (it catches up, it does not keep its old catalog).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{RedisPrefix, free_port, spawn_on, wait_ready};
use reqwest::Url;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// How long the process may take to notice (its pool's timeouts): generous.
const BOUND: Duration = Duration::from_secs(30);

/// Relays connections on `port` to `target` while it runs; dropping it (or
/// [`Relay::cut`]) closes them all.
struct Relay {
    port: u16,
    target: SocketAddr,
    tasks: Option<JoinSet<()>>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Self {
        let mut relay = Self {
            port: free_port(),
            target,
            tasks: None,
        };
        relay.resume().await;
        relay
    }

    /// Accepts and relays again, on the same port.
    async fn resume(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let target = self.target;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        self.tasks = Some(tasks);
    }

    /// Closes every relayed connection and refuses new ones.
    async fn cut(&mut self) {
        if let Some(mut tasks) = self.tasks.take() {
            tasks.shutdown().await;
        }
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn status(http: &reqwest::Client, base: &str, method: &str, path: &str) -> (u16, Value) {
    let request = match method {
        "GET" => http.get(format!("{base}{path}")),
        _ => http
            .post(format!("{base}{path}"))
            .header("content-type", "application/json")
            .body(r#"{"action": "shop.sold", "payload": {}}"#),
    };
    let r = request.send().await.unwrap();
    let status = r.status().as_u16();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or(Value::Null);
    (status, body)
}

/// Polls `path` until it answers `want`; fails after [`BOUND`].
async fn until(http: &reqwest::Client, base: &str, method: &str, path: &str, want: u16) -> Value {
    let deadline = Instant::now() + BOUND;
    loop {
        let (s, body) = status(http, base, method, path).await;
        if s == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{method} {path}: still {s} {body} after {BOUND:?}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `url` (a Redis or PostgreSQL URL on 127.0.0.1) through a relay.
async fn through_relay(url: &str) -> (Relay, String) {
    let mut parsed = Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap().to_owned();
    let port = parsed.port().unwrap();
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .unwrap()
        .next()
        .unwrap();
    let relay = Relay::start(target).await;
    parsed.set_host(Some("127.0.0.1")).unwrap();
    parsed.set_port(Some(relay.port)).unwrap();
    (relay, parsed.to_string())
}

async fn loses_and_regains(url: &str) {
    let (mut relay, relayed) = through_relay(url).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _process = Process(spawn_on(&relayed, port, &[]));
    // Another process, reaching the store directly.
    let other_port = free_port();
    let other = format!("http://127.0.0.1:{other_port}");
    let _other = Process(spawn_on(url, other_port, &[]));
    wait_ready(&http, &other).await;
    wait_ready(&http, &base).await;
    let made = http
        .post(format!("{base}/v1/applications"))
        .header("content-type", "application/json")
        .body(r#"{"application": "shop", "address": "http://shop.invalid"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = serde_json::from_slice(&made.bytes().await.unwrap()).unwrap();
    let old_key = made["apikey"].as_str().unwrap().to_owned();
    let answers = |base: String, key: String| {
        let http = http.clone();
        async move {
            http.get(format!("{base}/v1/subscriptions"))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Known to the other process before the cut.
    let deadline = Instant::now() + BOUND;
    while answers(other.clone(), old_key.clone()).await != 200 {
        assert!(
            Instant::now() < deadline,
            "the other process never knew the key"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let action = http
        .post(format!("{base}/v1/actions"))
        .header("content-type", "application/json")
        .body(r#"{"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(action.status(), 201);
    until(&http, &base, "POST", "/v1/events", 201).await;

    relay.cut().await;
    let probe = until(&http, &base, "GET", "/readyz", 503).await;
    assert_eq!(probe["status"], json!("unavailable"), "{probe}");
    assert_eq!(probe["reason"], json!("storage_unreachable"), "{probe}");
    // Requests that need the store: 503 with a JSON body, never a 500.
    let (s, body) = status(&http, &base, "POST", "/v1/events").await;
    assert_eq!(s, 503, "{body}");
    assert!(
        body["message"].is_string() || body["error"].is_string(),
        "{body}"
    );
    // The process itself still answers.
    assert_eq!(status(&http, &base, "GET", "/health").await.0, 200);

    // Meanwhile, the key is replaced through the other process.
    let minted = http
        .post(format!("{other}/v1/applications/shop/apikey"))
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 200);
    let minted: Value = serde_json::from_slice(&minted.bytes().await.unwrap()).unwrap();
    let new_key = minted["apikey"].as_str().unwrap().to_owned();

    relay.resume().await;
    until(&http, &base, "GET", "/readyz", 200).await;
    // Back, it catches up: the old key is refused, the new one works.
    let deadline = Instant::now() + BOUND;
    while answers(base.clone(), old_key.clone()).await != 401 {
        assert!(
            Instant::now() < deadline,
            "the key revoked while it was cut off still works after {BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answers(base.clone(), new_key).await, 200);
    until(&http, &base, "POST", "/v1/events", 201).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_loses_postgresql_is_not_ready_until_it_is_back() {
    let url = tidings_postgres::testing::postgres_url();
    if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        tidings_postgres::testing::skip_or_fail::<()>(&e);
        return;
    }
    let schema = tidings_postgres::testing::TestSchema::fresh();
    // Operations ride out an outage for `retry_for` (15 s by default)
    // before they fail as unavailable; the readiness probe tries once.
    loses_and_regains(&format!("{}&retry_for=2s", schema.url())).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_loses_redis_is_not_ready_until_it_is_back() {
    let Some(redis) = RedisPrefix::new("loss") else {
        return;
    };
    loses_and_regains(&redis.url("hub")).await;
}
