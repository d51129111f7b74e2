//! Records read before the engine's lock, checked under it.
//!
//! A transaction's preconditions (`expect`, `insert`) read records. They are
//! read first, outside the lock; under the lock each read is used if no
//! record of its stripe (keys hashed into 1,024 stripes) was written since,
//! and made again otherwise. Writers bump the stripes of the records they
//! submit, after submitting them, while holding the lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use tidings_core::Result;

use crate::store::{Batch, Space, Store};

const STRIPES: usize = 1024;

/// Write counts of the record stripes.
pub(super) struct RecordStripes {
    counts: Box<[AtomicU64]>,
}

impl Default for RecordStripes {
    fn default() -> Self {
        Self {
            counts: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// FNV-1a: a key's stripe (stable within a process is all it needs).
fn stripe(key: &[u8]) -> usize {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % STRIPES as u64) as usize
}

impl RecordStripes {
    fn count(&self, key: &[u8]) -> u64 {
        self.counts[stripe(key)].load(Ordering::SeqCst)
    }

    /// The stripes of the records `batch` writes (to bump once submitted).
    pub(super) fn touched(batch: &Batch) -> Vec<usize> {
        batch
            .ops
            .iter()
            .filter(|(space, _, _)| *space == Space::Records)
            .map(|(_, key, _)| stripe(key))
            .collect()
    }

    /// Called under the lock after the batch that wrote them is submitted.
    pub(super) fn bump(&self, touched: &[usize]) {
        for &i in touched {
            self.counts[i].fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Reads `keys` now, outside the lock.
    pub(super) fn read_ahead(&self, store: &dyn Store, keys: Vec<Vec<u8>>) -> Result<RecordReads> {
        let mut reads = HashMap::with_capacity(keys.len());
        for key in keys {
            let count = self.count(&key);
            let value = store.get(Space::Records, &key)?;
            reads.insert(key, (count, value));
        }
        Ok(RecordReads { reads })
    }
}

/// Records read before the lock, with their stripes' counts then.
#[derive(Default)]
pub(super) struct RecordReads {
    reads: HashMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
}

impl RecordReads {
    /// The record at `key` now (under the lock): the earlier read if its
    /// stripe saw no write since, else a read now.
    pub(super) fn get(
        &self,
        stripes: &RecordStripes,
        store: &dyn Store,
        key: &[u8],
    ) -> Result<Option<Vec<u8>>> {
        match self.reads.get(key) {
            Some((count, value)) if stripes.count(key) == *count => Ok(value.clone()),
            _ => store.get(Space::Records, key),
        }
    }
}
