//! A memory store whose reads a test can make fail, to check that an
//! operation whose read fails changes nothing.

use std::sync::{Arc, Mutex, PoisonError};

use tidings_core::{Error, Result};

use super::memory::MemoryStore;
use super::{Batch, KeyRange, Pending, Publisher, Space, Store, Until, Visit, Wait};

/// Which reads fail: of `space`, after `ok` more succeed.
#[derive(Default)]
pub(crate) struct Faults {
    plan: Mutex<Option<(Space, usize)>>,
}

impl Faults {
    /// Reads of `space` fail once `ok` more have succeeded.
    pub(crate) fn fail_reads(&self, space: Space, ok: usize) {
        *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = Some((space, ok));
    }

    /// Every read succeeds again.
    pub(crate) fn heal(&self) {
        *self.plan.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn check(&self, space: Space) -> Result<()> {
        let mut plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
        match plan.as_mut() {
            Some((s, 0)) if *s == space => Err(Error::storage(std::io::Error::other(
                "injected read failure",
            ))),
            Some((s, ok)) if *s == space => {
                *ok -= 1;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// [`MemoryStore`] with [`Faults`].
#[derive(Default)]
pub(crate) struct FaultyStore {
    inner: MemoryStore,
    pub(crate) faults: Arc<Faults>,
}

impl Store for FaultyStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.faults.check(space)?;
        self.inner.get(space, key)
    }

    fn scan(&self, space: Space, visit: &mut Visit<'_>) -> Result<()> {
        self.faults.check(space)?;
        self.inner.scan(space, visit)
    }

    fn range(&self, space: Space, keys: KeyRange<'_>, visit: &mut Until<'_>) -> Result<()> {
        self.faults.check(space)?;
        self.inner.range(space, keys, visit)
    }

    fn submit(&self, batch: Batch, wait: Wait) -> Pending {
        self.inner.submit(batch, wait)
    }

    fn set_publisher(&self, publisher: Publisher) {
        self.inner.set_publisher(publisher);
    }
}
