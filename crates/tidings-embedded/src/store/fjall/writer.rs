//! The writer thread: group commit, publishing, idle ticks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, PersistMode};
use tokio::sync::oneshot;

use tidings_core::Result;

use super::{
    Batch, Failure, IdleTick, MEMTABLE_BYTES, Publisher, Sent, Space, StoreStats, Unwritten, Wait,
    keyspace_of,
};

/// Most batches folded into one commit, to bound the time a group takes.
const MAX_GROUP: usize = 4096;

/// After a group this small, the writer does not wait for more.
const GATHER_MIN: usize = 8;

/// How long the writer waits for more after a large group: a fraction of one
/// fsync on this class of disk (about 0.7 ms).
const GATHER_WAIT: Duration = Duration::from_micros(150);

/// How long the writer waits for work before running the idle tick.
const IDLE: Duration = Duration::from_millis(100);

/// What fjall counts for an entry in a memtable besides its key and value
/// (the size of its internal entry type, a few dozen bytes). A little off
/// either way only moves the point of rotation a little.
const ENTRY_OVERHEAD: u64 = 64;

/// Bytes written to each keyspace's active memtable since the writer last
/// rotated it, counted as fjall counts them.
///
/// The writer rotates memtables itself, after answering a group, instead of
/// leaving it to fjall: fjall 3.1 asks its workers to rotate from every
/// write that finds the memtable full, through the bounded channel the
/// workers read, and a worker that rotates then blocks sending a flush on
/// that same channel. Under sustained writes the requests fill the channel,
/// both workers block, nothing is flushed again and memory grows without
/// bound (seen at 5,000,000 hub events; fjall pull request 323;
/// docs/decisions/0018-the-writer-rotates-memtables.md). Rotating here sends
/// one flush per memtable, from outside the pool; fjall's own trigger stays
/// as a backstop at [`super::MEMTABLE_BACKSTOP_BYTES`], which this count
/// keeps it from reaching.
struct MemtableFill(Vec<u64>);

impl MemtableFill {
    fn new(spaces: usize) -> Self {
        Self(vec![0; spaces])
    }

    fn add(&mut self, space: Space, key: &[u8], value: Option<&[u8]>) {
        let bytes = key.len() as u64 + value.map_or(0, |v| v.len() as u64) + ENTRY_OVERHEAD;
        self.0[space as usize] += bytes;
    }

    /// Rotates every memtable that has reached [`MEMTABLE_BYTES`]; its flush
    /// then runs on fjall's workers. A failed rotation is logged and retried
    /// at the next group (fjall's backstop bounds the memtable meanwhile).
    fn rotate_full(&mut self, spaces: &[(Space, Keyspace)]) {
        for (filled, (space, keyspace)) in self.0.iter_mut().zip(spaces) {
            if *filled < MEMTABLE_BYTES {
                continue;
            }
            match keyspace.rotate_memtable() {
                Ok(_) => *filled = 0,
                Err(e) => tracing::warn!(space = ?space, error = ?e, "memtable rotation failed"),
            }
        }
    }
}

pub(super) struct Request {
    pub(super) batch: Batch,
    pub(super) wait: Wait,
    pub(super) reply: Option<oneshot::Sender<Result<(), Failure>>>,
    /// Position in submission order.
    pub(super) ticket: u64,
    /// Bytes of its records.
    pub(super) bytes: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    batches: AtomicU64,
    commits: AtomicU64,
    syncs: AtomicU64,
    queued_bytes: AtomicU64,
    queued_bytes_peak: AtomicU64,
}

impl Counters {
    pub(super) fn snapshot(&self) -> StoreStats {
        StoreStats {
            batches: self.batches.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            queued_bytes_peak: self.queued_bytes_peak.load(Ordering::Relaxed),
        }
    }

    /// A batch of `bytes` joins the writer's queue.
    pub(super) fn queue(&self, bytes: u64) {
        let now = self.queued_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.queued_bytes_peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Batches of `bytes` in all leave it, written.
    fn written(&self, bytes: u64) {
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// What the writer shares with the store's other handles.
pub(super) struct Hooks {
    pub(super) stats: Arc<Counters>,
    pub(super) unwritten: Arc<Unwritten>,
    pub(super) idle_tick: Arc<OnceLock<IdleTick>>,
    pub(super) publisher: Arc<OnceLock<Publisher>>,
    /// Time added to every commit, to play a slow disk in tests (zero
    /// otherwise).
    pub(super) slow: Duration,
    /// The first failure, once there is one (shared with the store).
    pub(super) failure: Arc<OnceLock<Failure>>,
    /// The data directory (its free space is told with a failure).
    pub(super) path: std::path::PathBuf,
    /// Makes the next commit fail, as a full disk would (tests).
    pub(super) fail_next: Arc<AtomicBool>,
}

impl Hooks {
    /// Publishes what the requests that reached `level` stored, in one call.
    fn publish(&self, group: &mut [Request], level: Wait) {
        let sent: Vec<Sent> = group
            .iter_mut()
            .filter(|r| r.wait == level)
            .flat_map(|r| std::mem::take(&mut r.batch.sent))
            .collect();
        if let (false, Some(publisher)) = (sent.is_empty(), self.publisher.get()) {
            publisher(sent);
        }
    }
}

pub(super) fn write_loop(
    db: &Database,
    spaces: &[(Space, Keyspace)],
    receiver: &mpsc::Receiver<Request>,
    hooks: &Hooks,
) {
    let mut failure: Option<Failure> = None;
    let mut last_group = 0;
    let mut fill = MemtableFill::new(spaces.len());
    loop {
        let first = match receiver.recv_timeout(IDLE) {
            Ok(first) => first,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(tick) = hooks.idle_tick.get() {
                    tick();
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        let mut group = vec![first];
        gather(receiver, &mut group, last_group);
        last_group = group.len();
        let failed_before = failure.is_some();
        if failure.is_none() {
            failure = commit_group(db, spaces, &mut group, &mut fill, hooks)
                .err()
                .map(|e| super::classify(&e, &hooks.path));
        }
        if failure.is_none()
            && let Some(last) = group.last()
        {
            hooks.unwritten.written_up_to(last.ticket);
        }
        let needs_sync = group.iter().any(|r| r.wait == Wait::Synced);
        let stats = &hooks.stats;
        stats
            .batches
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        stats.commits.fetch_add(1, Ordering::Relaxed);
        if failure.is_none() && needs_sync {
            stats.syncs.fetch_add(1, Ordering::Relaxed);
            failure = db
                .persist(PersistMode::SyncData)
                .err()
                .map(|e| super::classify(&format!("fsync failed: {e:?}"), &hooks.path));
        }
        if failure.is_none() {
            hooks.publish(&mut group, Wait::Synced);
        }
        // Known to the store before any writer hears of it, so the next
        // write sees the failure (and reopens the store).
        if let (false, Some(failure)) = (failed_before, &failure) {
            tracing::error!(
                error = %failure,
                disk_full = failure.full,
                "storage failed; writes are refused until it is reopened (at the next write)"
            );
            let _ = hooks.failure.set(failure.clone());
        }
        let outcome = failure.clone().map_or(Ok(()), Err);
        stats.written(group.iter().map(|r| r.bytes).sum());
        // Each request's share of the write budget goes back as it is dropped.
        for request in group {
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome.clone());
            }
        }
        if failure.is_none() {
            fill.rotate_full(spaces);
        }
    }
    if failure.is_none()
        && let Err(e) = db.persist(PersistMode::SyncAll)
    {
        tracing::error!(error = ?e, "final sync failed");
    }
}

/// Takes what is queued. After a large group (many concurrent writers), it
/// also waits a fraction of an fsync for more: the writers just answered are
/// on their way back, and without the wait they would form a group of their
/// own behind the next sync, so each sync would carry half the writers.
fn gather(receiver: &mpsc::Receiver<Request>, group: &mut Vec<Request>, last_group: usize) {
    while group.len() < MAX_GROUP {
        match receiver.try_recv() {
            Ok(r) => group.push(r),
            Err(_) => break,
        }
    }
    if last_group < GATHER_MIN {
        return;
    }
    let deadline = Instant::now() + GATHER_WAIT;
    while group.len() < MAX_GROUP.min(2 * last_group) {
        match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => group.push(r),
            Err(_) => break,
        }
    }
}

/// Writes the group as one atomic batch (flushed to the OS), then answers
/// the submitters that waited only for that.
fn commit_group(
    db: &Database,
    spaces: &[(Space, Keyspace)],
    group: &mut [Request],
    fill: &mut MemtableFill,
    hooks: &Hooks,
) -> Result<(), String> {
    if hooks.fail_next.swap(false, Ordering::AcqRel) {
        return Err("write failed: injected".to_owned());
    }
    let mut batch = db.batch();
    for request in group.iter_mut() {
        for (space, key, value) in std::mem::take(&mut request.batch.ops) {
            let ks = keyspace_of(spaces, space);
            fill.add(space, &key, value.as_deref());
            match value {
                Some(v) => batch.insert(ks, key, v),
                None => batch.remove(ks, key),
            }
        }
    }
    batch.commit().map_err(|e| format!("write failed: {e:?}"))?;
    if !hooks.slow.is_zero() {
        std::thread::sleep(hooks.slow);
    }
    hooks.publish(group, Wait::Written);
    for request in group.iter_mut() {
        if request.wait == Wait::Written
            && let Some(reply) = request.reply.take()
        {
            let _ = reply.send(Ok(()));
        }
    }
    Ok(())
}
