//! [`SeqMap`]: an ordered map from message seqs to small values, packed for
//! the way queues use it — keys arrive in increasing order and leave mostly
//! from the front.
//!
//! A `BTreeMap<u64, V>` spends about twice its entries' size on half-full
//! nodes; here entries live in sorted runs of up to [`RUN`] in one `Vec`, and
//! a `BTreeMap` indexes the runs by a lower bound of their keys. Appends fill
//! runs completely, so a million 24-byte entries take about 24 MB instead of
//! about 60 (docs/benchmarks.md, "Memory").
//!
//! Invariant: run `i` holds keys in `[bound_i, bound_{i+1})`, sorted, and is
//! never empty.

use std::collections::BTreeMap;

/// Most entries per run.
const RUN: usize = 128;

/// An ordered map from `u64` to `V`.
#[derive(Debug, Clone)]
pub(crate) struct SeqMap<V> {
    runs: BTreeMap<u64, Vec<(u64, V)>>,
    len: usize,
}

impl<V> Default for SeqMap<V> {
    fn default() -> Self {
        Self {
            runs: BTreeMap::new(),
            len: 0,
        }
    }
}

impl<V> SeqMap<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bound of the run that holds (or would hold) `key`.
    fn run_of(&self, key: u64) -> Option<u64> {
        self.runs.range(..=key).next_back().map(|(&b, _)| b)
    }

    pub(crate) fn get(&self, key: u64) -> Option<&V> {
        let run = self.runs.get(&self.run_of(key)?)?;
        let i = run.binary_search_by_key(&key, |e| e.0).ok()?;
        Some(&run[i].1)
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut V> {
        let bound = self.run_of(key)?;
        let run = self.runs.get_mut(&bound)?;
        let i = run.binary_search_by_key(&key, |e| e.0).ok()?;
        Some(&mut run[i].1)
    }

    pub(crate) fn contains(&self, key: u64) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces; returns the replaced value.
    pub(crate) fn insert(&mut self, key: u64, value: V) -> Option<V> {
        let bound = match self.run_of(key) {
            Some(bound) => bound,
            None => {
                // Below every run: lower the first run's bound, or start one.
                match self.runs.pop_first() {
                    Some((_, run)) => {
                        self.runs.insert(key, run);
                    }
                    None => {
                        self.runs.insert(key, Vec::with_capacity(RUN));
                    }
                }
                key
            }
        };
        let Some(run) = self.runs.get_mut(&bound) else {
            unreachable!("the bound was just found or made")
        };
        let at = match run.binary_search_by_key(&key, |e| e.0) {
            Ok(i) => return Some(std::mem::replace(&mut run[i].1, value)),
            Err(at) => at,
        };
        self.len += 1;
        if run.len() < RUN {
            run.insert(at, (key, value));
            return None;
        }
        if at == run.len() {
            // A full run and the key after its last: a new run (appends fill runs).
            let mut fresh = Vec::with_capacity(RUN);
            fresh.push((key, value));
            self.runs.insert(key, fresh);
            return None;
        }
        // A full run and a key inside it: split in two halves.
        let mut upper = Vec::with_capacity(RUN);
        upper.extend(run.drain(RUN / 2..));
        if at <= RUN / 2 {
            run.insert(at, (key, value));
        } else {
            upper.insert(at - RUN / 2, (key, value));
        }
        self.runs.insert(upper[0].0, upper);
        None
    }

    pub(crate) fn remove(&mut self, key: u64) -> Option<V> {
        let bound = self.run_of(key)?;
        let run = self.runs.get_mut(&bound)?;
        let i = run.binary_search_by_key(&key, |e| e.0).ok()?;
        let (_, value) = run.remove(i);
        self.len -= 1;
        if run.is_empty() {
            self.runs.remove(&bound);
        } else if run.len() < RUN / 4 {
            self.compact(bound);
        }
        Some(value)
    }

    /// Keeps sparse runs from holding memory: merges a small run into the
    /// next one when both fit in one run, else gives back unused capacity.
    fn compact(&mut self, bound: u64) {
        let next = self
            .runs
            .range(bound + 1..)
            .next()
            .map(|(&b, r)| (b, r.len()));
        let len = self.runs.get(&bound).map_or(0, Vec::len);
        if let Some((next_bound, next_len)) = next
            && len + next_len <= RUN
            && let Some(following) = self.runs.remove(&next_bound)
            && let Some(run) = self.runs.get_mut(&bound)
        {
            run.extend(following);
            return;
        }
        if let Some(run) = self.runs.get_mut(&bound)
            && run.capacity() > 2 * run.len()
        {
            run.shrink_to(2 * run.len());
        }
    }

    pub(crate) fn first(&self) -> Option<(u64, &V)> {
        let run = self.runs.values().next()?;
        run.first().map(|(k, v)| (*k, v))
    }

    pub(crate) fn pop_first(&mut self) -> Option<(u64, V)> {
        let key = self.first()?.0;
        self.remove(key).map(|v| (key, v))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &V)> {
        self.runs.values().flatten().map(|(k, v)| (*k, v))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut V)> {
        self.runs.values_mut().flatten().map(|(k, v)| (*k, v))
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The keys from `start` on, in order.
    pub(crate) fn keys_from(&self, start: u64) -> impl Iterator<Item = u64> + '_ {
        let from = self.run_of(start).unwrap_or(0);
        self.runs
            .range(from..)
            .flat_map(|(_, run)| run.iter().map(|e| e.0))
            .skip_while(move |&k| k < start)
    }

    pub(crate) fn clear(&mut self) {
        self.runs.clear();
        self.len = 0;
    }
}

/// An ordered set of seqs.
pub(crate) type SeqSet = SeqMap<()>;

impl SeqSet {
    /// Adds a key; returns whether it was new.
    pub(crate) fn add(&mut self, key: u64) -> bool {
        self.insert(key, ()).is_none()
    }

    /// Removes and returns the smallest key.
    pub(crate) fn pop_min(&mut self) -> Option<u64> {
        self.pop_first().map(|(k, ())| k)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64),
        Append,
        Remove(u64),
        PopFirst,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u64..2000).prop_map(Op::Insert),
            4 => Just(Op::Append),
            3 => (0u64..2000).prop_map(Op::Remove),
            2 => Just(Op::PopFirst),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..600)) {
            let mut model = BTreeMap::new();
            let mut map = SeqMap::default();
            let mut next = 2000u64;
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(k) => prop_assert_eq!(map.insert(k, n), model.insert(k, n)),
                    Op::Append => {
                        next += 1 + (n as u64 % 3);
                        prop_assert_eq!(map.insert(next, n), model.insert(next, n));
                    }
                    Op::Remove(k) => prop_assert_eq!(map.remove(k), model.remove(&k)),
                    Op::PopFirst => prop_assert_eq!(map.pop_first(), model.pop_first()),
                }
                prop_assert_eq!(map.len(), model.len());
            }
            let got: Vec<_> = map.iter().map(|(k, v)| (k, *v)).collect();
            let want: Vec<_> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(got, want);
            for k in 0..2100 {
                prop_assert_eq!(map.get(k), model.get(&k));
            }
            for start in (0..2100).step_by(37) {
                let got: Vec<u64> = map.keys_from(start).take(20).collect();
                let want: Vec<u64> = model.range(start..).take(20).map(|(k, _)| *k).collect();
                prop_assert_eq!(got, want);
            }
            prop_assert_eq!(map.first().map(|(k, v)| (k, *v)), model.first_key_value().map(|(k, v)| (*k, *v)));
            // Every run is non-empty and within its bounds.
            let bounds: Vec<u64> = map.runs.keys().copied().collect();
            for (i, (bound, run)) in map.runs.iter().enumerate() {
                prop_assert!(!run.is_empty());
                prop_assert!(run.len() <= RUN);
                prop_assert!(run[0].0 >= *bound);
                if let Some(next) = bounds.get(i + 1) {
                    prop_assert!(run.last().unwrap().0 < *next);
                }
            }
        }
    }

    #[test]
    fn appends_fill_runs() {
        let mut set = SeqSet::default();
        for k in 0..10_000u64 {
            set.add(k * 3);
        }
        assert_eq!(set.runs.len(), 10_000usize.div_ceil(RUN));
        assert_eq!(set.pop_min(), Some(0));
        assert!(set.contains(3));
        assert!(!set.contains(4));
    }
}
