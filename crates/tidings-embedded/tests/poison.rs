//! A message that crashes its consumer's process, every time, as soon as it
//! is handed out: `max_deliveries` still bounds it. Each delivery is written
//! before the handler runs, so after `max_deliveries` crashes the message
//! goes to the dead-letter queue and the consumer works again.

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
        loop {
            // Longer than the visibility timeout: a delivery left by a crash comes back.
            let options = ReceiveOptions::new(1, Duration::from_millis(1500));
            let got = broker.receive(&queue, &group, &me, options).await.unwrap();
            let Some(d) = got.into_iter().next() else {
                break;
            };
            if d.payload.json::<serde_json::Value>().unwrap()["poison"] == true {
                std::process::abort();
            }
            broker.ack(&queue, &group, &[d.id]).await.unwrap();
        }
        broker.close();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_crashes_its_consumer_is_dead_lettered_after_max_deliveries() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, group) = names();
    {
        let broker = EmbeddedBroker::open(dir.path()).unwrap();
        broker.create_queue(&queue, config()).await.unwrap();
        let messages = [json!({"n": 1}), json!({"poison": true}), json!({"n": 2})]
            .iter()
            .map(|v| OutgoingMessage::json(v).unwrap())
            .collect();
        broker.send_batch(&queue, messages).await.unwrap();
        broker.close();
    }
    let mut crashes = 0;
    loop {
        let status = common::child("poison_child", CHILD_DIR, dir.path())
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
