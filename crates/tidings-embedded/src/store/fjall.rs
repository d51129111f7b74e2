//! The on-disk store: one fjall database, one keyspace per record family,
//! and one writer thread that does group commit.
//!
//! Callers submit batches into a channel while holding the engine's lock, so
//! the channel order is the engine's order. The writer takes everything that
//! is queued, commits it as one fjall batch (handed to the OS), answers the
//! submitters that only needed that, then syncs the journal once with
//! `fdatasync` and answers the rest. While it syncs, new batches queue up and
//! form the next group: concurrent sends share one sync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;

use tidings_core::{Error, Result};

use super::{Batch, IdleTick, Pending, Publisher, Sent, Space, Store, StoreStats, Visit, Wait};

/// Most batches folded into one commit, to bound the time a group takes.
const MAX_GROUP: usize = 4096;

/// After a group this small, the writer does not wait for more.
const GATHER_MIN: usize = 8;

/// How long the writer waits for more after a large group: a fraction of one
/// fsync on this class of disk (about 0.7 ms).
const GATHER_WAIT: Duration = Duration::from_micros(150);

/// How long the writer waits for work before running the idle tick.
const IDLE: Duration = Duration::from_millis(100);

struct Request {
    batch: Batch,
    wait: Wait,
    reply: Option<oneshot::Sender<Result<(), String>>>,
    /// Position in submission order.
    ticket: u64,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    commits: AtomicU64,
    syncs: AtomicU64,
}

/// Dead letters submitted but not yet written. They are the one kind of
/// record the engine reads back (listing, requeue) without waiting for its
/// batch, so reads look here first.
#[derive(Default)]
struct Unwritten {
    /// Key to the ticket of the batch that wrote it and the value (`None`: deleted).
    dead: Mutex<HashMap<Vec<u8>, TicketedValue>>,
}

type TicketedValue = (u64, Option<Vec<u8>>);

impl Unwritten {
    fn note(&self, ticket: u64, batch: &Batch) {
        let mut dead = None;
        for (space, key, value) in &batch.ops {
            if *space == Space::Dead {
                dead.get_or_insert_with(|| {
                    self.dead.lock().unwrap_or_else(PoisonError::into_inner)
                })
                .insert(key.clone(), (ticket, value.clone()));
            }
        }
    }

    fn written_up_to(&self, ticket: u64) {
        let mut dead = self.dead.lock().unwrap_or_else(PoisonError::into_inner);
        if !dead.is_empty() {
            dead.retain(|_, (t, _)| *t > ticket);
        }
    }

    fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let dead = self.dead.lock().unwrap_or_else(PoisonError::into_inner);
        dead.get(key).map(|(_, v)| v.clone())
    }
}

pub(crate) struct FjallStore {
    path: PathBuf,
    spaces: Vec<(Space, Keyspace)>,
    /// The writer's inbox, with the next ticket to hand out.
    sender: Mutex<(Option<mpsc::Sender<Request>>, u64)>,
    unwritten: Arc<Unwritten>,
    idle_tick: Arc<OnceLock<IdleTick>>,
    publisher: Arc<OnceLock<Publisher>>,
    stats: Arc<Counters>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

fn map_open_error(path: &Path, err: fjall::Error) -> Error {
    match err {
        fjall::Error::Locked => Error::Locked {
            path: path.to_owned(),
        },
        fjall::Error::Io(e) => Error::storage(e),
        other => Error::Corrupt {
            location: path.display().to_string(),
            detail: format!("{other:?}"),
        },
    }
}

fn read_error(err: fjall::Error) -> Error {
    Error::storage(std::io::Error::other(format!("{err:?}")))
}

impl FjallStore {
    /// Opens (or creates) the data directory.
    pub(crate) fn open(path: &Path) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(Error::storage)?;
        let db = Database::builder(path)
            .open()
            .map_err(|e| map_open_error(path, e))?;
        let mut spaces = Vec::new();
        for space in Space::ALL {
            let ks = db
                .keyspace(space.name(), KeyspaceCreateOptions::default)
                .map_err(|e| map_open_error(path, e))?;
            spaces.push((space, ks));
        }
        let (sender, receiver) = mpsc::channel();
        let unwritten = Arc::new(Unwritten::default());
        let idle_tick: Arc<OnceLock<IdleTick>> = Arc::default();
        let publisher: Arc<OnceLock<Publisher>> = Arc::default();
        let stats: Arc<Counters> = Arc::default();
        let writer = {
            let hooks = Hooks {
                stats: stats.clone(),
                unwritten: unwritten.clone(),
                idle_tick: idle_tick.clone(),
                publisher: publisher.clone(),
            };
            let (db, spaces) = (db.clone(), spaces.clone());
            std::thread::Builder::new()
                .name("tidings-writer".into())
                .spawn(move || write_loop(&db, &spaces, &receiver, &hooks))
                .map_err(Error::storage)?
        };
        Ok(Self {
            path: path.to_owned(),
            spaces,
            sender: Mutex::new((Some(sender), 0)),
            unwritten,
            idle_tick,
            publisher,
            stats,
            writer: Mutex::new(Some(writer)),
        })
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        keyspace_of(&self.spaces, space)
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        self.close();
    }
}

fn keyspace_of(spaces: &[(Space, Keyspace)], space: Space) -> &Keyspace {
    // Space::ALL built the list, so every space is present; the index is its position.
    &spaces[space as usize].1
}

impl Store for FjallStore {
    /// Stops the writer after it has written and synced everything submitted.
    fn close(&self) {
        drop(
            self.sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The writer itself may drop the last handle (through a hook); it
        // cannot wait for itself, and ends on its own once the inbox is closed.
        if let Some(writer) = writer
            && writer.thread().id() != std::thread::current().id()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.path.display(), "the writer thread panicked");
        }
    }

    fn set_idle_tick(&self, tick: IdleTick) {
        let _ = self.idle_tick.set(tick);
    }

    fn set_publisher(&self, publisher: Publisher) {
        let _ = self.publisher.set(publisher);
    }

    fn stats(&self) -> StoreStats {
        StoreStats {
            batches: self.stats.batches.load(Ordering::Relaxed),
            commits: self.stats.commits.load(Ordering::Relaxed),
            syncs: self.stats.syncs.load(Ordering::Relaxed),
        }
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if space == Space::Dead
            && let Some(value) = self.unwritten.get(key)
        {
            return Ok(value);
        }
        let value = self.keyspace(space).get(key).map_err(read_error)?;
        Ok(value.map(|v| v.to_vec()))
    }

    fn scan(&self, space: Space, visit: &mut Visit<'_>) -> Result<()> {
        for guard in self.keyspace(space).iter() {
            let (k, v) = guard.into_inner().map_err(read_error)?;
            visit(&k, &v)?;
        }
        Ok(())
    }

    fn submit(&self, batch: Batch, wait: Wait) -> Pending {
        let (reply, pending) = if wait == Wait::Nothing {
            (None, Pending::done(None))
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Pending::waiting(rx))
        };
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = sender.1;
        sender.1 += 1;
        self.unwritten.note(ticket, &batch);
        let request = Request {
            batch,
            wait,
            reply,
            ticket,
        };
        match sender.0.as_ref().map(|s| s.send(request)) {
            Some(Ok(())) => pending,
            // The writer is gone: the receiver of `pending` was dropped with
            // the request, so waiting on it reports the broker as closed.
            _ => pending,
        }
    }
}

/// What the writer shares with the store's other handles.
struct Hooks {
    stats: Arc<Counters>,
    unwritten: Arc<Unwritten>,
    idle_tick: Arc<OnceLock<IdleTick>>,
    publisher: Arc<OnceLock<Publisher>>,
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

fn write_loop(
    db: &Database,
    spaces: &[(Space, Keyspace)],
    receiver: &mpsc::Receiver<Request>,
    hooks: &Hooks,
) {
    let mut failure: Option<String> = None;
    let mut last_group = 0;
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
        if failure.is_none() {
            failure = commit_group(db, spaces, &mut group, hooks).err();
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
                .map(|e| format!("fsync failed: {e:?}"));
        }
        if failure.is_none() {
            hooks.publish(&mut group, Wait::Synced);
        }
        let outcome = failure.clone().map_or(Ok(()), Err);
        for request in group {
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome.clone());
            }
        }
        if let Some(e) = &failure {
            tracing::error!(error = %e, "storage failed; further writes are refused");
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
    hooks: &Hooks,
) -> Result<(), String> {
    let mut batch = db.batch();
    for request in group.iter_mut() {
        for (space, key, value) in std::mem::take(&mut request.batch.ops) {
            let ks = keyspace_of(spaces, space);
            match value {
                Some(v) => batch.insert(ks, key, v),
                None => batch.remove(ks, key),
            }
        }
    }
    batch.commit().map_err(|e| format!("write failed: {e:?}"))?;
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
