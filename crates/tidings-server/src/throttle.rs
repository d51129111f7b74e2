//! A limit on attempts per key (a client address, an application name) in a
//! sliding window: login throttling.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most `max` attempts per key per `window`.
#[derive(Clone)]
pub struct Throttle<K> {
    max: usize,
    window: Duration,
    seen: Arc<Mutex<Seen<K>>>,
}

/// The attempts within the window, by key.
struct Seen<K> {
    times: HashMap<K, VecDeque<Instant>>,
    /// When keys with no attempt left in the window were last forgotten.
    pruned: Instant,
}

impl<K: Hash + Eq> Throttle<K> {
    /// A throttle of `max` attempts per `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: Arc::new(Mutex::new(Seen {
                times: HashMap::new(),
                pruned: Instant::now(),
            })),
        }
    }

    /// Whether `key` is under the limit now, without counting an attempt.
    pub fn open(&self, key: &K) -> bool {
        let now = Instant::now();
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.times
            .get(key)
            .is_none_or(|times| times.iter().filter(|t| now - **t < self.window).count() < self.max)
    }

    /// Counts an attempt for `key`; `false` if it is over the limit (and
    /// then it is not counted).
    pub fn allow(&self, key: K) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget keys whose attempts are all outside the window: one pass
        // per window, so the cost per attempt stays constant.
        if now - seen.pruned >= self.window {
            let window = self.window;
            seen.times
                .retain(|_, times| times.back().is_some_and(|t| now - *t < window));
            seen.pruned = now;
        }
        let times = seen.times.entry(key).or_default();
        while times.front().is_some_and(|t| now - *t >= self.window) {
            times.pop_front();
        }
        if times.len() >= self.max {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn limits_each_key_alone() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(t.allow(a) && t.allow(a));
        assert!(!t.allow(a));
        assert!(!t.open(&a));
        assert!(t.open(&b));
        assert!(t.allow(b));
    }
}
