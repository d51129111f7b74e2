//! Counters kept as deltas (migration 0002): exact under concurrent adds
//! from several brokers, compare-and-set and folding; written over,
//! deleted and upgraded from a schema that kept them in place. And
//! concurrent commits that share a PostgreSQL transaction: each fails or
//! succeeds as it would alone; concurrent receives of one group: each gets
//! its own; concurrent settlements (compare-and-set, ack, adds) that
//! share statements: each fails or succeeds as it would alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    Broker, ConsumerName, Error, GroupName, OutgoingMessage, Payload, QueueConfig, QueueName,
    ReceiveOptions, RecordScan, TableName, Transaction,
};
use tidings_postgres::PostgresBroker;

use common::{TestSchema as Schema, open_at_version, skip_or_fail, url_with_schema};

async fn open(schema: &Schema) -> Option<PostgresBroker> {
    match PostgresBroker::open(&url_with_schema(&schema.0)).await {
        Ok(broker) => Some(broker),
        Err(e) => skip_or_fail(&e),
    }
}

async fn add(broker: &dyn Broker, table: &TableName, key: &str, delta: i64) -> Result<(), Error> {
    let mut tx = Transaction::new();
    tx.add(table.clone(), key, delta);
    broker.commit(tx).await.map(drop)
}

async fn value(broker: &dyn Broker, table: &TableName, key: &str) -> Option<String> {
    broker
        .get_record(table, key)
        .await
        .unwrap()
        .map(|p| p.as_str().to_owned())
}

/// Deltas not yet folded into their records.
async fn deltas(schema: &Schema) -> i64 {
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls)
            .await
            .unwrap();
    let driver = tokio::spawn(connection);
    let row = client
        .query_one(
            &format!("SELECT count(*) FROM \"{}\".counter_deltas", schema.0),
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_from_several_brokers_beside_compare_and_set_and_folds_sum_exactly() {
    let schema = Schema::fresh();
    let mut brokers = Vec::new();
    for _ in 0..3 {
        let Some(broker) = open(&schema).await else {
            return;
        };
        brokers.push(Arc::new(broker));
    }
    let table = TableName::new("counts").unwrap();
    const ADDERS: usize = 12;
    const ADDS: i64 = 60;
    const SETTERS: usize = 3;
    const SETS: i64 = 20;
    let mut tasks = Vec::new();
    for n in 0..ADDERS {
        let broker = brokers[n % brokers.len()].clone();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..ADDS {
                // Each add beside a record write, as the hub's are.
                let mut tx = Transaction::new();
                tx.add(table.clone(), "hot", 1).put(
                    table.clone(),
                    format!("other.{n}.{i}"),
                    Payload::from_trusted("1".to_owned()),
                );
                broker.commit(tx).await.unwrap();
            }
        }));
    }
    for n in 0..SETTERS {
        let broker = brokers[n % brokers.len()].clone();
        let table = table.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < SETS {
                // Read, compare and write one more: an add that commits
                // between the read and the write must not be lost.
                let seen = broker.get_record(&table, "hot").await.unwrap();
                let count: i64 = seen.as_ref().map_or(0, |p| p.as_str().parse().unwrap());
                let mut tx = Transaction::new();
                tx.expect(table.clone(), "hot", seen).put(
                    table.clone(),
                    "hot",
                    Payload::from_trusted((count + 1).to_string()),
                );
                match broker.commit(tx).await {
                    Ok(_) => done += 1,
                    Err(Error::RecordChanged { .. }) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        }));
    }
    let folder = {
        let broker = brokers[0].clone();
        tokio::spawn(async move {
            loop {
                broker.maintain().await.unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for task in tasks {
        task.await.unwrap();
    }
    folder.abort();
    let expected = (ADDERS as i64 * ADDS + SETTERS as i64 * SETS).to_string();
    for broker in &brokers {
        assert_eq!(value(&**broker, &table, "hot").await.unwrap(), expected);
    }
    brokers[1].maintain().await.unwrap();
    assert_eq!(deltas(&schema).await, 0, "maintain folds every delta");
    assert_eq!(value(&*brokers[2], &table, "hot").await.unwrap(), expected);
}

#[tokio::test]
async fn a_counter_written_over_or_deleted_forgets_its_adds() {
    let schema = Schema::fresh();
    let Some(broker) = open(&schema).await else {
        return;
    };
    let table = TableName::new("t").unwrap();
    add(&broker, &table, "n", 5).await.unwrap();
    add(&broker, &table, "n", 2).await.unwrap();
    // Read before any fold, in a scan and alone.
    let scanned = broker
        .scan_records(&table, RecordScan::all())
        .await
        .unwrap();
    assert_eq!(scanned.len(), 1);
    assert_eq!(scanned[0].value.as_str(), "7");
    let mut tx = Transaction::new();
    tx.put(table.clone(), "n", Payload::from_trusted("10".to_owned()));
    broker.commit(tx).await.unwrap();
    assert_eq!(value(&broker, &table, "n").await.unwrap(), "10");
    add(&broker, &table, "n", 1).await.unwrap();
    assert_eq!(value(&broker, &table, "n").await.unwrap(), "11");
    // In one transaction: an add before a put is overwritten, one after counts.
    let mut tx = Transaction::new();
    tx.add(table.clone(), "n", 100)
        .put(table.clone(), "n", Payload::from_trusted("20".to_owned()))
        .add(table.clone(), "n", 3);
    broker.commit(tx).await.unwrap();
    assert_eq!(value(&broker, &table, "n").await.unwrap(), "23");
    let mut tx = Transaction::new();
    tx.delete(table.clone(), "n");
    broker.commit(tx).await.unwrap();
    assert_eq!(value(&broker, &table, "n").await, None);
    add(&broker, &table, "n", 4).await.unwrap();
    assert_eq!(value(&broker, &table, "n").await.unwrap(), "4");
    // Written over with a word, it is no counter.
    let mut tx = Transaction::new();
    tx.put(
        table.clone(),
        "n",
        Payload::from_trusted("\"word\"".to_owned()),
    );
    broker.commit(tx).await.unwrap();
    assert!(matches!(
        add(&broker, &table, "n", 1).await,
        Err(Error::InvalidArgument(_))
    ));
    // Among several adds (one statement), the one that cannot is named.
    let mut tx = Transaction::new();
    tx.add(table.clone(), "a", 1)
        .add(table.clone(), "n", 1)
        .add(table.clone(), "z", 1);
    match broker.commit(tx).await {
        Err(Error::InvalidArgument(message)) => assert!(message.contains("\"n\""), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(value(&broker, &table, "a").await, None);
    // A compare sees the adds not yet folded.
    add(&broker, &table, "m", 8).await.unwrap();
    add(&broker, &table, "m", 1).await.unwrap();
    let mut tx = Transaction::new();
    tx.expect(
        table.clone(),
        "m",
        Some(Payload::from_trusted("9".to_owned())),
    );
    broker.commit(tx).await.unwrap();
    broker.maintain().await.unwrap();
    assert_eq!(deltas(&schema).await, 0);
    assert_eq!(value(&broker, &table, "n").await.unwrap(), "\"word\"");
    assert_eq!(value(&broker, &table, "m").await.unwrap(), "9");
}

#[tokio::test]
async fn counters_kept_by_schema_version_1_carry_over_the_upgrade() {
    let schema = Schema::fresh();
    let old = match open_at_version(&url_with_schema(&schema.0), 1).await {
        Ok(broker) => broker,
        Err(e) => {
            skip_or_fail::<()>(&e);
            return;
        }
    };
    let table = TableName::new("t").unwrap();
    let mut tx = Transaction::new();
    // (Version 1's put and add are not this build's: insert instead. Its
    // add kept a counter as the number in its record, as this does.)
    tx.insert(table.clone(), "n", Payload::from_trusted("5".to_owned()));
    tx.insert(
        table.clone(),
        "word",
        Payload::from_trusted("\"w\"".to_owned()),
    );
    old.commit(tx).await.unwrap();
    drop(old);
    let Some(new) = open(&schema).await else {
        return;
    };
    assert_eq!(value(&new, &table, "n").await.unwrap(), "5");
    add(&new, &table, "n", 2).await.unwrap();
    assert_eq!(value(&new, &table, "n").await.unwrap(), "7");
    assert!(matches!(
        add(&new, &table, "word", 1).await,
        Err(Error::InvalidArgument(_))
    ));
}

/// Commits `COMMITS` transactions at once, each inserting `{round}.{i}`
/// (taken already where `taken(i)`: that one fails), adding to a counter,
/// putting `done.{round}.{i}` and sending `n = offset + i` to two queues
/// (`n + 1000`, `n`, `n + 2000`). Checks each outcome; returns what the
/// receipts named, by message.
async fn commit_at_once(
    broker: &Arc<PostgresBroker>,
    round: &str,
    offset: usize,
    taken: fn(usize) -> bool,
) -> std::collections::HashMap<usize, tidings_core::MessageId> {
    let table = TableName::new("t").unwrap();
    let (queue, audit) = (
        QueueName::new("q").unwrap(),
        QueueName::new("audit").unwrap(),
    );
    let mut tx = Transaction::new();
    for i in (0..COMMITS).filter(|i| taken(*i)) {
        tx.put(
            table.clone(),
            format!("{round}.{i}"),
            Payload::from_trusted("0".to_owned()),
        );
    }
    broker.commit(tx).await.unwrap();
    let tasks: Vec<_> = (0..COMMITS)
        .map(|i| {
            let (broker, table, round) = (broker.clone(), table.clone(), round.to_owned());
            let (queue, audit) = (queue.clone(), audit.clone());
            tokio::spawn(async move {
                let mut tx = Transaction::new();
                tx.insert(
                    table.clone(),
                    format!("{round}.{i}"),
                    Payload::from_trusted("1".to_owned()),
                )
                .add(table.clone(), "count", 1)
                .put(
                    table.clone(),
                    format!("done.{round}.{i}"),
                    Payload::from_trusted(i.to_string()),
                )
                .send(
                    audit.clone(),
                    OutgoingMessage::json(&(offset + i + 1000)).unwrap(),
                )
                .send(queue, OutgoingMessage::json(&(offset + i)).unwrap())
                .send(audit, OutgoingMessage::json(&(offset + i + 2000)).unwrap());
                broker.commit(tx).await
            })
        })
        .collect();
    let mut told = std::collections::HashMap::new();
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(receipts) => {
                assert!(!taken(i), "commit {round}.{i} should have failed");
                assert_eq!(receipts.len(), 3);
                let n = offset + i;
                for (receipt, n) in receipts.iter().zip([n + 1000, n, n + 2000]) {
                    told.insert(n, receipt.id.clone());
                }
            }
            Err(Error::RecordExists { key, .. }) => {
                assert!(taken(i), "commit {round}.{i} failed");
                assert_eq!(key, format!("{round}.{i}"));
            }
            Err(e) => panic!("commit {round}.{i}: {e}"),
        }
    }
    for i in 0..COMMITS {
        let done = value(&**broker, &table, &format!("done.{round}.{i}")).await;
        assert_eq!(done, (!taken(i)).then(|| i.to_string()), "done.{round}.{i}");
    }
    told
}

const COMMITS: usize = 96;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_sharing_transactions_fail_alone() {
    let schema = Schema::fresh();
    let Some(broker) = open(&schema).await else {
        return;
    };
    let broker = Arc::new(broker);
    let table = TableName::new("t").unwrap();
    let (queue, audit) = (
        QueueName::new("q").unwrap(),
        QueueName::new("audit").unwrap(),
    );
    for name in [&queue, &audit] {
        broker
            .create_queue(name, QueueConfig::default())
            .await
            .unwrap();
    }
    // First all succeed (shared transactions commit), then every third
    // fails (shared transactions fall back to one each).
    let mut told = commit_at_once(&broker, "a", 0, |_| false).await;
    let mut committed: Vec<usize> = (0..COMMITS).collect();
    let failing = |i: usize| i.is_multiple_of(3);
    told.extend(commit_at_once(&broker, "b", 10_000, failing).await);
    committed.extend((0..COMMITS).filter(|i| !failing(*i)).map(|i| i + 10_000));
    assert_eq!(
        value(&*broker, &table, "count").await.unwrap(),
        committed.len().to_string()
    );
    let group = GroupName::new("g").unwrap();
    let consumer = ConsumerName::new("c").unwrap();
    let audited: Vec<usize> = committed
        .iter()
        .flat_map(|i| [i + 1000, i + 2000])
        .collect();
    for (name, mut expected) in [(&queue, committed.clone()), (&audit, audited)] {
        let mut sent = Vec::new();
        loop {
            let got = broker
                .receive(
                    name,
                    &group,
                    &consumer,
                    ReceiveOptions::new(1000, Duration::ZERO),
                )
                .await
                .unwrap();
            if got.is_empty() {
                break;
            }
            for delivery in got {
                let n = delivery.payload.json::<usize>().unwrap();
                // The receipt named this very message.
                assert_eq!(told.get(&n), Some(&delivery.id), "message {n}");
                sent.push(n);
            }
        }
        sent.sort_unstable();
        expected.sort_unstable();
        assert_eq!(sent, expected);
    }
}

/// What the settlement test's transaction `i` expects of record `r.{i}`:
/// absent (`i % 4 == 0`), stored as written before (`1`, `2`), or a value
/// it does not have (`3`: it fails with `RecordChanged`).
fn expected_of(i: usize) -> Option<Payload> {
    match i % 4 {
        0 => None,
        1 | 2 => Some(Payload::from_trusted(format!("\"before {i}\""))),
        _ => Some(Payload::from_trusted("\"not so\"".to_owned())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_settlements_sharing_statements_fail_alone() {
    // Each transaction compares and writes its record, acks its message and
    // adds to two counters, as the hub settles a delivery; committed at
    // once they share a PostgreSQL transaction and its statements (one
    // compare-and-set, one ack, one add of all). Those expecting what is
    // not there fail with `RecordChanged` naming their record, one acking a
    // message acked already fails with `NotPending`, and the rest commit.
    let schema = Schema::fresh();
    let Some(broker) = open(&schema).await else {
        return;
    };
    let broker = Arc::new(broker);
    let (queue, group, consumer) = (
        QueueName::new("q").unwrap(),
        GroupName::new("g").unwrap(),
        ConsumerName::new("c").unwrap(),
    );
    let table = TableName::new("t").unwrap();
    broker
        .create_queue(&queue, QueueConfig::default())
        .await
        .unwrap();
    let messages = (0..COMMITS)
        .map(|i| OutgoingMessage::json(&i).unwrap())
        .collect();
    broker.send_batch(&queue, messages).await.unwrap();
    let mut taken = broker
        .receive(
            &queue,
            &group,
            &consumer,
            ReceiveOptions::new(COMMITS, Duration::ZERO),
        )
        .await
        .unwrap();
    taken.sort_by_key(|d| d.payload.json::<usize>().unwrap());
    assert_eq!(taken.len(), COMMITS);
    let mut tx = Transaction::new();
    for i in (0..COMMITS).filter(|i| i % 4 != 0) {
        tx.put(
            table.clone(),
            format!("r.{i}"),
            Payload::from_trusted(format!("\"before {i}\"")),
        );
    }
    broker.commit(tx).await.unwrap();
    // One message is acked before, so its settlement finds it settled.
    let last = COMMITS - 2;
    broker
        .ack(&queue, &group, std::slice::from_ref(&taken[last].id))
        .await
        .unwrap();
    let tasks: Vec<_> = taken
        .into_iter()
        .enumerate()
        .map(|(i, delivery)| {
            let (broker, table, queue, group) =
                (broker.clone(), table.clone(), queue.clone(), group.clone());
            tokio::spawn(async move {
                let mut tx = Transaction::new();
                tx.expect(table.clone(), format!("r.{i}"), expected_of(i))
                    .put(
                        table.clone(),
                        format!("r.{i}"),
                        Payload::from_trusted(format!("\"after {i}\"")),
                    )
                    .ack(queue, group, [delivery.id])
                    .add(table.clone(), "settled", 1)
                    .add(table.clone(), format!("by.{}", i % 2), 1);
                broker.commit(tx).await
            })
        })
        .collect();
    let mut settled = 0;
    let mut by = [0; 2];
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(_) => {
                assert!(i % 4 != 3 && i != last, "settlement {i} should have failed");
                settled += 1;
                by[i % 2] += 1;
            }
            Err(Error::RecordChanged { key, .. }) => {
                assert_eq!(i % 4, 3, "settlement {i} failed");
                assert_eq!(key, format!("r.{i}"));
            }
            Err(Error::NotPending { .. }) => assert_eq!(i, last, "settlement {i} failed"),
            Err(e) => panic!("settlement {i}: {e}"),
        }
    }
    for i in 0..COMMITS {
        let written = value(&*broker, &table, &format!("r.{i}")).await;
        let expected = if i % 4 == 3 || i == last {
            format!("\"before {i}\"")
        } else {
            format!("\"after {i}\"")
        };
        assert_eq!(written, Some(expected), "r.{i}");
    }
    assert_eq!(
        value(&*broker, &table, "settled").await.unwrap(),
        settled.to_string()
    );
    for (n, count) in by.iter().enumerate() {
        assert_eq!(
            value(&*broker, &table, &format!("by.{n}")).await.unwrap(),
            count.to_string()
        );
    }
    // The failed settlements' messages are still pending; the rest are gone.
    let info = broker.queue_info(&queue).await.unwrap();
    let pending = (0..COMMITS).filter(|i| i % 4 == 3).count();
    assert_eq!(info.groups[0].pending as usize, pending);
    assert_eq!(info.length as usize, pending);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_receives_of_a_group_each_get_their_own() {
    let schema = Schema::fresh();
    let Some(broker) = open(&schema).await else {
        return;
    };
    let broker = Arc::new(broker);
    let queue = QueueName::new("q").unwrap();
    broker
        .create_queue(&queue, QueueConfig::default())
        .await
        .unwrap();
    const MESSAGES: usize = 300;
    let messages = (0..MESSAGES)
        .map(|i| OutgoingMessage::json(&i).unwrap())
        .collect();
    broker.send_batch(&queue, messages).await.unwrap();
    // 12 consumers, each taking at most 1 to 3 at a time, all at once.
    let consumers: Vec<_> = (0..12)
        .map(|c| {
            let (broker, queue) = (broker.clone(), queue.clone());
            tokio::spawn(async move {
                let group = GroupName::new("g").unwrap();
                let consumer = ConsumerName::new(format!("c{c}")).unwrap();
                let most = 1 + c % 3;
                let mut got = Vec::new();
                loop {
                    let taken = broker
                        .receive(
                            &queue,
                            &group,
                            &consumer,
                            ReceiveOptions::new(most, Duration::from_millis(200)),
                        )
                        .await
                        .unwrap();
                    if taken.is_empty() {
                        return (consumer, got);
                    }
                    assert!(taken.len() <= most, "{consumer} took {}", taken.len());
                    // In send order within each take.
                    let ns: Vec<usize> = taken.iter().map(|d| d.payload.json().unwrap()).collect();
                    assert!(ns.windows(2).all(|w| w[0] < w[1]), "{ns:?}");
                    got.extend(ns);
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    let info = {
        let mut per_consumer = Vec::new();
        for task in consumers {
            let (consumer, got) = task.await.unwrap();
            per_consumer.push((consumer.as_str().to_owned(), got.len() as u64));
            all.extend(got);
        }
        let info = broker.queue_info(&queue).await.unwrap();
        (per_consumer, info)
    };
    all.sort_unstable();
    assert_eq!(all, (0..MESSAGES).collect::<Vec<_>>(), "each message once");
    // Each message is held by the consumer that got it.
    let (per_consumer, info) = info;
    let group = &info.groups[0];
    for (name, count) in per_consumer {
        let held = group
            .consumers
            .iter()
            .find(|c| c.name == name)
            .map_or(0, |c| c.pending);
        assert_eq!(held, count, "{name}");
    }
}
