//! One queue's index: its stored messages, groups, dead letters and dedup ids,
//! and the rules that move messages between them.
//!
//! Every change to the index is mirrored by records put into the caller's
//! [`Batch`], so the index can always be rebuilt from the store.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use tidings_core::{
    ConsumerName, ExpiryAction, GroupName, Nack, QueueInfo, QueueName, Result, Timestamp,
};

use super::group::GroupState;
use super::seqmap::{SeqMap, SeqSet};
use super::{Ctx, DeferredMarks};
use crate::records::{
    DeadRecord, DedupRecord, GroupRecord, Mark, MessageRecord, QueueRecord, Receipt,
    RequeuedRecord, decode, encode, named_key, receipt_key, seq_key,
};
use crate::store::{Space, Store};

/// What the index keeps of a stored message (the payload stays in the store).
/// Kept to 16 bytes, as there is one per stored message: the enqueue time
/// (ms, 44 bits: until the year 2527), the number of groups that still owe
/// it an ack (19 bits) and whether its send is durable yet (1 bit) share one
/// word; what only some messages have (a time to live, a delay, a single
/// target group) is boxed apart.
#[derive(Debug, Clone)]
pub(crate) struct MsgMeta {
    bits: u64,
    rare: Option<Box<Rare>>,
}

const TIME_BITS: u32 = 44;
const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
const OWED_BITS: u32 = 19;
const OWED_MAX: u32 = (1 << OWED_BITS) - 1;
const VISIBLE_BIT: u64 = 1 << 63;

/// The optional parts of a message's index record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rare {
    expires_at: Option<u64>,
    deliver_at: Option<u64>,
    only_group: Option<u64>,
    /// For a message requeued from the dead letters (stored in
    /// [`Space::Requeued`]): the dead-letter seq holding its body.
    dead: Option<u64>,
}

impl MsgMeta {
    pub(crate) fn from_record(r: &MessageRecord) -> Self {
        let rare = Rare {
            expires_at: r.expires_at,
            deliver_at: r.deliver_at,
            only_group: r.only_group,
            dead: None,
        };
        let plain = Rare {
            expires_at: None,
            deliver_at: None,
            only_group: None,
            dead: None,
        };
        Self {
            bits: r.enqueued_at.min(TIME_MASK),
            rare: (rare != plain).then(|| Box::new(rare)),
        }
    }

    /// The index record of a message requeued from the dead letters.
    pub(crate) fn from_requeued(r: &RequeuedRecord) -> Self {
        Self {
            bits: r.enqueued_at.min(TIME_MASK),
            rare: Some(Box::new(Rare {
                expires_at: None,
                deliver_at: None,
                only_group: r.only_group,
                dead: Some(r.dead),
            })),
        }
    }

    pub(crate) fn enqueued_at(&self) -> u64 {
        self.bits & TIME_MASK
    }

    /// Groups that still owe it an ack.
    pub(crate) fn owed(&self) -> u32 {
        ((self.bits >> TIME_BITS) & u64::from(OWED_MAX)) as u32
    }

    fn set_owed(&mut self, owed: u32) {
        let owed = u64::from(owed.min(OWED_MAX));
        self.bits = (self.bits & !(u64::from(OWED_MAX) << TIME_BITS)) | (owed << TIME_BITS);
    }

    pub(crate) fn owe_one_more(&mut self) {
        self.set_owed(self.owed().saturating_add(1));
    }

    pub(crate) fn owe_one_less(&mut self) {
        self.set_owed(self.owed().saturating_sub(1));
    }

    /// False until its send is durable; invisible messages are not delivered.
    pub(crate) fn visible(&self) -> bool {
        self.bits & VISIBLE_BIT != 0
    }

    pub(crate) fn make_visible(&mut self) {
        self.bits |= VISIBLE_BIT;
    }

    pub(crate) fn expires_at(&self) -> Option<u64> {
        self.rare.as_ref().and_then(|r| r.expires_at)
    }

    pub(crate) fn deliver_at(&self) -> Option<u64> {
        self.rare.as_ref().and_then(|r| r.deliver_at)
    }

    /// For a message requeued from the dead letters: the dead-letter seq
    /// whose record holds its body.
    pub(crate) fn linked_dead(&self) -> Option<u64> {
        self.rare.as_ref().and_then(|r| r.dead)
    }

    /// Where its record is stored.
    pub(crate) fn space(&self) -> Space {
        if self.linked_dead().is_some() {
            Space::Requeued
        } else {
            Space::Messages
        }
    }

    pub(crate) fn for_group(&self, group: u64) -> bool {
        self.rare
            .as_ref()
            .and_then(|r| r.only_group)
            .is_none_or(|g| g == group)
    }

    fn expired(&self, now: u64) -> bool {
        self.expires_at().is_some_and(|t| t <= now)
    }
}

/// Reads message `seq` of queue `qid` from `space`: [`Space::Messages`], or
/// [`Space::Requeued`] (with the body of its dead-letter record). `None`
/// if it is not there.
pub(crate) fn stored_message(
    store: &dyn Store,
    qid: u64,
    seq: u64,
    space: Space,
) -> Result<Option<MessageRecord>> {
    let Some(bytes) = store.get(space, &seq_key(qid, seq))? else {
        return Ok(None);
    };
    if space != Space::Requeued {
        return decode("message", &bytes).map(Some);
    }
    let requeued: RequeuedRecord = decode("requeued message", &bytes)?;
    let Some(dead) = store.get(Space::Dead, &seq_key(qid, requeued.dead))? else {
        return Ok(None);
    };
    Ok(Some(requeued.message(decode("dead letter", &dead)?)))
}

/// A nack planned: the deliveries in flight with their counts, when a
/// retry is due, the reason of a dead letter, and the messages to
/// dead-letter, read.
pub(crate) struct GiveBack {
    chosen: Vec<(u64, u32)>,
    due: u64,
    reason: Option<String>,
    letters: HashMap<u64, MessageRecord>,
}

pub(crate) struct QueueState {
    pub(crate) name: QueueName,
    pub(crate) record: QueueRecord,
    pub(crate) messages: SeqMap<MsgMeta>,
    pub(crate) groups: BTreeMap<GroupName, GroupState>,
    /// `(expires_at, seq)` of messages some group still owes.
    pub(crate) expiries: BTreeSet<(u64, u64)>,
    /// Messages every group has finished, kept by the retention policy.
    pub(crate) retained: BTreeSet<u64>,
    pub(crate) dedup: HashMap<String, DedupRecord>,
    /// Dedup ids in the order they expire (the window is fixed per queue).
    pub(crate) dedup_order: VecDeque<(u64, String)>,
    pub(crate) dead: SeqSet,
    /// Woken whenever something may have become deliverable.
    pub(crate) notify: Arc<Notify>,
}

impl QueueState {
    pub(crate) fn new(name: QueueName, record: QueueRecord) -> Self {
        Self {
            name,
            record,
            messages: SeqMap::default(),
            groups: BTreeMap::new(),
            expiries: BTreeSet::new(),
            retained: BTreeSet::new(),
            dedup: HashMap::new(),
            dedup_order: VecDeque::new(),
            dead: SeqSet::default(),
            notify: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.record.id
    }

    pub(crate) fn save_record(&self, ctx: &mut Ctx<'_>) {
        ctx.batch.put(
            Space::Queues,
            self.name.as_str().as_bytes().to_vec(),
            encode(&self.record),
        );
    }

    /// Live dedup entry for `id`, if any.
    pub(crate) fn dedup_hit(&self, id: &str, now: u64) -> Option<u64> {
        self.dedup
            .get(id)
            .filter(|d| d.expires_at > now)
            .map(|d| d.seq)
    }

    pub(crate) fn remember_dedup(&mut self, id: String, seq: u64, ctx: &mut Ctx<'_>) {
        let window = u64::try_from(self.record.config.dedup_window.as_millis()).unwrap_or(u64::MAX);
        let record = DedupRecord {
            seq,
            expires_at: ctx.now.saturating_add(window),
        };
        ctx.batch
            .put(Space::Dedup, named_key(self.id(), &id), encode(&record));
        self.dedup_order.push_back((record.expires_at, id.clone()));
        self.dedup.insert(id, record);
    }

    /// Stores a new (still invisible) message under a new seq, which it returns.
    pub(crate) fn insert_message(&mut self, record: &MessageRecord, ctx: &mut Ctx<'_>) -> u64 {
        let seq = ctx.seq.next(ctx.batch);
        ctx.batch
            .put(Space::Messages, seq_key(self.id(), seq), encode(record));
        self.messages.insert(seq, MsgMeta::from_record(record));
        seq
    }

    /// Makes dead letter `dseq` a new (still invisible) message again, for
    /// `only_group` (`None`: every group), under a new seq, which it returns.
    /// Its body stays where it is: only a small record is written, and the
    /// dead-letter record goes when the message does.
    pub(crate) fn requeue_letter(
        &mut self,
        dseq: u64,
        only_group: Option<u64>,
        ctx: &mut Ctx<'_>,
    ) -> u64 {
        let seq = ctx.seq.next(ctx.batch);
        let record = RequeuedRecord {
            enqueued_at: ctx.now,
            only_group,
            dead: dseq,
        };
        ctx.batch
            .put(Space::Requeued, seq_key(self.id(), seq), encode(&record));
        self.messages.insert(seq, MsgMeta::from_requeued(&record));
        seq
    }

    /// Hands a durable message to every group it is for.
    pub(crate) fn make_visible(&mut self, seq: u64, now: u64) {
        let Some(meta) = self.messages.get_mut(seq) else {
            return; // purged meanwhile
        };
        if meta.visible() {
            return;
        }
        meta.make_visible();
        for group in self.groups.values_mut() {
            if meta.for_group(group.id) {
                meta.owe_one_more();
                group.schedule(seq, meta.deliver_at(), now);
            }
        }
        if let Some(t) = meta.expires_at() {
            self.expiries.insert((t, seq));
        }
    }

    /// Creates a group that owes every visible message stored now and not expired.
    pub(crate) fn add_group(&mut self, name: GroupName, ctx: &mut Ctx<'_>) {
        let id = ctx.seq.next(ctx.batch);
        let record = GroupRecord {
            id,
            created_at: ctx.now,
        };
        ctx.batch.put(
            Space::Groups,
            named_key(self.id(), name.as_str()),
            encode(&record),
        );
        let mut group = GroupState::new(id, name.clone());
        for (seq, meta) in self.messages.iter_mut() {
            // An expired message waiting to be dead-lettered is owed by
            // the groups that had it, not by one created after it expired.
            if meta.visible() && meta.for_group(id) && !meta.expired(ctx.now) {
                if meta.owed() == 0 {
                    self.retained.remove(&seq);
                    if let Some(t) = meta.expires_at() {
                        self.expiries.insert((t, seq));
                    }
                }
                meta.owe_one_more();
                group.schedule(seq, meta.deliver_at(), ctx.now);
            }
        }
        self.groups.insert(name, group);
    }

    /// Group `group` is finished with `seq` (acked, or dead-lettered for it).
    pub(crate) fn settle(&mut self, group: &GroupName, seq: u64, ctx: &mut Ctx<'_>) {
        let qid = self.id();
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        g.forget(seq);
        let Some(meta) = self.messages.get_mut(seq) else {
            return;
        };
        meta.owe_one_less();
        if meta.owed() > 0 || self.record.config.retention.keeps_anything() {
            g.put_mark(qid, seq, &Mark::Done, ctx.batch);
            if meta.owed() == 0 {
                if let Some(t) = meta.expires_at() {
                    self.expiries.remove(&(t, seq));
                }
                self.retained.insert(seq);
            }
        } else {
            self.delete_message(seq, ctx);
        }
    }

    /// Deletes a group: each message it owes is settled for it (and leaves
    /// when no other group owes it), then its marks and its record go.
    /// Returns false if the queue has no such group.
    pub(crate) fn delete_group(&mut self, group: &GroupName, ctx: &mut Ctx<'_>) -> bool {
        let Some(owed) = self.groups.get(group).map(GroupState::owed) else {
            return false;
        };
        for seq in owed {
            self.settle(group, seq, ctx);
        }
        let qid = self.id();
        if let Some(mut g) = self.groups.remove(group) {
            g.drop_marks(qid, ctx.batch);
        }
        ctx.batch
            .delete(Space::Groups, named_key(qid, group.as_str()));
        true
    }

    /// Removes a message and its marks from the index and the store.
    pub(crate) fn delete_message(&mut self, seq: u64, ctx: &mut Ctx<'_>) {
        let Some(meta) = self.messages.remove(seq) else {
            return;
        };
        let qid = self.id();
        ctx.batch.delete(meta.space(), seq_key(qid, seq));
        if let Some(dseq) = meta.linked_dead() {
            ctx.batch.delete(Space::Dead, seq_key(qid, dseq));
        }
        for g in self.groups.values_mut() {
            g.forget(seq);
            g.drop_mark(qid, seq, ctx.batch);
        }
        if let Some(t) = meta.expires_at() {
            self.expiries.remove(&(t, seq));
        }
        self.retained.remove(&seq);
    }

    /// Reads a stored message back.
    pub(crate) fn read_message(&self, seq: u64, ctx: &Ctx<'_>) -> Result<MessageRecord> {
        // A message never changes once stored: one read before the lock
        // (and still indexed now) is as good as one read now.
        if let Some(message) = ctx.prefetched.get(&(self.id(), seq)) {
            return Ok(message.clone());
        }
        let space = self
            .messages
            .get(seq)
            .map_or(Space::Messages, MsgMeta::space);
        stored_message(ctx.store, self.id(), seq, space)?.ok_or_else(|| {
            tidings_core::Error::Corrupt {
                location: format!("queue {:?} message {seq}", self.name.as_str()),
                detail: "indexed message missing from the store".into(),
            }
        })
    }

    /// Copies a message (read before, so nothing can fail here) into the
    /// dead-letter queue, as given up on by `group` (`None`: no group had it).
    fn copy_to_dead_letters(
        &mut self,
        group: Option<&GroupName>,
        seq: u64,
        message: MessageRecord,
        reason: String,
        attempts: u32,
        ctx: &mut Ctx<'_>,
    ) {
        let dseq = ctx.seq.next(ctx.batch);
        let record = DeadRecord {
            original_seq: seq,
            group: group.map(|g| g.as_str().to_owned()),
            reason,
            attempts,
            dead_lettered_at: ctx.now,
            message,
        };
        ctx.batch
            .put(Space::Dead, seq_key(self.id(), dseq), encode(&record));
        self.dead.add(dseq);
        self.record.dead_lettered_total += 1;
        self.save_record(ctx);
    }

    /// `group` gives up on a message, whose record the caller read: it
    /// moves to the dead-letter queue, and the group is finished with it.
    pub(crate) fn dead_letter(
        &mut self,
        group: &GroupName,
        seq: u64,
        message: MessageRecord,
        reason: String,
        attempts: u32,
        ctx: &mut Ctx<'_>,
    ) {
        self.copy_to_dead_letters(Some(group), seq, message, reason, attempts, ctx);
        self.settle(group, seq, ctx);
    }

    /// A message's time to live has passed: drop it, or dead-letter it for
    /// each group that still had it (or once, if no group had it). The only
    /// step that can fail, reading the message, comes before any change.
    fn expire(&mut self, seq: u64, ctx: &mut Ctx<'_>) -> Result<()> {
        if self.record.config.on_expiry == ExpiryAction::DeadLetter {
            let message = match ctx.prefetched.remove(&(self.id(), seq)) {
                Some(message) => message,
                None => self.read_message(seq, ctx)?,
            };
            let holders: Vec<(GroupName, u32)> = self
                .groups
                .values()
                .filter(|g| g.holds(seq))
                .map(|g| (g.name.clone(), g.counts.get(&seq).copied().unwrap_or(0)))
                .collect();
            if holders.is_empty() {
                self.copy_to_dead_letters(None, seq, message, "expired".into(), 0, ctx);
            } else {
                for (group, attempts) in holders {
                    let reason = "expired".to_owned();
                    self.copy_to_dead_letters(
                        Some(&group),
                        seq,
                        message.clone(),
                        reason,
                        attempts,
                        ctx,
                    );
                }
            }
        }
        self.record.expired_total += 1;
        self.save_record(ctx);
        self.delete_message(seq, ctx);
        Ok(())
    }

    /// Whether expiring `seq` now can be done without a read under the
    /// lock: the queue drops expired messages, or its message was read
    /// beforehand. If not, the caller leaves it and flags it for later.
    fn can_expire_now(&self, seq: u64, ctx: &mut Ctx<'_>) -> bool {
        let ready = self.record.config.on_expiry == ExpiryAction::Drop
            || ctx.prefetched.contains_key(&(self.id(), seq));
        if !ready {
            ctx.unread_expiries = true;
        }
        ready
    }

    /// Up to `max` messages whose time to live has passed, oldest first:
    /// what `EmbeddedBroker::expire_unread` reads before it expires them.
    pub(crate) fn due_expiries(&self, now: u64, max: usize) -> Vec<u64> {
        self.expiries
            .iter()
            .take_while(|&&(t, _)| t <= now)
            .take(max)
            .map(|&(_, seq)| seq)
            .collect()
    }

    /// Applies time: expiries, retention and the dedup window. An expiry
    /// that dead-letters its message waits for that message to be read
    /// outside the lock (until then the message is never delivered).
    pub(crate) fn maintain(&mut self, ctx: &mut Ctx<'_>) -> Result<()> {
        self.maintain_at_most(ctx, usize::MAX).map(|_| ())
    }

    /// [`Self::maintain`], stopping after `budget` removals (expiries,
    /// retention, dedup entries). Returns how many it made; fewer than
    /// `budget` means nothing due is left (but expiries that must be read
    /// first, which `EmbeddedBroker::expire_unread` applies).
    pub(crate) fn maintain_at_most(&mut self, ctx: &mut Ctx<'_>, budget: usize) -> Result<usize> {
        let mut done = 0;
        while done < budget
            && let Some(&(t, seq)) = self.expiries.first()
        {
            if t > ctx.now || !self.can_expire_now(seq, ctx) {
                break;
            }
            self.expire(seq, ctx)?;
            done += 1;
        }
        done += self.trim_retained(ctx, budget.saturating_sub(done));
        while done < budget
            && let Some((t, _)) = self.dedup_order.front()
        {
            if *t > ctx.now {
                break;
            }
            if let Some((t, id)) = self.dedup_order.pop_front()
                && self.dedup.get(&id).is_some_and(|d| d.expires_at == t)
            {
                self.dedup.remove(&id);
                ctx.batch.delete(Space::Dedup, named_key(self.id(), &id));
            }
            done += 1;
        }
        Ok(done)
    }

    fn trim_retained(&mut self, ctx: &mut Ctx<'_>, budget: usize) -> usize {
        let retention = self.record.config.retention;
        let max_len = retention.max_len.unwrap_or(u64::MAX);
        let max_age = retention.max_age.map_or(u64::MAX, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
        });
        let mut done = 0;
        while done < budget
            && let Some(&seq) = self.retained.first()
        {
            let too_many = self.retained.len() as u64 > max_len;
            let too_old = self
                .messages
                .get(seq)
                .is_none_or(|m| m.enqueued_at().saturating_add(max_age) <= ctx.now);
            if !(too_many || too_old) {
                break;
            }
            self.delete_message(seq, ctx);
            done += 1;
        }
        done
    }

    /// Whether a delivery is written before it is handed out (so the
    /// caller must wait for the write): on every queue with a bound on
    /// deliveries, which a crash must not undo. A queue without one
    /// (`max_deliveries: u32::MAX`) writes a delivery only if it is still in
    /// flight 100 ms later.
    pub(crate) fn records_deliveries_first(&self) -> bool {
        self.record.config.max_deliveries < u32::MAX
    }

    /// Delivers up to `max` messages of `group` to `consumer`: returns their
    /// seqs with delivery counts. The caller reads the payloads from the store
    /// after releasing the lock.
    pub(crate) fn take(
        &mut self,
        group: &GroupName,
        consumer: &ConsumerName,
        max: usize,
        ctx: &mut Ctx<'_>,
    ) -> Result<Vec<(u64, u32)>> {
        if !self.groups.contains_key(group) {
            self.add_group(group.clone(), ctx);
        }
        self.requeue_timed_out(group, ctx)?;
        let qid = self.id();
        let visibility = self.record.config.visibility_timeout;
        let deadline = Timestamp(ctx.now).plus(visibility).as_millis();
        let record_now = self.records_deliveries_first();
        let mut taken = Vec::new();
        let mut expired_unread = Vec::new();
        while taken.len() < max {
            let Some(seq) = self.groups.get_mut(group).and_then(|g| g.ready.pop_min()) else {
                break;
            };
            let Some(meta) = self.messages.get(seq) else {
                continue;
            };
            if meta.expired(ctx.now) {
                if !self.can_expire_now(seq, ctx) {
                    // Never delivered; expired once its message is read.
                    expired_unread.push(seq);
                    continue;
                }
                if let Err(e) = self.expire(seq, ctx) {
                    // Nothing of the expiry happened: the message stays
                    // ready, and what was taken so far is handed out.
                    expired_unread.push(seq);
                    if taken.is_empty() {
                        self.make_ready(group, expired_unread);
                        return Err(e);
                    }
                    break;
                }
                continue;
            }
            let Some(g) = self.groups.get_mut(group) else {
                break;
            };
            let count = g.deliver(seq, consumer, deadline, ctx.now);
            taken.push((seq, count));
        }
        self.make_ready(group, expired_unread);
        if let Some(gid) = self.groups.get(group).map(|g| g.id)
            && !taken.is_empty()
        {
            // The marks are written only for deliveries still in flight a
            // moment from now: most are acked first, and then cost no
            // write at all. With a bound on deliveries, a receipt of them
            // all is written before the consumer gets them, so a crash in
            // its handler cannot undo the counts: max_deliveries bounds a
            // message that crashes its consumer.
            let receipt = record_now.then(|| {
                let key = receipt_key(qid, gid, ctx.seq.next(ctx.batch));
                let receipt = Receipt {
                    consumer: consumer.to_string(),
                    deadline,
                    deliveries: taken.clone(),
                };
                ctx.batch.put(Space::Marks, key.clone(), encode(&receipt));
                key
            });
            ctx.deferred.push_back(DeferredMarks {
                at: ctx.now,
                queue: self.name.clone(),
                queue_id: qid,
                group: group.clone(),
                seqs: taken.iter().map(|(seq, _)| *seq).collect(),
                receipt,
            });
        }
        Ok(taken)
    }

    /// Puts messages taken off `group`'s ready set back.
    fn make_ready(&mut self, group: &GroupName, seqs: Vec<u64>) {
        if let Some(g) = self.groups.get_mut(group) {
            for seq in seqs {
                g.ready.add(seq);
            }
        }
    }

    /// Applies the visibility timeout: timed-out deliveries become ready again,
    /// or go to the dead-letter queue once `max_deliveries` is reached. The
    /// messages to dead-letter are read first: if a read fails, nothing
    /// has changed.
    fn requeue_timed_out(&mut self, group: &GroupName, ctx: &mut Ctx<'_>) -> Result<()> {
        let max = self.record.config.max_deliveries;
        let qid = self.id();
        let Some(g) = self.groups.get_mut(group) else {
            return Ok(());
        };
        g.promote_due(ctx.now);
        let timed_out = g.timed_out(ctx.now);
        let exhausted: Vec<(u64, u32)> = timed_out
            .iter()
            .map(|&seq| (seq, g.counts.get(&seq).copied().unwrap_or(0)))
            .filter(|&(_, count)| count >= max)
            .collect();
        let mut records = Vec::with_capacity(exhausted.len());
        for &(seq, _) in &exhausted {
            records.push(self.read_message(seq, ctx)?);
        }
        let Some(g) = self.groups.get_mut(group) else {
            return Ok(());
        };
        for seq in timed_out {
            g.end_delivery(seq);
            let count = g.counts.get(&seq).copied().unwrap_or(0);
            if count < max {
                g.ready.add(seq);
                // So that a restart does not count it as in flight again.
                let mark = Mark::Retry {
                    count,
                    due: ctx.now,
                };
                g.put_mark(qid, seq, &mark, ctx.batch);
            }
        }
        let timeout = self.record.config.visibility_timeout;
        for ((seq, count), message) in exhausted.into_iter().zip(records) {
            let reason = format!(
                "not acknowledged after {count} deliveries (visibility timeout {timeout:?})"
            );
            self.dead_letter(group, seq, message, reason, count, ctx);
        }
        Ok(())
    }

    /// Gives deliveries of `group` back, all in one step: each to be retried
    /// after a delay (a dead letter instead once the group has had
    /// `max_deliveries`), or dead-lettered now. Seqs not in flight are
    /// skipped. A failed read changes nothing. Returns how many were given back.
    pub(crate) fn give_back(
        &mut self,
        group: &GroupName,
        seqs: &[u64],
        nack: Nack,
        ctx: &mut Ctx<'_>,
    ) -> Result<u64> {
        let plan = self.plan_give_back(group, seqs, nack, ctx)?;
        Ok(self.apply_give_back(group, plan, ctx))
    }

    /// The first half of [`QueueState::give_back`]: which deliveries are in
    /// flight, and the messages to dead-letter, read. Changes nothing.
    pub(crate) fn plan_give_back(
        &self,
        group: &GroupName,
        seqs: &[u64],
        nack: Nack,
        ctx: &Ctx<'_>,
    ) -> Result<GiveBack> {
        let max = self.record.config.max_deliveries;
        let mut plan = GiveBack {
            chosen: Vec::with_capacity(seqs.len()),
            due: ctx.now,
            reason: None,
            letters: HashMap::new(),
        };
        match nack {
            Nack::Retry { delay } => plan.due = Timestamp(ctx.now).plus(delay).as_millis(),
            Nack::DeadLetter { reason } => plan.reason = Some(reason),
        }
        let Some(g) = self.groups.get(group) else {
            return Ok(plan);
        };
        for &seq in seqs {
            if !g.in_flight.contains_key(&seq) || plan.chosen.iter().any(|&(s, _)| s == seq) {
                continue;
            }
            let count = g.counts.get(&seq).copied().unwrap_or(0);
            plan.chosen.push((seq, count));
            if plan.reason.is_some() || count >= max {
                plan.letters.insert(seq, self.read_message(seq, ctx)?);
            }
        }
        Ok(plan)
    }

    /// The second half of [`QueueState::give_back`]; cannot fail. A
    /// delivery no longer in flight (acked earlier in the same
    /// transaction) is skipped.
    pub(crate) fn apply_give_back(
        &mut self,
        group: &GroupName,
        mut plan: GiveBack,
        ctx: &mut Ctx<'_>,
    ) -> u64 {
        let qid = self.id();
        let mut given_back = 0;
        for &(seq, count) in &plan.chosen {
            let Some(g) = self.groups.get_mut(group) else {
                break;
            };
            if !g.end_delivery(seq) {
                continue;
            }
            given_back += 1;
            match plan.letters.remove(&seq) {
                Some(message) => {
                    let reason = plan.reason.clone().unwrap_or_else(|| {
                        format!("retried {count} times, the most max_deliveries allows")
                    });
                    self.dead_letter(group, seq, message, reason, count, ctx);
                }
                None => {
                    g.delay(seq, plan.due);
                    let mark = Mark::Retry {
                        count,
                        due: plan.due,
                    };
                    g.put_mark(qid, seq, &mark, ctx.batch);
                }
            }
        }
        self.notify.notify_waiters();
        given_back
    }

    /// Is `seq` delivered to `group` and not yet acked?
    pub(crate) fn is_in_flight(&self, group: &GroupName, seq: u64) -> bool {
        self.groups
            .get(group)
            .is_some_and(|g| g.in_flight.contains_key(&seq))
    }

    /// Acks a delivery. Returns false if it was not in flight.
    pub(crate) fn ack(&mut self, group: &GroupName, seq: u64, ctx: &mut Ctx<'_>) -> bool {
        let in_flight = self
            .groups
            .get_mut(group)
            .is_some_and(|g| g.end_delivery(seq));
        if in_flight {
            self.settle(group, seq, ctx);
        }
        in_flight
    }

    /// Deletes every stored message; groups, dead letters and settings stay.
    pub(crate) fn purge(&mut self, ctx: &mut Ctx<'_>) -> u64 {
        let count = self.messages.len() as u64;
        let seqs: Vec<u64> = self.messages.keys().collect();
        for seq in seqs {
            self.delete_message(seq, ctx);
        }
        for g in self.groups.values_mut() {
            g.clear();
        }
        for id in self.dedup.keys() {
            ctx.batch.delete(Space::Dedup, named_key(self.id(), id));
        }
        self.dedup.clear();
        self.dedup_order.clear();
        count
    }

    /// Deletes everything of the queue from the store.
    pub(crate) fn delete_all(&mut self, ctx: &mut Ctx<'_>) {
        self.purge(ctx);
        let qid = self.id();
        for dseq in std::mem::take(&mut self.dead).keys() {
            ctx.batch.delete(Space::Dead, seq_key(qid, dseq));
        }
        for name in self.groups.keys() {
            ctx.batch
                .delete(Space::Groups, named_key(qid, name.as_str()));
        }
        ctx.batch
            .delete(Space::Queues, self.name.as_str().as_bytes().to_vec());
        self.notify.notify_waiters();
    }

    pub(crate) fn group_id_of(&self, name: &str) -> Option<u64> {
        self.groups
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, g)| g.id)
    }

    /// The earliest time something of `group` becomes deliverable.
    pub(crate) fn next_due(&self, group: &GroupName) -> Option<u64> {
        self.groups.get(group).and_then(GroupState::next_due)
    }

    pub(crate) fn info(&self, now: u64) -> QueueInfo {
        QueueInfo {
            name: self.name.clone(),
            config: self.record.config.clone(),
            created_at: Timestamp(self.record.created_at),
            length: self.messages.len() as u64,
            retained: self.retained.len() as u64,
            // Seq order is store order, so the first message is the oldest.
            oldest_message_age: self
                .messages
                .first()
                .map(|(_, m)| Duration::from_millis(now.saturating_sub(m.enqueued_at()))),
            groups: self.groups.values().map(GroupState::info).collect(),
            dead_letters: self.dead.len() as u64,
            expired_total: self.record.expired_total,
            dead_lettered_total: self.record.dead_lettered_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_meta_packs_into_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<MsgMeta>(), 16);
        let record = MessageRecord {
            enqueued_at: 1_795_310_413_196,
            expires_at: None,
            deliver_at: None,
            only_group: None,
            dedup_id: None,
            headers: Vec::new(),
            payload: "1".into(),
        };
        let mut meta = MsgMeta::from_record(&record);
        assert!(!meta.visible());
        assert_eq!(meta.owed(), 0);
        meta.make_visible();
        for _ in 0..3 {
            meta.owe_one_more();
        }
        meta.owe_one_less();
        assert!(meta.visible());
        assert_eq!(meta.owed(), 2);
        assert_eq!(meta.enqueued_at(), 1_795_310_413_196);
        meta.owe_one_less();
        meta.owe_one_less();
        meta.owe_one_less();
        assert_eq!(meta.owed(), 0, "never below zero");
        assert_eq!(meta.enqueued_at(), 1_795_310_413_196);
    }
}
