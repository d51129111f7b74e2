//! Patterns that services build on Tidings, written once and shared by the
//! event hub's dispatcher and by applications.
//!
//! - [`webhook`]: handlers by path, sending to paths, and the workers that
//!   run them (LeanMQWebhook's API; shares Redis with Python services).
//! - [`breaker`]: a circuit breaker that can be asked, not only called.
//! - [`bus`]: a typed event bus with durable subscriptions and per-key order.
//! - [`lease`]: one process at a time, with takeover.
//! - [`rpc`]: request/response through queues, and an API gateway.
//! - [`saga`]: steps with compensations, their state kept in the broker.
//! - [`resilience`]: retries with backoff and jitter, timeouts and a breaker
//!   around any async call.

pub mod breaker;
pub mod bus;
pub mod consumer;
pub mod lease;
pub mod resilience;
pub mod rpc;
pub mod saga;

mod handler;
mod ids;
mod trouble;

pub use handler::{HandlerResult, Outcome};
pub mod webhook;

pub use breaker::{BreakerConfig, BreakerState, CallError, CircuitBreaker, Rejected};
