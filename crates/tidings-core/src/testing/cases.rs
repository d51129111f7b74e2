//! The conformance cases, one function per behaviour. Each panics on failure.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    Broker, ConsumerName, DeadLetterSelection, Delivery, Error, ExpiryAction, GroupName, MessageId,
    Nack, OutgoingMessage, Payload, QueueConfig, QueueName, ReceiveOptions, Record, RecordScan,
    Retention, TableName, Transaction,
};

/// Long enough that a correct backend never hits it; a receive that returns
/// because of it has failed to wake.
const PATIENCE: Duration = Duration::from_secs(10);

fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn g(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

fn c(name: &str) -> ConsumerName {
    ConsumerName::new(name).unwrap()
}

fn msg(value: serde_json::Value) -> OutgoingMessage {
    OutgoingMessage::json(&value).unwrap()
}

fn n_of_dead(d: &crate::DeadLetter) -> i64 {
    d.payload.json::<serde_json::Value>().unwrap()["n"]
        .as_i64()
        .unwrap()
}

fn n_of(d: &Delivery) -> i64 {
    d.payload.json::<serde_json::Value>().unwrap()["n"]
        .as_i64()
        .unwrap()
}

async fn queue(b: &dyn Broker, name: &str, config: QueueConfig) -> QueueName {
    let name = q(name);
    b.create_queue(&name, config).await.unwrap();
    name
}

async fn recv(
    b: &dyn Broker,
    queue: &QueueName,
    group: &str,
    consumer: &str,
    max: usize,
    wait: Duration,
) -> Vec<Delivery> {
    b.receive(
        queue,
        &g(group),
        &c(consumer),
        ReceiveOptions::new(max, wait),
    )
    .await
    .unwrap()
}

async fn send_numbers(b: &dyn Broker, queue: &QueueName, range: std::ops::Range<i64>) {
    let batch = range.map(|n| msg(json!({ "n": n }))).collect();
    b.send_batch(queue, batch).await.unwrap();
}

async fn ack_all(b: &dyn Broker, queue: &QueueName, group: &str, got: &[Delivery]) -> u64 {
    let ids: Vec<MessageId> = got.iter().map(|d| d.id.clone()).collect();
    b.ack(queue, &g(group), &ids).await.unwrap()
}

fn short_visibility(ms: u64, max_deliveries: u32) -> QueueConfig {
    QueueConfig {
        visibility_timeout: Duration::from_millis(ms),
        max_deliveries,
        ..QueueConfig::default()
    }
}

pub async fn create_queue_is_idempotent(b: &dyn Broker) {
    let name = q("orders");
    assert!(b.create_queue(&name, QueueConfig::default()).await.unwrap());
    assert!(!b.create_queue(&name, QueueConfig::default()).await.unwrap());
    let other = QueueConfig {
        max_deliveries: 9,
        ..QueueConfig::default()
    };
    assert!(matches!(
        b.create_queue(&name, other).await,
        Err(Error::QueueConfigConflict(_))
    ));
    b.create_queue(&q("audit"), QueueConfig::default())
        .await
        .unwrap();
    assert_eq!(
        b.list_queues().await.unwrap(),
        vec![q("audit"), q("orders")]
    );
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.name, name);
    assert_eq!(info.length, 0);
    assert_eq!(info.config, QueueConfig::default());
}

pub async fn unknown_queue_is_a_typed_error(b: &dyn Broker) {
    let ghost = q("ghost");
    let is_not_found =
        |r: Result<(), Error>| matches!(r, Err(Error::QueueNotFound(n)) if n == "ghost");
    assert!(is_not_found(b.send(&ghost, msg(json!(1))).await.map(drop)));
    assert!(is_not_found(
        b.receive(&ghost, &g("g"), &c("c"), ReceiveOptions::default())
            .await
            .map(drop)
    ));
    assert!(is_not_found(b.queue_info(&ghost).await.map(drop)));
    assert!(is_not_found(b.delete_queue(&ghost).await));
    assert!(is_not_found(b.purge_queue(&ghost).await.map(drop)));
    assert!(is_not_found(b.ack(&ghost, &g("g"), &[]).await.map(drop)));
    assert!(is_not_found(
        b.dead_letters(&ghost, None, 10).await.map(drop)
    ));
    assert!(is_not_found(b.peek(&ghost, None, 10).await.map(drop)));
}

pub async fn peek_shows_messages_without_taking_them(b: &dyn Broker) {
    let name = queue(b, "peeked", QueueConfig::default()).await;
    assert!(b.peek(&name, None, 10).await.unwrap().is_empty());
    for i in 0..3 {
        b.send(&name, msg(json!({ "n": i }))).await.unwrap();
    }
    let all = b.peek(&name, None, 10).await.unwrap();
    let numbers: Vec<serde_json::Value> = all
        .iter()
        .map(|d| d.payload.json::<serde_json::Value>().unwrap()["n"].clone())
        .collect();
    assert_eq!(numbers, vec![json!(0), json!(1), json!(2)]);
    assert!(all.iter().all(|d| d.delivery_count == 0 && d.queue == name));
    // Pages: after the first, one at a time.
    let second = b.peek(&name, Some(&all[0].id), 1).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, all[1].id);
    assert!(
        b.peek(&name, Some(&all[2].id), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Nothing was taken: a receive gets all three, first delivery each.
    let got = b
        .receive(
            &name,
            &g("g"),
            &c("c"),
            ReceiveOptions {
                max_messages: 10,
                ..ReceiveOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|d| d.delivery_count == 1));
    let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
    b.ack(&name, &g("g"), &ids).await.unwrap();
    assert!(
        b.peek(&name, None, 10).await.unwrap().is_empty(),
        "acked by its only group and not retained: gone"
    );
}

pub async fn bad_input_is_rejected(b: &dyn Broker) {
    let name = queue(b, "inputs", QueueConfig::default()).await;
    let huge = "x".repeat(crate::MAX_PAYLOAD_BYTES + 1);
    assert!(matches!(
        OutgoingMessage::json(&huge),
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        b.send(&name, msg(json!(1)).ttl(Duration::ZERO)).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        b.send(&name, msg(json!(1)).dedup_id("")).await,
        Err(Error::InvalidArgument(_))
    ));
    let big_header = msg(json!(1)).header("h", "v".repeat(crate::MAX_HEADERS_BYTES));
    assert!(matches!(
        b.send(&name, big_header).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        b.receive(
            &name,
            &g("g"),
            &c("c"),
            ReceiveOptions::new(0, Duration::ZERO)
        )
        .await,
        Err(Error::InvalidArgument(_))
    ));
    let zero_visibility = QueueConfig {
        visibility_timeout: Duration::ZERO,
        ..QueueConfig::default()
    };
    assert!(matches!(
        b.create_queue(&q("bad-config"), zero_visibility).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(!b.list_queues().await.unwrap().contains(&q("bad-config")));
    // Nothing of the rejected sends was stored.
    assert_eq!(b.queue_info(&name).await.unwrap().length, 0);
}

pub async fn buffered_queue_works_like_any_other(b: &dyn Broker) {
    let config = QueueConfig {
        durability: Some(crate::Durability::Buffered),
        ..QueueConfig::default()
    };
    let name = queue(b, "buffered", config).await;
    send_numbers(b, &name, 0..3).await;
    let got = recv(b, &name, "g", "c", 10, PATIENCE).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(ack_all(b, &name, "g", &got).await, 3);
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.config.durability, Some(crate::Durability::Buffered));
    assert_eq!(info.length, 0);
}

pub async fn send_receive_ack(b: &dyn Broker) {
    let name = queue(b, "orders", QueueConfig::default()).await;
    let before = crate::Timestamp::now();
    let receipt = b
        .send(
            &name,
            msg(json!({"order": 7, "text": "héllo ✓"})).header("trace", "t-1"),
        )
        .await
        .unwrap();
    assert!(!receipt.duplicate);
    let got = recv(b, &name, "billing", "w1", 10, PATIENCE).await;
    assert_eq!(got.len(), 1);
    let d = &got[0];
    assert_eq!(d.id, receipt.id);
    assert_eq!(d.queue, name);
    assert_eq!(
        d.payload.json::<serde_json::Value>().unwrap(),
        json!({"order": 7, "text": "héllo ✓"})
    );
    assert_eq!(d.headers.get("trace").map(String::as_str), Some("t-1"));
    assert_eq!(d.delivery_count, 1);
    assert!(d.enqueued_at >= before && d.enqueued_at <= crate::Timestamp::now());
    assert_eq!(b.queue_info(&name).await.unwrap().groups[0].pending, 1);
    assert_eq!(ack_all(b, &name, "billing", &got).await, 1);
    // Acked twice: the second ack finds nothing pending.
    assert_eq!(ack_all(b, &name, "billing", &got).await, 0);
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.length, 0);
    assert_eq!(info.groups[0].pending, 0);
    assert!(
        recv(b, &name, "billing", "w1", 10, Duration::ZERO)
            .await
            .is_empty()
    );
}

pub async fn batch_send_keeps_order(b: &dyn Broker) {
    let name = queue(b, "batch", QueueConfig::default()).await;
    send_numbers(b, &name, 0..50).await;
    let got = recv(b, &name, "g", "c", 100, PATIENCE).await;
    assert_eq!(
        got.iter().map(n_of).collect::<Vec<_>>(),
        (0..50).collect::<Vec<_>>()
    );
    let ids: BTreeSet<_> = got.iter().map(|d| d.id.clone()).collect();
    assert_eq!(ids.len(), 50, "ids are unique");
}

pub async fn single_consumer_sees_send_order(b: &dyn Broker) {
    let name = queue(b, "ordered", QueueConfig::default()).await;
    for n in 0..60 {
        b.send(&name, msg(json!({ "n": n }))).await.unwrap();
    }
    let mut seen = Vec::new();
    while seen.len() < 60 {
        let got = recv(b, &name, "g", "only", 7, PATIENCE).await;
        assert!(!got.is_empty());
        seen.extend(got.iter().map(n_of));
        ack_all(b, &name, "g", &got).await;
    }
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
}

pub async fn consumers_of_a_group_share_work(b: &dyn Broker) {
    let name = queue(b, "shared", QueueConfig::default()).await;
    send_numbers(b, &name, 0..20).await;
    let first = recv(b, &name, "g", "a", 8, PATIENCE).await;
    let second = recv(b, &name, "g", "b", 100, PATIENCE).await;
    assert_eq!(first.len(), 8);
    assert_eq!(second.len(), 12);
    let all: BTreeSet<i64> = first.iter().chain(&second).map(n_of).collect();
    assert_eq!(all, (0..20).collect());
    let info = b.queue_info(&name).await.unwrap();
    let consumers: Vec<(String, u64)> = info.groups[0]
        .consumers
        .iter()
        .map(|c| (c.name.clone(), c.pending))
        .collect();
    assert_eq!(consumers, vec![("a".into(), 8), ("b".into(), 12)]);
}

pub async fn every_group_sees_every_message(b: &dyn Broker) {
    let name = queue(b, "fanout", QueueConfig::default()).await;
    // Both groups exist before the sends.
    recv(b, &name, "billing", "c", 1, Duration::ZERO).await;
    recv(b, &name, "shipping", "c", 1, Duration::ZERO).await;
    send_numbers(b, &name, 0..5).await;
    let billing = recv(b, &name, "billing", "c", 10, PATIENCE).await;
    let shipping = recv(b, &name, "shipping", "c", 10, PATIENCE).await;
    assert_eq!(
        billing.iter().map(n_of).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(
        shipping.iter().map(n_of).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    ack_all(b, &name, "billing", &billing).await;
    // Shipping has not acked: the messages stay.
    assert_eq!(b.queue_info(&name).await.unwrap().length, 5);
    ack_all(b, &name, "shipping", &shipping).await;
    assert_eq!(b.queue_info(&name).await.unwrap().length, 0);
}

pub async fn group_created_later_sees_stored_messages(b: &dyn Broker) {
    let name = queue(b, "late", QueueConfig::default()).await;
    send_numbers(b, &name, 0..3).await;
    let got = recv(b, &name, "newcomer", "c", 10, PATIENCE).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![0, 1, 2]);
}

pub async fn blocking_receive_wakes_on_send(b: &dyn Broker) {
    let name = queue(b, "wake", QueueConfig::default()).await;
    recv(b, &name, "g", "c", 1, Duration::ZERO).await; // create the group
    let started = Instant::now();
    let (got, ()) = tokio::join!(recv(b, &name, "g", "c", 1, PATIENCE), async {
        tokio::task::yield_now().await;
        b.send(&name, msg(json!({"n": 1}))).await.unwrap();
    });
    assert_eq!(got.len(), 1, "the receive was woken by the send");
    assert!(started.elapsed() < PATIENCE, "woken, not timed out");
}

pub async fn receive_returns_empty_after_wait(b: &dyn Broker) {
    let name = queue(b, "quiet", QueueConfig::default()).await;
    let wait = Duration::from_millis(50);
    let started = Instant::now();
    assert!(recv(b, &name, "g", "c", 1, wait).await.is_empty());
    assert!(started.elapsed() >= wait, "waited for the timeout");
}

pub async fn unacked_message_is_redelivered(b: &dyn Broker) {
    let name = queue(b, "redeliver", short_visibility(200, 5)).await;
    let receipt = b.send(&name, msg(json!({"n": 1}))).await.unwrap();
    let first = recv(b, &name, "g", "crashed", 1, PATIENCE).await;
    assert_eq!(first[0].delivery_count, 1);
    // Not acked: after the visibility timeout another consumer gets it.
    let second = recv(b, &name, "g", "rescuer", 1, PATIENCE).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, receipt.id);
    assert_eq!(second[0].delivery_count, 2);
    assert_eq!(ack_all(b, &name, "g", &second).await, 1);
}

pub async fn max_deliveries_moves_to_dead_letters(b: &dyn Broker) {
    let name = queue(b, "poison", short_visibility(100, 2)).await;
    let receipt = b
        .send(&name, msg(json!({"n": 1})).dedup_id("p-1"))
        .await
        .unwrap();
    assert_eq!(
        recv(b, &name, "g", "c", 1, PATIENCE).await[0].delivery_count,
        1
    );
    assert_eq!(
        recv(b, &name, "g", "c", 1, PATIENCE).await[0].delivery_count,
        2
    );
    // The second timeout exhausts max_deliveries: nothing more is delivered.
    send_numbers(b, &name, 2..3).await;
    let next = recv(b, &name, "g", "c", 1, PATIENCE).await;
    assert_eq!(n_of(&next[0]), 2);
    // Wait until the poison message has timed out a second time.
    let deadline = Instant::now() + PATIENCE;
    let letters = loop {
        let letters = b.dead_letters(&name, None, 10).await.unwrap();
        if !letters.is_empty() || Instant::now() > deadline {
            break letters;
        }
        recv(b, &name, "g", "c", 1, Duration::from_millis(50)).await;
    };
    assert_eq!(letters.len(), 1);
    let dead = &letters[0];
    assert_eq!(dead.original_id, receipt.id);
    assert_eq!(dead.queue, name);
    assert_eq!(dead.group, Some(g("g")));
    assert_eq!(dead.attempts, 2);
    assert_eq!(dead.dedup_id.as_deref(), Some("p-1"));
    assert!(dead.reason.contains("2 deliveries"), "{}", dead.reason);
    assert!(dead.dead_lettered_at >= dead.enqueued_at);
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.dead_letters, 1);
    assert_eq!(info.dead_lettered_total, 1);
}

pub async fn nack_retry_redelivers_after_delay(b: &dyn Broker) {
    let name = queue(b, "retry", QueueConfig::default()).await;
    b.send(&name, msg(json!({"n": 1}))).await.unwrap();
    let got = recv(b, &name, "g", "c", 1, PATIENCE).await;
    let delay = Duration::from_millis(300);
    let nacked_at = Instant::now();
    assert!(
        b.nack(&name, &g("g"), &got[0].id, Nack::Retry { delay })
            .await
            .unwrap()
    );
    assert!(recv(b, &name, "g", "c", 1, Duration::ZERO).await.is_empty());
    assert_eq!(b.queue_info(&name).await.unwrap().groups[0].delayed, 1);
    let again = recv(b, &name, "g", "c", 1, PATIENCE).await;
    assert!(nacked_at.elapsed() >= delay);
    assert_eq!(again[0].id, got[0].id);
    assert_eq!(again[0].delivery_count, 2);
    // A nack of something not in flight reports false.
    ack_all(b, &name, "g", &again).await;
    assert!(
        !b.nack(&name, &g("g"), &got[0].id, Nack::Retry { delay })
            .await
            .unwrap()
    );
}

pub async fn nack_dead_letter_moves_at_once(b: &dyn Broker) {
    let name = queue(b, "reject", QueueConfig::default()).await;
    b.send(&name, msg(json!({"n": 1})).header("k", "v"))
        .await
        .unwrap();
    let got = recv(b, &name, "g", "c", 1, PATIENCE).await;
    let reason = "schema violation: n must be even".to_string();
    assert!(
        b.nack(
            &name,
            &g("g"),
            &got[0].id,
            Nack::DeadLetter {
                reason: reason.clone()
            }
        )
        .await
        .unwrap()
    );
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(
        info.length, 0,
        "the message is in the dead-letter queue and nowhere else"
    );
    assert_eq!(info.dead_letters, 1);
    let dead = &b.dead_letters(&name, None, 10).await.unwrap()[0];
    assert_eq!(dead.reason, reason);
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.headers.get("k").map(String::as_str), Some("v"));
    assert_eq!(
        dead.payload.json::<serde_json::Value>().unwrap(),
        json!({"n": 1})
    );
}

async fn dead_letter_numbers(b: &dyn Broker, name: &QueueName, range: std::ops::Range<i64>) {
    let count = range.end - range.start;
    send_numbers(b, name, range).await;
    let got = recv(b, name, "g", "c", usize::try_from(count).unwrap(), PATIENCE).await;
    assert_eq!(got.len() as i64, count);
    for d in got {
        let reason = format!("bad {}", n_of(&d));
        b.nack(name, &g("g"), &d.id, Nack::DeadLetter { reason })
            .await
            .unwrap();
    }
}

pub async fn dead_letters_requeue_by_id_and_all(b: &dyn Broker) {
    let name = queue(b, "requeue", QueueConfig::default()).await;
    dead_letter_numbers(b, &name, 0..3).await;
    let letters = b.dead_letters(&name, None, 10).await.unwrap();
    assert_eq!(letters.len(), 3);
    let by_id = DeadLetterSelection::Ids(vec![letters[1].id.clone(), MessageId::from("nope")]);
    assert_eq!(b.requeue_dead_letters(&name, by_id).await.unwrap(), 1);
    let back = recv(b, &name, "g", "c", 10, PATIENCE).await;
    assert_eq!(back.iter().map(n_of).collect::<Vec<_>>(), vec![1]);
    assert_eq!(
        back[0].delivery_count, 1,
        "a requeued message starts afresh"
    );
    ack_all(b, &name, "g", &back).await;
    assert_eq!(
        b.requeue_dead_letters(&name, DeadLetterSelection::All)
            .await
            .unwrap(),
        2
    );
    let back = recv(b, &name, "g", "c", 10, PATIENCE).await;
    assert_eq!(back.iter().map(n_of).collect::<Vec<_>>(), vec![0, 2]);
    assert!(b.dead_letters(&name, None, 10).await.unwrap().is_empty());
}

pub async fn nack_many_gives_back_every_pending_id_at_once(b: &dyn Broker) {
    let name = queue(b, "nack-many", QueueConfig::default()).await;
    send_numbers(b, &name, 0..4).await;
    let got = recv(b, &name, "g", "c", 4, PATIENCE).await;
    assert_eq!(got.len(), 4);
    // Two to retry, with an id that is not pending and one of another format.
    let retry = vec![
        got[0].id.clone(),
        got[1].id.clone(),
        MessageId::from("nope"),
        got[0].id.clone(),
    ];
    let delay = Duration::ZERO;
    assert_eq!(
        b.nack_many(&name, &g("g"), &retry, Nack::Retry { delay })
            .await
            .unwrap(),
        2,
        "each pending id once; the rest are skipped"
    );
    let reason = "bad batch".to_owned();
    let dead = [got[2].id.clone(), got[3].id.clone()];
    assert_eq!(
        b.nack_many(&name, &g("g"), &dead, Nack::DeadLetter { reason })
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        b.nack_many(&name, &g("g"), &dead, Nack::Retry { delay })
            .await
            .unwrap(),
        0,
        "no longer pending"
    );
    let back = recv(b, &name, "g", "c", 10, PATIENCE).await;
    let mut numbers: Vec<i64> = back.iter().map(n_of).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![0, 1]);
    assert!(back.iter().all(|d| d.delivery_count == 2));
    let letters = b.dead_letters(&name, None, 10).await.unwrap();
    let mut numbers: Vec<i64> = letters.iter().map(n_of_dead).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, vec![2, 3]);
    assert!(letters.iter().all(|d| d.reason == "bad batch"));
    let unknown = q("nack-many-ghost");
    assert!(matches!(
        b.nack_many(&unknown, &g("g"), &retry, Nack::Retry { delay })
            .await,
        Err(Error::QueueNotFound(_))
    ));
}

pub async fn dead_letter_is_found_by_id(b: &dyn Broker) {
    let name = queue(b, "dlq-by-id", QueueConfig::default()).await;
    dead_letter_numbers(b, &name, 0..3).await;
    let letters = b.dead_letters(&name, None, 10).await.unwrap();
    for letter in &letters {
        let found = b.dead_letter(&name, &letter.id).await.unwrap();
        let found = found.expect("every listed letter is found by its id");
        assert_eq!(found.id, letter.id);
        assert_eq!(found.original_id, letter.original_id);
        assert_eq!(found.reason, letter.reason);
        assert_eq!(n_of_dead(&found), n_of_dead(letter));
    }
    // Not a letter's id: another format's, a purged one's.
    assert!(
        b.dead_letter(&name, &MessageId::from("nope"))
            .await
            .unwrap()
            .is_none()
    );
    let one = DeadLetterSelection::Ids(vec![letters[1].id.clone()]);
    assert_eq!(b.purge_dead_letters(&name, one).await.unwrap(), 1);
    assert!(
        b.dead_letter(&name, &letters[1].id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        b.dead_letter(&q("dlq-by-id-ghost"), &letters[0].id).await,
        Err(Error::QueueNotFound(_))
    ));
}

pub async fn dead_letters_purge(b: &dyn Broker) {
    let name = queue(b, "dlq-purge", QueueConfig::default()).await;
    dead_letter_numbers(b, &name, 0..3).await;
    let letters = b.dead_letters(&name, None, 2).await.unwrap();
    assert_eq!(letters.len(), 2, "limit is honoured");
    let rest = b
        .dead_letters(&name, Some(&letters[1].id), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1, "the next page starts after the given entry");
    assert_eq!(n_of_dead(&rest[0]), 2);
    assert_eq!(n_of_dead(&letters[0]), 0);
    let one = DeadLetterSelection::Ids(vec![letters[0].id.clone()]);
    assert_eq!(b.purge_dead_letters(&name, one).await.unwrap(), 1);
    assert_eq!(
        b.purge_dead_letters(&name, DeadLetterSelection::All)
            .await
            .unwrap(),
        2
    );
    assert_eq!(b.queue_info(&name).await.unwrap().dead_letters, 0);
}

/// Lets `time` pass by awaiting a message delayed by that much, on a queue of its own.
async fn pass_time(b: &dyn Broker, time: Duration) {
    let clock = q("clock");
    b.create_queue(&clock, QueueConfig::default())
        .await
        .unwrap();
    b.send(&clock, msg(json!({"n": 0})).delay(time))
        .await
        .unwrap();
    let tick = recv(b, &clock, "clock", "c", 1, PATIENCE).await;
    assert_eq!(tick.len(), 1, "the delayed message arrived");
    ack_all(b, &clock, "clock", &tick).await;
}

pub async fn expired_message_is_never_delivered(b: &dyn Broker) {
    let name = queue(b, "ttl", QueueConfig::default()).await;
    recv(b, &name, "g", "c", 1, Duration::ZERO).await; // the group exists
    b.send(&name, msg(json!({"n": 1})).ttl(Duration::from_millis(50)))
        .await
        .unwrap();
    b.send(&name, msg(json!({"n": 2}))).await.unwrap();
    pass_time(b, Duration::from_millis(150)).await;
    let got = recv(b, &name, "g", "c", 10, PATIENCE).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![2]);
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.expired_total, 1);
    assert_eq!(info.dead_letters, 0, "the default is to drop");
    assert_eq!(info.length, 1);
}

pub async fn expired_message_can_be_dead_lettered(b: &dyn Broker) {
    let config = QueueConfig {
        on_expiry: ExpiryAction::DeadLetter,
        default_ttl: Some(Duration::from_millis(50)),
        ..QueueConfig::default()
    };
    let name = queue(b, "ttl-dlq", config).await;
    b.send(&name, msg(json!({"n": 1}))).await.unwrap();
    b.send(&name, msg(json!({"n": 2})).ttl(Duration::from_secs(3600)))
        .await
        .unwrap();
    pass_time(b, Duration::from_millis(150)).await;
    let got = recv(b, &name, "g", "c", 10, PATIENCE).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![2]);
    let letters = b.dead_letters(&name, None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason, "expired");
    assert_eq!(letters[0].group, None);
    assert_eq!(b.queue_info(&name).await.unwrap().expired_total, 1);
}

pub async fn delayed_message_waits(b: &dyn Broker) {
    let name = queue(b, "delayed", QueueConfig::default()).await;
    let delay = Duration::from_millis(300);
    let sent_at = Instant::now();
    b.send(&name, msg(json!({"n": 1})).delay(delay))
        .await
        .unwrap();
    assert!(recv(b, &name, "g", "c", 1, Duration::ZERO).await.is_empty());
    let got = recv(b, &name, "g", "c", 1, PATIENCE).await;
    assert_eq!(got.len(), 1);
    assert!(sent_at.elapsed() >= delay - Duration::from_millis(5));
}

pub async fn dedup_id_returns_original(b: &dyn Broker) {
    let name = queue(b, "dedup", QueueConfig::default()).await;
    let first = b
        .send(&name, msg(json!({"n": 1})).dedup_id("order-1"))
        .await
        .unwrap();
    let again = b
        .send(&name, msg(json!({"n": 99})).dedup_id("order-1"))
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(again.id, first.id);
    // Duplicates inside one batch are caught too.
    let batch = b
        .send_batch(
            &name,
            vec![
                msg(json!({"n": 2})).dedup_id("order-2"),
                msg(json!({"n": 3})).dedup_id("order-2"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(batch[0].id, batch[1].id);
    assert!(batch[1].duplicate);
    let got = recv(b, &name, "g", "c", 10, PATIENCE).await;
    assert_eq!(got.iter().map(n_of).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(got[0].dedup_id.as_deref(), Some("order-1"));
}

pub async fn transaction_applies_everything(b: &dyn Broker) {
    let orders = queue(b, "tx-orders", QueueConfig::default()).await;
    let invoices = queue(b, "tx-invoices", QueueConfig::default()).await;
    let audit = queue(b, "tx-audit", QueueConfig::default()).await;
    send_numbers(b, &orders, 0..1).await;
    let got = recv(b, &orders, "g", "c", 1, PATIENCE).await;
    let mut tx = Transaction::new();
    tx.ack(orders.clone(), g("g"), [got[0].id.clone()])
        .send(invoices.clone(), msg(json!({"n": 10})))
        .send(audit.clone(), msg(json!({"n": 20})));
    let receipts = b.commit(tx).await.unwrap();
    assert_eq!(receipts.len(), 2);
    assert_eq!(b.queue_info(&orders).await.unwrap().length, 0);
    let inv = recv(b, &invoices, "g", "c", 10, PATIENCE).await;
    assert_eq!(inv[0].id, receipts[0].id);
    assert_eq!(n_of(&inv[0]), 10);
    assert_eq!(n_of(&recv(b, &audit, "g", "c", 10, PATIENCE).await[0]), 20);
}

pub async fn transaction_with_bad_ack_applies_nothing(b: &dyn Broker) {
    let orders = queue(b, "txb-orders", QueueConfig::default()).await;
    let invoices = queue(b, "txb-invoices", QueueConfig::default()).await;
    send_numbers(b, &orders, 0..2).await;
    let got = recv(b, &orders, "g", "c", 1, PATIENCE).await;
    let mut tx = Transaction::new();
    tx.send(invoices.clone(), msg(json!({"n": 1})))
        .ack(orders.clone(), g("g"), [got[0].id.clone()])
        .ack(orders.clone(), g("g"), [MessageId::from("not-delivered")]);
    assert!(matches!(b.commit(tx).await, Err(Error::NotPending { .. })));
    assert_eq!(b.queue_info(&invoices).await.unwrap().length, 0);
    let info = b.queue_info(&orders).await.unwrap();
    assert_eq!(info.length, 2);
    assert_eq!(
        info.groups[0].pending, 1,
        "the valid ack was not applied either"
    );
    assert_eq!(ack_all(b, &orders, "g", &got).await, 1);
}

pub async fn transaction_nacks_with_a_record_or_not_at_all(b: &dyn Broker) {
    let jobs = queue(b, "txn-jobs", QueueConfig::default()).await;
    let notes = t("txn-notes");
    send_numbers(b, &jobs, 0..3).await;
    let got = recv(b, &jobs, "g", "c", 3, PATIENCE).await;
    assert_eq!(got.len(), 3);
    let note = |text: &str| Payload::from_value(&json!(text)).unwrap();

    // A retry and a dead letter, each with the record of why.
    let mut tx = Transaction::new();
    tx.nack(
        jobs.clone(),
        g("g"),
        got[0].id.clone(),
        Nack::Retry {
            delay: Duration::ZERO,
        },
    )
    .put(notes.clone(), "0", note("retrying"))
    .nack(
        jobs.clone(),
        g("g"),
        got[1].id.clone(),
        Nack::DeadLetter {
            reason: "hopeless".into(),
        },
    )
    .put(notes.clone(), "1", note("failed"));
    b.commit(tx).await.unwrap();
    let again = recv(b, &jobs, "g", "c", 10, PATIENCE).await;
    assert_eq!(again.iter().map(n_of).collect::<Vec<_>>(), vec![0]);
    assert_eq!(again[0].delivery_count, 2);
    let letters = b.dead_letters(&jobs, None, 10).await.unwrap();
    assert_eq!(letters.iter().map(n_of_dead).collect::<Vec<_>>(), vec![1]);
    assert_eq!(letters[0].reason, "hopeless");
    assert_eq!(
        b.get_record(&notes, "1").await.unwrap(),
        Some(note("failed"))
    );

    // A nack of what is not pending fails the whole transaction.
    let mut tx = Transaction::new();
    tx.put(notes.clone(), "2", note("retrying"))
        .nack(
            jobs.clone(),
            g("g"),
            got[2].id.clone(),
            Nack::DeadLetter {
                reason: "nope".into(),
            },
        )
        .nack(
            jobs.clone(),
            g("g"),
            got[1].id.clone(),
            Nack::Retry {
                delay: Duration::ZERO,
            },
        );
    assert!(matches!(b.commit(tx).await, Err(Error::NotPending { .. })));
    assert_eq!(b.get_record(&notes, "2").await.unwrap(), None);
    let info = b.queue_info(&jobs).await.unwrap();
    assert_eq!(info.dead_letters, 1, "nothing more was dead-lettered");
    assert_eq!(
        info.groups[0].pending, 2,
        "2 and the redelivered 0 are in flight"
    );
    let acked = [got[2].id.clone(), again[0].id.clone()];
    assert_eq!(b.ack(&jobs, &g("g"), &acked).await.unwrap(), 2);
}

pub async fn transaction_with_unknown_queue_applies_nothing(b: &dyn Broker) {
    let real = queue(b, "txu-real", QueueConfig::default()).await;
    let mut tx = Transaction::new();
    tx.send(real.clone(), msg(json!({"n": 1})))
        .send(q("txu-missing"), msg(json!({"n": 2})));
    assert!(matches!(b.commit(tx).await, Err(Error::QueueNotFound(_))));
    assert_eq!(b.queue_info(&real).await.unwrap().length, 0);
}

fn t(name: &str) -> TableName {
    TableName::new(name).unwrap()
}

fn keys(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.key.as_str()).collect()
}

pub async fn records_are_kept_in_key_order(b: &dyn Broker) {
    let table = t("rec-order");
    let mut tx = Transaction::new();
    for key in ["e.3", "e.1", "f.1", "e.2", "d.9"] {
        tx.put(
            table.clone(),
            key,
            Payload::from_value(&json!({"k": key})).unwrap(),
        );
    }
    b.commit(tx).await.unwrap();
    let got = b.get_record(&table, "e.2").await.unwrap().unwrap();
    assert_eq!(got.json::<serde_json::Value>().unwrap()["k"], "e.2");
    assert!(b.get_record(&table, "e.4").await.unwrap().is_none());
    assert!(
        b.get_record(&t("rec-other"), "e.2")
            .await
            .unwrap()
            .is_none()
    );

    let asked = [
        (table.clone(), "f.1".to_owned()),
        (t("rec-other"), "e.2".to_owned()),
        (table.clone(), "e.4".to_owned()),
        (table.clone(), "e.2".to_owned()),
        (table.clone(), "f.1".to_owned()),
    ];
    let several: Vec<Option<String>> = b
        .get_records(&asked)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.map(|p| p.json::<serde_json::Value>().unwrap()["k"].to_string()))
        .collect();
    assert_eq!(
        several,
        [
            Some("\"f.1\"".to_owned()),
            None,
            None,
            Some("\"e.2\"".to_owned()),
            Some("\"f.1\"".to_owned())
        ],
        "each key's record, in the order asked"
    );
    assert!(b.get_records(&[]).await.unwrap().is_empty());

    let all = b.scan_records(&table, RecordScan::all()).await.unwrap();
    assert_eq!(keys(&all), ["d.9", "e.1", "e.2", "e.3", "f.1"]);
    let e = b
        .scan_records(&table, RecordScan::prefix("e."))
        .await
        .unwrap();
    assert_eq!(keys(&e), ["e.1", "e.2", "e.3"]);
    let newest = b
        .scan_records(&table, RecordScan::prefix("e.").reverse().limit(2))
        .await
        .unwrap();
    assert_eq!(keys(&newest), ["e.3", "e.2"]);
    let window = b
        .scan_records(&table, RecordScan::all().from("e.1").to("f"))
        .await
        .unwrap();
    assert_eq!(keys(&window), ["e.1", "e.2", "e.3"]);
    let page = b
        .scan_records(&table, RecordScan::all().after("e.2").limit(10))
        .await
        .unwrap();
    assert_eq!(keys(&page), ["e.3", "f.1"]);
    let before = b
        .scan_records(&table, RecordScan::all().to("e.2").reverse())
        .await
        .unwrap();
    assert_eq!(keys(&before), ["e.1", "d.9"]);
    assert!(
        b.scan_records(&t("rec-empty"), RecordScan::all())
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn records_change_with_messages_or_not_at_all(b: &dyn Broker) {
    let table = t("rec-tx");
    let name = queue(b, "rec-tx", QueueConfig::default()).await;
    let value = |n: i64| Payload::from_value(&json!({"n": n})).unwrap();

    let mut tx = Transaction::new();
    tx.insert(table.clone(), "only", value(1))
        .send(name.clone(), msg(json!({"n": 1})));
    b.commit(tx).await.unwrap();
    assert_eq!(b.queue_info(&name).await.unwrap().length, 1);

    // A second insert of the key fails the whole transaction.
    let mut tx = Transaction::new();
    tx.send(name.clone(), msg(json!({"n": 2})))
        .put(table.clone(), "other", value(2))
        .insert(table.clone(), "only", value(3));
    let err = b.commit(tx).await.unwrap_err();
    assert!(matches!(err, Error::RecordExists { .. }), "{err}");
    assert_eq!(b.queue_info(&name).await.unwrap().length, 1);
    assert!(b.get_record(&table, "other").await.unwrap().is_none());
    let only = b.get_record(&table, "only").await.unwrap().unwrap();
    assert_eq!(only.as_str(), r#"{"n":1}"#);

    // Two inserts of one key in one transaction conflict too.
    let mut tx = Transaction::new();
    tx.insert(table.clone(), "twice", value(4))
        .insert(table.clone(), "twice", value(5));
    assert!(matches!(
        b.commit(tx).await,
        Err(Error::RecordExists { .. })
    ));
    assert!(b.get_record(&table, "twice").await.unwrap().is_none());

    // Put overwrites; delete removes, and frees the key for an insert.
    let mut tx = Transaction::new();
    tx.put(table.clone(), "only", value(6));
    b.commit(tx).await.unwrap();
    let only = b.get_record(&table, "only").await.unwrap().unwrap();
    assert_eq!(only.as_str(), r#"{"n":6}"#);
    let mut tx = Transaction::new();
    tx.delete(table.clone(), "only")
        .insert(table.clone(), "only", value(7));
    b.commit(tx).await.unwrap();
    let mut tx = Transaction::new();
    tx.delete(table.clone(), "only");
    b.commit(tx).await.unwrap();
    assert!(b.get_record(&table, "only").await.unwrap().is_none());

    // Acks and record writes together.
    let got = recv(b, &name, "g", "c", 1, PATIENCE).await;
    let mut tx = Transaction::new();
    tx.ack(name.clone(), g("g"), [got[0].id.clone()])
        .put(table.clone(), "done", value(1));
    b.commit(tx).await.unwrap();
    assert!(b.get_record(&table, "done").await.unwrap().is_some());
    assert_eq!(b.queue_info(&name).await.unwrap().groups[0].pending, 0);
}

pub async fn expectations_guard_a_transaction(b: &dyn Broker) {
    let leases = TableName::new("leases").unwrap();
    let name = queue(b, "guarded", QueueConfig::default()).await;
    let value = |v: serde_json::Value| Payload::from_value(&v).unwrap();
    let mine = value(json!({"owner": "a", "until": 10}));
    // Absent as expected: applied, with the send.
    let mut tx = Transaction::new();
    tx.expect(leases.clone(), "p0", None)
        .put(leases.clone(), "p0", mine.clone())
        .send(name.clone(), msg(json!({"n": 1})));
    b.commit(tx).await.unwrap();
    assert_eq!(
        b.get_record(&leases, "p0").await.unwrap(),
        Some(mine.clone())
    );
    // A second taker expecting it absent changes nothing, not even its send.
    let theirs = value(json!({"owner": "b", "until": 20}));
    let mut tx = Transaction::new();
    tx.send(name.clone(), msg(json!({"n": 2})))
        .expect(leases.clone(), "p0", None)
        .put(leases.clone(), "p0", theirs.clone());
    let refused = b.commit(tx).await;
    assert!(
        matches!(&refused, Err(Error::RecordChanged { table, key }) if table == "leases" && key == "p0"),
        "{refused:?}"
    );
    assert_eq!(
        b.get_record(&leases, "p0").await.unwrap(),
        Some(mine.clone())
    );
    assert_eq!(b.queue_info(&name).await.unwrap().length, 1);
    // Expecting the value read: applied (compare-and-set).
    let read = b.get_record(&leases, "p0").await.unwrap();
    let mut tx = Transaction::new();
    tx.expect(leases.clone(), "p0", read.clone())
        .put(leases.clone(), "p0", theirs.clone());
    b.commit(tx).await.unwrap();
    // The old value is stale now.
    let mut tx = Transaction::new();
    tx.expect(leases.clone(), "p0", read)
        .delete(leases.clone(), "p0");
    assert!(matches!(
        b.commit(tx).await,
        Err(Error::RecordChanged { .. })
    ));
    assert_eq!(b.get_record(&leases, "p0").await.unwrap(), Some(theirs));
    // Expecting a value where there is none fails too.
    let mut tx = Transaction::new();
    tx.expect(leases.clone(), "p1", Some(mine))
        .delete(leases, "p0");
    assert!(matches!(
        b.commit(tx).await,
        Err(Error::RecordChanged { .. })
    ));
}

pub async fn bad_record_keys_are_rejected(b: &dyn Broker) {
    let table = t("rec-bad");
    let mut tx = Transaction::new();
    tx.put(table.clone(), "", Payload::from_value(&1).unwrap());
    assert!(matches!(b.commit(tx).await, Err(Error::InvalidArgument(_))));
    let long = "k".repeat(crate::MAX_RECORD_KEY_BYTES + 1);
    assert!(matches!(
        b.get_record(&table, &long).await,
        Err(Error::InvalidArgument(_))
    ));
}

pub async fn concurrent_inserts_of_one_key_admit_one(b: &dyn Broker) {
    let table = t("rec-race");
    let mut tasks = Vec::new();
    for n in 0..16 {
        let mut tx = Transaction::new();
        tx.insert(table.clone(), "claim", Payload::from_value(&n).unwrap());
        tasks.push(b.commit(tx));
    }
    let results = futures_join_all(tasks).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(Error::RecordExists { .. })))
    );
}

pub async fn counters_add_with_the_writes_they_count(b: &dyn Broker) {
    let table = t("rec-count");
    let count = |key: &'static str| {
        let table = table.clone();
        async move {
            b.get_record(&table, key)
                .await
                .unwrap()
                .map(|v| v.as_str().to_owned())
        }
    };
    // Absent counts as 0; several adds of one key in one transaction sum up.
    let mut tx = Transaction::new();
    tx.add(table.clone(), "n", 5)
        .add(table.clone(), "n", -2)
        .add(table.clone(), "m", -1);
    b.commit(tx).await.unwrap();
    assert_eq!(count("n").await.as_deref(), Some("3"));
    assert_eq!(count("m").await.as_deref(), Some("-1"));
    // The value is a JSON number: an expectation and a scan see it as such.
    let mut tx = Transaction::new();
    tx.expect(table.clone(), "n", Some(Payload::from_value(&3).unwrap()))
        .add(table.clone(), "n", 1);
    b.commit(tx).await.unwrap();
    assert_eq!(count("n").await.as_deref(), Some("4"));
    // A put resets it; a delete makes it absent (0) again.
    let mut tx = Transaction::new();
    tx.put(table.clone(), "m", Payload::from_value(&10).unwrap())
        .add(table.clone(), "m", 1)
        .delete(table.clone(), "gone")
        .add(table.clone(), "gone", 2);
    b.commit(tx).await.unwrap();
    assert_eq!(count("m").await.as_deref(), Some("11"));
    assert_eq!(count("gone").await.as_deref(), Some("2"));
    // A record that is not an integer refuses the add, and nothing else of
    // the transaction is applied.
    let mut tx = Transaction::new();
    tx.put(table.clone(), "word", Payload::from_value(&"ten").unwrap());
    b.commit(tx).await.unwrap();
    let mut tx = Transaction::new();
    tx.add(table.clone(), "n", 1).add(table.clone(), "word", 1);
    let refused = b.commit(tx).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(count("n").await.as_deref(), Some("4"));
    // A put or delete in a later transaction is what the next add starts from.
    let mut tx = Transaction::new();
    tx.put(table.clone(), "n", Payload::from_value(&100).unwrap());
    b.commit(tx).await.unwrap();
    let mut tx = Transaction::new();
    tx.add(table.clone(), "n", 1);
    b.commit(tx).await.unwrap();
    assert_eq!(count("n").await.as_deref(), Some("101"));
    let mut tx = Transaction::new();
    tx.delete(table.clone(), "n");
    b.commit(tx).await.unwrap();
    let mut tx = Transaction::new();
    tx.add(table.clone(), "n", 1);
    b.commit(tx).await.unwrap();
    assert_eq!(count("n").await.as_deref(), Some("1"));
    // Concurrent adds lose none.
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut tx = Transaction::new();
        tx.add(table.clone(), "race", 1);
        tasks.push(b.commit(tx));
    }
    let results = futures_join_all(tasks).await;
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    assert_eq!(count("race").await.as_deref(), Some("32"));
}

pub async fn purge_removes_messages(b: &dyn Broker) {
    let name = queue(b, "purge", QueueConfig::default()).await;
    send_numbers(b, &name, 0..5).await;
    let got = recv(b, &name, "g", "c", 2, PATIENCE).await;
    dead_letter_numbers(b, &q("purge"), 5..6).await;
    // 2 in flight and 3 ready; the dead letter is not in the queue.
    assert_eq!(b.purge_queue(&name).await.unwrap(), 5);
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.length, 0);
    assert_eq!(info.groups[0].pending, 0);
    assert_eq!(
        info.dead_letters, 1,
        "dead letters are not purged with the queue"
    );
    assert_eq!(ack_all(b, &name, "g", &got).await, 0);
    send_numbers(b, &name, 10..11).await;
    assert_eq!(n_of(&recv(b, &name, "g", "c", 10, PATIENCE).await[0]), 10);
}

pub async fn delete_removes_everything(b: &dyn Broker) {
    let name = queue(b, "doomed", QueueConfig::default()).await;
    dead_letter_numbers(b, &name, 0..2).await;
    send_numbers(b, &name, 2..4).await;
    b.delete_queue(&name).await.unwrap();
    assert!(!b.list_queues().await.unwrap().contains(&name));
    assert!(matches!(
        b.queue_info(&name).await,
        Err(Error::QueueNotFound(_))
    ));
    b.create_queue(&name, QueueConfig::default()).await.unwrap();
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(
        (info.length, info.dead_letters, info.groups.len()),
        (0, 0, 0)
    );
}

pub async fn retention_keeps_acked_messages(b: &dyn Broker) {
    let config = QueueConfig {
        retention: Retention {
            max_len: Some(2),
            max_age: None,
        },
        ..QueueConfig::default()
    };
    let name = queue(b, "retained", config).await;
    send_numbers(b, &name, 0..5).await;
    let got = recv(b, &name, "g", "c", 10, PATIENCE).await;
    ack_all(b, &name, "g", &got[..4]).await;
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.retained, 2, "the two newest acked messages are kept");
    assert_eq!(info.length, 3, "plus the one not yet acked");
    // A new group replays what is kept.
    let replay = recv(b, &name, "auditor", "c", 10, PATIENCE).await;
    assert_eq!(replay.iter().map(n_of).collect::<Vec<_>>(), vec![2, 3, 4]);
}

pub async fn retention_by_age_lets_acked_messages_go(b: &dyn Broker) {
    let config = QueueConfig {
        retention: Retention {
            max_len: None,
            max_age: Some(Duration::from_millis(100)),
        },
        ..QueueConfig::default()
    };
    let name = queue(b, "aged", config).await;
    send_numbers(b, &name, 0..3).await;
    let got = recv(b, &name, "g", "c", 10, PATIENCE).await;
    ack_all(b, &name, "g", &got[..2]).await;
    assert_eq!(b.queue_info(&name).await.unwrap().retained, 2);
    pass_time(b, Duration::from_millis(200)).await;
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(
        info.retained, 0,
        "acked messages older than max_age are gone"
    );
    assert_eq!(info.length, 1, "the unacked one stays, however old");
}

pub async fn info_reports_groups_and_consumers(b: &dyn Broker) {
    let name = queue(b, "info", QueueConfig::default()).await;
    send_numbers(b, &name, 0..4).await;
    b.send(&name, msg(json!({"n": 9})).delay(Duration::from_secs(3600)))
        .await
        .unwrap();
    recv(b, &name, "g", "worker:1", 3, PATIENCE).await;
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.length, 5);
    assert!(info.oldest_message_age.is_some());
    let group = &info.groups[0];
    assert_eq!(group.name, g("g"));
    assert_eq!((group.ready, group.delayed, group.pending), (1, 1, 3));
    assert_eq!(group.consumers[0].name, "worker:1");
    assert_eq!(group.consumers[0].pending, 3);
}

pub async fn ack_of_unknown_ids_is_skipped(b: &dyn Broker) {
    let name = queue(b, "acks", QueueConfig::default()).await;
    send_numbers(b, &name, 0..1).await;
    let got = recv(b, &name, "g", "c", 1, PATIENCE).await;
    let ids = vec![
        MessageId::from("garbage"),
        MessageId::from("12345678"),
        got[0].id.clone(),
    ];
    assert_eq!(b.ack(&name, &g("g"), &ids).await.unwrap(), 1);
    assert_eq!(b.ack(&name, &g("other"), &ids).await.unwrap(), 0);
}

pub async fn ack_and_receive_acks_then_takes_more(b: &dyn Broker) {
    let name = queue(b, "loop", QueueConfig::default()).await;
    send_numbers(b, &name, 0..5).await;
    let (group, consumer) = (g("g"), c("c"));
    let step = |ack: Vec<MessageId>, max: usize| {
        let (name, group, consumer) = (name.clone(), group.clone(), consumer.clone());
        async move {
            b.ack_and_receive(
                &name,
                &group,
                &consumer,
                &ack,
                ReceiveOptions::new(max, PATIENCE),
            )
            .await
            .unwrap()
        }
    };
    let ids = |got: &[Delivery]| got.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let (acked, first) = step(Vec::new(), 2).await;
    assert_eq!(
        (acked, first.iter().map(n_of).collect::<Vec<_>>()),
        (0, vec![0, 1])
    );
    let (acked, second) = step(ids(&first), 2).await;
    assert_eq!(
        (acked, second.iter().map(n_of).collect::<Vec<_>>()),
        (2, vec![2, 3])
    );
    // Unknown ids are skipped, as by `ack`.
    let mut with_garbage = ids(&second);
    with_garbage.push(MessageId::from("garbage"));
    let (acked, third) = step(with_garbage, 10).await;
    assert_eq!(
        (acked, third.iter().map(n_of).collect::<Vec<_>>()),
        (2, vec![4])
    );
    let (acked, none) = b
        .ack_and_receive(
            &name,
            &group,
            &consumer,
            &ids(&third),
            ReceiveOptions::new(10, Duration::ZERO),
        )
        .await
        .unwrap();
    assert_eq!((acked, none.len()), (1, 0));
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!((info.length, info.groups[0].pending), (0, 0));
    // Bad options are refused before anything is acked.
    send_numbers(b, &name, 5..6).await;
    let got = recv(b, &name, "g", "c", 1, PATIENCE).await;
    let refused = b
        .ack_and_receive(
            &name,
            &group,
            &consumer,
            &ids(&got),
            ReceiveOptions::new(0, Duration::ZERO),
        )
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(b.queue_info(&name).await.unwrap().groups[0].pending, 1);
    let missing = b
        .ack_and_receive(
            &q("missing"),
            &group,
            &consumer,
            &[],
            ReceiveOptions::new(1, Duration::ZERO),
        )
        .await;
    assert!(
        matches!(missing, Err(Error::QueueNotFound(_))),
        "{missing:?}"
    );
}

pub async fn concurrent_senders_lose_nothing(b: &dyn Broker) {
    let name = queue(b, "busy", QueueConfig::default()).await;
    let sends = (0..32i64).map(|task| {
        let name = name.clone();
        async move {
            for i in 0..8 {
                b.send(&name, msg(json!({ "n": task * 100 + i })))
                    .await
                    .unwrap();
            }
        }
    });
    futures_join_all(sends).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 256 {
        let got = recv(b, &name, "g", "c", 100, PATIENCE).await;
        assert!(!got.is_empty());
        for d in &got {
            assert!(seen.insert(n_of(d)), "delivered twice");
        }
        ack_all(b, &name, "g", &got).await;
    }
    assert_eq!(b.queue_info(&name).await.unwrap().length, 0);
}

/// Runs futures concurrently on the current task (no extra dependency) and
/// returns their outputs in order.
async fn futures_join_all<T, F: std::future::Future<Output = T>>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<T> {
    let mut pending: Vec<_> = futures.into_iter().map(|f| Some(Box::pin(f))).collect();
    let mut outputs: Vec<Option<T>> = pending.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for (slot, out) in pending.iter_mut().zip(&mut outputs) {
            if let Some(f) = slot {
                if let std::task::Poll::Ready(value) = f.as_mut().poll(cx) {
                    *out = Some(value);
                    *slot = None;
                } else {
                    all_done = false;
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

pub async fn pending_lists_what_consumers_hold(b: &dyn Broker) {
    let visibility = Duration::from_secs(60);
    let config = QueueConfig {
        visibility_timeout: visibility,
        ..QueueConfig::default()
    };
    let name = queue(b, "pending", config).await;
    send_numbers(b, &name, 0..5).await;
    let a = recv(b, &name, "g", "a", 2, PATIENCE).await;
    let by_b = recv(b, &name, "g", "b", 1, PATIENCE).await;
    // Given back for later: no longer pending, but delayed.
    let later = Nack::Retry {
        delay: Duration::from_secs(3600),
    };
    assert!(b.nack(&name, &g("g"), &a[0].id, later).await.unwrap());
    let listed = Instant::now();
    let pending = b.pending(&name, &g("g"), 100).await.unwrap();
    let since = listed.elapsed();
    let held: Vec<(MessageId, String, u32)> = pending
        .iter()
        .map(|p| (p.id.clone(), p.consumer.clone(), p.delivery_count))
        .collect();
    assert_eq!(
        held,
        vec![
            (a[1].id.clone(), "a".to_owned(), 1),
            (by_b[0].id.clone(), "b".to_owned(), 1)
        ],
        "oldest message first"
    );
    for p in &pending {
        // Taken moments ago: the timeout has about all of its time left.
        assert!(
            p.visible_in <= visibility && p.visible_in + since + PATIENCE >= visibility,
            "{p:?}: comes back within the visibility timeout of {visibility:?}"
        );
    }
    assert_eq!(b.pending(&name, &g("g"), 1).await.unwrap().len(), 1);
    assert!(b.pending(&name, &g("other"), 10).await.unwrap().is_empty());
    ack_all(b, &name, "g", &[a[1].clone(), by_b[0].clone()]).await;
    assert!(b.pending(&name, &g("g"), 10).await.unwrap().is_empty());
    assert!(matches!(
        b.pending(&q("no-such-queue"), &g("g"), 10).await,
        Err(Error::QueueNotFound(_))
    ));
}

pub async fn forgotten_consumers_leave_the_group(b: &dyn Broker) {
    let name = queue(b, "forget", short_visibility(300, 5)).await;
    send_numbers(b, &name, 0..2).await;
    let taken = recv(b, &name, "g", "gone", 1, PATIENCE).await;
    assert_eq!(n_of(&taken[0]), 0);
    // It still holds a delivery: kept.
    assert!(!b.forget_consumer(&name, &g("g"), &c("gone")).await.unwrap());
    assert!(
        !b.forget_consumer(&name, &g("g"), &c("never-seen"))
            .await
            .unwrap()
    );
    let first = recv(b, &name, "g", "alive", 10, PATIENCE).await;
    assert_eq!(first.iter().map(n_of).collect::<Vec<_>>(), vec![1]);
    assert_eq!(ack_all(b, &name, "g", &first).await, 1);
    // What "gone" held comes back after its visibility timeout.
    let back = recv(b, &name, "g", "alive", 10, PATIENCE).await;
    assert_eq!(back.iter().map(n_of).collect::<Vec<_>>(), vec![0]);
    assert_eq!(back[0].delivery_count, 2);
    assert!(b.forget_consumer(&name, &g("g"), &c("gone")).await.unwrap());
    let consumers: Vec<String> = b.queue_info(&name).await.unwrap().groups[0]
        .consumers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(consumers, vec!["alive".to_owned()]);
    assert!(!b.forget_consumer(&name, &g("g"), &c("gone")).await.unwrap());
    // The remaining consumer acks as before.
    assert_eq!(ack_all(b, &name, "g", &back).await, 1);
    assert!(matches!(
        b.forget_consumer(&q("no-such-queue"), &g("g"), &c("gone"))
            .await,
        Err(Error::QueueNotFound(_))
    ));
}

pub async fn deleted_group_lets_go_of_what_it_owed(b: &dyn Broker) {
    let name = queue(b, "ungroup", QueueConfig::default()).await;
    recv(b, &name, "keep", "c", 1, Duration::ZERO).await;
    recv(b, &name, "drop", "c", 1, Duration::ZERO).await;
    send_numbers(b, &name, 0..4).await;
    let kept = recv(b, &name, "keep", "c", 10, PATIENCE).await;
    assert_eq!(ack_all(b, &name, "keep", &kept).await, 4);
    // "drop" holds one and has not read the others: they stay for it.
    let held = recv(b, &name, "drop", "c", 1, PATIENCE).await;
    assert_eq!(held.len(), 1);
    assert_eq!(b.queue_info(&name).await.unwrap().length, 4);
    assert!(b.delete_group(&name, &g("drop")).await.unwrap());
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!(info.length, 0, "nobody owes them any more: {info:?}");
    let groups: Vec<&str> = info.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, vec!["keep"]);
    assert!(!b.delete_group(&name, &g("drop")).await.unwrap());
    assert_eq!(
        b.ack(&name, &g("drop"), &[held[0].id.clone()])
            .await
            .unwrap(),
        0
    );
    // A message owed by the group left and by nobody else goes too; what
    // another group still owes stays for it.
    send_numbers(b, &name, 4..6).await;
    assert!(b.delete_group(&name, &g("keep")).await.unwrap());
    let info = b.queue_info(&name).await.unwrap();
    assert_eq!((info.length, info.groups.len()), (0, 0), "{info:?}");
    recv(b, &name, "one", "c", 1, Duration::ZERO).await;
    recv(b, &name, "two", "c", 1, Duration::ZERO).await;
    send_numbers(b, &name, 6..8).await;
    assert!(b.delete_group(&name, &g("one")).await.unwrap());
    let two = recv(b, &name, "two", "c", 10, PATIENCE).await;
    assert_eq!(two.iter().map(n_of).collect::<Vec<_>>(), vec![6, 7]);
    assert_eq!(ack_all(b, &name, "two", &two).await, 2);
    assert_eq!(b.queue_info(&name).await.unwrap().length, 0);
    assert!(matches!(
        b.delete_group(&q("no-such-queue"), &g("g")).await,
        Err(Error::QueueNotFound(_))
    ));
}
