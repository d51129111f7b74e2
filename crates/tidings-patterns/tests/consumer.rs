//! The consumer handle: room for at most `max_in_flight` unsettled messages,
//! acks sent with the next receive or at stop, nacks at once, a dropped
//! message back after the visibility timeout, a stop that waits for what
//! was handed out.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, GroupName, Nack, OutgoingMessage, QueueConfig, QueueName,
};
use tidings_embedded::EmbeddedBroker;
use tidings_patterns::consumer::{Consumer, ConsumerOptions, Queue};

async fn queue_of(n: i64, config: QueueConfig) -> (Arc<dyn Broker>, Queue) {
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let name = QueueName::new("jobs").unwrap();
    broker.create_queue(&name, config).await.unwrap();
    let messages = (0..n)
        .map(|i| OutgoingMessage::json(&json!({ "n": i })).unwrap())
        .collect();
    broker.send_batch(&name, messages).await.unwrap();
    (broker.clone(), Queue::new(broker, name))
}

fn options(max_in_flight: usize) -> ConsumerOptions {
    ConsumerOptions {
        max_in_flight,
        poll: Duration::from_millis(50),
        ..ConsumerOptions::default()
    }
}

fn names() -> (GroupName, ConsumerName) {
    (
        GroupName::new("g").unwrap(),
        ConsumerName::new("c").unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_more_than_max_in_flight_unsettled_messages() {
    let (broker, queue) = queue_of(10, QueueConfig::default()).await;
    let (group, me) = names();
    let mut consumer = queue.consumer(group, me, options(3));
    // It is a Stream, too.
    let mut held: Vec<_> = (&mut consumer).take(3).collect().await;
    let info = broker.queue_info(queue.name()).await.unwrap();
    assert_eq!(
        info.groups[0].pending, 3,
        "only what there is room for is taken"
    );
    // Settling one makes room for one more.
    held.remove(0).ack();
    let fourth = Consumer::next(&mut consumer).await.unwrap();
    assert_eq!(fourth.payload.json::<serde_json::Value>().unwrap()["n"], 3);
    held.push(fourth);
    for m in held {
        m.ack();
    }
    consumer.stop().await;
    let info = broker.queue_info(queue.name()).await.unwrap();
    assert_eq!(
        info.length, 6,
        "the four acked are gone, at stop at the latest"
    );
    assert_eq!(info.groups[0].pending, 0, "nothing taken is left in flight");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_apply_at_once_and_a_dropped_message_comes_back() {
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(200),
        ..QueueConfig::default()
    };
    let (broker, queue) = queue_of(2, config).await;
    let (group, me) = names();
    let mut consumer = queue.consumer(group, me, options(1));
    let first = consumer.next().await.unwrap();
    let reason = "bad".to_owned();
    assert!(first.nack(Nack::DeadLetter { reason }).await.unwrap());
    assert_eq!(
        broker.queue_info(queue.name()).await.unwrap().dead_letters,
        1
    );
    let second = consumer.next().await.unwrap();
    let id = second.id.clone();
    drop(second);
    let again = consumer.next().await.unwrap();
    assert_eq!((again.id.clone(), again.delivery_count), (id, 2));
    assert!(again.ack_now().await.unwrap());
    consumer.stop().await;
    assert_eq!(broker.queue_info(queue.name()).await.unwrap().length, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_waits_for_what_was_handed_out_then_acks_it() {
    let (broker, queue) = queue_of(1, QueueConfig::default()).await;
    let (group, me) = names();
    let mut consumer = queue.consumer(group, me, options(4));
    let message = consumer.next().await.unwrap();
    let token = consumer.stop_token();
    let mut stopping = tokio::spawn(consumer.stop());
    token.cancelled().await;
    // Six polls' time: a stop that did not wait for the message would be over.
    let waited = tokio::time::timeout(Duration::from_millis(300), &mut stopping).await;
    assert!(waited.is_err(), "the stop waits for the message");
    // Handled after the stop began: still acked by it.
    message.ack();
    stopping.await.unwrap();
    assert_eq!(broker.queue_info(queue.name()).await.unwrap().length, 0);
}
