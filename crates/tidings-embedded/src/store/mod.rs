//! Where the engine keeps its records: a small ordered key-value interface
//! with two implementations, [`fjall`] on disk and [`memory`] for tests.
//!
//! Writes are submitted in batches and applied in submission order. A batch
//! is atomic; the caller chooses whether to wait until it is written to the
//! operating system, synced to disk, or not at all.

#[cfg(test)]
pub(crate) mod faulty;
pub(crate) mod fjall;
pub(crate) mod memory;

use std::sync::Arc;

use tokio::sync::oneshot;

use tidings_core::{Error, QueueName, Result};

use crate::budget::Admission;

/// The record families, one key space each (see `records` for key layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Space {
    Meta,
    Queues,
    Groups,
    Messages,
    /// Messages requeued from the dead letters: a small record each, whose
    /// body stays in its dead-letter record (docs/decisions/0013).
    Requeued,
    Marks,
    Dedup,
    Dead,
    Records,
}

impl Space {
    pub(crate) const ALL: [Space; 9] = [
        Space::Meta,
        Space::Queues,
        Space::Groups,
        Space::Messages,
        Space::Requeued,
        Space::Marks,
        Space::Dedup,
        Space::Dead,
        Space::Records,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Queues => "queues",
            Space::Groups => "groups",
            Space::Messages => "messages",
            Space::Requeued => "requeued",
            Space::Marks => "marks",
            Space::Dedup => "dedup",
            Space::Dead => "dead",
            Space::Records => "records",
        }
    }
}

/// What the store has done since it was opened: group commit at work shows
/// as many batches per commit and per sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Batches submitted by operations.
    pub batches: u64,
    /// Commits to the journal (each may hold many batches).
    pub commits: u64,
    /// Journal syncs (fdatasync).
    pub syncs: u64,
    /// The most bytes of records that waited for the writer at once
    /// (bounded by the write budget).
    pub queued_bytes_peak: u64,
}

/// New messages of one queue (name, id, seqs), to make visible once durable.
pub(crate) type Sent = (QueueName, u64, Vec<u64>);

/// Makes durable messages visible. The engine sets it once; the store runs it
/// when batches reach the level they were submitted with, before their
/// submitters are told, with everything that became durable together.
pub(crate) type Publisher = Arc<dyn Fn(Vec<Sent>) + Send + Sync>;

/// Run by the store when no write has come for a while.
pub(crate) type IdleTick = Box<dyn Fn() + Send + Sync>;

/// Inserts and removals applied together.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) ops: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    /// Messages this batch stores, to publish once it is durable.
    pub(crate) sent: Vec<Sent>,
    /// Its operation's share of the write budget, given back when the
    /// batch is dropped (once written).
    pub(crate) admission: Admission,
}

impl Batch {
    pub(crate) fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((space, key, Some(value)));
    }

    pub(crate) fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.ops.push((space, key, None));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.sent.is_empty()
    }

    /// Bytes of keys and values.
    pub(crate) fn bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|(_, k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

/// How far a submitted batch must get before its submitter goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Wait {
    /// Not at all: the write happens in the background, in order.
    Nothing,
    /// Handed to the operating system (survives a process crash).
    Written,
    /// Synced to disk (survives a power loss).
    Synced,
}

/// Less free space than this on the data directory's disk, and the broker
/// is not ready, and a failed write is put down to a full disk.
pub(crate) const MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Why the store failed: the cause as told (with the free space and the
/// path), and whether it was a full disk.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What failed.
    pub(crate) detail: String,
    /// The disk was full (or had less than [`MIN_FREE_BYTES`] left).
    pub(crate) full: bool,
}

impl Failure {
    /// The error a refused operation answers, with `context`.
    pub(crate) fn error(&self, context: &str) -> Error {
        let detail = format!("{}; {context}", self.detail);
        if self.full {
            Error::StorageFull(detail)
        } else {
            Error::storage(std::io::Error::other(detail))
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// A submitted batch's completion.
pub(crate) struct Pending {
    reply: Option<oneshot::Receiver<Result<(), Failure>>>,
    /// For stores that complete at once: what to publish, done when the
    /// submitter waits (or drops this), never under the submitter's lock.
    publish: Option<(Publisher, Vec<Sent>)>,
}

impl Pending {
    pub(crate) fn done(publish: Option<(Publisher, Vec<Sent>)>) -> Self {
        Self {
            reply: None,
            publish,
        }
    }

    pub(crate) fn waiting(reply: oneshot::Receiver<Result<(), Failure>>) -> Self {
        Self {
            reply: Some(reply),
            publish: None,
        }
    }

    fn publish(&mut self) {
        if let Some((publisher, sent)) = self.publish.take() {
            publisher(sent);
        }
    }

    /// Waits for the batch to reach the level it was submitted with.
    pub(crate) async fn wait(mut self) -> Result<()> {
        self.publish();
        let Some(rx) = self.reply.take() else {
            return Ok(());
        };
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(failure.error("the write was not stored")),
            Err(_) => Err(Error::Closed),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.publish();
    }
}

/// Called with each key and value of a scan.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A range of keys: `start..end` (`end` `None`: to the end of the space),
/// visited in reverse order with `reverse`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRange<'a> {
    pub(crate) start: &'a [u8],
    pub(crate) end: Option<&'a [u8]>,
    pub(crate) reverse: bool,
}

/// Called with each key and value of a range; returns whether to go on.
pub(crate) type Until<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool> + 'a;

/// Ordered key-value storage with batched, ordered writes.
pub(crate) trait Store: Send + Sync + 'static {
    /// Reads one value.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits every entry of a space in key order (used at recovery).
    fn scan(&self, space: Space, visit: &mut Visit<'_>) -> Result<()>;

    /// Visits the entries of `keys` in key order or reverse order, while
    /// `visit` returns `true`. Only written batches are seen.
    fn range(&self, space: Space, keys: KeyRange<'_>, visit: &mut Until<'_>) -> Result<()>;

    /// Submits a batch. Batches are applied in the order they are submitted,
    /// so callers submit while holding the engine's state lock.
    fn submit(&self, batch: Batch, wait: Wait) -> Pending;

    /// Writes and syncs everything submitted, then stops accepting writes.
    fn close(&self) {}

    /// Something to run when the store has been idle for a while (the
    /// engine writes deferred marks with it). Stores that lose everything
    /// at exit anyway need not run it.
    fn set_idle_tick(&self, _tick: IdleTick) {}

    /// Sets what makes durable messages visible (once, before any write).
    fn set_publisher(&self, publisher: Publisher);

    /// Counts of the store's work so far.
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }

    /// Why it refuses writes, once a write or a sync has failed: from then
    /// on the engine's index is ahead of what is stored, and only
    /// reopening the store (and rebuilding the index from it) mends that.
    fn failure(&self) -> Option<Failure> {
        None
    }
}

/// What stands in for a store that failed while it is reopened, and stays
/// if it cannot be: it refuses everything with the cause.
pub(crate) struct FailedStore(pub(crate) Failure);

impl FailedStore {
    fn error(&self) -> Error {
        self.0.error("the store is reopened when written to again")
    }
}

impl Store for FailedStore {
    fn get(&self, _: Space, _: &[u8]) -> Result<Option<Vec<u8>>> {
        Err(self.error())
    }

    fn scan(&self, _: Space, _: &mut Visit<'_>) -> Result<()> {
        Err(self.error())
    }

    fn range(&self, _: Space, _: KeyRange<'_>, _: &mut Until<'_>) -> Result<()> {
        Err(self.error())
    }

    fn submit(&self, _: Batch, _: Wait) -> Pending {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(self.0.clone()));
        Pending::waiting(rx)
    }

    fn set_publisher(&self, _: Publisher) {}

    fn failure(&self) -> Option<Failure> {
        Some(self.0.clone())
    }
}
