//! Redis failing under a running broker: killed and restarted with its
//! append-only file (nothing acked to a producer is lost), and restarted
//! empty (queues and groups come back; workers resume without a restart),
//! and restarted with its data before a deletion (which stays a deletion).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, Error, GroupName, OutgoingMessage, QueueConfig, QueueName, ReceiveOptions,
};
use tidings_redis::RedisBroker;
use tokio::sync::Mutex;

use common::server::RedisServer;

fn q() -> QueueName {
    QueueName::new("jobs").unwrap()
}

/// A Redis of the test's own (with AOF if `aof`), its directory, and a
/// broker URL that gives up after a second.
async fn own_redis(aof: bool) -> Option<(tempfile::TempDir, RedisServer, String)> {
    let dir = tempfile::tempdir().unwrap();
    let server = RedisServer::start(dir.path(), aof).await?;
    let url = format!("{}?timeout=1s", server.url());
    Some((dir, server, url))
}

/// Receives and acks until told to stop, collecting the numbers seen.
fn consumer(
    broker: Arc<RedisBroker>,
    seen: Arc<Mutex<BTreeSet<i64>>>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let group = GroupName::new("workers").unwrap();
        let me = ConsumerName::new("w1").unwrap();
        let mut errors = 0;
        while !stop.load(Ordering::Relaxed) {
            let options = ReceiveOptions::new(50, Duration::from_millis(200));
            match broker.receive(&q(), &group, &me, options).await {
                Ok(got) => {
                    let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
                    {
                        let mut seen = seen.lock().await;
                        for d in &got {
                            let v: serde_json::Value = d.payload.json().unwrap();
                            seen.insert(v["n"].as_i64().unwrap());
                        }
                    }
                    // An ack lost to the outage means a redelivery: fine.
                    let _ = broker.ack(&q(), &group, &ids).await;
                }
                Err(Error::Unavailable(_) | Error::OutcomeUnknown(_) | Error::Storage(_)) => {
                    errors += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("unexpected error: {e}"),
            }
        }
        errors
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acked_to_a_producer_is_lost_when_redis_is_killed() {
    let Some((_dir, mut server, url)) = own_redis(true).await else {
        return;
    };
    let broker = Arc::new(RedisBroker::open(&url).await.unwrap());
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(1),
        ..QueueConfig::default()
    };
    broker.create_queue(&q(), config).await.unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = consumer(broker.clone(), seen.clone(), stop.clone());

    let mut acked = BTreeSet::new();
    let mut failures = 0;
    for n in 0..600i64 {
        if n == 200 {
            server.kill().await;
        }
        if n == 203 {
            server.restart().await;
        }
        let message = OutgoingMessage::json(&json!({ "n": n })).unwrap();
        match broker.send(&q(), message).await {
            Ok(_) => {
                acked.insert(n);
            }
            Err(Error::Unavailable(_) | Error::OutcomeUnknown(_) | Error::Storage(_)) => {
                failures += 1
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert!(failures >= 1, "the outage was seen by the producer");
    assert!(
        acked.len() > 300,
        "sends resumed after the restart: {}",
        acked.len()
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let missing: Vec<i64> = acked.difference(&*seen.lock().await).copied().collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} acked sends never delivered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    worker.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_resume_when_redis_restarts_empty() {
    let Some((_dir, mut server, url)) = own_redis(false).await else {
        return;
    };
    let producer = RedisBroker::open(&url).await.unwrap();
    let worker_broker = Arc::new(RedisBroker::open(&url).await.unwrap());
    producer
        .create_queue(&q(), QueueConfig::default())
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let worker = consumer(worker_broker.clone(), seen.clone(), stop.clone());
    let send = |n: i64| {
        let producer = &producer;
        async move {
            producer
                .send(&q(), OutgoingMessage::json(&json!({ "n": n })).unwrap())
                .await
        }
    };
    send(1).await.unwrap();
    wait_for(&seen, 1).await;

    server.kill().await;
    // Nothing answers: unreachable, or (the connection dropped with the
    // script sent) an unknown outcome.
    assert!(matches!(
        send(2).await,
        Err(Error::Unavailable(_) | Error::OutcomeUnknown(_))
    ));
    server.restart().await;
    // The queue is gone with Redis' memory: the producer creates it again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while send(3).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "sends never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The worker, never restarted, gets the group back and the message.
    wait_for(&seen, 3).await;
    stop.store(true, Ordering::Relaxed);
    let errors = worker.await.unwrap();
    assert!(errors < 200, "a hot error loop: {errors} errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_deleted_after_a_restart_that_kept_the_data_stays_deleted() {
    let Some((_dir, mut server, url)) = own_redis(true).await else {
        return;
    };
    let knew = RedisBroker::open(&url).await.unwrap();
    knew.create_queue(&q(), QueueConfig::default())
        .await
        .unwrap();
    let queue = q();
    let send = || knew.send(&queue, OutgoingMessage::json(&json!({ "n": 1 })).unwrap());
    send().await.unwrap();

    // A new run id, the same data; then someone deletes the queue.
    server.kill().await;
    server.restart().await;
    let other = RedisBroker::open(&url).await.unwrap();
    other.delete_queue(&q()).await.unwrap();

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match send().await {
            Err(Error::QueueNotFound(_)) => break,
            Err(Error::Unavailable(_) | Error::OutcomeUnknown(_)) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "Redis never came back"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("the deleted queue must stay deleted, got {other:?}"),
        }
    }
    assert!(!other.list_queues().await.unwrap().contains(&q()));
}

async fn wait_for(seen: &Mutex<BTreeSet<i64>>, n: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !seen.lock().await.contains(&n) {
        assert!(std::time::Instant::now() < deadline, "{n} never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
