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
        /// What was being named: "queue", "group", "consumer" or "table".
        kind: String,
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: String,
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
    #[error(
        "data directory {path} is locked by another process: the embedded engine is for one \
         process at a time (several processes share a Redis or PostgreSQL store instead: \
         --broker redis://... or postgres://...)"
    )]
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
    /// The storage is out of space (a full disk): nothing of the operation
    /// was applied; it can succeed once space is freed.
    #[error("storage full: {0}")]
    StorageFull(String),
    /// The storage server took the operation but its answer did not come
    /// (a timeout, a dropped connection): it may have been applied, or not.
    /// Retrying is safe only for an idempotent operation (a send with a
    /// dedup id, a publish with a deduper or an idempotency key).
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
    /// The storage was laid out by another version of Tidings (a newer
    /// schema, an outdated one not yet migrated): nothing was changed.
    #[error("incompatible storage: {0}")]
    Incompatible(String),
    /// The broker has been shut down.
    #[error("the broker is closed")]
    Closed,
}

impl Error {
    /// Wraps any storage-level error.
    pub fn storage(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Storage(Box::new(err))
    }

    /// The stable, machine-readable name of the error's kind: what wire
    /// formats carry beside the message, so a client far away gets the same
    /// variant back ([`Error::from_code`]).
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "invalid_name",
            Self::InvalidPayload(_) => "invalid_payload",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::InvalidArgument(_) => "invalid_argument",
            Self::Denied(_) => "denied",
            Self::QueueNotFound(_) => "queue_not_found",
            Self::QueueConfigConflict(_) => "queue_config_conflict",
            Self::NotPending { .. } => "not_pending",
            Self::RecordExists { .. } => "record_exists",
            Self::RecordChanged { .. } => "record_changed",
            Self::Locked { .. } => "locked",
            Self::Corrupt { .. } => "corrupt",
            Self::InvalidUrl { .. } => "invalid_url",
            Self::Storage(_) => "storage",
            Self::Unavailable(_) => "unavailable",
            Self::StorageFull(_) => "storage_full",
            Self::OutcomeUnknown(_) => "outcome_unknown",
            Self::Incompatible(_) => "incompatible",
            Self::Closed => "closed",
        }
    }

    /// Whether the error is the server's own trouble (storage, damage,
    /// shutdown) rather than the caller's: its detail (paths, library
    /// messages) is for the operator's log, never for a remote caller.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Self::Locked { .. }
                | Self::Corrupt { .. }
                | Self::InvalidUrl { .. }
                | Self::Storage(_)
                | Self::Unavailable(_)
                | Self::StorageFull(_)
                | Self::OutcomeUnknown(_)
                | Self::Incompatible(_)
                | Self::Closed
        )
    }

    /// The values the error names, as JSON fields beside its code
    /// (`{"queue": "orders"}` for [`Error::QueueNotFound`]). Internal errors
    /// have none: their detail stays in the operator's log.
    pub fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        use serde_json::json;
        let value = match self {
            Self::InvalidName { kind, name, reason } => {
                json!({"kind": kind, "name": name, "reason": reason})
            }
            Self::InvalidPayload(detail) | Self::InvalidArgument(detail) => {
                json!({"detail": detail})
            }
            Self::Denied(detail) => json!({"detail": detail}),
            Self::PayloadTooLarge { size, limit } => json!({"size": size, "limit": limit}),
            Self::QueueNotFound(queue) | Self::QueueConfigConflict(queue) => {
                json!({"queue": queue})
            }
            Self::NotPending { queue, group, id } => {
                json!({"queue": queue, "group": group, "id": id})
            }
            Self::RecordExists { table, key } | Self::RecordChanged { table, key } => {
                json!({"table": table, "key": key})
            }
            _ => json!({}),
        };
        match value {
            serde_json::Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }

    /// The error a code and its fields stand for: the inverse of
    /// [`Error::code`] and [`Error::fields`]. `message` is the text that came
    /// with them, used by the kinds that carry only text. Internal kinds come
    /// back as [`Error::Unavailable`] (the caller cannot act on their detail);
    /// `None` for a code this build does not know.
    pub fn from_code(
        code: &str,
        message: &str,
        fields: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Self> {
        let text = |name: &str| {
            fields
                .get(name)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let size = |name: &str| {
            fields
                .get(name)
                .and_then(serde_json::Value::as_u64)
                .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        Some(match code {
            "invalid_name" => Self::InvalidName {
                kind: text("kind"),
                name: text("name"),
                reason: text("reason"),
            },
            "invalid_payload" => Self::InvalidPayload(text("detail")),
            "payload_too_large" => Self::PayloadTooLarge {
                size: size("size"),
                limit: size("limit"),
            },
            "invalid_argument" => Self::InvalidArgument(text("detail")),
            "denied" => Self::Denied(text("detail")),
            "queue_not_found" => Self::QueueNotFound(text("queue")),
            "queue_config_conflict" => Self::QueueConfigConflict(text("queue")),
            "not_pending" => Self::NotPending {
                queue: text("queue"),
                group: text("group"),
                id: text("id"),
            },
            "record_exists" => Self::RecordExists {
                table: text("table"),
                key: text("key"),
            },
            "record_changed" => Self::RecordChanged {
                table: text("table"),
                key: text("key"),
            },
            "locked" | "corrupt" | "invalid_url" | "storage" | "unavailable" | "incompatible"
            | "closed" => Self::Unavailable(message.to_owned()),
            "storage_full" => Self::StorageFull(message.to_owned()),
            "outcome_unknown" => Self::OutcomeUnknown(message.to_owned()),
            _ => return None,
        })
    }
}

/// An error and the errors under it, as one line ("a: b: c"; a cause
/// whose text already ends the line is not repeated), so that why
/// something failed (a certificate refused, a connection reset) is not
/// lost under a general message.
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
        cause = inner.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_causes_joins_the_chain_without_repeating_a_cause() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let chain = Layer(
            "handshake failed",
            Some(Box::new(Layer(
                "bad certificate",
                Some(Box::new(Layer("bad certificate", None))),
            ))),
        );
        assert_eq!(with_causes(&chain), "handshake failed: bad certificate");
    }

    /// One of every variant.
    fn every_variant() -> Vec<Error> {
        vec![
            Error::InvalidName {
                kind: "queue".into(),
                name: "a b".into(),
                reason: "may contain only letters".into(),
            },
            Error::InvalidPayload("not JSON".into()),
            Error::PayloadTooLarge {
                size: 2_000_000,
                limit: 1_048_576,
            },
            Error::InvalidArgument("max_messages must be at least 1".into()),
            Error::Denied("wrong key".into()),
            Error::QueueNotFound("orders".into()),
            Error::QueueConfigConflict("orders".into()),
            Error::NotPending {
                queue: "orders".into(),
                group: "billing".into(),
                id: "7".into(),
            },
            Error::RecordExists {
                table: "events".into(),
                key: "e1".into(),
            },
            Error::RecordChanged {
                table: "events".into(),
                key: "e1".into(),
            },
            Error::Locked {
                path: "/var/lib/tidings".into(),
            },
            Error::Corrupt {
                location: "meta".into(),
                detail: "bad".into(),
            },
            Error::InvalidUrl {
                url: "ftp://x".into(),
                reason: "unknown scheme".into(),
            },
            Error::storage(std::io::Error::other("disk full")),
            Error::Unavailable("redis down".into()),
            Error::StorageFull("no space left on /var/lib/tidings".into()),
            Error::OutcomeUnknown("Redis did not answer within 5s".into()),
            Error::Incompatible("schema at version 9".into()),
            Error::Closed,
        ]
    }

    #[test]
    fn every_code_comes_back_as_its_variant() {
        let mut codes = std::collections::HashSet::new();
        for err in every_variant() {
            assert!(codes.insert(err.code()), "{} is used twice", err.code());
            let back = Error::from_code(err.code(), "from the server", &err.fields())
                .unwrap_or_else(|| panic!("{} has no inverse", err.code()));
            if matches!(err, Error::StorageFull(_) | Error::OutcomeUnknown(_)) {
                // Kinds a caller acts on: they come back as such, with the
                // server's (generic) message, not the detail.
                assert!(err.fields().is_empty(), "{err:?} shows its detail");
                assert_eq!(back.code(), err.code());
                assert!(back.to_string().ends_with("from the server"));
            } else if err.is_internal() {
                assert!(err.fields().is_empty(), "{err:?} shows its detail");
                assert!(matches!(back, Error::Unavailable(ref m) if m == "from the server"));
            } else {
                assert_eq!(back.to_string(), err.to_string(), "{}", err.code());
                assert_eq!(back.code(), err.code());
            }
        }
        assert_eq!(
            Error::from_code("no_such_code", "", &Default::default()).map(|e| e.code()),
            None
        );
    }
}
