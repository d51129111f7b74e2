//! The Redis engine on a Redis Cluster of three primaries started by the
//! test: the conformance suite (under a prefix with a namespace hash tag, so
//! transactions across queues are possible), and queues in different slots
//! (per-queue hash tags), where a transaction across them is refused; and a
//! node restarted without its data, under a running producer and worker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, Error, GroupName, OutgoingMessage, QueueConfig, QueueName,
    ReceiveOptions, Transaction,
};
use tidings_redis::RedisBroker;
use tidings_redis::keys::slot;

use common::server::RedisCluster;

fn tag() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = RedisCluster::start(dir.path()).await else {
        return;
    };
    let fixture = || async {
        RedisBroker::open(&cluster.url(&format!("t:{{{}}}:", tag())))
            .await
            .unwrap()
    };
    tidings_core::conformance_tests!(in_sequence: fixture()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_spread_over_slots_and_transactions_stay_in_one() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cluster) = RedisCluster::start(dir.path()).await else {
        return;
    };
    let prefix = format!("t{}:", tag());
    let b = RedisBroker::open(&cluster.url(&prefix)).await.unwrap();
    // Find two queues whose keys land in different slots.
    let names: Vec<QueueName> = (0..20)
        .map(|i| QueueName::new(format!("q{i}")).unwrap())
        .collect();
    let first = &names[0];
    let first_slot = slot(&b.layout().queue(first).unwrap().stream);
    let other = names
        .iter()
        .find(|n| slot(&b.layout().queue(n).unwrap().stream) != first_slot)
        .unwrap();
    let (group, me) = (
        GroupName::new("g").unwrap(),
        ConsumerName::new("c").unwrap(),
    );
    for q in [first, other] {
        b.create_queue(q, QueueConfig::default()).await.unwrap();
        b.send(q, OutgoingMessage::json(&json!({"q": q.as_str()})).unwrap())
            .await
            .unwrap();
        let got = b
            .receive(
                q,
                &group,
                &me,
                ReceiveOptions::new(10, Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(b.ack(q, &group, &[got[0].id.clone()]).await.unwrap(), 1);
    }
    let mut listed = b.list_queues().await.unwrap();
    listed.sort();
    let mut want = vec![first.clone(), other.clone()];
    want.sort();
    assert_eq!(listed, want);
    // Within one queue a transaction works; across slots it is refused.
    let mut tx = Transaction::new();
    tx.send(first.clone(), OutgoingMessage::json(&json!(1)).unwrap())
        .send(first.clone(), OutgoingMessage::json(&json!(2)).unwrap());
    assert_eq!(b.commit(tx).await.unwrap().len(), 2);
    let mut tx = Transaction::new();
    tx.send(first.clone(), OutgoingMessage::json(&json!(1)).unwrap())
        .send(other.clone(), OutgoingMessage::json(&json!(2)).unwrap());
    let err = b.commit(tx).await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("one Redis Cluster slot")),
        "{err}"
    );
    assert_eq!(
        b.queue_info(other).await.unwrap().length,
        0,
        "nothing was applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_resumes_when_its_cluster_node_restarts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cluster) = RedisCluster::start(dir.path()).await else {
        return;
    };
    let url = format!("{}&timeout=1s", cluster.url(&format!("t{}:", tag())));
    let producer = RedisBroker::open(&url).await.unwrap();
    let worker = RedisBroker::open(&url).await.unwrap();
    let queue = QueueName::new("jobs").unwrap();
    producer
        .create_queue(&queue, QueueConfig::default())
        .await
        .unwrap();
    let (group, me) = (
        GroupName::new("g").unwrap(),
        ConsumerName::new("c").unwrap(),
    );
    let send = |n: i64| producer.send(&queue, OutgoingMessage::json(&json!({ "n": n })).unwrap());
    send(1).await.unwrap();
    let options = || ReceiveOptions::new(10, Duration::from_millis(200));
    let got = worker
        .receive(&queue, &group, &me, options())
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    worker
        .ack(&queue, &group, &[got[0].id.clone()])
        .await
        .unwrap();

    let stream = producer.layout().queue(&queue).unwrap().stream;
    cluster.restart_empty(cluster.owner(&stream)).await;

    // The producer finds the queue gone with the node's memory and makes it again.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while let Err(e) = send(2).await {
        assert!(
            std::time::Instant::now() < deadline,
            "sends never resumed: {e}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The worker, never reopened, gets its group back and the message.
    let mut errors = 0;
    loop {
        match worker.receive(&queue, &group, &me, options()).await {
            Ok(got) if !got.is_empty() => {
                let v: serde_json::Value = got[0].payload.json().unwrap();
                assert_eq!(v["n"], 2);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                assert!(errors < 100, "the worker never resumed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert!(std::time::Instant::now() < deadline, "2 never delivered");
    }
}
