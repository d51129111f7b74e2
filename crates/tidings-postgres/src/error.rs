//! What can fail talking to PostgreSQL, and what it means for the caller:
//! whether anything can have been committed, and so whether a retry is safe.

use tidings_core::Error;
use tokio_postgres::error::SqlState;

/// The schema cannot be used as it is.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// A newer Tidings wrote it.
    #[error(
        "schema {schema:?} is at version {found}, written by a newer Tidings (this one knows up to version {known}); upgrade Tidings, or use another schema"
    )]
    TooNew {
        /// The schema.
        schema: String,
        /// Its version.
        found: i32,
        /// The newest this build knows.
        known: i32,
    },
    /// It is older than this build and opening was told not to migrate.
    #[error(
        "schema {schema:?} is at version {found}, this Tidings needs version {known}: run `tidings migrate` (or open without migrate=false)"
    )]
    Outdated {
        /// The schema.
        schema: String,
        /// Its version (0: it does not exist).
        found: i32,
        /// The version this build needs.
        known: i32,
    },
    /// A migration failed (and was rolled back).
    #[error("schema migration {version} failed: {detail}")]
    Failed {
        /// The migration.
        version: i32,
        /// The server's message.
        detail: String,
    },
}

/// A failed step, before it is told to the caller.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The server answered with an error: the statement, and its
    /// transaction, did not commit.
    Refused(tokio_postgres::Error),
    /// The connection broke (or the answer never came): what was sent
    /// may or may not have been applied.
    Lost(tokio_postgres::Error),
    /// No connection could be had: nothing was sent.
    NoConnection(String),
    /// A rule of the domain, decided here (nothing was committed).
    Domain(Error),
    /// The schema is unusable.
    Schema(SchemaError),
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.as_db_error().is_some() {
            Self::Refused(e)
        } else {
            Self::Lost(e)
        }
    }
}

impl From<SchemaError> for Failure {
    fn from(e: SchemaError) -> Self {
        Self::Schema(e)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Self::Domain(e)
    }
}

/// Tidings' own error codes, raised by the schema's functions.
pub(crate) const QUEUE_NOT_FOUND: &str = "TD001";
pub(crate) const RECORD_CHANGED: &str = "TD004";
pub(crate) const NOT_A_COUNTER: &str = "TD005";

impl Failure {
    /// The SQLSTATE the server answered with.
    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            Self::Refused(e) => e.code().map(SqlState::code),
            _ => None,
        }
    }

    /// Whether the server refused because the queue is gone.
    pub(crate) fn is_queue_not_found(&self) -> bool {
        self.code() == Some(QUEUE_NOT_FOUND)
    }

    /// Whether running it again may succeed and cannot apply it twice:
    /// nothing was committed, and the cause is passing (a restart, a
    /// deadlock, a serialization conflict, no connection yet). `could_commit`
    /// says whether the failed step could have committed if it reached the
    /// server.
    pub(crate) fn retryable(&self, could_commit: bool) -> bool {
        match self {
            Self::NoConnection(_) => true,
            Self::Lost(_) => !could_commit,
            Self::Refused(_) => self.code().is_some_and(|c| {
                c.starts_with("40")
                    || c.starts_with("08")
                    || matches!(c, "57P01" | "57P02" | "57P03" | "53300" | "25006")
            }),
            Self::Domain(_) | Self::Schema(_) => false,
        }
    }

    /// The domain error, for a step that could commit if it reached the
    /// server (`could_commit`).
    pub(crate) fn into_error(self, could_commit: bool) -> Error {
        match self {
            Self::Domain(e) => e,
            Self::Schema(e) => Error::Incompatible(e.to_string()),
            Self::NoConnection(detail) => Error::Unavailable(detail),
            Self::Lost(e) if could_commit => Error::OutcomeUnknown(format!(
                "the connection to PostgreSQL broke before the answer came: {e}"
            )),
            Self::Lost(e) => Error::Unavailable(format!("PostgreSQL connection lost: {e}")),
            Self::Refused(e) => {
                let code = e.code().map(SqlState::code).unwrap_or_default();
                if code == "53100" {
                    Error::StorageFull(db_message(&e))
                } else if code.starts_with("08") || code.starts_with("57P") || code == "53300" {
                    Error::Unavailable(db_message(&e))
                } else {
                    Error::storage(e)
                }
            }
        }
    }
}

/// The server's message of an error (or the error itself).
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// A stable 32-bit hash (FNV-1a): the same in every process and build, for
/// advisory lock keys shared between processes.
pub(crate) fn hash32(text: &str) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in text.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    i32::from_ne_bytes(hash.to_ne_bytes())
}
