//! A message that crashes its consumer's process, every time, as soon as it
//! is handed out: `max_deliveries` still bounds it. Each receive writes its
//! deliveries (one receipt for the batch) before the handler runs, so after
//! `max_deliveries` crashes the message goes to the dead-letter queue and
//! the consumer works again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, GroupName, OutgoingMessage, QueueConfig, QueueName, ReceiveOptions,
};
use tidings_embedded::EmbeddedBroker;

/// Set in the child's environment to the data directory it works in.
const CHILD_DIR: &str = "TIDINGS_POISON_CHILD_DIR";
/// Set in the child's environment to how many messages a receive takes.
const CHILD_BATCH: &str = "TIDINGS_POISON_CHILD_BATCH";

const MAX_DELIVERIES: u32 = 3;

fn names() -> (QueueName, GroupName) {
    (
        QueueName::new("poison").unwrap(),
        GroupName::new("g").unwrap(),
    )
}

fn config() -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_millis(300),
        max_deliveries: MAX_DELIVERIES,
        ..QueueConfig::default()
    }
}

/// The consumer: acks every message but the poison one, on which the process
/// aborts at once (no destructor runs, nothing is flushed: as kill -9 from
/// the engine's view). Ends normally once nothing comes for a while.
#[test]
fn poison_child() {
    common::as_child(CHILD_DIR, |dir| async move {
        let broker = EmbeddedBroker::open(&dir).unwrap();
        let (queue, group) = names();
        let me = ConsumerName::new("worker").unwrap();
        let batch = std::env::var(CHILD_BATCH).unwrap().parse().unwrap();
        loop {
            // Longer than the visibility timeout: a delivery left by a crash comes back.
            let options = ReceiveOptions::new(batch, Duration::from_millis(1500));
            let got = broker.receive(&queue, &group, &me, options).await.unwrap();
            if got.is_empty() {
                break;
            }
            for d in got {
                if d.payload.json::<serde_json::Value>().unwrap()["poison"] == true {
                    std::process::abort();
                }
                broker.ack(&queue, &group, &[d.id]).await.unwrap();
            }
        }
        broker.close();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_crashes_its_consumer_is_dead_lettered_after_max_deliveries() {
    // One message per receive: the poison between two good ones.
    crash_until_dead_lettered(
        1,
        [json!({"n": 1}), json!({"poison": true}), json!({"n": 2})],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_crashes_its_consumer_in_a_batch_is_dead_lettered_after_max_deliveries() {
    // The whole batch in one receive (one receipt): the good ones are acked
    // before the poison crashes the process.
    crash_until_dead_lettered(
        3,
        [json!({"n": 1}), json!({"n": 2}), json!({"poison": true})],
    )
    .await;
}

async fn crash_until_dead_lettered(batch: usize, sent: [serde_json::Value; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let (queue, group) = names();
    {
        let broker = EmbeddedBroker::open(dir.path()).unwrap();
        broker.create_queue(&queue, config()).await.unwrap();
        let messages = sent
            .iter()
            .map(|v| OutgoingMessage::json(v).unwrap())
            .collect();
        broker.send_batch(&queue, messages).await.unwrap();
        broker.close();
    }
    let mut crashes = 0;
    loop {
        let status = common::child("poison_child", CHILD_DIR, dir.path())
            .env(CHILD_BATCH, batch.to_string())
            .status()
            .unwrap();
        if status.success() {
            break;
        }
        crashes += 1;
        assert!(
            crashes <= 2 * MAX_DELIVERIES,
            "the consumer crashed {crashes} times on one message: max_deliveries does not bound it"
        );
    }
    assert_eq!(crashes, MAX_DELIVERIES, "one crash per delivery, no more");

    let broker = EmbeddedBroker::open(dir.path()).unwrap();
    let letters = broker.dead_letters(&queue, None, 10).await.unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].payload.json::<serde_json::Value>().unwrap(),
        json!({"poison": true})
    );
    assert_eq!(letters[0].attempts, MAX_DELIVERIES);
    let info = broker.queue_info(&queue).await.unwrap();
    assert_eq!(info.length, 0, "the others were handled and acked");
    let me = ConsumerName::new("after").unwrap();
    let options = ReceiveOptions::new(10, Duration::ZERO);
    assert!(
        broker
            .receive(&queue, &group, &me, options)
            .await
            .unwrap()
            .is_empty()
    );
}
