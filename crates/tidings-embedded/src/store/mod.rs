//! Where the engine keeps its records: a small ordered key-value interface
//! with two implementations, [`fjall`] on disk and [`memory`] for tests.
//!
//! Writes are submitted in batches and applied in submission order. A batch
//! is atomic; the caller chooses whether to wait until it is written to the
//! operating system, synced to disk, or not at all.

pub(crate) mod fjall;
pub(crate) mod memory;

use tokio::sync::oneshot;

use tidings_core::{Error, Result};

/// The record families, one key space each (see `records` for key layouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Space {
    Meta,
    Queues,
    Groups,
    Messages,
    Marks,
    Dedup,
    Dead,
}

impl Space {
    pub(crate) const ALL: [Space; 7] = [
        Space::Meta,
        Space::Queues,
        Space::Groups,
        Space::Messages,
        Space::Marks,
        Space::Dedup,
        Space::Dead,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Queues => "queues",
            Space::Groups => "groups",
            Space::Messages => "messages",
            Space::Marks => "marks",
            Space::Dedup => "dedup",
            Space::Dead => "dead",
        }
    }
}

/// Run once a batch has reached the level it was submitted with, before its
/// submitter is told: this is how sent messages become visible.
pub(crate) type Then = Box<dyn FnOnce() + Send>;

/// Run by the store when no write has come for a while.
pub(crate) type IdleTick = Box<dyn Fn() + Send + Sync>;

/// Inserts and removals applied together.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) ops: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    pub(crate) then: Option<Then>,
}

impl Batch {
    pub(crate) fn put(&mut self, space: Space, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((space, key, Some(value)));
    }

    pub(crate) fn delete(&mut self, space: Space, key: Vec<u8>) {
        self.ops.push((space, key, None));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.then.is_none()
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

/// A submitted batch's completion.
pub(crate) struct Pending {
    reply: Option<oneshot::Receiver<Result<(), String>>>,
    /// For stores that complete at once: the batch's `then`, run when the
    /// submitter waits (or drops this), never under the submitter's lock.
    then: Option<Then>,
}

impl Pending {
    pub(crate) fn done(then: Option<Then>) -> Self {
        Self { reply: None, then }
    }

    pub(crate) fn waiting(reply: oneshot::Receiver<Result<(), String>>) -> Self {
        Self {
            reply: Some(reply),
            then: None,
        }
    }

    /// Waits for the batch to reach the level it was submitted with.
    pub(crate) async fn wait(mut self) -> Result<()> {
        if let Some(then) = self.then.take() {
            then();
        }
        let Some(rx) = self.reply.take() else {
            return Ok(());
        };
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::storage(std::io::Error::other(e))),
            Err(_) => Err(Error::Closed),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(then) = self.then.take() {
            then();
        }
    }
}

/// Called with each key and value of a scan.
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// Ordered key-value storage with batched, ordered writes.
pub(crate) trait Store: Send + Sync + 'static {
    /// Reads one value.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Visits every entry of a space in key order (used at recovery).
    fn scan(&self, space: Space, visit: &mut Visit<'_>) -> Result<()>;

    /// Submits a batch. Batches are applied in the order they are submitted,
    /// so callers submit while holding the engine's state lock.
    fn submit(&self, batch: Batch, wait: Wait) -> Pending;

    /// Writes and syncs everything submitted, then stops accepting writes.
    fn close(&self) {}

    /// Something to run when the store has been idle for a while (the
    /// engine writes deferred marks with it). Stores that lose everything
    /// at exit anyway need not run it.
    fn set_idle_tick(&self, _tick: IdleTick) {}
}
