//! Where time is read: the system clock, or a clock that tests move by hand
//! so time-dependent behaviour (TTL, delays, visibility timeouts, grace
//! periods, retention) can be checked without waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Timestamp;

/// The engine's time source.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that only moves when told to.
    Manual(ManualClock),
}

impl Clock {
    /// Milliseconds since the Unix epoch, now.
    pub fn now(&self) -> u64 {
        match self {
            Clock::System => Timestamp::now().as_millis(),
            Clock::Manual(m) => m.now().as_millis(),
        }
    }
}

/// A clock moved by hand; clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use tidings_core::{ManualClock, Timestamp};
/// let clock = ManualClock::new(Timestamp(1_000));
/// clock.advance(Duration::from_millis(500));
/// assert_eq!(clock.now(), Timestamp(1_500));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self(Arc::new(AtomicU64::new(start.as_millis())))
    }

    /// The time it reads.
    pub fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }

    /// Moves it forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}
