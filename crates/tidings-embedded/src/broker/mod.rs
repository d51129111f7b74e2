//! [`EmbeddedBroker`]: the [`Broker`](tidings_core::Broker) trait over the index and a store.
//!
//! Every operation takes the state lock once, changes the index, submits the
//! matching records to the store (in lock order), releases the lock and only
//! then waits for the store. Sent messages become visible to receivers after
//! their records are durable, so nothing is delivered that a crash could undo.

mod dead_letters;
mod operations;
mod record_reads;
mod tables;
#[cfg(test)]
mod tests;
mod transaction;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use tidings_core::{Delivery, Durability, Error, QueueName, Result, Timestamp};

use crate::budget::{Admission, Budget, WriteBudget};
use crate::records::MessageRecord;
use crate::state::{Ctx, MARK_DELAY_MS, Prefetched, QueueState, State, message_id};
use crate::store::fjall::FjallStore;
use crate::store::memory::MemoryStore;
use crate::store::{Batch, FailedStore, Pending, Sent, Space, Store, StoreStats, Wait};
use record_reads::RecordStripes;
use tidings_core::Clock;

/// Settings of an embedded broker.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Durability of sends to queues that do not set their own.
    pub durability: Durability,
    /// Where time comes from (the system clock unless a test moves it by hand).
    pub clock: Clock,
    /// How much may wait for the writer before operations wait their turn.
    pub write_budget: WriteBudget,
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
    /// Replaced when a failed store is reopened ([`EmbeddedBroker::recover`]).
    store: RwLock<Box<dyn Store>>,
    /// The data directory (`None` in memory).
    path: Option<PathBuf>,
    /// When a failed store was last reopened (or tried to be), and the
    /// pause before the next try.
    reopened_at: Mutex<Option<(Instant, Duration)>>,
    durability: Durability,
    clock: Clock,
    budget: Budget,
    /// Set when an operation left expiries for later because their
    /// messages must be read first (outside the lock).
    unread_expiries: AtomicBool,
    /// Write counts of records, for reads made before the lock.
    stripes: RecordStripes,
}

impl Inner {
    fn store(&self) -> RwLockReadGuard<'_, Box<dyn Store>> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes what is still deferred (and how far ids went), then stops the store.
    fn close(&self) {
        self.write_deferred(u64::MAX, true);
        self.store().close();
    }

    /// Writes the marks of deliveries made at or before `up_to` that are
    /// still in flight, and with `checkpoint` the exact id high-water mark.
    fn write_deferred(&self, up_to: u64, checkpoint: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Batch::default();
        state.flush_deferred(up_to, &mut batch);
        if checkpoint {
            state.seq.checkpoint(&mut batch);
        }
        if !batch.is_empty() {
            drop(self.store().submit(batch, Wait::Nothing));
        }
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

/// Least time between two attempts to reopen a failed store.
const REOPEN_PAUSE: Duration = Duration::from_secs(1);
/// Most time between two attempts, when failures keep coming back.
const MAX_REOPEN_PAUSE: Duration = Duration::from_secs(64);

/// Connects a store to the engine: what makes durable messages visible,
/// and what writes deferred marks when nothing else writes.
fn attach(inner: &Arc<Inner>, store: &dyn Store) {
    let weak = Arc::downgrade(inner);
    store.set_publisher(Arc::new(move |sent| {
        if let Some(inner) = weak.upgrade() {
            inner.publish(&sent);
        }
    }));
    // When nothing else writes, deliveries still get written once due.
    let weak = Arc::downgrade(inner);
    store.set_idle_tick(Box::new(move || {
        if let Some(inner) = weak.upgrade() {
            let up_to = inner.clock.now().saturating_sub(MARK_DELAY_MS);
            inner.write_deferred(up_to, false);
        }
    }));
}

fn wait_for(durability: Durability) -> Wait {
    match durability {
        Durability::Sync => Wait::Synced,
        Durability::Buffered => Wait::Written,
    }
}

pub(super) type Queues = std::collections::BTreeMap<QueueName, QueueState>;

/// Expiries applied per lock section by [`EmbeddedBroker::expire_unread`].
const EXPIRY_STEP: usize = 256;

fn queue<'a>(queues: &'a mut Queues, name: &QueueName) -> Result<&'a mut QueueState> {
    queues
        .get_mut(name)
        .ok_or_else(|| Error::QueueNotFound(name.to_string()))
}

impl EmbeddedBroker {
    /// Opens (or creates) a data directory with default options.
    ///
    /// Opening reads the whole directory to rebuild the index (about a second
    /// per million stored messages here): from async code, call it on a
    /// blocking thread (`tokio::task::spawn_blocking`) when that matters.
    ///
    /// Fails with [`Error::Locked`] if another process has it open and with
    /// [`Error::Corrupt`] if its contents cannot be read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// Opens (or creates) a data directory.
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        let store = FjallStore::open(path.as_ref())?;
        Self::with_store(Box::new(store), Some(path.as_ref().to_owned()), options)
    }

    /// A broker that keeps everything in memory, for tests and examples.
    pub fn in_memory() -> Self {
        Self::in_memory_with(EmbeddedOptions::default())
    }

    /// A broker in memory, with options.
    pub fn in_memory_with(options: EmbeddedOptions) -> Self {
        // Loading an empty memory store reads nothing and cannot fail.
        Self::with_store(Box::<MemoryStore>::default(), None, options)
            .unwrap_or_else(|_| unreachable!("an empty memory store always loads"))
    }

    fn with_store(
        store: Box<dyn Store>,
        path: Option<PathBuf>,
        options: EmbeddedOptions,
    ) -> Result<Self> {
        let (state, batch) = State::load(&*store, options.clock.now())?;
        drop(store.submit(batch, Wait::Nothing));
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            store: RwLock::new(store),
            path,
            reopened_at: Mutex::new(None),
            durability: options.durability,
            clock: options.clock,
            budget: Budget::new(options.write_budget),
            unread_expiries: AtomicBool::new(false),
            stripes: RecordStripes::default(),
        });
        attach(&inner, &**inner.store());
        Ok(Self { inner })
    }

    /// After a write or sync failed (a full disk, no descriptor left, an I/O
    /// error), the index is ahead of what is stored: the store refuses
    /// writes until it is reopened. This reopens it and rebuilds the index
    /// from it, as a restart would (what the failed writes did is gone: they
    /// were answered with an error; deliveries not yet marked are redelivered),
    /// at most once per [`REOPEN_PAUSE`] (doubling up to [`MAX_REOPEN_PAUSE`]
    /// while failures keep coming back). Nothing to do if nothing failed.
    pub(super) fn recover(&self) -> Result<()> {
        let Some(cause) = self.inner.store().failure() else {
            return Ok(());
        };
        let Some(path) = self.inner.path.clone() else {
            return Err(cause.error("in memory: it cannot be reopened"));
        };
        // A full disk stays the reason while it is full, whatever the first
        // failure said.
        let refused = |context: String| {
            let mut failure = cause.clone();
            failure.full |= crate::store::fjall::free_bytes(&path)
                .is_some_and(|f| f < crate::store::MIN_FREE_BYTES);
            failure.error(&context)
        };
        // One reopening at a time; the others are refused meanwhile.
        let mut at = match self.inner.reopened_at.try_lock() {
            Ok(at) => at,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(refused("it is being reopened".to_owned()));
            }
        };
        if self.inner.store().failure().is_none() {
            return Ok(()); // reopened by another caller meanwhile
        }
        // Reopening rebuilds the index (about a second per million stored
        // messages): a failure that keeps coming back is retried less and
        // less often, up to about once a minute.
        let pause = match *at {
            Some((last, pause)) if last.elapsed() < pause => {
                return Err(refused(format!(
                    "it is reopened again within {} s",
                    pause.as_secs()
                )));
            }
            Some((last, pause)) if last.elapsed() < MAX_REOPEN_PAUSE * 2 => {
                (pause * 2).min(MAX_REOPEN_PAUSE)
            }
            _ => REOPEN_PAUSE,
        };
        *at = Some((Instant::now(), pause));
        let old = {
            let _state = self.lock();
            let mut store = self
                .inner
                .store
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *store, Box::new(FailedStore(cause.clone())))
        };
        // The old store must be gone (its writer stopped, its files closed)
        // before the directory is opened again; stopped holding no lock, since
        // its writer may be waiting for the index (to write deferred marks).
        old.close();
        drop(old);
        let fresh = FjallStore::open(&path).map_err(|e| {
            tracing::warn!(error = %e, %cause, "storage still failing; writes stay refused");
            match e {
                Error::StorageFull(_) => e,
                other => refused(format!("reopening it failed: {other}")),
            }
        })?;
        let (loaded, batch) = State::load(&fresh, self.inner.clock.now())?;
        attach(&self.inner, &fresh);
        let old = {
            let mut state = self.lock();
            let mut store = self
                .inner
                .store
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            drop(fresh.submit(batch, Wait::Nothing));
            *store = Box::new(fresh);
            std::mem::replace(&mut *state, loaded)
        };
        // Receivers waiting on the old index look again, at the new one.
        for queue in old.queues.values() {
            queue.notify.notify_waiters();
        }
        tracing::warn!(
            %cause,
            "storage reopened after a failure; writes are accepted again"
        );
        Ok(())
    }

    /// Writes and syncs everything, then refuses further writes. Dropping the
    /// last handle does the same.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Counts of the storage's work since the broker was opened (all zero in
    /// memory): batches per sync shows group commit at work.
    pub fn store_stats(&self) -> StoreStats {
        self.inner.store().stats()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for an operation's share of the write budget: `bytes` is
    /// about what its records will take.
    async fn admit(&self, bytes: usize) -> Admission {
        self.inner.budget.admit(bytes).await
    }

    /// Runs `f` on the index under the lock and submits the records it
    /// wrote, with the operation's share of the write budget.
    ///
    /// Operations read what they need before they change anything, so one
    /// that fails has normally written nothing. Should one fail after a
    /// change all the same, its records are still submitted (the store
    /// always mirrors the index) and the messages it stored are still
    /// published once written: nothing is left stored but invisible.
    fn write<T>(
        &self,
        admission: Admission,
        f: impl FnOnce(&mut Queues, &mut Ctx<'_>) -> Result<(T, Wait)>,
    ) -> (Result<T>, Pending) {
        self.write_with(admission, HashMap::new(), f)
    }

    /// [`EmbeddedBroker::write`] with messages read before the lock.
    fn write_with<T>(
        &self,
        admission: Admission,
        prefetched: Prefetched,
        f: impl FnOnce(&mut Queues, &mut Ctx<'_>) -> Result<(T, Wait)>,
    ) -> (Result<T>, Pending) {
        if let Err(e) = self.recover() {
            return (Err(e), Pending::done(None));
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        let mut batch = Batch {
            admission,
            ..Batch::default()
        };
        let now = self.inner.clock.now();
        let store = self.inner.store();
        let mut ctx = Ctx {
            store: &**store,
            batch: &mut batch,
            seq: &mut state.seq,
            now,
            deferred: &mut state.deferred,
            sent: Vec::new(),
            prefetched,
            unread_expiries: false,
            counters: &mut state.counters,
        };
        let out = f(&mut state.queues, &mut ctx);
        if ctx.unread_expiries {
            self.inner.unread_expiries.store(true, Ordering::SeqCst);
        }
        let sent = std::mem::take(&mut ctx.sent);
        state.flush_deferred(now.saturating_sub(MARK_DELAY_MS), &mut batch);
        let wait = match &out {
            Ok((_, wait)) => *wait,
            // The store publishes only batches that wait for a write.
            Err(_) if sent.iter().any(|(_, _, seqs)| !seqs.is_empty()) => Wait::Written,
            Err(_) => Wait::Nothing,
        };
        // Published by the store as soon as the batch is durable, so
        // receivers are woken without waiting for the sender's task.
        batch.sent = sent;
        let pending = if batch.is_empty() && wait == Wait::Nothing {
            Pending::done(None)
        } else {
            let touched = RecordStripes::touched(&batch);
            let pending = store.submit(batch, wait);
            self.inner.stripes.bump(&touched);
            pending
        };
        drop(guard);
        (out.map(|(value, _)| value), pending)
    }

    /// Reads messages before an operation takes the lock: `wanted` names
    /// queues and seqs; returns what exists by queue id and seq (for
    /// `Ctx::prefetched`). Only the queues' ids are looked up under the lock.
    fn prefetch(&self, wanted: &[(&QueueName, Vec<u64>)]) -> Result<Prefetched> {
        let mut read = HashMap::new();
        if wanted.iter().all(|(_, seqs)| seqs.is_empty()) {
            return Ok(read);
        }
        let ids: Vec<Option<u64>> = {
            let state = self.lock();
            wanted
                .iter()
                .map(|(name, _)| state.queues.get(*name).map(QueueState::id))
                .collect()
        };
        for ((_, seqs), qid) in wanted.iter().zip(ids) {
            let Some(qid) = qid else { continue };
            for &seq in seqs {
                if let Some(message) = self.stored_message(qid, seq)? {
                    read.insert((qid, seq), message);
                }
            }
        }
        Ok(read)
    }

    /// Applies time to a queue now (expiries, retention, the dedup window),
    /// with the expiries whose messages must be read first: for the
    /// operations that report on the queue.
    async fn apply_time(&self, name: &QueueName) -> Result<()> {
        let (out, _) = self.write(Admission::none(), |queues, ctx| {
            queue(queues, name)?.maintain(ctx)?;
            Ok(((), Wait::Nothing))
        });
        out?;
        self.expire_unread(name).await
    }

    /// After an operation: the expiries it left, if any. An operation that
    /// succeeded is not failed by them (they are tried again by the next
    /// one); returns whether any were applied.
    async fn expire_unread_after(&self, name: &QueueName) -> bool {
        if !self.inner.unread_expiries.load(Ordering::SeqCst) {
            return false;
        }
        match self.expire_unread(name).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(queue = %name, error = %e, "expiries left for the next operation");
                false
            }
        }
    }

    /// Applies the expiries of `name` that operations left because their
    /// messages had to be read (to become dead letters): a step at a time,
    /// the messages read outside the lock, each expiry re-checked under it.
    /// Runs only after an operation found such expiries.
    async fn expire_unread(&self, name: &QueueName) -> Result<()> {
        if !self.inner.unread_expiries.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        loop {
            let (out, _) = self.write(Admission::none(), |queues, ctx| {
                let q = queue(queues, name)?;
                Ok((
                    (q.id(), q.due_expiries(ctx.now, EXPIRY_STEP)),
                    Wait::Nothing,
                ))
            });
            let (qid, due) = out?;
            if due.is_empty() {
                return Ok(());
            }
            let mut read = HashMap::with_capacity(due.len());
            let mut bytes = 0;
            for seq in due {
                // Gone meanwhile (acked, purged): its expiry went with it.
                if let Some(record) = self.stored_message(qid, seq)? {
                    bytes += record.payload.len() + 64;
                    read.insert((qid, seq), record);
                }
            }
            if read.is_empty() {
                return Ok(());
            }
            let admission = self.admit(bytes).await;
            finish(self.write_with(admission, read, |queues, ctx| {
                if let Some(q) = queues.get_mut(name).filter(|q| q.id() == qid) {
                    q.maintain(ctx)?;
                }
                Ok(((), Wait::Written))
            }))
            .await?;
        }
    }

    /// A message, read outside the lock (where its index record, which
    /// says in which space it is, cannot be looked at): among the messages,
    /// or else among those requeued from the dead letters (with the body of
    /// its dead-letter record). `None` if it is gone.
    fn stored_message(&self, qid: u64, seq: u64) -> Result<Option<MessageRecord>> {
        let store = self.inner.store();
        let store = &**store;
        match crate::state::stored_message(store, qid, seq, Space::Messages)? {
            Some(message) => Ok(Some(message)),
            None => crate::state::stored_message(store, qid, seq, Space::Requeued),
        }
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
            let Some(record) = self.stored_message(qid, seq)? else {
                continue;
            };
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

/// Returns an operation's result once its records have reached the store.
async fn finish<T>((out, pending): (Result<T>, Pending)) -> Result<T> {
    let value = out?;
    pending.wait().await?;
    Ok(value)
}
