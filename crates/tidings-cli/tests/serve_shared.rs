//! Three `tidings serve` processes on one shared store (a Redis prefix, a
//! PostgreSQL schema) behave as one hub (issue 18): what is changed through
//! one is seen by the others through the catalog's change feed (a new
//! application and its API key, a rotated key, an action, a subscription,
//! a removed subscription), and an event published through any of them is
//! delivered once; the same on a Redis Cluster of three nodes. A
//! subscription's `concurrency` is a total over the processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use common::{RedisPrefix, free_port, spawn_on, wait_ready};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// How long a change may take to reach the other processes in this test
/// (the measured figure is in docs/benchmarks.md): generous, for a loaded
/// machine; a change that never arrives fails here.
const BOUND: Duration = Duration::from_secs(10);

struct Hubs {
    children: Vec<Child>,
    bases: Vec<String>,
    http: reqwest::Client,
}

impl Drop for Hubs {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Hubs {
    async fn start(broker: &str) -> Self {
        Self::start_with(broker, &[]).await
    }

    async fn start_with(broker: &str, flags: &[&str]) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let mut children = Vec::new();
        let mut bases = Vec::new();
        for _ in 0..3 {
            let port = free_port();
            children.push(spawn_on(broker, port, flags));
            bases.push(format!("http://127.0.0.1:{port}"));
        }
        for base in &bases {
            wait_ready(&http, base).await;
        }
        Self {
            children,
            bases,
            http,
        }
    }

    async fn call(
        &self,
        hub: usize,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.bases[hub]);
        let mut request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        };
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Repeats a call on `hub` until it answers `want`; fails after [`BOUND`].
    async fn until(
        &self,
        hub: usize,
        want: u16,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Value {
        let deadline = Instant::now() + BOUND;
        loop {
            let (status, answer) = self.call(hub, method, path, key, body.clone()).await;
            if status == want {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{method} {path} on process {hub}: still {status} {answer} after {BOUND:?}, want {want}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// One delivery as the receiver saw it.
struct Hit {
    event: String,
    headers: HeaderMap,
    body: Bytes,
}

impl Hit {
    /// Whether its Standard Webhooks signature is valid for `signing_key`
    /// (`whsec_` and base64).
    fn signed_with(&self, signing_key: &str) -> bool {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(signing_key.trim_start_matches("whsec_"))
            .unwrap();
        let header = |name: &str| {
            self.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let Ok(timestamp) = header("webhook-timestamp").parse::<u64>() else {
            return false;
        };
        let expected =
            tidings_hub::signature::standard(&key, &header("webhook-id"), timestamp, &self.body);
        header("webhook-signature")
            .split(' ')
            .any(|given| given == expected)
    }
}

/// A webhook receiver: sends every delivery.
async fn receiver() -> (String, mpsc::UnboundedReceiver<Hit>) {
    let (tx, rx) = mpsc::unbounded_channel::<Hit>();
    let app = axum::Router::new().fallback(move |headers: HeaderMap, body: Bytes| {
        let tx = tx.clone();
        async move {
            if let Some(event) = headers
                .get("x-amebo-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
            {
                let _ = tx.send(Hit {
                    event,
                    headers,
                    body,
                });
            }
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, rx)
}

async fn behave_as_one_hub(broker: &str) {
    let hubs = Hubs::start(broker).await;
    let (address, mut delivered) = receiver().await;

    // Each process lists all three, live, and itself as `this`.
    let mut ids = Vec::new();
    for hub in [0, 1, 2] {
        let (s, cluster) = hubs.call(hub, "GET", "/v1/cluster", None, None).await;
        assert_eq!(s, 200, "{cluster}");
        let processes = cluster["processes"].as_array().unwrap();
        assert_eq!(processes.len(), 3, "process {hub}: {cluster}");
        assert!(
            processes.iter().all(|p| p["live"] == json!(true)),
            "{cluster}"
        );
        let this: Vec<&Value> = processes
            .iter()
            .filter(|p| p["this"] == json!(true))
            .collect();
        assert_eq!(this.len(), 1, "{cluster}");
        assert_eq!(this[0]["id"], cluster["this"]);
        let mut listed: Vec<String> = processes
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect();
        listed.sort();
        ids.push((cluster["this"].as_str().unwrap().to_owned(), listed));
    }
    assert!(ids.windows(2).all(|w| w[0].1 == w[1].1), "{ids:?}");
    assert!(ids.windows(2).all(|w| w[0].0 != w[1].0), "{ids:?}");

    // An application made through process 0: its key works on 1 and 2.
    let (s, shop) = hubs
        .call(
            0,
            "POST",
            "/v1/applications",
            None,
            Some(json!({"application": "shop", "address": "http://shop.invalid"})),
        )
        .await;
    assert_eq!(s, 201, "{shop}");
    let first_key = shop["apikey"].as_str().unwrap().to_owned();
    for hub in [1, 2] {
        hubs.until(hub, 200, "GET", "/v1/events", Some(&first_key), None)
            .await;
    }
    // A new key minted on 0: the old one stops working on 1 and 2.
    let (s, minted) = hubs
        .call(0, "POST", "/v1/applications/shop/apikey", None, None)
        .await;
    assert_eq!(s, 200, "{minted}");
    let key = minted["apikey"].as_str().unwrap().to_owned();
    for hub in [1, 2] {
        hubs.until(hub, 401, "GET", "/v1/events", Some(&first_key), None)
            .await;
        hubs.until(hub, 200, "GET", "/v1/events", Some(&key), None)
            .await;
    }
    // The cluster is the admin's to see.
    let (s, body) = hubs.call(1, "GET", "/v1/cluster", Some(&key), None).await;
    assert_eq!(s, 403, "{body}");

    // An action and a subscription made through 0; events published
    // through 1 and 2 are delivered once each.
    let (s, body) = hubs
        .call(
            0,
            "POST",
            "/v1/applications",
            None,
            Some(json!({"application": "mailer", "address": address})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, body) = hubs
        .call(0, "POST", "/v1/actions", None, Some(json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}})))
        .await;
    assert_eq!(s, 201, "{body}");
    let (s, sub) = hubs
        .call(
            0,
            "POST",
            "/v1/subscriptions",
            None,
            Some(json!({"application": "mailer", "action": "shop.sold", "handler": "/sold"})),
        )
        .await;
    assert_eq!(s, 201, "{sub}");
    let sub_id = sub["subscription"].as_str().unwrap().to_owned();
    // Each of 1 and 2 knows the action once it accepts an event of it; and
    // the subscription, once it delivers one (its fan-out counts it).
    let mut published = std::collections::BTreeSet::new();
    for hub in [1, 2] {
        let deadline = Instant::now() + BOUND;
        loop {
            let event = hubs
                .until(
                    hub,
                    201,
                    "POST",
                    "/v1/events",
                    Some(&key),
                    Some(json!({"action": "shop.sold", "payload": {"hub": hub}})),
                )
                .await;
            published.insert(event["event"].as_str().unwrap().to_owned());
            if event["fanout"] == json!(1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "process {hub} never heard of the subscription"
            );
        }
        for n in 0..20 {
            let event = hubs
                .until(
                    hub,
                    201,
                    "POST",
                    "/v1/events",
                    Some(&key),
                    Some(json!({"action": "shop.sold", "payload": {"hub": hub, "n": n}})),
                )
                .await;
            assert_eq!(event["fanout"], json!(1), "{event}");
            published.insert(event["event"].as_str().unwrap().to_owned());
        }
    }
    // Events published before the subscription reached a process went to
    // nobody; every other one arrives exactly once.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    let want = 40;
    let signing_key = sub["signing_key"].as_str().unwrap().to_owned();
    while seen.len() < want {
        let hit = tokio::time::timeout(BOUND, delivered.recv())
            .await
            .expect("a delivery is missing")
            .unwrap();
        let id = hit.event.clone();
        assert!(published.contains(&id), "delivered an unknown event {id}");
        // Signed with the subscription's key, whichever process sent it.
        assert!(hit.signed_with(&signing_key), "bad signature on {id}");
        *seen.entry(id).or_default() += 1;
    }
    // Anything delivered twice would arrive within the attempt timeout.
    let late = tokio::time::timeout(Duration::from_millis(500), delivered.recv()).await;
    if let Ok(Some(hit)) = late {
        *seen.entry(hit.event).or_default() += 1;
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "delivered more than once: {seen:?}"
    );

    // The subscription deactivated through 0: 1 and 2 stop fanning out to it.
    let (s, body) = hubs
        .call(
            0,
            "DELETE",
            &format!("/v1/subscriptions/{sub_id}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 202, "{body}");
    for hub in [1, 2] {
        let deadline = Instant::now() + BOUND;
        loop {
            let event = hubs
                .until(
                    hub,
                    201,
                    "POST",
                    "/v1/events",
                    Some(&key),
                    Some(json!({"action": "shop.sold", "payload": {"after": hub}})),
                )
                .await;
            if event["fanout"] == json!(0) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "process {hub} never heard of the deactivation"
            );
        }
    }
    // The action removed through 0 (with its subscriptions and their
    // queues): publishing it through 1 and 2 right away is refused as on 0,
    // even before they hear of it (a queue found gone makes a process read
    // the action and its subscriptions again).
    let (s, body) = hubs
        .call(0, "DELETE", "/v1/actions/shop.sold", None, None)
        .await;
    assert!((200..300).contains(&s), "{s} {body}");
    for hub in [0, 1, 2] {
        let (s, body) = hubs
            .call(
                hub,
                "POST",
                "/v1/events",
                Some(&key),
                Some(json!({"action": "shop.sold", "payload": {}})),
            )
            .await;
        assert_eq!(s, 422, "process {hub}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_processes_on_one_postgresql_schema_behave_as_one_hub() {
    let url = tidings_postgres::testing::postgres_url();
    if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        tidings_postgres::testing::skip_or_fail::<()>(&e);
        return;
    }
    let schema = tidings_postgres::testing::TestSchema::fresh();
    behave_as_one_hub(&schema.url()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_processes_on_one_redis_prefix_behave_as_one_hub() {
    let Some(redis) = RedisPrefix::new("shared") else {
        return;
    };
    behave_as_one_hub(&redis.url("hub")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn three_processes_on_one_redis_cluster_behave_as_one_hub() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = common::redis_server::RedisCluster::start(dir.path()).await else {
        return;
    };
    // One hash tag: a publish is one transaction over records and queues.
    behave_as_one_hub(&cluster.url("hub:{shared}:")).await;
}

/// A subscription with `concurrency: 3` on three processes: at most three
/// requests in flight at its endpoint in all (each process takes one lane),
/// not three per process.
#[tokio::test(flavor = "multi_thread")]
async fn a_subscriptions_concurrency_is_a_total_over_the_processes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let Some(redis) = RedisPrefix::new("concurrency") else {
        return;
    };
    let url = redis.url("hub");
    // The receiver holds each request 200 ms, counting those in flight.
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (tx, mut delivered) = mpsc::unbounded_channel::<()>();
    let app = {
        let (now, most) = (now.clone(), most.clone());
        axum::Router::new().fallback(move || {
            let (now, most, tx) = (now.clone(), most.clone(), tx.clone());
            async move {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(200)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(());
                StatusCode::OK
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let hubs = Hubs::start_with(&url, &["--heartbeat", "100ms"]).await;
    // Every process has counted the three.
    for hub in [0, 1, 2] {
        let deadline = Instant::now() + BOUND;
        loop {
            let r = hubs
                .http
                .get(format!("{}/metrics", hubs.bases[hub]))
                .send()
                .await
                .unwrap();
            let text = r.text().await.unwrap();
            if text.contains("tidings_cluster_processes_live 3") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "process {hub} never counted three"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for (path, body) in [
        (
            "/v1/applications",
            json!({"application": "shop", "address": "http://shop.invalid"}),
        ),
        (
            "/v1/applications",
            json!({"application": "mailer", "address": address}),
        ),
        (
            "/v1/actions",
            json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
        ),
        (
            "/v1/subscriptions",
            json!({"application": "mailer", "action": "shop.sold", "handler": "/sold", "concurrency": 3}),
        ),
    ] {
        let (s, answer) = hubs.call(0, "POST", path, None, Some(body)).await;
        assert_eq!(s, 201, "{path}: {answer}");
    }
    // Every process delivers it: wait until each fans out to it.
    for hub in [0, 1, 2] {
        let deadline = Instant::now() + BOUND;
        loop {
            let (_, event) = hubs
                .call(
                    hub,
                    "POST",
                    "/v1/events",
                    None,
                    Some(json!({"action": "shop.sold", "payload": {}})),
                )
                .await;
            if event["fanout"] == json!(1) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "process {hub} never heard of the subscription"
            );
        }
    }
    let mut published = 3;
    for n in 0..24 {
        let (s, answer) = hubs
            .call(
                n % 3,
                "POST",
                "/v1/events",
                None,
                Some(json!({"action": "shop.sold", "payload": {"n": n}})),
            )
            .await;
        assert_eq!(s, 201, "{answer}");
        published += 1;
    }
    for _ in 0..published {
        tokio::time::timeout(Duration::from_secs(30), delivered.recv())
            .await
            .expect("not every event was delivered within 30 s");
    }
    let most = most.load(Ordering::SeqCst);
    assert!(
        most <= 3,
        "{most} requests in flight at once; the subscription allows 3"
    );
}
