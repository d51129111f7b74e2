//! Retries with exponential backoff and jitter, timeouts and a circuit
//! breaker, composed around any async call: an RPC call, an HTTP request,
//! a database query (the seeds' `ServiceClient` and `APIGateway`).
//!
//! Each attempt asks the breaker first, runs under the timeout, and tells the
//! breaker how it went; failed attempts are retried after a backoff (from
//! backon's exponential builder) while the error is worth retrying.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tidings_patterns::resilience::{CallPolicy, RetryPolicy};
//!
//! let policy = CallPolicy::new()
//!     .timeout(Duration::from_secs(2))
//!     .retry(RetryPolicy::new(3).first_delay(Duration::from_millis(1)));
//! let attempts = AtomicU32::new(0);
//! let answer = policy
//!     .run(|| async {
//!         // Fails twice, then answers.
//!         if attempts.fetch_add(1, Ordering::Relaxed) < 2 { Err("busy") } else { Ok(42) }
//!     })
//!     .await;
//! assert_eq!(answer.ok(), Some(42));
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::breaker::{CircuitBreaker, Permit, Rejected};

/// How often and how patiently a call is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time, with jitter.
    pub first_delay: Duration,
    /// The longest delay between attempts.
    pub max_delay: Duration,
    /// Whether delays get random jitter (so callers do not retry in step).
    pub jitter: bool,
}

impl RetryPolicy {
    /// `max_attempts` attempts, from 100 ms doubling to at most 10 s, with jitter.
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            jitter: true,
        }
    }

    /// Sets the first delay.
    #[must_use]
    pub fn first_delay(mut self, delay: Duration) -> Self {
        self.first_delay = delay;
        self
    }

    /// Sets the longest delay.
    #[must_use]
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Turns jitter off (delays exactly doubling).
    #[must_use]
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The delays between attempts, in order (`max_attempts - 1` of them).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + use<> {
        let retries = usize::try_from(self.max_attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        let mut builder = ExponentialBuilder::new()
            .with_min_delay(self.first_delay)
            .with_max_delay(self.max_delay.max(self.first_delay))
            .with_factor(2.0)
            .with_max_times(retries);
        if self.jitter {
            builder = builder.with_jitter();
        }
        builder.build()
    }
}

/// Why a call under a [`CallPolicy`] failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyError<E> {
    /// The breaker is open: the call was not made.
    Rejected(Rejected),
    /// The last attempt did not finish within the timeout.
    TimedOut(Duration),
    /// The last attempt failed with this error.
    Failed(E),
}

impl<E: fmt::Display> fmt::Display for PolicyError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected(r) => write!(
                f,
                "circuit open: not called (retry after {:?})",
                r.retry_after
            ),
            Self::TimedOut(d) => write!(f, "no answer within {d:?}"),
            Self::Failed(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for PolicyError<E> {}

/// A retry policy, a timeout per attempt and a circuit breaker, any of them
/// optional; cheap to clone (the breaker is shared).
#[derive(Clone, Default)]
pub struct CallPolicy {
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    breaker: Option<Arc<CircuitBreaker>>,
    #[allow(clippy::type_complexity)]
    retry_if: Option<Arc<dyn Fn(&PolicyErrorKind) -> bool + Send + Sync>>,
}

impl fmt::Debug for CallPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallPolicy")
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .field("breaker", &self.breaker.as_ref().map(|b| b.state()))
            .finish_non_exhaustive()
    }
}

/// What went wrong in one attempt, as seen by a retry predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyErrorKind {
    /// The breaker refused the attempt.
    Rejected,
    /// The attempt timed out.
    TimedOut,
    /// The call returned an error.
    Failed,
}

impl CallPolicy {
    /// No timeout, no retry, no breaker: the call as it is.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives each attempt at most `timeout`.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The timeout of each attempt, if any.
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Retries failed attempts.
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Retries only attempts whose failure `retry_if` accepts (by default
    /// failures and timeouts are retried; a rejection by the breaker is not).
    #[must_use]
    pub fn retry_if(
        mut self,
        retry_if: impl Fn(&PolicyErrorKind) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.retry_if = Some(Arc::new(retry_if));
        self
    }

    /// Guards every attempt with `breaker` (share one breaker per service).
    #[must_use]
    pub fn breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    fn worth_retrying(&self, kind: PolicyErrorKind) -> bool {
        match &self.retry_if {
            Some(f) => f(&kind),
            None => kind != PolicyErrorKind::Rejected,
        }
    }

    /// Runs `call` under the policy.
    pub async fn run<T, E, F, Fut>(&self, mut call: F) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delays = self.retry.map(|r| r.delays());
        loop {
            let err = match self.attempt(&mut call).await {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            let kind = match &err {
                PolicyError::Rejected(_) => PolicyErrorKind::Rejected,
                PolicyError::TimedOut(_) => PolicyErrorKind::TimedOut,
                PolicyError::Failed(_) => PolicyErrorKind::Failed,
            };
            let next = delays.as_mut().and_then(Iterator::next);
            match next {
                Some(delay) if self.worth_retrying(kind) => tokio::time::sleep(delay).await,
                _ => return Err(err),
            }
        }
    }

    async fn attempt<T, E, F, Fut>(&self, call: &mut F) -> Result<T, PolicyError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let permit = match &self.breaker {
            Some(b) => Some(Permit::take(b).map_err(PolicyError::Rejected)?),
            None => None,
        };
        let outcome = match self.timeout {
            Some(limit) => match tokio::time::timeout(limit, call()).await {
                Ok(r) => r.map_err(PolicyError::Failed),
                Err(_) => Err(PolicyError::TimedOut(limit)),
            },
            None => call().await.map_err(PolicyError::Failed),
        };
        if let Some(permit) = permit {
            permit.record(outcome.is_ok());
        }
        outcome
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::breaker::{BreakerConfig, BreakerState};

    #[test]
    fn delays_double_up_to_the_limit() {
        let delays: Vec<_> = RetryPolicy::new(5)
            .first_delay(Duration::from_millis(100))
            .max_delay(Duration::from_millis(300))
            .without_jitter()
            .delays()
            .map(|d| d.as_millis())
            .collect();
        assert_eq!(delays, vec![100, 200, 300, 300]);
        assert_eq!(RetryPolicy::new(1).delays().count(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_and_gives_up_after_the_last_attempt() {
        let policy = CallPolicy::new().retry(RetryPolicy::new(3).without_jitter());
        let attempts = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let r: Result<(), _> = policy
            .run(|| async {
                attempts.fetch_add(1, Ordering::Relaxed);
                Err("down")
            })
            .await;
        assert_eq!(r, Err(PolicyError::Failed("down")));
        assert_eq!(attempts.load(Ordering::Relaxed), 3);
        // 100 ms then 200 ms of backoff, on the paused clock (which rounds
        // sleeps up to whole milliseconds).
        assert!((300..=302).contains(&started.elapsed().as_millis()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_attempt_times_out_and_is_retried() {
        let policy = CallPolicy::new()
            .timeout(Duration::from_secs(1))
            .retry(RetryPolicy::new(2).without_jitter());
        let attempts = AtomicU32::new(0);
        let r = policy
            .run(|| async {
                if attempts.fetch_add(1, Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                Ok::<_, &str>("second")
            })
            .await;
        assert_eq!(r, Ok("second"));
        let never = CallPolicy::new().timeout(Duration::from_millis(10));
        let r = never
            .run(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, &str>(())
            })
            .await;
        assert_eq!(r, Err(PolicyError::TimedOut(Duration::from_millis(10))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_stops_retries_without_calling() {
        let breaker = Arc::new(CircuitBreaker::new(BreakerConfig {
            failure_threshold: 2,
            recovery_timeout: Duration::from_secs(30),
            success_threshold: 1,
        }));
        let policy = CallPolicy::new()
            .breaker(breaker.clone())
            .retry(RetryPolicy::new(10).without_jitter());
        let attempts = AtomicU32::new(0);
        let r: Result<(), _> = policy
            .run(|| async {
                attempts.fetch_add(1, Ordering::Relaxed);
                Err("down")
            })
            .await;
        // Two failures open the breaker; the third attempt is refused, not made.
        assert!(matches!(r, Err(PolicyError::Rejected(_))), "{r:?}");
        assert_eq!(attempts.load(Ordering::Relaxed), 2);
        assert_eq!(breaker.state(), BreakerState::Open);
        // After the recovery timeout a probe goes through and closes it.
        tokio::time::advance(Duration::from_secs(31)).await;
        let r = policy.run(|| async { Ok::<_, &str>(7) }).await;
        assert_eq!(r, Ok(7));
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
