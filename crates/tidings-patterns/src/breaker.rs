//! A circuit breaker: closed → open after N consecutive failures → half-open
//! once the recovery timeout has passed (one probe at a time) → closed after
//! M successes, or open again on a failure.
//!
//! Besides wrapping a call ([`CircuitBreaker::call`]), it can be asked when
//! the next call may go ([`CircuitBreaker::ready`]), so a worker can sleep
//! until then instead of taking work it would have to give back; see
//! `docs/decisions/0007-own-circuit-breaker.md`.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use tidings_patterns::{BreakerConfig, CircuitBreaker};
//!
//! let breaker = CircuitBreaker::new(BreakerConfig {
//!     failure_threshold: 2,
//!     recovery_timeout: Duration::from_secs(30),
//!     success_threshold: 1,
//! });
//! for _ in 0..2 {
//!     let _ = breaker.call(|| async { Err::<(), _>("down") }).await;
//! }
//! assert!(breaker.ready().is_err()); // open: callers wait instead of calling
//! # });
//! ```

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Settings of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before a probe is let through.
    pub recovery_timeout: Duration,
    /// Successful probes in a row that close it again.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            recovery_timeout: Duration::from_secs(30),
            success_threshold: 1,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused until the recovery timeout has passed.
    Open,
    /// One probe at a time goes through.
    HalfOpen,
}

/// A call refused by an open breaker: try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    /// How long until a call may be let through.
    pub retry_after: Duration,
}

/// The error of a wrapped call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The breaker refused the call; it was not made.
    Rejected(Rejected),
    /// The call was made and failed.
    Failed(E),
}

/// How long a caller waits while another caller's probe is out.
const PROBE_WAIT: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    successes: u32,
    open_until: Instant,
    probe_out: bool,
}

/// A circuit breaker, shared by reference between callers.
#[derive(Debug)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                successes: 0,
                open_until: Instant::now(),
                probe_out: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current state (an open breaker whose timeout has passed reads half-open).
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if Instant::now() >= inner.open_until => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// Whether a call could go now, without taking a probe: `Err` says how
    /// long to wait while the circuit is open.
    pub fn ready(&self) -> Result<(), Rejected> {
        let inner = self.lock();
        let now = Instant::now();
        match inner.state {
            BreakerState::Open if now < inner.open_until => Err(Rejected {
                retry_after: inner.open_until - now,
            }),
            _ => Ok(()),
        }
    }

    /// Asks to make a call now. Closed: yes. Open: no, until the recovery
    /// timeout has passed; then yes for one probe at a time. The caller must
    /// report the outcome with [`record_success`](Self::record_success) or
    /// [`record_failure`](Self::record_failure) (or [`release`](Self::release)
    /// if it made no call after all).
    pub fn permit(&self) -> Result<(), Rejected> {
        let mut inner = self.lock();
        let now = Instant::now();
        match inner.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open if now < inner.open_until => Err(Rejected {
                retry_after: inner.open_until - now,
            }),
            BreakerState::Open | BreakerState::HalfOpen => {
                if inner.probe_out {
                    return Err(Rejected {
                        retry_after: PROBE_WAIT,
                    });
                }
                inner.state = BreakerState::HalfOpen;
                inner.probe_out = true;
                Ok(())
            }
        }
    }

    /// A permitted call was not made.
    pub fn release(&self) {
        self.lock().probe_out = false;
    }

    /// A call succeeded.
    pub fn record_success(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        inner.probe_out = false;
        if inner.state == BreakerState::HalfOpen {
            inner.successes += 1;
            if inner.successes >= self.config.success_threshold {
                inner.state = BreakerState::Closed;
                inner.successes = 0;
            }
        }
    }

    /// A call failed.
    pub fn record_failure(&self) {
        let mut inner = self.lock();
        inner.probe_out = false;
        inner.successes = 0;
        inner.failures += 1;
        let trips = match inner.state {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => inner.failures >= self.config.failure_threshold,
            BreakerState::Open => false,
        };
        if trips {
            inner.state = BreakerState::Open;
            inner.open_until = Instant::now() + self.config.recovery_timeout;
        }
    }

    /// Makes the call if permitted and records its outcome. A call dropped
    /// before it ends (a timeout around it) gives its probe back.
    pub async fn call<T, E, F, Fut>(&self, f: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = Permit::take(self).map_err(CallError::Rejected)?;
        let outcome = f().await;
        permit.record(outcome.is_ok());
        outcome.map_err(CallError::Failed)
    }
}

/// A permitted call in progress: released if dropped before its outcome is
/// recorded, so a cancelled probe does not keep the breaker half-open forever.
pub(crate) struct Permit<'a>(Option<&'a CircuitBreaker>);

impl<'a> Permit<'a> {
    pub(crate) fn take(breaker: &'a CircuitBreaker) -> Result<Self, Rejected> {
        breaker.permit()?;
        Ok(Self(Some(breaker)))
    }

    pub(crate) fn record(mut self, success: bool) {
        if let Some(b) = self.0.take() {
            if success {
                b.record_success();
            } else {
                b.record_failure();
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.0.take() {
            b.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32, successes: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: failures,
            recovery_timeout: Duration::from_secs(10),
            success_threshold: successes,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_n_failures_and_recovers_through_half_open() {
        let b = breaker(3, 2);
        for _ in 0..2 {
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_success();
        for _ in 0..3 {
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        let wait = b.permit().unwrap_err().retry_after;
        assert_eq!(wait, Duration::from_secs(10));
        assert!(b.ready().is_err());

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.ready().is_ok());
        assert!(b.permit().is_ok());
        assert_eq!(
            b.permit().unwrap_err().retry_after,
            PROBE_WAIT,
            "one probe at a time"
        );
        b.record_success();
        assert_eq!(b.state(), BreakerState::HalfOpen, "needs two successes");
        assert!(b.permit().is_ok());
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_it_again() {
        let b = breaker(1, 1);
        b.record_failure();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.permit().is_ok());
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.ready().unwrap_err().retry_after, Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.permit().is_ok());
        b.release();
        assert!(b.permit().is_ok(), "a released probe frees the slot");
    }

    #[tokio::test(start_paused = true)]
    async fn call_wraps_and_refuses() {
        let b = breaker(1, 1);
        let r: Result<(), _> = b.call(|| async { Err("boom") }).await;
        assert_eq!(r, Err(CallError::Failed("boom")));
        let r: Result<(), CallError<&str>> = b.call(|| async { Ok(()) }).await;
        assert!(matches!(r, Err(CallError::Rejected(_))));
    }
}
