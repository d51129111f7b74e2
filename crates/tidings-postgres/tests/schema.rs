//! The schema's migrations, and what several processes sharing one schema
//! see: wakeups across brokers, consumers sharing a group without
//! duplicates.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, Error, GroupName, OutgoingMessage, QueueConfig, QueueName, ReceiveOptions,
};
use tidings_postgres::{PostgresBroker, PostgresOptions, SCHEMA_VERSION};

use common::{TestSchema as Schema, skip_or_fail, url_with_schema};

async fn open(schema: &str) -> Option<PostgresBroker> {
    match PostgresBroker::open(&url_with_schema(schema)).await {
        Ok(broker) => Some(broker),
        Err(e) => skip_or_fail(&e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_opening_one_new_schema_at_once_migrate_it_once() {
    let schema = Schema::fresh();
    let opens = (0..6).map(|_| {
        let url = url_with_schema(&schema.0);
        tokio::spawn(async move { PostgresBroker::open(&url).await })
    });
    let mut brokers = Vec::new();
    for open in opens {
        match open.await.unwrap() {
            Ok(broker) => brokers.push(broker),
            Err(e) => {
                skip_or_fail::<()>(&e);
                return;
            }
        }
    }
    let done = brokers[0].migrate(true).await.unwrap();
    assert_eq!((done.from, done.to), (SCHEMA_VERSION, SCHEMA_VERSION));
    // Each migration is recorded once.
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let rows = client
        .query(
            &format!("SELECT version FROM \"{}\".tidings_migrations", schema.0),
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(versions, (1..=SCHEMA_VERSION).collect::<Vec<_>>());
    // And every broker works on it.
    let q = QueueName::new("shared").unwrap();
    brokers[1]
        .create_queue(&q, QueueConfig::default())
        .await
        .unwrap();
    assert_eq!(brokers[5].list_queues().await.unwrap(), vec![q]);
}

#[tokio::test]
async fn a_schema_from_a_newer_tidings_is_refused_untouched() {
    let schema = Schema::fresh();
    let Some(broker) = open(&schema.0).await else {
        return;
    };
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let newer = SCHEMA_VERSION + 1;
    client
        .execute(
            &format!(
                "INSERT INTO \"{}\".tidings_migrations (version, name) VALUES ($1, 'from the future')",
                schema.0
            ),
            &[&newer],
        )
        .await
        .unwrap();
    drop(broker);
    let refused = PostgresBroker::open(&url_with_schema(&schema.0)).await;
    let message = match refused {
        Err(Error::Incompatible(message)) => message,
        other => panic!("expected Incompatible, got {other:?}"),
    };
    assert!(
        message.contains(&format!("version {newer}")) && message.contains("newer Tidings"),
        "{message}"
    );
    // Nothing was changed: the newer version is still the newest.
    let row = client
        .query_one(
            &format!(
                "SELECT max(version) FROM \"{}\".tidings_migrations",
                schema.0
            ),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), newer);
}

#[tokio::test]
async fn without_migrate_an_outdated_schema_asks_for_tidings_migrate() {
    let schema = Schema::fresh();
    let mut options = PostgresOptions::from_url(&url_with_schema(&schema.0)).unwrap();
    options.migrate = false;
    let broker = match PostgresBroker::connect(options.clone()).await {
        Ok(broker) => broker,
        Err(e) => {
            skip_or_fail::<()>(&e);
            return;
        }
    };
    let checked = broker.migrate(false).await;
    let Err(Error::Incompatible(message)) = checked else {
        // The pool connects lazily: an unreachable server shows here.
        if let Err(e) = checked {
            skip_or_fail::<()>(&e);
            return;
        }
        panic!("an absent schema passed the check");
    };
    assert!(message.contains("tidings migrate"), "{message}");
    assert!(matches!(
        PostgresBroker::open_with(options).await,
        Err(Error::Incompatible(_))
    ));
    let done = broker.migrate(true).await.unwrap();
    assert_eq!((done.from, done.to), (0, SCHEMA_VERSION));
    assert_eq!(broker.migrate(false).await.unwrap().from, SCHEMA_VERSION);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_in_one_process_wakes_a_receive_blocked_in_another() {
    let schema = Schema::fresh();
    let (Some(sender), Some(receiver)) = (open(&schema.0).await, open(&schema.0).await) else {
        return;
    };
    let q = QueueName::new("across").unwrap();
    let (g, c) = (
        GroupName::new("g").unwrap(),
        ConsumerName::new("c").unwrap(),
    );
    receiver
        .create_queue(&q, QueueConfig::default())
        .await
        .unwrap();
    // The group exists before the receive blocks.
    receiver
        .receive(&q, &g, &c, ReceiveOptions::new(1, Duration::ZERO))
        .await
        .unwrap();
    let patience = Duration::from_secs(20);
    let started = std::time::Instant::now();
    let blocked = tokio::spawn({
        let q = q.clone();
        async move {
            receiver
                .receive(&q, &g, &c, ReceiveOptions::new(1, patience))
                .await
        }
    });
    // Give the receive time to block; it must then be woken, not time out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender
        .send(&q, OutgoingMessage::json(&json!({"n": 1})).unwrap())
        .await
        .unwrap();
    let got = blocked.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        started.elapsed() < patience / 2,
        "woken by the notification, not by the end of its wait ({:?})",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_in_several_processes_share_a_group_without_duplicates() {
    let schema = Schema::fresh();
    let mut brokers = Vec::new();
    for _ in 0..3 {
        let Some(broker) = open(&schema.0).await else {
            return;
        };
        brokers.push(std::sync::Arc::new(broker));
    }
    let q = QueueName::new("work").unwrap();
    brokers[0]
        .create_queue(&q, QueueConfig::default())
        .await
        .unwrap();
    let total = 600i64;
    let batch: Vec<_> = (0..total)
        .map(|n| OutgoingMessage::json(&json!({ "n": n })).unwrap())
        .collect();
    brokers[0].send_batch(&q, batch).await.unwrap();
    let mut workers = Vec::new();
    for (i, broker) in brokers.iter().enumerate() {
        for j in 0..4 {
            let (broker, q) = (broker.clone(), q.clone());
            workers.push(tokio::spawn(async move {
                let g = GroupName::new("g").unwrap();
                let c = ConsumerName::new(format!("w{i}-{j}")).unwrap();
                let mut seen = Vec::new();
                loop {
                    let got = broker
                        .receive(
                            &q,
                            &g,
                            &c,
                            ReceiveOptions::new(7, Duration::from_millis(300)),
                        )
                        .await
                        .unwrap();
                    if got.is_empty() {
                        return seen;
                    }
                    let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
                    for d in &got {
                        seen.push(
                            d.payload.json::<serde_json::Value>().unwrap()["n"]
                                .as_i64()
                                .unwrap(),
                        );
                    }
                    assert_eq!(broker.ack(&q, &g, &ids).await.unwrap(), ids.len() as u64);
                }
            }));
        }
    }
    let mut all = Vec::new();
    let mut busy = 0;
    for worker in workers {
        let seen = worker.await.unwrap();
        busy += usize::from(!seen.is_empty());
        all.extend(seen);
    }
    let distinct: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "a message was delivered twice");
    assert_eq!(distinct, (0..total).collect());
    assert!(busy > 1, "the work was shared");
    assert_eq!(brokers[2].queue_info(&q).await.unwrap().length, 0);
}

/// Receives tend their group only now and then (schema version 4): a
/// delivery given back without a delay must still be next, and one out of
/// deliveries must be buried before a receive reports an empty queue.
#[tokio::test]
async fn receives_that_do_not_tend_still_see_retries_and_bury_spent_deliveries() {
    let schema = Schema::fresh();
    let Some(broker) = open(&schema.0).await else {
        return;
    };
    let (g, c) = (
        GroupName::new("g").unwrap(),
        ConsumerName::new("c").unwrap(),
    );
    let one = || ReceiveOptions::new(1, Duration::ZERO);
    let n =
        |d: &tidings_core::Delivery| d.payload.json::<serde_json::Value>().unwrap()["n"].clone();

    let q = QueueName::new("retries").unwrap();
    broker
        .create_queue(&q, QueueConfig::default())
        .await
        .unwrap();
    for i in 0..3 {
        broker
            .send(&q, OutgoingMessage::json(&json!({ "n": i })).unwrap())
            .await
            .unwrap();
    }
    let first = broker.receive(&q, &g, &c, one()).await.unwrap();
    assert_eq!(n(&first[0]), json!(0));
    let retry = tidings_core::Nack::Retry {
        delay: Duration::ZERO,
    };
    broker
        .nack(&q, &g, &first[0].id, retry.clone())
        .await
        .unwrap();
    // Right after the receive that tended: this one does not tend.
    let again = broker.receive(&q, &g, &c, one()).await.unwrap();
    assert_eq!((n(&again[0]), again[0].delivery_count), (json!(0), 2));

    let spent = QueueName::new("spent").unwrap();
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    broker.create_queue(&spent, config).await.unwrap();
    broker
        .send(&spent, OutgoingMessage::json(&json!({ "n": 9 })).unwrap())
        .await
        .unwrap();
    let taken = broker.receive(&spent, &g, &c, one()).await.unwrap();
    broker.nack(&spent, &g, &taken[0].id, retry).await.unwrap();
    assert!(
        broker
            .receive(&spent, &g, &c, one())
            .await
            .unwrap()
            .is_empty()
    );
    let letters = broker.dead_letters(&spent, None, 10).await.unwrap();
    assert_eq!(
        letters.len(),
        1,
        "the spent delivery was buried: {letters:?}"
    );
}

/// A receive reads the clock, then creates its group and waits for the
/// queue's lock while sends finish: a message committed meanwhile was sent
/// "after" that reading, yet the group must owe it as ready, not leave it
/// for the next tending while later messages overtake it (schema version
/// 6). Here the group is created with a reading older than the message.
#[tokio::test]
async fn a_group_created_with_an_older_clock_reading_owes_stored_messages_as_ready() {
    let schema = Schema::fresh();
    let Some(broker) = open(&schema.0).await else {
        return;
    };
    let q = QueueName::new("late").unwrap();
    broker
        .create_queue(&q, QueueConfig::default())
        .await
        .unwrap();
    broker
        .send(&q, OutgoingMessage::json(&json!({ "n": 1 })).unwrap())
        .await
        .unwrap();
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    let s = format!("\"{}\"", schema.0);
    let queue_id: i64 = client
        .query_one(
            &format!("SELECT id FROM {s}.queues WHERE name = 'late'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            &format!(
                "SELECT {s}.group_id($1, 'g', (SELECT min(enqueued_at) - 5 FROM {s}.messages))"
            ),
            &[&queue_id],
        )
        .await
        .unwrap();
    // A receive that does not tend takes only what is ready.
    let rows = client
        .query(
            &format!("SELECT r_payload FROM {s}.receive($1, 'g', 'c', 10, false)"),
            &[&queue_id],
        )
        .await
        .unwrap();
    let payloads: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(payloads, vec![r#"{"n":1}"#.to_owned()]);
}
