//! A per-address limit on attempts in a sliding window (login throttling).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most `max` attempts per address per `window`.
#[derive(Clone)]
pub struct Throttle {
    max: usize,
    window: Duration,
    seen: Arc<Mutex<HashMap<IpAddr, VecDeque<Instant>>>>,
}

impl Throttle {
    /// A throttle of `max` attempts per `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: Arc::default(),
        }
    }

    /// Counts an attempt from `addr`; `false` if it is over the limit.
    pub fn allow(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget addresses whose attempts are all outside the window.
        if seen.len() > 10_000 {
            seen.retain(|_, times| times.back().is_some_and(|t| now - *t < self.window));
        }
        let times = seen.entry(addr).or_default();
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

    #[test]
    fn limits_each_address_alone() {
        let t = Throttle::new(2, Duration::from_secs(60));
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!(t.allow(a) && t.allow(a));
        assert!(!t.allow(a));
        assert!(t.allow(b));
    }
}
