//! Property tests: random sequences of send, receive, ack, nack, expiry,
//! requeue and reopen, checked step by step against a model of the queue.
//!
//! Invariants: every message whose send returned Ok stays until every group
//! has acked it, it expired or it was dead-lettered (never lost, never stored
//! twice); delivery counts are exact; a dead-lettered message is in the
//! dead-letter queue and nowhere else; a group's deliveries follow send order.
//! Time is a manual clock, so expiry and redelivery are deterministic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, DeadLetterSelection, ExpiryAction, GroupName, MessageId, Nack,
    OutgoingMessage, QueueConfig, QueueName, ReceiveOptions, Timestamp,
};
use tidings_embedded::{Clock, EmbeddedBroker, EmbeddedOptions, ManualClock};

const GROUPS: [&str; 2] = ["a", "b"];
const VISIBILITY_MS: u64 = 1_000;
const MAX_DELIVERIES: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Send {
        count: usize,
        ttl: Option<u64>,
        delay: Option<u64>,
        dedup: Option<u8>,
    },
    Receive {
        group: usize,
        max: usize,
    },
    Ack {
        group: usize,
        pick: usize,
    },
    NackRetry {
        group: usize,
        pick: usize,
        delay: u64,
    },
    NackDead {
        group: usize,
        pick: usize,
    },
    Advance {
        ms: u64,
    },
    RequeueAll,
    RequeueOne {
        pick: usize,
    },
    PurgeDeadOne {
        pick: usize,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..4usize, prop::option::weighted(0.3, 100..3_000u64), prop::option::weighted(0.2, 1..2_000u64), prop::option::weighted(0.3, 0..4u8))
            .prop_map(|(count, ttl, delay, dedup)| Op::Send { count, ttl, delay, dedup }),
        4 => (0..2usize, 1..5usize).prop_map(|(group, max)| Op::Receive { group, max }),
        3 => (0..2usize, any::<usize>()).prop_map(|(group, pick)| Op::Ack { group, pick }),
        1 => (0..2usize, any::<usize>(), 0..1_500u64).prop_map(|(group, pick, delay)| Op::NackRetry { group, pick, delay }),
        1 => (0..2usize, any::<usize>()).prop_map(|(group, pick)| Op::NackDead { group, pick }),
        2 => (1..1_500u64).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::RequeueAll),
        1 => any::<usize>().prop_map(|pick| Op::RequeueOne { pick }),
        1 => any::<usize>().prop_map(|pick| Op::PurgeDeadOne { pick }),
        1 => Just(Op::Reopen),
    ]
}

/// A message as the model sees it; `key` orders messages as the engine's seqs do.
#[derive(Debug, Clone)]
struct Msg {
    n: u64,
    expires_at: Option<u64>,
    deliver_at: Option<u64>,
    /// Set on requeued dead letters: only that group gets it.
    only: Option<usize>,
    owed: BTreeSet<usize>,
}

#[derive(Debug, Default)]
struct Group {
    exists: bool,
    counts: BTreeMap<u64, u32>,
    /// key -> deadline
    in_flight: BTreeMap<u64, u64>,
    /// key -> due time of a nack retry
    retry_due: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, PartialEq)]
struct Dead {
    n: u64,
    group: Option<usize>,
    attempts: u32,
    reason: &'static str,
}

#[derive(Debug, Default)]
struct Model {
    now: u64,
    next_key: u64,
    messages: BTreeMap<u64, Msg>,
    ids: BTreeMap<u64, MessageId>,
    groups: [Group; 2],
    dead: Vec<Dead>,
    dedup: BTreeMap<u8, u64>,
    next_n: u64,
}

impl Model {
    fn key_of(&self, id: &MessageId) -> Option<u64> {
        self.ids.iter().find(|(_, v)| *v == id).map(|(k, _)| *k)
    }

    fn add(
        &mut self,
        n: u64,
        expires_at: Option<u64>,
        deliver_at: Option<u64>,
        only: Option<usize>,
    ) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        let owed = match only {
            Some(g) => BTreeSet::from([g]),
            None => self.existing_groups(),
        };
        self.messages.insert(
            key,
            Msg {
                n,
                expires_at,
                deliver_at,
                only,
                owed,
            },
        );
        key
    }

    fn existing_groups(&self) -> BTreeSet<usize> {
        (0..2).filter(|g| self.groups[*g].exists).collect()
    }

    fn settle(&mut self, group: usize, key: u64) {
        let g = &mut self.groups[group];
        g.in_flight.remove(&key);
        g.retry_due.remove(&key);
        g.counts.remove(&key);
        if let Some(m) = self.messages.get_mut(&key) {
            m.owed.remove(&group);
            if m.owed.is_empty() {
                self.remove(key);
            }
        }
    }

    fn remove(&mut self, key: u64) {
        self.messages.remove(&key);
        self.ids.remove(&key);
        for g in &mut self.groups {
            g.in_flight.remove(&key);
            g.retry_due.remove(&key);
            g.counts.remove(&key);
        }
    }

    fn dead_letter(&mut self, group: usize, key: u64, attempts: u32, reason: &'static str) {
        let n = self.messages[&key].n;
        self.dead.push(Dead {
            n,
            group: Some(group),
            attempts,
            reason,
        });
        self.settle(group, key);
    }

    /// Expiry, as the engine applies it before most operations.
    fn maintain(&mut self) {
        let expired: Vec<u64> = self
            .messages
            .iter()
            .filter(|(_, m)| m.expires_at.is_some_and(|t| t <= self.now))
            .map(|(k, _)| *k)
            .collect();
        let mut by_time: Vec<(u64, u64)> = expired
            .iter()
            .map(|k| (self.messages[k].expires_at.unwrap(), *k))
            .collect();
        by_time.sort();
        for (_, key) in by_time {
            let m = &self.messages[&key];
            if m.owed.is_empty() {
                self.dead.push(Dead {
                    n: m.n,
                    group: None,
                    attempts: 0,
                    reason: "expired",
                });
            }
            for &g in &m.owed {
                let attempts = self.groups[g].counts.get(&key).copied().unwrap_or(0);
                self.dead.push(Dead {
                    n: m.n,
                    group: Some(g),
                    attempts,
                    reason: "expired",
                });
            }
            self.remove(key);
        }
    }

    fn create_group(&mut self, group: usize) {
        if self.groups[group].exists {
            return;
        }
        self.groups[group].exists = true;
        for m in self.messages.values_mut() {
            if m.only.is_none_or(|g| g == group) {
                m.owed.insert(group);
            }
        }
    }

    /// What a receive must return: keys with their delivery counts.
    fn receive(&mut self, group: usize, max: usize) -> Vec<(u64, u32)> {
        self.create_group(group);
        let now = self.now;
        let mut timed_out: Vec<(u64, u64)> = self.groups[group]
            .in_flight
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, d)| (*d, *k))
            .collect();
        timed_out.sort();
        for (_, key) in timed_out {
            self.groups[group].in_flight.remove(&key);
            let count = self.groups[group].counts.get(&key).copied().unwrap_or(0);
            if count >= MAX_DELIVERIES {
                self.dead_letter(group, key, count, "deliveries");
            }
        }
        let g = &self.groups[group];
        let ready: Vec<u64> = self
            .messages
            .iter()
            .filter(|(k, m)| {
                m.owed.contains(&group)
                    && !g.in_flight.contains_key(k)
                    && g.retry_due.get(k).is_none_or(|d| *d <= now)
                    && (g.retry_due.contains_key(k) || m.deliver_at.is_none_or(|d| d <= now))
            })
            .map(|(k, _)| *k)
            .take(max)
            .collect();
        let g = &mut self.groups[group];
        ready
            .into_iter()
            .map(|key| {
                g.retry_due.remove(&key);
                let count = g.counts.entry(key).or_insert(0);
                *count += 1;
                g.in_flight.insert(key, now + VISIBILITY_MS);
                (key, *count)
            })
            .collect()
    }
}

struct Harness {
    broker: Option<EmbeddedBroker>,
    dir: Option<tempfile::TempDir>,
    clock: ManualClock,
    model: Model,
    queue: QueueName,
}

impl Harness {
    async fn new(on_disk: bool) -> Self {
        let clock = ManualClock::new(Timestamp(1_700_000_000_000));
        let dir = on_disk.then(|| tempfile::tempdir().unwrap());
        let mut h = Self {
            broker: None,
            dir,
            clock,
            model: Model::default(),
            queue: QueueName::new("q").unwrap(),
        };
        h.open();
        let config = QueueConfig {
            visibility_timeout: Duration::from_millis(VISIBILITY_MS),
            max_deliveries: MAX_DELIVERIES,
            on_expiry: ExpiryAction::DeadLetter,
            ..QueueConfig::default()
        };
        h.b().create_queue(&h.queue, config).await.unwrap();
        h
    }

    fn open(&mut self) {
        let options = EmbeddedOptions {
            clock: Clock::Manual(self.clock.clone()),
            ..EmbeddedOptions::default()
        };
        self.broker = Some(match &self.dir {
            Some(dir) => EmbeddedBroker::open_with(dir.path(), options).unwrap(),
            None => EmbeddedBroker::in_memory_with(options),
        });
    }

    fn b(&self) -> &EmbeddedBroker {
        self.broker.as_ref().unwrap()
    }

    fn group(i: usize) -> GroupName {
        GroupName::new(GROUPS[i]).unwrap()
    }

    fn pick_in_flight(&self, group: usize, pick: usize) -> Option<u64> {
        let keys: Vec<u64> = self.model.groups[group].in_flight.keys().copied().collect();
        (!keys.is_empty()).then(|| keys[pick % keys.len()])
    }

    async fn apply(&mut self, op: &Op) {
        let now = self.model.now;
        let (b, queue) = (self.broker.as_ref().unwrap(), self.queue.clone());
        match *op {
            Op::Send {
                count,
                ttl,
                delay,
                dedup,
            } => {
                let mut batch = Vec::new();
                let mut ns = Vec::new();
                for _ in 0..count {
                    let n = self.model.next_n;
                    self.model.next_n += 1;
                    let mut m = OutgoingMessage::json(&json!({ "n": n })).unwrap();
                    m.ttl = ttl.map(Duration::from_millis);
                    m.delay = delay.map(Duration::from_millis);
                    m.dedup_id = dedup.map(|d| format!("d{d}"));
                    batch.push(m);
                    ns.push(n);
                }
                let receipts = b.send_batch(&queue, batch).await.unwrap();
                for (n, receipt) in ns.into_iter().zip(receipts) {
                    let original = dedup.and_then(|d| self.model.dedup.get(&d).copied());
                    if let Some(original) = original {
                        assert!(receipt.duplicate, "a repeated dedup id is a duplicate");
                        assert_eq!(
                            Some(&receipt.id),
                            self.model.ids.get(&original).or(Some(&receipt.id))
                        );
                        continue;
                    }
                    assert!(!receipt.duplicate);
                    let key = self
                        .model
                        .add(n, ttl.map(|t| now + t), delay.map(|d| now + d), None);
                    self.model.ids.insert(key, receipt.id);
                    if let Some(d) = dedup {
                        self.model.dedup.insert(d, key);
                    }
                }
            }
            Op::Receive { group, max } => {
                let got = b
                    .receive(
                        &queue,
                        &Self::group(group),
                        &ConsumerName::new("c").unwrap(),
                        ReceiveOptions::new(max, Duration::ZERO),
                    )
                    .await
                    .unwrap();
                let expected = self.model.receive(group, max);
                assert_eq!(
                    got.len(),
                    expected.len(),
                    "delivered {got:?}, expected keys {expected:?}"
                );
                for (d, (key, count)) in got.iter().zip(expected) {
                    let n = d.payload.json::<serde_json::Value>().unwrap()["n"]
                        .as_u64()
                        .unwrap();
                    assert_eq!(
                        n, self.model.messages[&key].n,
                        "send order within the group"
                    );
                    assert_eq!(d.delivery_count, count, "exact delivery count");
                    match self.model.ids.get(&key) {
                        Some(id) => assert_eq!(&d.id, id),
                        None => {
                            assert!(self.model.key_of(&d.id).is_none());
                            self.model.ids.insert(key, d.id.clone());
                        }
                    }
                }
            }
            Op::Ack { group, pick } => {
                let Some(key) = self.pick_in_flight(group, pick) else {
                    return;
                };
                let id = self.model.ids[&key].clone();
                assert_eq!(b.ack(&queue, &Self::group(group), &[id]).await.unwrap(), 1);
                self.model.settle(group, key);
            }
            Op::NackRetry { group, pick, delay } => {
                let Some(key) = self.pick_in_flight(group, pick) else {
                    return;
                };
                let id = self.model.ids[&key].clone();
                let nack = Nack::Retry {
                    delay: Duration::from_millis(delay),
                };
                assert!(
                    b.nack(&queue, &Self::group(group), &id, nack)
                        .await
                        .unwrap()
                );
                let g = &mut self.model.groups[group];
                g.in_flight.remove(&key);
                let count = g.counts[&key];
                if count >= MAX_DELIVERIES {
                    self.model.dead_letter(group, key, count, "retried");
                } else {
                    g.retry_due.insert(key, now + delay);
                }
            }
            Op::NackDead { group, pick } => {
                let Some(key) = self.pick_in_flight(group, pick) else {
                    return;
                };
                let id = self.model.ids[&key].clone();
                let nack = Nack::DeadLetter {
                    reason: "nacked".into(),
                };
                assert!(
                    b.nack(&queue, &Self::group(group), &id, nack)
                        .await
                        .unwrap()
                );
                self.model.groups[group].in_flight.remove(&key);
                let count = self.model.groups[group].counts[&key];
                self.model.dead_letter(group, key, count, "nacked");
            }
            Op::Advance { ms } => {
                self.clock.advance(Duration::from_millis(ms));
                self.model.now += ms;
            }
            Op::RequeueAll | Op::RequeueOne { .. } | Op::PurgeDeadOne { .. } => {
                let letters = b.dead_letters(&queue, None, usize::MAX).await.unwrap();
                let chosen: Vec<usize> = match *op {
                    Op::RequeueAll => (0..letters.len()).collect(),
                    Op::RequeueOne { pick } | Op::PurgeDeadOne { pick } if !letters.is_empty() => {
                        vec![pick % letters.len()]
                    }
                    _ => vec![],
                };
                let ids = letters
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| chosen.contains(i))
                    .map(|(_, d)| d.id.clone())
                    .collect();
                if let Op::PurgeDeadOne { .. } = op {
                    let purged = b
                        .purge_dead_letters(&queue, DeadLetterSelection::Ids(ids))
                        .await
                        .unwrap();
                    assert_eq!(purged as usize, chosen.len());
                } else {
                    let requeued = b
                        .requeue_dead_letters(&queue, DeadLetterSelection::Ids(ids))
                        .await
                        .unwrap();
                    assert_eq!(requeued as usize, chosen.len());
                }
                let mut kept = Vec::new();
                for (i, dead) in std::mem::take(&mut self.model.dead).into_iter().enumerate() {
                    if !chosen.contains(&i) {
                        kept.push(dead);
                    } else if !matches!(op, Op::PurgeDeadOne { .. }) {
                        self.model.add(dead.n, None, None, dead.group);
                    }
                }
                self.model.dead = kept;
            }
            Op::Reopen => {
                if self.dir.is_none() {
                    return;
                }
                // Deliveries, their deadlines and retry delays survive the restart.
                self.broker.take().unwrap().close();
                self.open();
            }
        }
        self.model.maintain();
    }

    async fn check(&self) {
        let info = self.b().queue_info(&self.queue).await.unwrap();
        let model = &self.model;
        assert_eq!(
            info.length as usize,
            model.messages.len(),
            "stored messages"
        );
        assert_eq!(info.dead_letters as usize, model.dead.len(), "dead letters");
        for group in &info.groups {
            let gi = GROUPS
                .iter()
                .position(|g| *g == group.name.as_str())
                .unwrap();
            let owed = model
                .messages
                .values()
                .filter(|m| m.owed.contains(&gi))
                .count();
            assert_eq!(
                group.pending as usize,
                model.groups[gi].in_flight.len(),
                "pending in {}",
                group.name
            );
            assert_eq!(
                (group.ready + group.delayed + group.pending) as usize,
                owed,
                "owed by {}",
                group.name
            );
        }
        let letters = self
            .b()
            .dead_letters(&self.queue, None, usize::MAX)
            .await
            .unwrap();
        let seen: Vec<Dead> = letters
            .iter()
            .map(|d| Dead {
                n: d.payload.json::<serde_json::Value>().unwrap()["n"]
                    .as_u64()
                    .unwrap(),
                group: d
                    .group
                    .as_ref()
                    .map(|g| GROUPS.iter().position(|x| *x == g.as_str()).unwrap()),
                attempts: d.attempts,
                reason: ["expired", "nacked", "retried", "deliveries"]
                    .into_iter()
                    .find(|r| d.reason.contains(r))
                    .unwrap_or("?"),
            })
            .collect();
        assert_eq!(seen, model.dead, "dead-letter queue");
        // A dead-lettered message is not also owed by the group that gave up on it.
        for dead in &model.dead {
            if let Some(g) = dead.group {
                let still = model
                    .messages
                    .values()
                    .any(|m| m.n == dead.n && m.owed.contains(&g));
                assert!(
                    !still,
                    "message {} is both dead-lettered and owed by group {g}",
                    dead.n
                );
            }
        }
    }
}

fn run(ops: &[Op], on_disk: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = Harness::new(on_disk).await;
        for op in ops {
            h.apply(op).await;
            h.check().await;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn in_memory_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn on_disk_with_reopens_matches_the_model(ops in prop::collection::vec(op(), 1..80)) {
        run(&ops, true);
    }
}

/// Cases proptest once found, kept as plain tests.
#[test]
fn expiry_after_a_retry_nack() {
    let mut ops: Vec<Op> = [2, 1, 1, 1, 1, 1]
        .into_iter()
        .map(|count| Op::Send {
            count,
            ttl: None,
            delay: None,
            dedup: None,
        })
        .collect();
    ops.push(Op::Send {
        count: 2,
        ttl: Some(100),
        delay: None,
        dedup: None,
    });
    for max in [3, 1, 2] {
        ops.push(Op::Receive { group: 1, max });
    }
    ops.extend([Op::Ack { group: 1, pick: 0 }, Op::Ack { group: 1, pick: 0 }]);
    ops.push(Op::Receive { group: 1, max: 3 });
    ops.extend([Op::Ack { group: 1, pick: 0 }, Op::Ack { group: 1, pick: 0 }]);
    ops.push(Op::NackRetry {
        group: 1,
        pick: 383_783_659_762_610_643,
        delay: 0,
    });
    ops.push(Op::Advance { ms: 437 });
    run(&ops, false);
}
