//! [`EmbeddedBroker`]: the [`Broker`] trait over the index and a store.
//!
//! Every operation takes the state lock once, changes the index, submits the
//! matching records to the store (in lock order), releases the lock and only
//! then waits for the store. Sent messages become visible to receivers after
//! their records are durable, so nothing is delivered that a crash could undo.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use tidings_core::{
    Broker, ConsumerName, DeadLetter, DeadLetterSelection, Delivery, Durability, Error, GroupName,
    MessageId, Nack, OutgoingMessage, QueueConfig, QueueInfo, QueueName, ReceiveOptions, Result,
    SendReceipt, Timestamp, Transaction, TxOp,
};

use crate::clock::Clock;
use crate::records::{DeadRecord, MessageRecord, QueueRecord, decode, seq_key};
use crate::state::{Ctx, MARK_DELAY_MS, QueueState, State, message_id, parse_id};
use crate::store::fjall::FjallStore;
use crate::store::memory::MemoryStore;
use crate::store::{Batch, Pending, Sent, Space, Store, StoreStats, Wait};

/// Settings of an embedded broker.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Durability of sends to queues that do not set their own.
    pub durability: Durability,
    /// Where time comes from (the system clock unless a test moves it by hand).
    pub clock: Clock,
}

/// The embedded engine: durable queues in a local data directory, or in memory.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use tidings_core::{Broker, ConsumerName, GroupName, OutgoingMessage, QueueConfig, QueueName, ReceiveOptions};
/// use tidings_embedded::EmbeddedBroker;
///
/// let broker = EmbeddedBroker::in_memory();
/// let orders = QueueName::new("orders")?;
/// broker.create_queue(&orders, QueueConfig::default()).await?;
/// broker.send(&orders, OutgoingMessage::json(&serde_json::json!({"id": 1}))?).await?;
///
/// let group = GroupName::new("billing")?;
/// let consumer = ConsumerName::new("worker-1")?;
/// let got = broker.receive(&orders, &group, &consumer, ReceiveOptions::new(10, Duration::from_secs(1))).await?;
/// assert_eq!(got.len(), 1);
/// broker.ack(&orders, &group, &[got[0].id.clone()]).await?;
/// # Ok::<_, tidings_core::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct EmbeddedBroker {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    store: Box<dyn Store>,
    durability: Durability,
    clock: Clock,
}

impl Inner {
    /// Writes what is still deferred, then stops the store.
    fn close(&self) {
        self.flush_deferred(u64::MAX, Wait::Nothing);
        self.store.close();
    }

    /// Writes the marks of deliveries made at or before `up_to` that are still in flight.
    fn flush_deferred(&self, up_to: u64, wait: Wait) -> Pending {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Batch::default();
        state.flush_deferred(up_to, &mut batch);
        if batch.is_empty() {
            return Pending::done(None);
        }
        self.store.submit(batch, wait)
    }

    /// Makes durable messages deliverable and wakes the queue's receivers.
    fn publish(&self, sent: &[Sent]) {
        let now = self.clock.now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (name, qid, seqs) in sent {
            if let Some(q) = state.queues.get_mut(name)
                && q.id() == *qid
                && !seqs.is_empty()
            {
                for &seq in seqs {
                    q.make_visible(seq, now);
                }
                q.notify.notify_waiters();
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

fn wait_for(durability: Durability) -> Wait {
    match durability {
        Durability::Sync => Wait::Synced,
        Durability::Buffered => Wait::Written,
    }
}

type Queues = std::collections::BTreeMap<QueueName, QueueState>;

fn queue<'a>(queues: &'a mut Queues, name: &QueueName) -> Result<&'a mut QueueState> {
    queues
        .get_mut(name)
        .ok_or_else(|| Error::QueueNotFound(name.to_string()))
}

impl EmbeddedBroker {
    /// Opens (or creates) a data directory with default options.
    ///
    /// Fails with [`Error::Locked`] if another process has it open and with
    /// [`Error::Corrupt`] if its contents cannot be read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens (or creates) a data directory.
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        let store = FjallStore::open(path.as_ref())?;
        Self::with_store(Box::new(store), options)
    }

    /// A broker that keeps everything in memory, for tests and examples.
    pub fn in_memory() -> Self {
        Self::in_memory_with(EmbeddedOptions::default())
    }

    /// A broker in memory, with options.
    pub fn in_memory_with(options: EmbeddedOptions) -> Self {
        // Loading an empty memory store reads nothing and cannot fail.
        Self::with_store(Box::<MemoryStore>::default(), options)
            .unwrap_or_else(|_| unreachable!("an empty memory store always loads"))
    }

    fn with_store(store: Box<dyn Store>, options: EmbeddedOptions) -> Result<Self> {
        let (state, batch) = State::load(&*store, options.clock.now())?;
        drop(store.submit(batch, Wait::Nothing));
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            store,
            durability: options.durability,
            clock: options.clock,
        });
        let weak = Arc::downgrade(&inner);
        inner.store.set_publisher(Arc::new(move |sent| {
            if let Some(inner) = weak.upgrade() {
                inner.publish(&sent);
            }
        }));
        // When nothing else writes, deliveries still get written once due.
        let weak = Arc::downgrade(&inner);
        inner.store.set_idle_tick(Box::new(move || {
            if let Some(inner) = weak.upgrade() {
                let up_to = inner.clock.now().saturating_sub(MARK_DELAY_MS);
                drop(inner.flush_deferred(up_to, Wait::Nothing));
            }
        }));
        Ok(Self { inner })
    }

    /// Writes and syncs everything, then refuses further writes. Dropping the
    /// last handle does the same.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Counts of the storage's work since the broker was opened (all zero in
    /// memory): batches per sync shows group commit at work.
    pub fn store_stats(&self) -> StoreStats {
        self.inner.store.stats()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the index under the lock and submits the records it wrote.
    /// Records are submitted even when `f` fails part-way, so the store always
    /// mirrors the index.
    fn write<T>(
        &self,
        f: impl FnOnce(&mut Queues, &mut Ctx<'_>) -> Result<(T, Wait)>,
    ) -> (Result<T>, Pending) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut batch = Batch::default();
        let now = self.inner.clock.now();
        let mut ctx = Ctx {
            store: &*self.inner.store,
            batch: &mut batch,
            seq: &mut state.seq,
            now,
            deferred: &mut state.deferred,
            sent: Vec::new(),
        };
        let out = f(&mut state.queues, &mut ctx);
        let sent = std::mem::take(&mut ctx.sent);
        state.flush_deferred(now.saturating_sub(MARK_DELAY_MS), &mut batch);
        let wait = match &out {
            Ok((_, wait)) => *wait,
            Err(_) => Wait::Nothing,
        };
        if out.is_ok() {
            // Published by the store as soon as the batch is durable, so
            // receivers are woken without waiting for the sender's task.
            batch.sent = sent;
        }
        let pending = if batch.is_empty() && wait == Wait::Nothing {
            Pending::done(None)
        } else {
            self.inner.store.submit(batch, wait)
        };
        (out.map(|(value, _)| value), pending)
    }

    /// Reads delivered messages from the store, outside the lock. A message
    /// deleted meanwhile (purge, queue deletion) is no longer deliverable and
    /// is left out.
    fn read_deliveries(
        &self,
        queue: &QueueName,
        qid: u64,
        taken: Vec<(u64, u32)>,
    ) -> Result<Vec<Delivery>> {
        let mut deliveries = Vec::with_capacity(taken.len());
        for (seq, delivery_count) in taken {
            let Some(bytes) = self.inner.store.get(Space::Messages, &seq_key(qid, seq))? else {
                continue;
            };
            let record: MessageRecord = decode("message", &bytes)?;
            deliveries.push(Delivery {
                id: message_id(seq),
                queue: queue.clone(),
                payload: tidings_core::Payload::from_trusted(record.payload),
                headers: record.headers.into_iter().collect(),
                dedup_id: record.dedup_id,
                enqueued_at: Timestamp(record.enqueued_at),
                delivery_count,
            });
        }
        Ok(deliveries)
    }

    fn send_wait(&self, q: &QueueState) -> Wait {
        wait_for(q.record.config.durability.unwrap_or(self.inner.durability))
    }
}

/// Stores one message (or finds its duplicate). Returns the receipt and the
/// new message's seq.
fn enqueue(
    q: &mut QueueState,
    message: OutgoingMessage,
    ctx: &mut Ctx<'_>,
) -> (SendReceipt, Option<u64>) {
    if let Some(id) = &message.dedup_id
        && let Some(original) = q.dedup_hit(id, ctx.now)
    {
        let receipt = SendReceipt {
            id: message_id(original),
            duplicate: true,
        };
        return (receipt, None);
    }
    let config = &q.record.config;
    let record = MessageRecord {
        enqueued_at: ctx.now,
        expires_at: message
            .ttl
            .or(config.default_ttl)
            .map(|ttl| Timestamp(ctx.now).plus(ttl).as_millis()),
        deliver_at: message
            .delay
            .map(|d| Timestamp(ctx.now).plus(d).as_millis()),
        only_group: None,
        dedup_id: message.dedup_id,
        headers: message.headers.into_iter().collect(),
        payload: message.payload.as_str().to_owned(),
    };
    let seq = ctx.seq.next(ctx.batch);
    q.insert_message(seq, &record, ctx);
    if let Some(id) = record.dedup_id {
        q.remember_dedup(id, seq, ctx);
    }
    let receipt = SendReceipt {
        id: message_id(seq),
        duplicate: false,
    };
    (receipt, Some(seq))
}

fn dead_letter_out(q: &QueueState, dseq: u64, record: DeadRecord) -> DeadLetter {
    let message = record.message;
    DeadLetter {
        id: message_id(dseq),
        original_id: message_id(record.original_seq),
        queue: q.name.clone(),
        group: record.group.and_then(|g| GroupName::new(g).ok()),
        reason: record.reason,
        attempts: record.attempts,
        enqueued_at: Timestamp(message.enqueued_at),
        dead_lettered_at: Timestamp(record.dead_lettered_at),
        payload: tidings_core::Payload::from_trusted(message.payload),
        headers: message.headers.into_iter().collect(),
        dedup_id: message.dedup_id,
    }
}

fn read_dead(q: &QueueState, dseq: u64, ctx: &Ctx<'_>) -> Result<DeadRecord> {
    match ctx.store.get(Space::Dead, &seq_key(q.id(), dseq))? {
        Some(bytes) => decode("dead letter", &bytes),
        None => Err(Error::Corrupt {
            location: format!("queue {:?} dead letter {dseq}", q.name.as_str()),
            detail: "indexed dead letter missing from the store".into(),
        }),
    }
}

fn selected(q: &QueueState, selection: &DeadLetterSelection) -> Vec<u64> {
    match selection {
        DeadLetterSelection::All => q.dead.iter().copied().collect(),
        DeadLetterSelection::Ids(ids) => ids
            .iter()
            .filter_map(parse_id)
            .filter(|d| q.dead.contains(d))
            .collect(),
    }
}

/// Returns an operation's result once its records have reached the store.
async fn finish<T>((out, pending): (Result<T>, Pending)) -> Result<T> {
    let value = out?;
    pending.wait().await?;
    Ok(value)
}

fn check_messages(messages: &[OutgoingMessage]) -> Result<()> {
    messages.iter().try_for_each(OutgoingMessage::validate)
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn create_queue(&self, name: &QueueName, config: QueueConfig) -> Result<bool> {
        config.validate()?;
        finish(self.write(|queues, ctx| {
            if let Some(q) = queues.get(name) {
                return if q.record.config == config {
                    Ok((false, Wait::Synced))
                } else {
                    Err(Error::QueueConfigConflict(name.to_string()))
                };
            }
            let record = QueueRecord {
                id: ctx.seq.next(ctx.batch),
                config,
                created_at: ctx.now,
                expired_total: 0,
                dead_lettered_total: 0,
            };
            let q = QueueState::new(name.clone(), record);
            q.save_record(ctx);
            queues.insert(name.clone(), q);
            Ok((true, Wait::Synced))
        }))
        .await
    }

    async fn list_queues(&self) -> Result<Vec<QueueName>> {
        Ok(self.lock().queues.keys().cloned().collect())
    }

    async fn queue_info(&self, name: &QueueName) -> Result<QueueInfo> {
        let (out, _) = self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            q.maintain(ctx)?;
            Ok((q.info(ctx.now), Wait::Nothing))
        });
        out
    }

    async fn delete_queue(&self, name: &QueueName) -> Result<()> {
        finish(self.write(|queues, ctx| {
            let mut q = queues
                .remove(name)
                .ok_or_else(|| Error::QueueNotFound(name.to_string()))?;
            q.delete_all(ctx);
            Ok(((), Wait::Synced))
        }))
        .await
    }

    async fn purge_queue(&self, name: &QueueName) -> Result<u64> {
        finish(self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            Ok((q.purge(ctx), Wait::Written))
        }))
        .await
    }

    async fn send_batch(
        &self,
        name: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>> {
        check_messages(&messages)?;
        finish(self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            q.maintain(ctx)?;
            let mut receipts = Vec::with_capacity(messages.len());
            let mut seqs = Vec::with_capacity(messages.len());
            for message in messages {
                let (receipt, seq) = enqueue(q, message, ctx);
                receipts.push(receipt);
                seqs.extend(seq);
            }
            ctx.sent.push((name.clone(), q.id(), seqs));
            Ok((receipts, self.send_wait(q)))
        }))
        .await
    }

    async fn receive(
        &self,
        name: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        if options.max_messages == 0 {
            return Err(Error::InvalidArgument(
                "max_messages must be at least 1".into(),
            ));
        }
        let deadline = Instant::now() + options.wait;
        loop {
            let (out, pending) = self.write(|queues, ctx| {
                let q = queue(queues, name)?;
                q.maintain(ctx)?;
                let taken = q.take(group, consumer.as_str(), options.max_messages, ctx)?;
                let mut woken = Box::pin(q.notify.clone().notified_owned());
                woken.as_mut().enable();
                let next_due = q.next_due(group).map(|t| t.saturating_sub(ctx.now));
                Ok(((q.id(), taken, woken, next_due), Wait::Nothing))
            });
            drop(pending);
            let (qid, taken, woken, next_due) = out?;
            let deliveries = self.read_deliveries(name, qid, taken)?;
            if !deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(deliveries);
            }
            // One millisecond past the due time, as stored times are whole milliseconds.
            let wake_at = next_due
                .map(|ms| Instant::now() + Duration::from_millis(ms + 1))
                .map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, name: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64> {
        finish(self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            let acked = ids
                .iter()
                .filter_map(parse_id)
                .filter(|&seq| q.ack(group, seq, ctx))
                .count();
            Ok((acked as u64, Wait::Written))
        }))
        .await
    }

    async fn nack(
        &self,
        name: &QueueName,
        group: &GroupName,
        id: &MessageId,
        nack: Nack,
    ) -> Result<bool> {
        finish(self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            let Some(seq) = parse_id(id) else {
                return Ok((false, Wait::Nothing));
            };
            let done = match nack {
                Nack::Retry { delay } => q.retry_later(group, seq, delay, ctx)?,
                Nack::DeadLetter { reason } => {
                    let attempts = q.groups.get_mut(group).and_then(|g| {
                        g.end_delivery(seq)
                            .then(|| g.counts.get(&seq).copied().unwrap_or(0))
                    });
                    match attempts {
                        Some(attempts) => {
                            q.dead_letter(group, seq, reason, attempts, ctx)?;
                            true
                        }
                        None => false,
                    }
                }
            };
            Ok((done, Wait::Written))
        }))
        .await
    }

    async fn dead_letters(&self, name: &QueueName, limit: usize) -> Result<Vec<DeadLetter>> {
        let (out, _) = self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            q.maintain(ctx)?;
            let letters = q
                .dead
                .iter()
                .take(limit)
                .map(|&dseq| read_dead(q, dseq, ctx).map(|r| dead_letter_out(q, dseq, r)))
                .collect::<Result<Vec<_>>>()?;
            Ok((letters, Wait::Nothing))
        });
        out
    }

    async fn requeue_dead_letters(
        &self,
        name: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        finish(self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            let mut seqs = Vec::new();
            for dseq in selected(q, &selection) {
                let dead = read_dead(q, dseq, ctx)?;
                q.dead.remove(&dseq);
                ctx.batch.delete(Space::Dead, seq_key(q.id(), dseq));
                let record = MessageRecord {
                    enqueued_at: ctx.now,
                    expires_at: None,
                    deliver_at: None,
                    only_group: dead.group.as_deref().and_then(|g| q.group_id_of(g)),
                    ..dead.message
                };
                let seq = ctx.seq.next(ctx.batch);
                q.insert_message(seq, &record, ctx);
                seqs.push(seq);
            }
            let count = seqs.len() as u64;
            ctx.sent.push((name.clone(), q.id(), seqs));
            Ok((count, self.send_wait(q)))
        }))
        .await
    }

    async fn purge_dead_letters(
        &self,
        name: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        finish(self.write(|queues, ctx| {
            let q = queue(queues, name)?;
            let chosen = selected(q, &selection);
            for &dseq in &chosen {
                q.dead.remove(&dseq);
                ctx.batch.delete(Space::Dead, seq_key(q.id(), dseq));
            }
            Ok((chosen.len() as u64, Wait::Written))
        }))
        .await
    }

    async fn commit(&self, transaction: Transaction) -> Result<Vec<SendReceipt>> {
        let ops = transaction.into_ops();
        for op in &ops {
            if let TxOp::Send { message, .. } = op {
                message.validate()?;
            }
        }
        finish(self.write(|queues, ctx| {
            // Check everything first: nothing is applied unless all of it can be.
            for op in &ops {
                match op {
                    TxOp::Send { queue: name, .. } => {
                        queue(queues, name)?;
                    }
                    TxOp::Ack {
                        queue: name,
                        group,
                        ids,
                    } => {
                        let q = queue(queues, name)?;
                        for id in ids {
                            if !parse_id(id).is_some_and(|seq| q.is_in_flight(group, seq)) {
                                return Err(Error::NotPending {
                                    queue: name.to_string(),
                                    group: group.to_string(),
                                    id: id.to_string(),
                                });
                            }
                        }
                    }
                }
            }
            let mut receipts = Vec::new();
            let mut wait = Wait::Written;
            for op in ops {
                match op {
                    TxOp::Send {
                        queue: name,
                        message,
                    } => {
                        let q = queue(queues, &name)?;
                        wait = wait.max(self.send_wait(q));
                        let (receipt, seq) = enqueue(q, message, ctx);
                        receipts.push(receipt);
                        let qid = q.id();
                        ctx.sent.push((name, qid, seq.into_iter().collect()));
                    }
                    TxOp::Ack {
                        queue: name,
                        group,
                        ids,
                    } => {
                        let q = queue(queues, &name)?;
                        for seq in ids.iter().filter_map(parse_id) {
                            q.ack(&group, seq, ctx);
                        }
                    }
                }
            }
            Ok((receipts, wait))
        }))
        .await
    }
}
