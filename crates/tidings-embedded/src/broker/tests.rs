//! Operations whose store read fails part-way change nothing: no message is
//! left stored but invisible, no delivery is lost from its group.

use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    Broker, ConsumerName, DeadLetterSelection, GroupName, Nack, OutgoingMessage, QueueConfig,
    QueueName, ReceiveOptions,
};

use super::{EmbeddedBroker, EmbeddedOptions};
use crate::store::Space;
use crate::store::faulty::{Faults, FaultyStore};

struct Setup {
    broker: EmbeddedBroker,
    faults: Arc<Faults>,
    queue: QueueName,
    group: GroupName,
    me: ConsumerName,
}

impl Setup {
    async fn new() -> Self {
        let store = FaultyStore::default();
        let faults = store.faults.clone();
        let broker = EmbeddedBroker::with_store(Box::new(store), None, EmbeddedOptions::default())
            .expect("an empty store loads");
        let queue = QueueName::new("jobs").expect("valid");
        broker
            .create_queue(&queue, QueueConfig::default())
            .await
            .expect("created");
        Self {
            broker,
            faults,
            queue,
            group: GroupName::new("workers").expect("valid"),
            me: ConsumerName::new("w1").expect("valid"),
        }
    }

    async fn send(&self, n: usize) {
        for i in 0..n {
            let message = OutgoingMessage::json(&serde_json::json!({ "n": i })).expect("json");
            self.broker.send(&self.queue, message).await.expect("sent");
        }
    }

    async fn receive(&self, max: usize) -> Vec<tidings_core::Delivery> {
        let options = ReceiveOptions::new(max, Duration::ZERO);
        self.broker
            .receive(&self.queue, &self.group, &self.me, options)
            .await
            .expect("received")
    }

    async fn dead_letter_all(&self, n: usize) {
        let got = self.receive(n).await;
        assert_eq!(got.len(), n);
        for d in got {
            let nack = Nack::DeadLetter {
                reason: "bad".into(),
            };
            let done = self.broker.nack(&self.queue, &self.group, &d.id, nack);
            assert!(done.await.expect("nacked"));
        }
    }
}

#[tokio::test]
async fn a_requeue_whose_read_fails_part_way_moves_no_letter() {
    let s = Setup::new().await;
    s.send(3).await;
    s.dead_letter_all(3).await;

    // The second letter's read fails, after the first was read.
    s.faults.fail_reads(Space::Dead, 1);
    let requeue = s
        .broker
        .requeue_dead_letters(&s.queue, DeadLetterSelection::All)
        .await;
    assert!(requeue.is_err(), "{requeue:?}");
    s.faults.heal();
    let info = s.broker.queue_info(&s.queue).await.expect("info");
    assert_eq!(info.dead_letters, 3, "every letter is still dead");
    assert_eq!(info.length, 0, "no message was stored");

    let moved = s
        .broker
        .requeue_dead_letters(&s.queue, DeadLetterSelection::All)
        .await
        .expect("requeued");
    assert_eq!(moved, 3);
    assert_eq!(s.receive(10).await.len(), 3, "each one visible once");
}

#[tokio::test]
async fn a_dead_letter_nack_whose_read_fails_leaves_the_delivery_in_flight() {
    let s = Setup::new().await;
    s.send(1).await;
    let got = s.receive(1).await;
    s.faults.fail_reads(Space::Messages, 0);
    let nack = Nack::DeadLetter {
        reason: "bad".into(),
    };
    let failed = s.broker.nack(&s.queue, &s.group, &got[0].id, nack).await;
    assert!(failed.is_err(), "{failed:?}");
    s.faults.heal();
    let info = s.broker.queue_info(&s.queue).await.expect("info");
    assert_eq!(info.dead_letters, 0);
    assert_eq!(info.groups[0].pending, 1, "still delivered, not lost");
    let ids = [got[0].id.clone()];
    let acked = s.broker.ack(&s.queue, &s.group, &ids).await;
    assert_eq!(acked.expect("acked"), 1);
}

#[tokio::test]
async fn a_retry_past_max_deliveries_whose_read_fails_leaves_the_delivery_in_flight() {
    let store = FaultyStore::default();
    let faults = store.faults.clone();
    let broker = EmbeddedBroker::with_store(Box::new(store), None, EmbeddedOptions::default())
        .expect("loads");
    let queue = QueueName::new("once").expect("valid");
    let config = QueueConfig {
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    broker.create_queue(&queue, config).await.expect("created");
    let message = OutgoingMessage::json(&serde_json::json!(1)).expect("json");
    broker.send(&queue, message).await.expect("sent");
    let (group, me) = (
        GroupName::new("g").expect("valid"),
        ConsumerName::new("c").expect("valid"),
    );
    let options = ReceiveOptions::new(1, Duration::ZERO);
    let got = broker
        .receive(&queue, &group, &me, options)
        .await
        .expect("received");
    faults.fail_reads(Space::Messages, 0);
    let retry = Nack::Retry {
        delay: Duration::ZERO,
    };
    assert!(
        broker
            .nack(&queue, &group, &got[0].id, retry)
            .await
            .is_err()
    );
    faults.heal();
    let info = broker.queue_info(&queue).await.expect("info");
    assert_eq!((info.dead_letters, info.groups[0].pending), (0, 1));
}

#[tokio::test]
async fn a_nack_of_several_whose_second_read_fails_gives_none_back() {
    let s = Setup::new().await;
    s.send(2).await;
    let got = s.receive(2).await;
    let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
    s.faults.fail_reads(Space::Messages, 1);
    let nack = Nack::DeadLetter {
        reason: "bad".into(),
    };
    let failed = s.broker.nack_many(&s.queue, &s.group, &ids, nack).await;
    assert!(failed.is_err(), "{failed:?}");
    s.faults.heal();
    let info = s.broker.queue_info(&s.queue).await.expect("info");
    assert_eq!((info.dead_letters, info.groups[0].pending), (0, 2));
}

/// Sends from 256 producers, 16 at a time each, to a disk that takes 20 ms
/// per commit: returns the most bytes that waited for the writer at once.
async fn peak_backlog(budget: crate::WriteBudget) -> u64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let slow = Duration::from_millis(20);
    let store = crate::store::fjall::FjallStore::open_slow(dir.path(), slow).expect("opens");
    let options = EmbeddedOptions {
        write_budget: budget,
        ..EmbeddedOptions::default()
    };
    let broker = EmbeddedBroker::with_store(Box::new(store), None, options).expect("loads");
    let queue = QueueName::new("firehose").expect("valid");
    broker
        .create_queue(&queue, QueueConfig::default())
        .await
        .expect("created");
    let payload = serde_json::json!({ "blob": "x".repeat(16 * 1024) });
    let message = OutgoingMessage::json(&payload).expect("json");
    let producers: Vec<_> = (0..256)
        .map(|_| {
            let (broker, queue, message) = (broker.clone(), queue.clone(), message.clone());
            tokio::spawn(async move {
                let sends = (0..16).map(|_| broker.send(&queue, message.clone()));
                for sent in futures_util::future::join_all(sends).await {
                    sent.expect("sent");
                }
            })
        })
        .collect();
    for producer in producers {
        producer.await.expect("producer finished");
    }
    assert_eq!(
        broker.queue_info(&queue).await.expect("info").length,
        256 * 16
    );
    broker.store_stats().queued_bytes_peak
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_faster_than_the_disk_wait_within_the_write_budget() {
    let budget = crate::WriteBudget {
        bytes: 1 << 20,
        batches: 1024,
    };
    let bounded = peak_backlog(budget).await;
    // Each batch may go over its estimate by a little (keys, encoding).
    assert!(bounded <= (1 << 20) + (64 << 10), "{bounded} bytes waited");
    // Without a budget worth the name, the same producers queue far more:
    // the disk is slow enough for the bound to matter.
    let unbounded = peak_backlog(crate::WriteBudget {
        bytes: usize::MAX >> 1,
        batches: usize::MAX >> 1,
    })
    .await;
    assert!(unbounded > 8 * bounded, "{unbounded} vs {bounded}");
}

/// Set in a child's environment: the write budget in bytes it floods with.
const FLOOD_CHILD: &str = "TIDINGS_FLOOD_CHILD_BUDGET";

/// The child of the memory test: the flood of `peak_backlog`, then its
/// process's peak resident memory. Does nothing unless started by the test.
#[test]
fn flood_child() {
    let Ok(budget) = std::env::var(FLOOD_CHILD) else {
        return;
    };
    let bytes: usize = budget.parse().expect("a byte count");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let batches = if bytes > 1 << 40 {
        usize::MAX >> 1
    } else {
        1024
    };
    runtime.block_on(peak_backlog(crate::WriteBudget { bytes, batches }));
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let peak = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .expect("VmHWM");
    println!("peak-rss {}", peak.trim());
}

/// The process's peak RSS, in KiB, of a child flooding with `budget` bytes.
fn flood_rss(budget: usize) -> u64 {
    let out = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "broker::tests::flood_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(FLOOD_CHILD, budget.to_string())
        .output()
        .expect("the child ran");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split("peak-rss ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS from the child: {text}"))
}

/// 256 producers with 16 sends of 16 KiB each in flight, against a disk
/// that takes 20 ms per commit, in a process of their own: the peak RSS
/// with a 1 MiB write budget, and without one.
#[test]
fn the_write_budget_bounds_the_memory_of_producers_faster_than_the_disk() {
    let bounded = flood_rss(1 << 20);
    let unbounded = flood_rss(usize::MAX >> 1);
    eprintln!("peak RSS: {bounded} KiB with a 1 MiB budget, {unbounded} KiB without");
    // What waits for the writer is bounded in one, not in the other.
    assert!(bounded < 48 * 1024, "{bounded} KiB with a 1 MiB budget");
    assert!(
        unbounded > bounded + 32 * 1024,
        "{unbounded} KiB without a budget, {bounded} KiB with one"
    );
}

/// Creates `queue` on a broker and sends it `{"n": 0}` to `{"n": count - 1}`.
async fn queue_of_numbers(broker: &EmbeddedBroker, queue: &QueueName, count: u64) {
    broker
        .create_queue(queue, QueueConfig::default())
        .await
        .expect("created");
    for n in 0..count {
        let message = OutgoingMessage::json(&serde_json::json!({ "n": n })).expect("json");
        broker.send(queue, message).await.expect("sent");
    }
}

/// The `n` of each delivery's payload.
fn numbers_of(got: &[tidings_core::Delivery]) -> Vec<serde_json::Value> {
    got.iter()
        .map(|d| d.payload.json::<serde_json::Value>().expect("json")["n"].clone())
        .collect()
}

/// How many records a space of the broker's store holds.
fn stored(broker: &EmbeddedBroker, space: Space) -> usize {
    let mut n = 0;
    broker
        .inner
        .store()
        .scan(space, &mut |_, _| {
            n += 1;
            Ok(())
        })
        .expect("scanned");
    n
}

/// A requeue writes a small record per letter, not its body again: the
/// body stays in the dead-letter record, which is no longer listed (after a
/// restart too) and goes with the message once it is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeued_dead_letters_keep_their_bodies_in_place_until_acked() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let queue = QueueName::new("jobs").expect("valid");
    let group = GroupName::new("workers").expect("valid");
    let me = ConsumerName::new("w1").expect("valid");
    let options = ReceiveOptions::new(10, Duration::ZERO);
    {
        let broker = EmbeddedBroker::open(dir.path()).expect("opened");
        queue_of_numbers(&broker, &queue, 3).await;
        let got = broker
            .receive(&queue, &group, &me, options)
            .await
            .expect("received");
        let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
        let nack = Nack::DeadLetter {
            reason: "bad".into(),
        };
        let nacked = broker.nack_many(&queue, &group, &ids, nack).await;
        assert_eq!(nacked.expect("nacked"), 3);
        let requeued = broker
            .requeue_dead_letters(&queue, DeadLetterSelection::All)
            .await;
        assert_eq!(requeued.expect("requeued"), 3);
        assert_eq!(stored(&broker, Space::Requeued), 3);
        assert_eq!(stored(&broker, Space::Messages), 0);
        assert_eq!(stored(&broker, Space::Dead), 3, "the bodies stay");
        broker.close();
    }
    let broker = EmbeddedBroker::open(dir.path()).expect("reopened");
    let listed = broker.dead_letters(&queue, None, 10).await.expect("listed");
    assert!(
        listed.is_empty(),
        "requeued letters are not dead letters: {listed:?}"
    );
    assert_eq!(
        broker.queue_info(&queue).await.expect("info").dead_letters,
        0
    );
    let got = broker
        .receive(&queue, &group, &me, options)
        .await
        .expect("received");
    let mut payloads = numbers_of(&got);
    payloads.sort_by_key(|n| n.as_u64());
    assert_eq!(payloads, [0, 1, 2]);
    // One fails again: a dead letter of its own, with the body.
    let (again, rest) = got.split_first().expect("three");
    let nack = Nack::DeadLetter {
        reason: "still bad".into(),
    };
    let nacked = broker.nack(&queue, &group, &again.id, nack).await;
    assert!(nacked.expect("nacked"));
    let ids: Vec<_> = rest.iter().map(|d| d.id.clone()).collect();
    assert_eq!(broker.ack(&queue, &group, &ids).await.expect("acked"), 2);
    assert_eq!(stored(&broker, Space::Requeued), 0, "acked: deleted");
    assert_eq!(stored(&broker, Space::Dead), 1, "only the new dead letter");
    let listed = broker.dead_letters(&queue, None, 10).await.expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].payload, again.payload);
    assert_eq!(listed[0].reason, "still bad");
    assert_eq!(broker.queue_info(&queue).await.expect("info").length, 0);
    broker.close();
}

/// A deleted group leaves no record behind: after a restart it is not
/// there, what only it owed is gone, and the other group still has the
/// messages it owes, at the place it had them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_group_stays_deleted_after_a_restart() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let queue = QueueName::new("jobs").expect("valid");
    let (kept, dropped) = (
        GroupName::new("kept").expect("valid"),
        GroupName::new("dropped").expect("valid"),
    );
    let me = ConsumerName::new("w1").expect("valid");
    let options = ReceiveOptions::new(10, Duration::ZERO);
    {
        let broker = EmbeddedBroker::open(dir.path()).expect("opened");
        // Both groups, made after the sends, owe all four.
        queue_of_numbers(&broker, &queue, 4).await;
        // `kept` is done with the first two; `dropped` holds one in flight
        // (with its mark written) and owes the rest.
        let got = broker
            .receive(&queue, &kept, &me, ReceiveOptions::new(2, Duration::ZERO))
            .await
            .expect("received");
        let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
        assert_eq!(broker.ack(&queue, &kept, &ids).await.expect("acked"), 2);
        broker
            .receive(
                &queue,
                &dropped,
                &me,
                ReceiveOptions::new(1, Duration::ZERO),
            )
            .await
            .expect("received");
        broker.close();
    }
    {
        let broker = EmbeddedBroker::open(dir.path()).expect("reopened");
        assert!(stored(&broker, Space::Marks) > 0);
        assert!(
            broker
                .delete_group(&queue, &dropped)
                .await
                .expect("deleted")
        );
        assert_eq!(
            stored(&broker, Space::Messages),
            2,
            "what only it owed went"
        );
        broker.close();
    }
    let broker = EmbeddedBroker::open(dir.path()).expect("reopened");
    let info = broker.queue_info(&queue).await.expect("info");
    let groups: Vec<&str> = info.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(groups, ["kept"]);
    assert_eq!(info.length, 2);
    assert_eq!(stored(&broker, Space::Groups), 1);
    let got = broker
        .receive(&queue, &kept, &me, options)
        .await
        .expect("received");
    assert_eq!(numbers_of(&got), [2, 3]);
    broker.close();
}

/// A write that fails (a full disk, say) is refused, and so is nothing
/// after it for good: the next write reopens the store and rebuilds the
/// index from it, and goes through. What the failed write did is not
/// there, in the running broker or after a restart.
#[tokio::test]
async fn a_failed_write_is_refused_and_the_next_reopens_the_store() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = crate::store::fjall::FjallStore::open(dir.path()).expect("opens");
    let fault = store.fault_switch();
    let broker = EmbeddedBroker::with_store(
        Box::new(store),
        Some(dir.path().to_owned()),
        EmbeddedOptions::default(),
    )
    .expect("loads");
    let queue = QueueName::new("orders").expect("valid");
    broker
        .create_queue(&queue, QueueConfig::default())
        .await
        .expect("created");
    let send = |text: &str| {
        broker.send(
            &queue,
            OutgoingMessage::json(&serde_json::json!(text)).expect("json"),
        )
    };
    send("kept").await.expect("sent");
    fault.store(true, std::sync::atomic::Ordering::Release);
    assert!(send("lost").await.is_err(), "the failed write is refused");
    send("after")
        .await
        .expect("the next write reopens the store");
    broker.ready().await.expect("ready");
    let group = GroupName::new("g").expect("valid");
    let consumer = ConsumerName::new("c").expect("valid");
    let read = |broker: EmbeddedBroker| {
        let (queue, group, consumer) = (queue.clone(), group.clone(), consumer.clone());
        async move {
            let got = broker
                .receive(
                    &queue,
                    &group,
                    &consumer,
                    ReceiveOptions::new(10, Duration::from_millis(50)),
                )
                .await
                .expect("received");
            got.iter()
                .map(|d| d.payload.json::<String>().expect("a string"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(read(broker.clone()).await, ["kept", "after"]);
    broker.close();
    drop(broker);
    let reopened = EmbeddedBroker::open(dir.path()).expect("reopens");
    let group_info = reopened.queue_info(&queue).await.expect("info");
    assert_eq!(
        group_info.groups[0].pending, 2,
        "both delivered, neither acked"
    );
}

/// An idle queue's expired messages, old retained ones and dedup ids go
/// when `maintain` runs (the hub runs it on a timer), not only when the
/// queue is next used; expiries that dead-letter read their messages
/// first.
#[tokio::test]
async fn maintain_applies_time_to_idle_queues() {
    use tidings_core::{ExpiryAction, ManualClock, Timestamp};
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let broker = EmbeddedBroker::in_memory_with(EmbeddedOptions {
        clock: tidings_core::Clock::Manual(clock.clone()),
        ..EmbeddedOptions::default()
    });
    let dropping = QueueName::new("dropping").expect("valid");
    let dead = QueueName::new("dead").expect("valid");
    for (queue, on_expiry) in [
        (&dropping, ExpiryAction::Drop),
        (&dead, ExpiryAction::DeadLetter),
    ] {
        let config = QueueConfig {
            default_ttl: Some(Duration::from_secs(60)),
            on_expiry,
            dedup_window: Duration::from_secs(60),
            ..QueueConfig::default()
        };
        broker.create_queue(queue, config).await.expect("created");
        // More than one step's worth on the first queue.
        let n = if on_expiry == ExpiryAction::Drop {
            2_500
        } else {
            10
        };
        for i in 0..n {
            let mut message = OutgoingMessage::json(&serde_json::json!(i)).expect("json");
            message.dedup_id = Some(format!("d{i}"));
            broker.send(queue, message).await.expect("sent");
        }
    }
    assert_eq!(
        broker.maintain().await.expect("maintained"),
        0,
        "nothing due yet"
    );
    assert_eq!(stored(&broker, Space::Messages), 2_510);
    clock.advance(Duration::from_secs(61));
    let removed = broker.maintain().await.expect("maintained");
    // Messages and dedup ids, for both queues.
    assert_eq!(removed, 2 * 2_500 + 10, "{removed}");
    assert_eq!(stored(&broker, Space::Messages), 0);
    assert_eq!(stored(&broker, Space::Dedup), 0);
    assert_eq!(
        broker.queue_info(&dead).await.expect("info").dead_letters,
        10
    );
    assert_eq!(broker.queue_info(&dropping).await.expect("info").length, 0);
}
