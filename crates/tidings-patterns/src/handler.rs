//! What handlers return, shared by the webhook-style API and the event bus.

use std::fmt::Display;

/// What a handler's result means for its message.
pub enum Outcome {
    /// Handled: the message is acknowledged.
    Done,
    /// Failed: retried later, then dead-lettered.
    Failed(String),
    /// The data is not what the handler takes: dead-lettered at once.
    Invalid(String),
}

/// What handlers may return: `()` or `Result<(), E>` with a displayable error.
pub trait HandlerResult {
    /// The outcome this result stands for.
    fn outcome(self) -> Outcome;
}

impl HandlerResult for () {
    fn outcome(self) -> Outcome {
        Outcome::Done
    }
}

impl<E: Display> HandlerResult for std::result::Result<(), E> {
    fn outcome(self) -> Outcome {
        match self {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}
