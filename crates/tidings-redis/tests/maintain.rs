//! `Broker::maintain` on Redis: messages of queues nobody reads are
//! expired (dropped or dead-lettered) by the timer, not only when a
//! consumer next reads the queue, in bounded steps.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tidings_core::{Broker, ExpiryAction, OutgoingMessage, QueueConfig, QueueName};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintain_applies_time_to_idle_queues() {
    let Some(fixture) = common::fixture().await else {
        return;
    };
    let broker = &fixture.broker;
    let ttl = Duration::from_secs(2);
    let dropping = QueueName::new("dropping").unwrap();
    let dead = QueueName::new("dead").unwrap();
    for (queue, on_expiry, n) in [
        // More than one step's worth on the first queue.
        (&dropping, ExpiryAction::Drop, 2_500),
        (&dead, ExpiryAction::DeadLetter, 10),
    ] {
        let config = QueueConfig {
            default_ttl: Some(ttl),
            on_expiry,
            ..QueueConfig::default()
        };
        broker.create_queue(queue, config).await.unwrap();
        let messages = (0..n).map(|i| OutgoingMessage::json(&i).unwrap()).collect();
        broker.send_batch(queue, messages).await.unwrap();
    }
    assert_eq!(broker.maintain().await.unwrap(), 0, "nothing due yet");
    assert_eq!(broker.queue_info(&dropping).await.unwrap().length, 2_500);
    // The rule under test is time on Redis's own clock: let it pass.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert_eq!(broker.maintain().await.unwrap(), 2_510);
    assert_eq!(broker.queue_info(&dropping).await.unwrap().length, 0);
    let info = broker.queue_info(&dead).await.unwrap();
    assert_eq!((info.length, info.dead_letters), (0, 10));
    assert_eq!(broker.maintain().await.unwrap(), 0, "nothing left");
}
