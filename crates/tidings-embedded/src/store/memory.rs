//! The in-memory store: the same records as on disk, in `BTreeMap`s.
//! Nothing survives the process; writes complete at once.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use tidings_core::Result;

use std::ops::Bound;

use super::{Batch, KeyRange, Pending, Publisher, Space, Store, Until, Visit, Wait};

type Records = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Default)]
pub(crate) struct MemoryStore {
    spaces: Mutex<BTreeMap<Space, Records>>,
    publisher: OnceLock<Publisher>,
}

impl Store for MemoryStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(spaces.get(&space).and_then(|s| s.get(key)).cloned())
    }

    fn scan(&self, space: Space, visit: &mut Visit<'_>) -> Result<()> {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        for (k, v) in spaces.get(&space).into_iter().flatten() {
            visit(k, v)?;
        }
        Ok(())
    }

    fn range(&self, space: Space, keys: KeyRange<'_>, visit: &mut Until<'_>) -> Result<()> {
        let spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(map) = spaces.get(&space) else {
            return Ok(());
        };
        let bounds = (
            Bound::Included(keys.start.to_vec()),
            keys.end
                .map_or(Bound::Unbounded, |e| Bound::Excluded(e.to_vec())),
        );
        let mut entries = map.range(bounds);
        loop {
            let next = if keys.reverse {
                entries.next_back()
            } else {
                entries.next()
            };
            match next {
                Some((k, v)) if visit(k, v)? => {}
                _ => return Ok(()),
            }
        }
    }

    fn submit(&self, batch: Batch, _wait: Wait) -> Pending {
        let mut spaces = self.spaces.lock().unwrap_or_else(PoisonError::into_inner);
        let Batch { ops, sent, .. } = batch;
        for (space, key, value) in ops {
            let map = spaces.entry(space).or_default();
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
        }
        drop(spaces);
        let publish = match self.publisher.get() {
            Some(publisher) if !sent.is_empty() => Some((publisher.clone(), sent)),
            _ => None,
        };
        Pending::done(publish)
    }

    fn set_publisher(&self, publisher: Publisher) {
        let _ = self.publisher.set(publisher);
    }
}
