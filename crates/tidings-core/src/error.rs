//! The error type of the domain. Backends map their own failures into it, so a
//! caller can match on what went wrong without knowing which backend is in use.

use std::path::PathBuf;

/// Result with the domain [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A queue, group or consumer name breaks the naming rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was being named: "queue", "group" or "consumer".
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The payload is not valid JSON.
    #[error("invalid payload: {0}")]
    InvalidPayload(String),
    /// The payload is larger than [`crate::MAX_PAYLOAD_BYTES`].
    #[error("payload of {size} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the rejected payload in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// An argument is out of range or inconsistent (the message says which).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The caller may not do this (credentials missing, wrong or too weak).
    #[error("not allowed: {0}")]
    Denied(String),
    /// The queue does not exist.
    #[error("queue {0:?} does not exist")]
    QueueNotFound(String),
    /// The queue exists with settings different from the ones asked for.
    #[error("queue {0:?} already exists with different settings")]
    QueueConfigConflict(String),
    /// A transaction acks a message that is not currently delivered to that group.
    #[error("message {id} is not pending in group {group:?} of queue {queue:?}")]
    NotPending {
        /// The queue.
        queue: String,
        /// The consumer group.
        group: String,
        /// The message id.
        id: String,
    },
    /// A transaction inserts a record whose key is taken.
    #[error("record {key:?} already exists in table {table:?}")]
    RecordExists {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// A transaction's expectation about a record did not hold.
    #[error("record {key:?} in table {table:?} is not what the transaction expected")]
    RecordChanged {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// The data directory is in use by another process.
    #[error("data directory {path} is locked by another process")]
    Locked {
        /// The data directory.
        path: PathBuf,
    },
    /// Stored data could not be read back: the store is damaged.
    #[error("stored data in {location} is corrupt: {detail}")]
    Corrupt {
        /// Where the damage was found.
        location: String,
        /// What was wrong.
        detail: String,
    },
    /// The broker URL is not understood.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The storage failed (I/O error, failed fsync). After such a failure the
    /// embedded engine refuses further writes until it is reopened.
    #[error("storage failure: {0}")]
    Storage(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The storage server could not be reached in time (for example Redis
    /// is down); nothing of the operation was applied, or, if the reply was
    /// lost, all of it was.
    #[error("storage unreachable: {0}")]
    Unavailable(String),
    /// The broker has been shut down.
    #[error("the broker is closed")]
    Closed,
}

impl Error {
    /// Wraps any storage-level error.
    pub fn storage(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(err))
    }
}
