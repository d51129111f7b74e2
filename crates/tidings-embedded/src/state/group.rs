//! Where each message stands for one consumer group.
//!
//! A stored, visible message the group still owes is in exactly one of
//! `ready` (deliverable now, in send order), `delayed` (until a time) or
//! `in_flight` (delivered, waiting for an ack until a deadline).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use tidings_core::{ConsumerInfo, ConsumerName, GroupInfo, GroupName, Timestamp};

use super::seqmap::SeqSet;
use crate::records::{Mark, encode, mark_key};
use crate::store::{Batch, Space};

/// One delivery waiting for its ack.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) consumer: ConsumerName,
    pub(crate) deadline: u64,
}

#[derive(Debug, Default)]
pub(crate) struct ConsumerStats {
    pub(crate) pending: u64,
    pub(crate) last_seen: u64,
}

#[derive(Debug)]
pub(crate) struct GroupState {
    pub(crate) id: u64,
    pub(crate) name: GroupName,
    pub(crate) ready: SeqSet,
    /// `(due, seq)`, earliest first, with `due_of` as its reverse index.
    pub(crate) delayed: BTreeSet<(u64, u64)>,
    due_of: HashMap<u64, u64>,
    pub(crate) in_flight: HashMap<u64, InFlight>,
    /// `(deadline, seq)` of every in-flight message, earliest first.
    pub(crate) deadlines: BTreeSet<(u64, u64)>,
    /// Deliveries so far of each message delivered at least once.
    pub(crate) counts: HashMap<u64, u32>,
    pub(crate) consumers: BTreeMap<ConsumerName, ConsumerStats>,
    /// Messages that have a mark in the store, so that only those get a tombstone.
    marked: HashSet<u64>,
}

impl GroupState {
    pub(crate) fn new(id: u64, name: GroupName) -> Self {
        Self {
            id,
            name,
            ready: SeqSet::default(),
            delayed: BTreeSet::new(),
            due_of: HashMap::new(),
            in_flight: HashMap::new(),
            deadlines: BTreeSet::new(),
            counts: HashMap::new(),
            consumers: BTreeMap::new(),
            marked: HashSet::new(),
        }
    }

    /// Writes this group's mark for a message.
    pub(crate) fn put_mark(&mut self, queue: u64, seq: u64, mark: &Mark, batch: &mut Batch) {
        batch.put(Space::Marks, mark_key(queue, self.id, seq), encode(mark));
        self.marked.insert(seq);
    }

    /// Deletes this group's mark for a message, if it has one.
    pub(crate) fn drop_mark(&mut self, queue: u64, seq: u64, batch: &mut Batch) {
        if self.marked.remove(&seq) {
            batch.delete(Space::Marks, mark_key(queue, self.id, seq));
        }
    }

    /// Notes a mark found in the store at recovery.
    pub(crate) fn note_mark(&mut self, seq: u64) {
        self.marked.insert(seq);
    }

    /// The mark of a delivery still in flight, if `seq` is.
    pub(crate) fn delivery_mark(&self, seq: u64) -> Option<Mark> {
        let flight = self.in_flight.get(&seq)?;
        Some(Mark::Delivered {
            count: self.counts.get(&seq).copied().unwrap_or(1),
            deadline: flight.deadline,
            consumer: flight.consumer.to_string(),
        })
    }

    /// Makes a message the group owes deliverable at `due` (now or later).
    pub(crate) fn schedule(&mut self, seq: u64, due: Option<u64>, now: u64) {
        match due {
            Some(due) if due > now => self.delay(seq, due),
            _ => {
                self.ready.add(seq);
            }
        }
    }

    /// Holds a message back until `due`.
    pub(crate) fn delay(&mut self, seq: u64, due: u64) {
        self.delayed.insert((due, seq));
        self.due_of.insert(seq, due);
    }

    /// Records a delivery to `consumer`; returns the new delivery count.
    pub(crate) fn deliver(
        &mut self,
        seq: u64,
        consumer: &ConsumerName,
        deadline: u64,
        now: u64,
    ) -> u32 {
        let count = self.counts.get(&seq).copied().unwrap_or(0) + 1;
        self.fly(seq, count, consumer, deadline).last_seen = now;
        count
    }

    /// Puts `seq` in flight to `consumer` until `deadline`, as delivery number `count`.
    fn fly(
        &mut self,
        seq: u64,
        count: u32,
        consumer: &ConsumerName,
        deadline: u64,
    ) -> &mut ConsumerStats {
        self.counts.insert(seq, count);
        let flight = InFlight {
            consumer: consumer.clone(),
            deadline,
        };
        self.in_flight.insert(seq, flight);
        self.deadlines.insert((deadline, seq));
        let stats = self.consumers.entry(consumer.clone()).or_default();
        stats.pending += 1;
        stats
    }

    /// Puts back a delivery read from the store: in flight until `deadline`
    /// (if that has passed, the next receive makes it deliverable again).
    pub(crate) fn restore_delivery(
        &mut self,
        seq: u64,
        count: u32,
        consumer: &ConsumerName,
        deadline: u64,
    ) {
        self.fly(seq, count, consumer, deadline);
    }

    /// Ends a delivery (ack, nack or timeout). Returns false if `seq` was not in flight.
    pub(crate) fn end_delivery(&mut self, seq: u64) -> bool {
        let Some(flight) = self.in_flight.remove(&seq) else {
            return false;
        };
        self.deadlines.remove(&(flight.deadline, seq));
        if let Some(stats) = self.consumers.get_mut(&flight.consumer) {
            stats.pending = stats.pending.saturating_sub(1);
        }
        true
    }

    /// Forgets a message entirely (settled, expired or purged).
    pub(crate) fn forget(&mut self, seq: u64) {
        self.end_delivery(seq);
        self.ready.remove(seq);
        if let Some(due) = self.due_of.remove(&seq) {
            self.delayed.remove(&(due, seq));
        }
        self.counts.remove(&seq);
    }

    /// Whether the group still has this message (ready, delayed or in flight).
    pub(crate) fn holds(&self, seq: u64) -> bool {
        self.ready.contains(seq)
            || self.due_of.contains_key(&seq)
            || self.in_flight.contains_key(&seq)
    }

    /// Moves delayed messages whose time has come to `ready`.
    pub(crate) fn promote_due(&mut self, now: u64) {
        while let Some(&(due, seq)) = self.delayed.first() {
            if due > now {
                break;
            }
            self.delayed.pop_first();
            self.due_of.remove(&seq);
            self.ready.add(seq);
        }
    }

    /// Messages whose visibility timeout has passed, earliest first.
    pub(crate) fn timed_out(&self, now: u64) -> Vec<u64> {
        self.deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|&(_, seq)| seq)
            .collect()
    }

    /// The earliest time something of this group becomes deliverable.
    pub(crate) fn next_due(&self) -> Option<u64> {
        let delayed = self.delayed.first().map(|&(due, _)| due);
        let deadline = self.deadlines.first().map(|&(d, _)| d);
        match (delayed, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The deliveries in flight, oldest message first, at most `limit`:
    /// `(seq, flight, delivery count)`.
    pub(crate) fn pending(&self, limit: usize) -> Vec<(u64, &InFlight, u32)> {
        let mut seqs: Vec<u64> = self.in_flight.keys().copied().collect();
        seqs.sort_unstable();
        seqs.into_iter()
            .take(limit)
            .filter_map(|seq| {
                let flight = self.in_flight.get(&seq)?;
                Some((seq, flight, self.counts.get(&seq).copied().unwrap_or(1)))
            })
            .collect()
    }

    /// Removes `consumer` from the list if it holds nothing in flight;
    /// returns whether it did.
    pub(crate) fn forget_consumer(&mut self, consumer: &ConsumerName) -> bool {
        if self.consumers.get(consumer).is_some_and(|s| s.pending == 0) {
            self.consumers.remove(consumer);
            return true;
        }
        false
    }

    /// Every message the group still owes (ready, delayed or in flight).
    pub(crate) fn owed(&self) -> Vec<u64> {
        let mut owed: Vec<u64> = self.ready.keys().collect();
        owed.extend(self.due_of.keys().copied());
        owed.extend(self.in_flight.keys().copied());
        owed
    }

    /// Deletes the marks this group has in the store.
    pub(crate) fn drop_marks(&mut self, queue: u64, batch: &mut Batch) {
        for seq in self.marked.drain() {
            batch.delete(Space::Marks, mark_key(queue, self.id, seq));
        }
    }

    pub(crate) fn clear(&mut self) {
        self.ready.clear();
        self.delayed.clear();
        self.due_of.clear();
        self.in_flight.clear();
        self.deadlines.clear();
        self.counts.clear();
        for stats in self.consumers.values_mut() {
            stats.pending = 0;
        }
    }

    pub(crate) fn info(&self) -> GroupInfo {
        GroupInfo {
            name: self.name.clone(),
            ready: self.ready.len() as u64,
            delayed: self.delayed.len() as u64,
            pending: self.in_flight.len() as u64,
            consumers: self
                .consumers
                .iter()
                .map(|(name, s)| ConsumerInfo {
                    name: name.to_string(),
                    pending: s.pending,
                    last_seen: Timestamp(s.last_seen),
                })
                .collect(),
        }
    }
}
