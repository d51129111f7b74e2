//! Property tests on Redis: random sequences of batch sends (with dedup ids),
//! receives, acks, dead letters, requeues and dead-letter purges by two
//! groups, checked step by step against a model.
//!
//! Invariants: each group gets every message exactly once, in send order
//! (requeued ones again, for the group that gave up on them only); a message
//! stays until every group is done with it; a dead letter is in the
//! dead-letter queue and nowhere else; counts in `queue_info` are exact.
//! Redis keeps time itself, so this model has no timeouts (the embedded
//! engine's property tests cover those with a manual clock).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, DeadLetterSelection, GroupName, MessageId, Nack, OutgoingMessage,
    QueueConfig, QueueName, ReceiveOptions,
};

const GROUPS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
enum Op {
    Send { count: usize, dedup: Option<u8> },
    Receive { group: usize, max: usize },
    Ack { group: usize, pick: usize },
    DeadLetter { group: usize, pick: usize },
    RequeueAll,
    PurgeDead,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1..4usize, proptest::option::weighted(0.3, 0..3u8))
            .prop_map(|(count, dedup)| Op::Send { count, dedup }),
        3 => (0..2usize, 1..4usize).prop_map(|(group, max)| Op::Receive { group, max }),
        3 => (0..2usize, any::<usize>()).prop_map(|(group, pick)| Op::Ack { group, pick }),
        1 => (0..2usize, any::<usize>()).prop_map(|(group, pick)| Op::DeadLetter { group, pick }),
        1 => Just(Op::RequeueAll),
        1 => Just(Op::PurgeDead),
    ]
}

/// Stream ids in numeric order.
type Key = (u64, u64);

fn key(id: &MessageId) -> Key {
    let (ms, seq) = id.as_str().split_once('-').unwrap();
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// One stream entry of the model.
struct Entry {
    id: MessageId,
    n: i64,
    /// Set for requeued dead letters: only this group gets it.
    only: Option<usize>,
    /// Groups done with it (acked, dead-lettered or skipped).
    done: BTreeSet<usize>,
}

#[derive(Default)]
struct Model {
    /// Entries in stream order, by stream id.
    stream: BTreeMap<Key, Entry>,
    /// Per group that exists: the last id read, and deliveries in flight.
    groups: BTreeMap<usize, (Option<Key>, Vec<MessageId>)>,
    dead: Vec<(i64, usize)>,
    dedup: BTreeMap<u8, MessageId>,
    next_n: i64,
}

impl Model {
    fn finish(&mut self, id: &MessageId, group: usize) {
        let groups: BTreeSet<usize> = self.groups.keys().copied().collect();
        let k = key(id);
        if let Some(e) = self.stream.get_mut(&k) {
            e.done.insert(group);
            if groups.is_subset(&e.done) {
                self.stream.remove(&k);
            }
        }
    }
}

async fn check(ops: Vec<Op>) {
    let Some(fx) = common::fixture().await else {
        return;
    };
    let b = &fx.broker;
    let queue = QueueName::new("props").unwrap();
    b.create_queue(&queue, QueueConfig::default())
        .await
        .unwrap();
    let g = |i: usize| GroupName::new(GROUPS[i]).unwrap();
    let me = ConsumerName::new("c").unwrap();
    let mut m = Model::default();
    for op in ops {
        match op {
            Op::Send { count, dedup } => {
                let mut batch = Vec::new();
                for _ in 0..count {
                    let mut msg = OutgoingMessage::json(&json!({ "n": m.next_n })).unwrap();
                    if let Some(d) = dedup {
                        msg = msg.dedup_id(format!("d{d}"));
                    }
                    batch.push((m.next_n, msg));
                    m.next_n += 1;
                }
                let receipts = b
                    .send_batch(&queue, batch.iter().map(|(_, msg)| msg.clone()).collect())
                    .await
                    .unwrap();
                for ((n, _), r) in batch.iter().zip(receipts) {
                    match dedup.and_then(|d| m.dedup.get(&d)) {
                        Some(first) => {
                            assert!(r.duplicate);
                            assert_eq!(&r.id, first);
                        }
                        None => {
                            assert!(!r.duplicate);
                            if let Some(d) = dedup {
                                m.dedup.insert(d, r.id.clone());
                            }
                            m.stream.insert(
                                key(&r.id),
                                Entry {
                                    id: r.id,
                                    n: *n,
                                    only: None,
                                    done: BTreeSet::new(),
                                },
                            );
                        }
                    }
                }
            }
            Op::Receive { group, max } => {
                m.groups.entry(group).or_default();
                let got = b
                    .receive(
                        &queue,
                        &g(group),
                        &me,
                        ReceiveOptions::new(max, Duration::ZERO),
                    )
                    .await
                    .unwrap();
                // What the model expects: the next entries after the group's
                // position, skipping those meant for the other group.
                let after = m.groups[&group].0;
                let mut expected = Vec::new();
                let mut skipped = Vec::new();
                let mut last = after;
                let from = after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
                for (k, e) in m.stream.range((from, std::ops::Bound::Unbounded)) {
                    if expected.len() == max {
                        break;
                    }
                    last = Some(*k);
                    if e.only.is_some_and(|o| o != group) {
                        skipped.push(e.id.clone());
                    } else {
                        expected.push((e.id.clone(), e.n));
                    }
                }
                let seen: Vec<(MessageId, i64)> = got
                    .iter()
                    .map(|d| {
                        (
                            d.id.clone(),
                            d.payload.json::<serde_json::Value>().unwrap()["n"]
                                .as_i64()
                                .unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(seen, expected, "group {group} received");
                assert!(got.iter().all(|d| d.delivery_count == 1));
                for id in skipped {
                    m.finish(&id, group);
                }
                let entry = m.groups.get_mut(&group).unwrap();
                entry.0 = last;
                entry.1.extend(got.into_iter().map(|d| d.id));
            }
            Op::Ack { group, pick } | Op::DeadLetter { group, pick } => {
                let Some((_, inflight)) = m.groups.get_mut(&group) else {
                    continue;
                };
                if inflight.is_empty() {
                    continue;
                }
                let id = inflight.remove(pick % inflight.len());
                if matches!(op, Op::Ack { .. }) {
                    assert_eq!(
                        b.ack(&queue, &g(group), std::slice::from_ref(&id))
                            .await
                            .unwrap(),
                        1
                    );
                } else {
                    let nack = Nack::DeadLetter {
                        reason: "bad".into(),
                    };
                    assert!(b.nack(&queue, &g(group), &id, nack).await.unwrap());
                    m.dead.push((m.stream[&key(&id)].n, group));
                }
                m.finish(&id, group);
            }
            Op::RequeueAll => {
                let n = b
                    .requeue_dead_letters(&queue, DeadLetterSelection::All)
                    .await
                    .unwrap();
                assert_eq!(n as usize, m.dead.len());
                // New entries, in dead-letter order, after everything else.
                let info_ids = b.dead_letters(&queue, None, 1000).await.unwrap();
                assert!(info_ids.is_empty());
                let newest = fetch_newest(&fx, m.dead.len()).await;
                for ((n, group), id) in m.dead.drain(..).zip(newest) {
                    let entry = Entry {
                        id: id.clone(),
                        n,
                        only: Some(group),
                        done: BTreeSet::new(),
                    };
                    m.stream.insert(key(&id), entry);
                }
            }
            Op::PurgeDead => {
                let n = b
                    .purge_dead_letters(&queue, DeadLetterSelection::All)
                    .await
                    .unwrap();
                assert_eq!(n as usize, m.dead.len());
                m.dead.clear();
            }
        }
        let info = b.queue_info(&queue).await.unwrap();
        assert_eq!(info.length as usize, m.stream.len(), "length");
        assert_eq!(info.dead_letters as usize, m.dead.len(), "dead letters");
        for gi in &info.groups {
            let i = GROUPS.iter().position(|n| *n == gi.name.as_str()).unwrap();
            assert_eq!(
                gi.pending as usize,
                m.groups[&i].1.len(),
                "pending of {}",
                gi.name
            );
        }
    }
}

/// The ids of the newest `n` entries of the test's stream, oldest first.
async fn fetch_newest(fx: &common::RedisFixture, n: usize) -> Vec<MessageId> {
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let ids: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(format!("{}props", fx.prefix))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(n)
        .query(&mut conn)
        .unwrap();
    ids.into_iter().rev().map(|(id, _)| MessageId(id)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
    #[test]
    fn queues_on_redis_keep_their_invariants(ops in proptest::collection::vec(op(), 1..40)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(check(ops));
    }
}
