//! Patterns that services build on Tidings, written once and shared by the
//! event hub's dispatcher and by applications.
//!
//! - [`breaker`]: a circuit breaker that can be asked, not only called.

pub mod breaker;

pub use breaker::{BreakerConfig, BreakerState, CallError, CircuitBreaker, Rejected};
