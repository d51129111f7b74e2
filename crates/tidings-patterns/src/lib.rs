//! Patterns that services build on Tidings, written once and shared by the
//! event hub's dispatcher and by applications.
//!
//! - [`webhook`]: handlers by path, sending to paths, and the workers that
//!   run them (LeanMQWebhook's API; shares Redis with Python services).
//! - [`breaker`]: a circuit breaker that can be asked, not only called.
//! - [`rpc`]: request/response through queues, and an API gateway.
//! - [`resilience`]: retries with backoff and jitter, timeouts and a breaker
//!   around any async call.

pub mod breaker;
pub mod resilience;
pub mod rpc;

mod ids;
pub mod webhook;

pub use breaker::{BreakerConfig, BreakerState, CallError, CircuitBreaker, Rejected};
