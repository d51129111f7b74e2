//! Three `tidings serve` processes on one shared store (a Redis prefix, a
//! PostgreSQL schema) under a steady publish load, each stopped in turn and
//! started again (issue 18) — killed with SIGKILL, or stopped with SIGTERM
//! as a rolling restart does: a client that moves to the next process on a
//! connection error never sees a 5xx, every event accepted is delivered to
//! every subscription, and an ordered subscription (delivered by the holder
//! of its lease) keeps its order across each takeover. Killed in turn on
//! a Redis Cluster of three nodes too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{StatusCode, Uri};
use common::{RedisPrefix, free_port, spawn_on, wait_ready};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Short, so a killed holder's work comes back quickly: in flight, after
/// the attempt timeout plus 5 s; an ordered subscription's lease, after 1 s.
const FLAGS: [&str; 4] = ["--delivery-timeout", "1s", "--ordered-lease", "1s"];

/// One publish: to each process in turn until one answers (a connection
/// error moves to the next); the deduper makes a retried publish return
/// the event the first one stored. Returns the status and the event id.
async fn publish(http: &reqwest::Client, bases: &[String], n: u64, first: usize) -> (u16, String) {
    let body = json!({"action": "shop.sold", "deduper": format!("n-{n}"), "payload": {"n": n}});
    for turn in 0..bases.len() * 20 {
        let base = &bases[(first + turn) % bases.len()];
        let sent = http
            .post(format!("{base}/v1/events"))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await;
        let Ok(r) = sent else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let status = r.status().as_u16();
        let answer: Value =
            serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
        return (
            status,
            answer["event"].as_str().unwrap_or_default().to_owned(),
        );
    }
    panic!("no process answered publish {n}");
}

/// How each process is stopped.
#[derive(Clone, Copy, Debug)]
enum Stop {
    /// SIGKILL: a crash. What it had in flight comes back after the
    /// visibility timeout; its leases, after their time to live.
    Kill,
    /// SIGTERM: a graceful stop. It stops taking requests, finishes its
    /// attempts under way and lets its leases go.
    Term,
}

impl Stop {
    fn apply(self, child: &mut Child) {
        match self {
            Stop::Kill => child.kill().unwrap(),
            Stop::Term => {
                let sent = std::process::Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status()
                    .unwrap();
                assert!(sent.success(), "kill -TERM failed");
                // A graceful stop ends by itself: at most an attempt's
                // timeout (1 s here) after the signal, give or take.
                for _ in 0..300 {
                    if child.try_wait().unwrap().is_some() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                let status = child.try_wait().unwrap();
                assert!(status.is_some(), "still running 15 s after SIGTERM");
                assert!(
                    status.is_some_and(|s| s.success()),
                    "SIGTERM: exited with {status:?}"
                );
            }
        }
    }
}

/// The servers, killed however the test ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn stopped_in_turn_under_load(broker: &str, how: Stop) {
    // The receiver: (handler path, n) of every delivery, in arrival order.
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, u64)>();
    let app = axum::Router::new().fallback(move |uri: Uri, body: Bytes| {
        let tx = tx.clone();
        async move {
            let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let n = event["payload"]["n"]
                .as_u64()
                .or_else(|| event["n"].as_u64())
                .unwrap_or(u64::MAX);
            let _ = tx.send((uri.path().to_owned(), n));
            StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let bases: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut children = Processes(ports.iter().map(|p| spawn_on(broker, *p, &FLAGS)).collect());
    for base in &bases {
        wait_ready(&http, base).await;
    }
    let b0 = &bases[0];
    post(
        &http,
        format!("{b0}/v1/applications"),
        json!({"application": "shop", "address": "http://shop.invalid"}),
    )
    .await;
    post(
        &http,
        format!("{b0}/v1/applications"),
        json!({"application": "mailer", "address": address}),
    )
    .await;
    post(
        &http,
        format!("{b0}/v1/actions"),
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
    )
    .await;
    post(
        &http,
        format!("{b0}/v1/subscriptions"),
        json!({"application": "mailer", "action": "shop.sold", "handler": "/any"}),
    )
    .await;
    post(&http, format!("{b0}/v1/subscriptions"), json!({"application": "mailer", "action": "shop.sold", "handler": "/ordered", "ordered": true})).await;

    // Every process has heard of both subscriptions once it fans out to
    // two (those probes carry no `n` and are not counted).
    for base in &bases {
        loop {
            let r = http
                .post(format!("{base}/v1/events"))
                .header("content-type", "application/json")
                .body(r#"{"action": "shop.sold", "payload": {"probe": true}}"#)
                .send()
                .await
                .unwrap();
            let answer: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            if answer["fanout"] == json!(2) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Publishing, one event at a time, spread over the processes.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (http, bases, stop) = (http.clone(), bases.clone(), stop.clone());
        tokio::spawn(async move {
            let mut accepted = BTreeMap::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (status, event) = publish(&http, &bases, n, n as usize).await;
                assert!(status < 500, "publish {n} answered {status}");
                if status == 201 || status == 200 {
                    accepted.insert(n, event);
                }
                n += 1;
            }
            accepted
        })
    };
    // The ordered subscription has an owner, one of the three.
    let cluster = |i: usize| {
        let (http, base) = (http.clone(), bases[i].clone());
        async move {
            let r = http.get(format!("{base}/v1/cluster")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).unwrap()
        }
    };
    let ids: Vec<String> = {
        let view = cluster(0).await;
        view["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_owned())
            .collect()
    };
    loop {
        let view = cluster(0).await;
        if let Some(owner) = view["ordered"][0]["process"].as_str() {
            assert!(ids.iter().any(|id| id == owner), "{view}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, port) in ports.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let stopped = cluster(i).await["this"].as_str().unwrap().to_owned();
        how.apply(&mut children.0[i]);
        children.0[i].wait().unwrap();
        if let Stop::Term = how {
            // Gone from the list at once (a killed one stays, not live).
            let view = cluster((i + 1) % 3).await;
            let listed = view["processes"].as_array().unwrap();
            assert!(listed.iter().all(|p| p["id"] != json!(stopped)), "{view}");
        }
        children.0[i] = spawn_on(broker, *port, &FLAGS);
        wait_ready(&http, &bases[i]).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let accepted = publisher.await.unwrap();
    assert!(
        accepted.len() > 20,
        "too few events published: {}",
        accepted.len()
    );

    // Every accepted event reaches both subscriptions; the ordered one
    // sees them in publish order (a redelivery repeats only the last one).
    let mut any = BTreeMap::<u64, usize>::new();
    let mut ordered: Vec<u64> = Vec::new();
    let wanted = |any: &BTreeMap<u64, usize>, ordered: &Vec<u64>| {
        accepted
            .keys()
            .all(|n| any.contains_key(n) && ordered.contains(n))
    };
    while !wanted(&any, &ordered) {
        let (path, n) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap_or_else(|_| {
                let missing: Vec<_> = accepted
                    .keys()
                    .filter(|n| !any.contains_key(n) || !ordered.contains(n))
                    .collect();
                panic!("deliveries missing after 30 s: {missing:?}")
            })
            .unwrap();
        if n == u64::MAX {
            continue; // a probe
        }
        match path.as_str() {
            "/any" => *any.entry(n).or_default() += 1,
            "/ordered" => {
                if let Some(last) = ordered.last() {
                    assert!(
                        n >= *last,
                        "ordered subscription: {n} after {last} (so far {ordered:?})"
                    );
                }
                ordered.push(n);
            }
            other => panic!("unexpected handler {other}"),
        }
    }
    drop(children);
}

async fn on_postgresql(how: Stop) {
    let url = tidings_postgres::testing::postgres_url();
    if let Err(e) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
        tidings_postgres::testing::skip_or_fail::<()>(&e);
        return;
    }
    let schema = tidings_postgres::testing::TestSchema::fresh();
    stopped_in_turn_under_load(&schema.url(), how).await;
}

async fn on_redis(how: Stop) {
    // A prefix of each test's own: dropping it deletes its keys.
    let Some(redis) = RedisPrefix::new(&format!("failover_{how:?}")) else {
        return;
    };
    stopped_in_turn_under_load(&redis.url("hub"), how).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_killed_in_turn_on_postgresql_lose_nothing_and_keep_order() {
    on_postgresql(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_killed_in_turn_on_redis_lose_nothing_and_keep_order() {
    on_redis(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_killed_in_turn_on_a_redis_cluster_lose_nothing_and_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = common::redis_server::RedisCluster::start(dir.path()).await else {
        return;
    };
    stopped_in_turn_under_load(&cluster.url("hub:{failover}:"), Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_on_postgresql_loses_nothing_and_keeps_order() {
    on_postgresql(Stop::Term).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_restart_on_redis_loses_nothing_and_keeps_order() {
    on_redis(Stop::Term).await;
}
