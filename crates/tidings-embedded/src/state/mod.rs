//! The engine's in-memory index of everything in the store, and its rebuild
//! from the store when the engine opens.

mod group;
mod queue;
mod seqmap;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use tidings_core::{ConsumerName, Error, GroupName, MessageId, QueueName, Result};

pub(crate) use queue::{GiveBack, QueueState, stored_message};

use crate::records::{
    DeadRecord, DedupRecord, FORMAT, GroupRecord, META_FORMAT, META_SEQ, Mark, MessageRecord,
    QueueRecord, RECEIPT_TAG, Receipt, RequeuedRecord, decode, encode, mark_key, split_key,
    u64_value,
};
use crate::store::{Batch, Sent, Space, Store};

/// How many ids are reserved per write of the persisted high-water mark.
const SEQ_RESERVE: u64 = 1 << 20;

/// The one counter all ids come from. Its high-water mark is persisted ahead
/// of use, so ids are never reused after a restart.
pub(crate) struct SeqAlloc {
    next: u64,
    reserved: u64,
}

impl SeqAlloc {
    /// Records exactly how far ids have gone (at a clean close), so the next
    /// open continues from there instead of from the reserved mark.
    pub(crate) fn checkpoint(&mut self, batch: &mut Batch) {
        self.reserved = self.next;
        batch.put(
            Space::Meta,
            META_SEQ.to_vec(),
            self.reserved.to_be_bytes().to_vec(),
        );
    }

    pub(crate) fn next(&mut self, batch: &mut Batch) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.next > self.reserved {
            self.reserved = self.next + SEQ_RESERVE;
            batch.put(
                Space::Meta,
                META_SEQ.to_vec(),
                self.reserved.to_be_bytes().to_vec(),
            );
        }
        seq
    }
}

/// How long a delivery may stay unwritten: one acked sooner is never written.
pub(crate) const MARK_DELAY_MS: u64 = 100;

/// The deliveries of one receive whose marks are not written yet (and the
/// key of their receipt, if the receive wrote one).
pub(crate) struct DeferredMarks {
    pub(crate) at: u64,
    pub(crate) queue: QueueName,
    pub(crate) queue_id: u64,
    pub(crate) group: GroupName,
    pub(crate) seqs: Vec<u64>,
    pub(crate) receipt: Option<Vec<u8>>,
}

/// Messages read before the engine's lock, by queue id and seq.
pub(crate) type Prefetched = HashMap<(u64, u64), MessageRecord>;

/// What an operation on the index needs besides the index.
pub(crate) struct Ctx<'a> {
    pub(crate) store: &'a dyn Store,
    pub(crate) batch: &'a mut Batch,
    pub(crate) seq: &'a mut SeqAlloc,
    pub(crate) now: u64,
    /// Deliveries to write later, if still in flight.
    pub(crate) deferred: &'a mut VecDeque<DeferredMarks>,
    /// New messages, made visible after the batch is written or synced.
    pub(crate) sent: Vec<Sent>,
    /// Messages read before the lock was taken, by queue id and seq: what
    /// expiries that dead-letter need (nothing is read under the lock for them).
    pub(crate) prefetched: Prefetched,
    /// Set when an expiry was left for later because its message was not
    /// read yet (see `EmbeddedBroker::expire_unread`).
    pub(crate) unread_expiries: bool,
    /// The values of counter records, as last written (see [`State::counters`]).
    pub(crate) counters: &'a mut HashMap<Vec<u8>, i64>,
}

/// The public id of a message: its sequence number in decimal.
pub(crate) fn message_id(seq: u64) -> MessageId {
    MessageId(seq.to_string())
}

/// Reads a message id back; ids of other formats match nothing.
pub(crate) fn parse_id(id: &MessageId) -> Option<u64> {
    id.as_str().parse().ok()
}

pub(crate) struct State {
    pub(crate) queues: BTreeMap<QueueName, QueueState>,
    pub(crate) seq: SeqAlloc,
    /// Deliveries made no longer than `MARK_DELAY_MS` ago, oldest first.
    pub(crate) deferred: VecDeque<DeferredMarks>,
    /// The values of counter records ([`tidings_core::TxOp::Add`]) written
    /// since the store was opened, by record key: a counter changed by
    /// every publish is not read from the store under the lock each time.
    /// Kept exact by every record write (an add sets it, a put or delete
    /// drops it); rebuilt empty with the state.
    pub(crate) counters: HashMap<Vec<u8>, i64>,
}

impl State {
    /// Writes the marks of deliveries made at or before `up_to` that are
    /// still in flight, so they survive a restart, and deletes their
    /// receipts in the same batch.
    pub(crate) fn flush_deferred(&mut self, up_to: u64, batch: &mut Batch) {
        while self.deferred.front().is_some_and(|d| d.at <= up_to) {
            let Some(d) = self.deferred.pop_front() else {
                break;
            };
            if let Some(key) = d.receipt {
                batch.delete(Space::Marks, key);
            }
            let Some(q) = self.queues.get_mut(&d.queue) else {
                continue;
            };
            if q.id() != d.queue_id {
                continue;
            }
            let Some(g) = q.groups.get_mut(&d.group) else {
                continue;
            };
            for seq in d.seqs {
                if let Some(mark) = g.delivery_mark(seq) {
                    g.put_mark(d.queue_id, seq, &mark, batch);
                }
            }
        }
    }

    /// Rebuilds the index from the store: the format check and the id
    /// high-water mark, then each record family in turn.
    pub(crate) fn load(store: &dyn Store, now: u64) -> Result<(Self, Batch)> {
        let mut batch = Batch::default();
        let reserved = load_meta(store, &mut batch)?;
        let mut loader = Loader::default();
        loader.queues(store)?;
        loader.groups(store)?;
        let mut marks = loader.marks(store, &mut batch)?;
        for space in [Space::Messages, Space::Requeued] {
            loader.messages(store, space, &mut marks, &mut batch, now)?;
        }
        loader.dedup(store)?;
        loader.dead(store)?;
        for q in loader.queues.values_mut() {
            q.dedup_order.make_contiguous().sort();
        }
        let next = reserved.max(loader.max_seen + 1).max(1);
        let state = State {
            queues: loader.queues,
            seq: SeqAlloc {
                next,
                reserved: next,
            },
            deferred: VecDeque::new(),
            counters: HashMap::new(),
        };
        Ok((state, batch))
    }
}

/// Checks the data format (writing it into a new store) and returns the
/// persisted id high-water mark.
fn load_meta(store: &dyn Store, batch: &mut Batch) -> Result<u64> {
    let mut format = None;
    let mut reserved = 0;
    store.scan(Space::Meta, &mut |k, v| {
        match k {
            META_FORMAT => format = Some(u64_value("meta/format", v)?),
            META_SEQ => reserved = u64_value("meta/seq", v)?,
            _ => {}
        }
        Ok(())
    })?;
    match format {
        None => batch.put(
            Space::Meta,
            META_FORMAT.to_vec(),
            FORMAT.to_be_bytes().to_vec(),
        ),
        Some(FORMAT) => {}
        Some(other) => {
            return Err(Error::Corrupt {
                location: "meta/format".into(),
                detail: format!("data format {other} is not supported (this build reads {FORMAT})"),
            });
        }
    }
    Ok(reserved)
}

/// Marks by queue id, group id and seq, as found in the store; `true` for
/// those made from receipts, to be written.
type Marks = BTreeMap<(u64, u64, u64), (Mark, bool)>;

/// The index as it is rebuilt, one record family after another.
#[derive(Default)]
struct Loader {
    queues: BTreeMap<QueueName, QueueState>,
    by_id: BTreeMap<u64, QueueName>,
    /// The highest id seen in any record.
    max_seen: u64,
    /// Dead letters (queue id, dead seq) requeued: their records hold the
    /// bodies of requeued messages.
    linked: HashSet<(u64, u64)>,
}

impl Loader {
    fn queue_mut(&mut self, qid: u64) -> Option<&mut QueueState> {
        let name = self.by_id.get(&qid)?;
        self.queues.get_mut(name)
    }

    fn queues(&mut self, store: &dyn Store) -> Result<()> {
        store.scan(Space::Queues, &mut |k, v| {
            let name = std::str::from_utf8(k)
                .ok()
                .and_then(|n| QueueName::new(n).ok())
                .ok_or_else(|| Error::Corrupt {
                    location: "queues".into(),
                    detail: "a queue key is not a valid queue name".into(),
                })?;
            let record: QueueRecord = decode("queue record", v)?;
            self.max_seen = self.max_seen.max(record.id);
            self.by_id.insert(record.id, name.clone());
            self.queues
                .insert(name.clone(), QueueState::new(name, record));
            Ok(())
        })
    }

    fn groups(&mut self, store: &dyn Store) -> Result<()> {
        store.scan(Space::Groups, &mut |k, v| {
            let ([qid], rest) = split_key::<1>("groups", k)?;
            let record: GroupRecord = decode("group record", v)?;
            self.max_seen = self.max_seen.max(record.id);
            let name = std::str::from_utf8(rest)
                .ok()
                .and_then(|n| GroupName::new(n).ok());
            if let (Some(q), Some(name)) = (self.queue_mut(qid), name) {
                q.groups
                    .insert(name.clone(), group::GroupState::new(record.id, name));
            }
            Ok(())
        })
    }

    /// The marks, with the deliveries of receipts (whose marks were not
    /// written yet when the engine stopped) made marks; the receipts are
    /// deleted.
    fn marks(&mut self, store: &dyn Store, batch: &mut Batch) -> Result<Marks> {
        let mut marks = Marks::new();
        let mut receipts = Vec::new();
        store.scan(Space::Marks, &mut |k, v| {
            let ([qid, gid, id], rest) = split_key::<3>("marks", k)?;
            if rest == [RECEIPT_TAG] {
                self.max_seen = self.max_seen.max(id);
                let receipt: Receipt = decode("receipt", v)?;
                receipts.push((qid, gid, receipt));
                batch.delete(Space::Marks, k.to_vec());
            } else {
                marks.insert((qid, gid, id), (decode("mark", v)?, false));
            }
            Ok(())
        })?;
        for (qid, gid, receipt) in receipts {
            for (seq, count) in receipt.deliveries {
                let known = match marks.get(&(qid, gid, seq)) {
                    Some((Mark::Done, _)) => continue,
                    Some((Mark::Delivered { count: c, .. } | Mark::Retry { count: c, .. }, _)) => {
                        *c
                    }
                    None => 0,
                };
                if count > known {
                    let mark = Mark::Delivered {
                        count,
                        deadline: receipt.deadline,
                        consumer: receipt.consumer.clone(),
                    };
                    marks.insert((qid, gid, seq), (mark, true));
                }
            }
        }
        Ok(marks)
    }

    /// Each message of `space` (the messages, or those requeued from the
    /// dead letters), and where it stands for each group (by its mark).
    fn messages(
        &mut self,
        store: &dyn Store,
        space: Space,
        marks: &mut Marks,
        batch: &mut Batch,
        now: u64,
    ) -> Result<()> {
        store.scan(space, &mut |k, v| {
            let ([qid, seq], _) = split_key::<2>("messages", k)?;
            self.max_seen = self.max_seen.max(seq);
            let mut meta = if space == Space::Requeued {
                let record: RequeuedRecord = decode("requeued message", v)?;
                self.linked.insert((qid, record.dead));
                queue::MsgMeta::from_requeued(&record)
            } else {
                queue::MsgMeta::from_record(&decode::<MessageRecord>("message", v)?)
            };
            let Some(q) = self.queue_mut(qid) else {
                return Ok(());
            };
            meta.make_visible();
            for g in q.groups.values_mut() {
                if meta.for_group(g.id) {
                    meta.owe_one_more();
                    let mark = marks.remove(&(qid, g.id, seq)).map(|(mark, from_receipt)| {
                        if from_receipt {
                            batch.put(Space::Marks, mark_key(qid, g.id, seq), encode(&mark));
                        }
                        mark
                    });
                    place(g, seq, mark, &mut meta, now)?;
                }
            }
            if meta.owed() == 0 && !q.groups.is_empty() {
                q.retained.insert(seq);
            } else if let Some(t) = meta.expires_at() {
                q.expiries.insert((t, seq));
            }
            q.messages.insert(seq, meta);
            Ok(())
        })
    }

    fn dedup(&mut self, store: &dyn Store) -> Result<()> {
        store.scan(Space::Dedup, &mut |k, v| {
            let ([qid], rest) = split_key::<1>("dedup", k)?;
            let Some(q) = self.queue_mut(qid) else {
                return Ok(());
            };
            let record: DedupRecord = decode("dedup record", v)?;
            let id = String::from_utf8_lossy(rest).into_owned();
            q.dedup_order.push_back((record.expires_at, id.clone()));
            q.dedup.insert(id, record);
            Ok(())
        })
    }

    fn dead(&mut self, store: &dyn Store) -> Result<()> {
        store.scan(Space::Dead, &mut |k, v| {
            let ([qid, dseq], _) = split_key::<2>("dead", k)?;
            self.max_seen = self.max_seen.max(dseq);
            // A dead letter requeued holds its message's body: not listed.
            if self.linked.contains(&(qid, dseq)) {
                return Ok(());
            }
            if let Some(q) = self.queue_mut(qid) {
                let _: DeadRecord = decode("dead letter", v)?;
                q.dead.add(dseq);
            }
            Ok(())
        })
    }
}

/// Puts a message where its group's mark says: settled, delivered (in
/// flight until its deadline), waiting for a retry, or ready.
fn place(
    g: &mut group::GroupState,
    seq: u64,
    mark: Option<Mark>,
    meta: &mut queue::MsgMeta,
    now: u64,
) -> Result<()> {
    if mark.is_some() {
        g.note_mark(seq);
    }
    match mark {
        Some(Mark::Done) => meta.owe_one_less(),
        Some(Mark::Delivered {
            count,
            deadline,
            consumer,
        }) => {
            let consumer = ConsumerName::new(consumer).map_err(|e| Error::Corrupt {
                location: "mark".into(),
                detail: e.to_string(),
            })?;
            g.restore_delivery(seq, count, &consumer, deadline);
        }
        Some(Mark::Retry { count, due }) => {
            g.counts.insert(seq, count);
            g.schedule(seq, Some(due), now);
        }
        None => g.schedule(seq, meta.deliver_at(), now),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::receipt_key;
    use crate::store::{Wait, memory::MemoryStore};

    fn delivered(count: u32) -> Mark {
        Mark::Delivered {
            count,
            deadline: 7,
            consumer: "c".to_owned(),
        }
    }

    /// A receipt found at opening (the engine stopped before the marks of
    /// its deliveries were written) counts: it raises a count a mark has
    /// lower, never undoes a finished delivery, and is deleted.
    #[test]
    fn receipts_found_at_opening_become_marks() {
        let store = MemoryStore::default();
        let mut batch = Batch::default();
        let mut put_mark = |seq, mark: &Mark| {
            batch.put(Space::Marks, mark_key(1, 2, seq), encode(mark));
        };
        put_mark(10, &delivered(1));
        put_mark(12, &Mark::Done);
        put_mark(13, &Mark::Retry { count: 4, due: 0 });
        let receipt = Receipt {
            consumer: "c".to_owned(),
            deadline: 7,
            deliveries: vec![(10, 2), (11, 1), (12, 3), (13, 4)],
        };
        batch.put(Space::Marks, receipt_key(1, 2, 99), encode(&receipt));
        drop(store.submit(batch, Wait::Written));

        let mut loader = Loader::default();
        let mut batch = Batch::default();
        let marks = loader.marks(&store, &mut batch).unwrap_or_default();
        let mark = |seq| marks.get(&(1, 2, seq)).cloned();
        assert_eq!(mark(10), Some((delivered(2), true)), "a later delivery");
        assert_eq!(mark(11), Some((delivered(1), true)), "no mark yet");
        assert_eq!(
            mark(12),
            Some((Mark::Done, false)),
            "finished stays finished"
        );
        assert_eq!(
            mark(13),
            Some((Mark::Retry { count: 4, due: 0 }, false)),
            "the mark is as new as the receipt"
        );
        assert_eq!(loader.max_seen, 99, "ids are not reused");
        assert!(
            batch
                .ops
                .iter()
                .any(|(space, key, value)| *space == Space::Marks
                    && *key == receipt_key(1, 2, 99)
                    && value.is_none()),
            "the receipt is deleted"
        );
    }
}
