//! When a receive tends its group (schema version 4): brings back what has
//! come due, expires, and marks its consumer seen.
//!
//! Tending costs several statements, most of them stepping over index
//! entries of deliveries taken since the last vacuum, so a busy consumer
//! tends at most every [`INTERVAL`]; a receive that found nothing tends
//! before the consumer waits, so nothing due waits longer than that.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tidings_core::{ConsumerName, GroupName};

/// How often a busy consumer tends its group at most.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// Consumers remembered at most; past it, the record starts again (each
/// consumer then tends once more than it had to).
const REMEMBERED: usize = 10_000;

/// When each consumer of this process last tended its group.
#[derive(Debug, Default)]
pub(crate) struct Tending {
    last: Mutex<HashMap<(i64, GroupName, ConsumerName), Instant>>,
}

impl Tending {
    /// Whether a receive of `consumer` at `now` should tend (if so, it is
    /// recorded as tending then).
    pub(crate) fn due(
        &self,
        queue: i64,
        group: &GroupName,
        consumer: &ConsumerName,
        now: Instant,
    ) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (queue, group.clone(), consumer.clone());
        match last.get_mut(&key) {
            Some(at) if now.duration_since(*at) < INTERVAL => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                if last.len() >= REMEMBERED {
                    last.clear();
                }
                last.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_tends_first_and_then_once_per_interval() {
        let tending = Tending::default();
        let group = GroupName::new("g").unwrap();
        let (a, b) = (
            ConsumerName::new("a").unwrap(),
            ConsumerName::new("b").unwrap(),
        );
        let start = Instant::now();
        let later = |ms| start + Duration::from_millis(ms);
        assert!(tending.due(1, &group, &a, start));
        assert!(!tending.due(1, &group, &a, later(99)));
        assert!(
            tending.due(1, &group, &b, later(99)),
            "each consumer tends its first receive"
        );
        assert!(tending.due(2, &group, &a, later(99)), "and on each queue");
        assert!(tending.due(1, &group, &a, later(100)));
        assert!(
            !tending.due(1, &group, &a, later(150)),
            "the interval counts from the last tending"
        );
        assert!(tending.due(1, &group, &a, later(200)));
    }
}
