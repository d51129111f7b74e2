//! The on-disk store: one fjall database, one keyspace per record family,
//! and one writer thread that does group commit.
//!
//! Callers submit batches into a channel while holding the engine's lock, so
//! the channel order is the engine's order. The writer takes everything that
//! is queued, commits it as one fjall batch (handed to the OS), answers the
//! submitters that only needed that, then syncs the journal once with
//! `fdatasync` and answers the rest. While it syncs, new batches queue up and
//! form the next group: concurrent sends share one sync.

mod writer;

use writer::{Counters, Hooks, Request, write_loop};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use tokio::sync::oneshot;

use tidings_core::{Error, Result};

use super::{
    Batch, Failure, IdleTick, KeyRange, MIN_FREE_BYTES, Pending, Publisher, Sent, Space, Store,
    StoreStats, Until, Visit, Wait,
};

/// Largest memtable of a keyspace before the writer rotates it and fjall
/// flushes it to a table file (writer.rs, `MemtableFill`). It bounds memory,
/// and the journal replayed at open, for a large backlog: 4 MiB for every
/// keyspace keeps a million queued hub events under 100 MB (8 MiB for the
/// records measured 102–110 MB; docs/benchmarks.md).
const MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;

/// The memtable size at which fjall rotates by itself: only reached if the
/// writer's own rotation falls behind (see `MemtableFill` in writer.rs for
/// why fjall's rotation is kept out of the way).
const MEMTABLE_BACKSTOP_BYTES: u64 = 4 * MEMTABLE_BYTES;

/// Size of the table files fjall's leveled compaction writes (its default
/// is 64 MiB). A table is written through the page cache and synced once,
/// at its end; the store's journal syncs queue behind that sync on the disk,
/// so the table size bounds how long a publish can wait while compactions
/// run: publish → webhook p99 during a purge 46–50 ms with 64 MiB tables,
/// 13–22 ms with 8 MiB (docs/decisions/0017-small-table-files.md).
const TABLE_TARGET_BYTES: u64 = 8 * 1024 * 1024;

/// How a keyspace is laid out, set when it is created (a store keeps the
/// layout it was created with).
///
/// fjall's defaults keep a table's whole block index (and Bloom filter) as
/// one block from the second level on, unpinned until the fourth: a point
/// read in a table of the second or third level loads that block through
/// the cache, about 1 MB for a 64 MB table, and checksums it. Once a store
/// outgrows the cache, every read does: 31,000 reads/s instead of 250,000
/// (docs/decisions/0016-partitioned-block-indexes.md). Here indexes and filters are
/// partitioned from the first level on: a read loads one 4 KiB partition,
/// found through a small top-level index that stays in memory. Tables are
/// small (see [`TABLE_TARGET_BYTES`]).
fn keyspace_options() -> KeyspaceCreateOptions {
    use fjall::compaction::Leveled;
    use fjall::config::PartitioningPolicy;
    KeyspaceCreateOptions::default()
        .max_memtable_size(MEMTABLE_BACKSTOP_BYTES)
        .index_block_partitioning_policy(PartitioningPolicy::new([false, true]))
        .filter_block_partitioning_policy(PartitioningPolicy::new([false, true]))
        .compaction_strategy(Arc::new(
            Leveled::default()
                .with_table_target_size(TABLE_TARGET_BYTES)
                .with_l0_threshold(L0_THRESHOLD),
        ))
}

/// Tables in the first level (flushed memtables) that start a compaction
/// into the second. fjall sizes the second level as this many target-size
/// tables: with fjall's default of 4 and the small tables above it held
/// 32 MiB, so the hub's records soon reached a third level and every byte
/// was rewritten once more (compaction was a sixth of the server's CPU
/// while publishing). 8 makes it 64 MiB and leaves fjall's write stall, at
/// 20 tables in the first level, well out of reach of the flushes that
/// arrive while one compaction runs. Publishing for 60 s: 69.6–73.2 µs of
/// server CPU per event with 8 against 80–91 µs with 4
/// (docs/decisions/0025-a-larger-second-level.md). Like every option here, a
/// store keeps the value it was created with.
const L0_THRESHOLD: u8 = 8;

/// fjall's block cache. Reads are of recent records (in memtables or the
/// OS page cache), so a small cache costs little; the default is 32 MiB.
const CACHE_BYTES: u64 = 8 * 1024 * 1024;

/// fjall's background threads for flushes and compactions. With more than
/// one, fjall's first worker hands every compaction request back to the
/// channel and takes it again while another worker compacts: it spins,
/// 60% of a core for as long as a compaction runs (fjall 3.1.13,
/// `worker_pool.rs`). One worker does flushes and compactions in turn:
/// publishes 1.01–1.08× as fast and a 1,000,000-event purge faster, with a
/// lower p99 (docs/decisions/0019-one-flush-worker.md).
const FLUSH_WORKERS: usize = 1;

/// Dead letters and records submitted but not yet written. They are the
/// kinds the engine reads back (dead-letter listing and requeue, the
/// insert-if-absent check of records) before their batch is written, so
/// reads look here first.
#[derive(Default)]
struct Unwritten {
    /// Space and key to the ticket of the batch that wrote it and the value (`None`: deleted).
    dead: Mutex<HashMap<(Space, Vec<u8>), TicketedValue>>,
}

type TicketedValue = (u64, Option<Vec<u8>>);

fn read_back(space: Space) -> bool {
    matches!(space, Space::Dead | Space::Records)
}

impl Unwritten {
    fn note(&self, ticket: u64, batch: &Batch) {
        let mut dead = None;
        for (space, key, value) in &batch.ops {
            if read_back(*space) {
                dead.get_or_insert_with(|| {
                    self.dead.lock().unwrap_or_else(PoisonError::into_inner)
                })
                .insert((*space, key.clone()), (ticket, value.clone()));
            }
        }
    }

    fn written_up_to(&self, ticket: u64) {
        let mut dead = self.dead.lock().unwrap_or_else(PoisonError::into_inner);
        if !dead.is_empty() {
            dead.retain(|_, (t, _)| *t > ticket);
        }
    }

    fn get(&self, space: Space, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let dead = self.dead.lock().unwrap_or_else(PoisonError::into_inner);
        dead.get(&(space, key.to_vec())).map(|(_, v)| v.clone())
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
    failure: Arc<OnceLock<Failure>>,
    #[cfg_attr(not(test), allow(dead_code))]
    fail_next: Arc<std::sync::atomic::AtomicBool>,
}

fn map_open_error(path: &Path, err: fjall::Error) -> Error {
    match err {
        fjall::Error::Locked => Error::Locked {
            path: path.to_owned(),
        },
        fjall::Error::Io(e) if is_full(&e.to_string()) => {
            Error::StorageFull(format!("cannot open {}: {e}", path.display()))
        }
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
        Self::open_with(path, std::time::Duration::ZERO)
    }

    /// Opens a data directory on a disk made slow: the writer sleeps this
    /// long after every commit.
    #[cfg(test)]
    pub(crate) fn open_slow(path: &Path, slow: std::time::Duration) -> Result<Self> {
        Self::open_with(path, slow)
    }

    fn open_with(path: &Path, slow: std::time::Duration) -> Result<Self> {
        std::fs::create_dir_all(path).map_err(Error::storage)?;
        let db = Database::builder(path)
            .cache_size(CACHE_BYTES)
            .worker_threads(FLUSH_WORKERS)
            .open()
            .map_err(|e| map_open_error(path, e))?;
        let mut spaces = Vec::new();
        for space in Space::ALL {
            let ks = db
                .keyspace(space.name(), keyspace_options)
                .map_err(|e| map_open_error(path, e))?;
            spaces.push((space, ks));
        }
        let (sender, receiver) = mpsc::channel();
        let unwritten = Arc::new(Unwritten::default());
        let idle_tick: Arc<OnceLock<IdleTick>> = Arc::default();
        let publisher: Arc<OnceLock<Publisher>> = Arc::default();
        let stats: Arc<Counters> = Arc::default();
        let failure: Arc<OnceLock<Failure>> = Arc::default();
        let fail_next: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let writer = {
            let hooks = Hooks {
                stats: stats.clone(),
                unwritten: unwritten.clone(),
                idle_tick: idle_tick.clone(),
                publisher: publisher.clone(),
                slow,
                failure: failure.clone(),
                path: path.to_owned(),
                fail_next: fail_next.clone(),
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
            failure,
            fail_next,
        })
    }

    /// A switch that makes the next commit fail, as a full disk would.
    #[cfg(test)]
    pub(crate) fn fault_switch(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.fail_next.clone()
    }

    fn keyspace(&self, space: Space) -> &Keyspace {
        keyspace_of(&self.spaces, space)
    }
}

/// Whether an error's text says the disk is full (ENOSPC).
fn is_full(text: &str) -> bool {
    text.contains("StorageFull") || text.contains("No space left") || text.contains("os error 28")
}

/// A failed write or sync, told with the free space left on `path`'s
/// disk (fjall says only "Poisoned" when a background flush failed first,
/// so the free space is what tells a full disk) and classified.
pub(crate) fn classify(detail: &str, path: &Path) -> Failure {
    let free = free_bytes(path);
    let full = is_full(detail) || free.is_some_and(|f| f < MIN_FREE_BYTES);
    let free = free.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    Failure {
        detail: format!(
            "{detail} ({free} bytes free on the disk of {})",
            path.display()
        ),
        full,
    }
}

/// Bytes of the files under `path` (what cannot be read counts 0).
pub(crate) fn bytes_under(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(std::result::Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => bytes_under(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Bytes free for this process on the file system holding `path`
/// (`None` where it cannot be told).
pub(crate) fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let stats = rustix::fs::statvfs(path).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
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
        self.stats.snapshot()
    }

    fn failure(&self) -> Option<Failure> {
        self.failure.get().cloned()
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if read_back(space)
            && let Some(value) = self.unwritten.get(space, key)
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

    fn range(&self, space: Space, keys: KeyRange<'_>, visit: &mut Until<'_>) -> Result<()> {
        let ks = self.keyspace(space);
        let iter: Box<dyn DoubleEndedIterator<Item = fjall::Guard>> = match keys.end {
            Some(end) => Box::new(ks.range(keys.start..end)),
            None => Box::new(ks.range(keys.start..)),
        };
        let iter: Box<dyn Iterator<Item = fjall::Guard>> = if keys.reverse {
            Box::new(iter.rev())
        } else {
            iter
        };
        for guard in iter {
            let (k, v) = guard.into_inner().map_err(read_error)?;
            if !visit(&k, &v)? {
                break;
            }
        }
        Ok(())
    }

    fn submit(&self, mut batch: Batch, wait: Wait) -> Pending {
        let (reply, pending) = if wait == Wait::Nothing {
            (None, Pending::done(None))
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Pending::waiting(rx))
        };
        let bytes = batch.bytes();
        batch.admission.top_up(bytes);
        self.stats.queue(bytes as u64);
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = sender.1;
        sender.1 += 1;
        self.unwritten.note(ticket, &batch);
        let request = Request {
            batch,
            wait,
            reply,
            ticket,
            bytes: bytes as u64,
        };
        // If the writer is gone, the receiver of `pending` is dropped with
        // the request, so waiting on it reports the broker as closed.
        if let Some(sender) = sender.0.as_ref() {
            let _ = sender.send(request);
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fjall's own rotation waits for [`MEMTABLE_BACKSTOP_BYTES`]; the
    /// writer rotates at [`MEMTABLE_BYTES`], and the flush that follows
    /// leaves a table file on disk.
    #[tokio::test]
    async fn the_writer_rotates_a_full_memtable_itself() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = FjallStore::open(dir.path()).expect("opens");
        let records = keyspace_of(&store.spaces, Space::Records).clone();
        let value = vec![7u8; 1024];
        let entries = 3 * MEMTABLE_BYTES / 2 / 1024;
        assert!(entries * 1024 < MEMTABLE_BACKSTOP_BYTES);
        for n in 0..entries {
            let mut batch = Batch::default();
            batch.put(
                Space::Records,
                format!("k{n:08}").into_bytes(),
                value.clone(),
            );
            store
                .submit(batch, Wait::Written)
                .wait()
                .await
                .expect("written");
        }
        // The flush runs on fjall's workers and tells no one: look for its
        // table file, within a bound far above a 4 MiB flush.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while records.disk_space() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "no table file 30 s after writing 1.5 memtables"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        store.close();
    }
}
