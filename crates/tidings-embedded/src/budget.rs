//! The write budget: how many bytes and batches may wait for the writer.
//!
//! Every operation that writes first takes its share of the budget (an
//! [`Admission`]), awaiting it without blocking a thread; the share goes
//! back when its batch is written. Callers faster than the disk therefore
//! wait before their records are built, and what waits for the writer
//! stays within the budget however many callers there are.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in units of this many.
const UNIT: usize = 1024;

/// Limits on what may wait for the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBudget {
    /// Bytes of records (keys and values) submitted and not yet written.
    pub bytes: usize,
    /// Operations submitted and not yet written.
    pub batches: usize,
}

impl Default for WriteBudget {
    /// 64 MiB and 16,384 operations: far above what keeps the disk busy
    /// (a group commit takes up to 4,096 batches), far below memory.
    fn default() -> Self {
        Self {
            bytes: 64 << 20,
            batches: 16_384,
        }
    }
}

/// The budget's two pools.
#[derive(Clone)]
pub(crate) struct Budget {
    bytes: Arc<Semaphore>,
    batches: Arc<Semaphore>,
    units: u32,
}

impl Budget {
    pub(crate) fn new(limits: WriteBudget) -> Self {
        let units = u32::try_from(limits.bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        let batches = limits.batches.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Arc::new(Semaphore::new(units as usize)),
            batches: Arc::new(Semaphore::new(batches)),
            units,
        }
    }

    /// Waits for room for one operation of about `bytes` (an operation
    /// larger than the whole budget waits for all of it).
    pub(crate) async fn admit(&self, bytes: usize) -> Admission {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(self.units);
        // The pools are never closed, so acquiring cannot fail.
        let batch = self.batches.clone().acquire_owned().await.ok();
        let bytes = match units {
            0 => None,
            n => self.bytes.clone().acquire_many_owned(n).await.ok(),
        };
        Admission {
            _batch: batch,
            bytes,
            budget: Some(self.clone()),
        }
    }
}

/// An operation's share of the budget, given back when dropped (by the
/// writer, once its batch is written).
#[derive(Default)]
pub(crate) struct Admission {
    /// Held, never read: dropping it gives the operation's place back.
    _batch: Option<OwnedSemaphorePermit>,
    bytes: Option<OwnedSemaphorePermit>,
    budget: Option<Budget>,
}

impl Admission {
    /// No share: for operations that only read, or write a few bytes from
    /// where waiting is not possible.
    pub(crate) fn none() -> Self {
        Self::default()
    }

    /// Takes what a batch turned out to need beyond the estimate, if the
    /// budget has it now (an operation never waits under the engine's
    /// lock; an estimate too low lets it go over by the difference).
    pub(crate) fn top_up(&mut self, bytes: usize) {
        let Some(budget) = &self.budget else {
            return;
        };
        let needed = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .min(budget.units);
        let held = self.bytes.as_ref().map_or(0, |p| p.num_permits());
        let held = u32::try_from(held).unwrap_or(u32::MAX);
        if needed <= held {
            return;
        }
        if let Ok(extra) = budget.bytes.clone().try_acquire_many_owned(needed - held) {
            match &mut self.bytes {
                Some(permit) => permit.merge(extra),
                None => self.bytes = Some(extra),
            }
        }
    }
}
