//! What can go wrong in the hub, by kind: the HTTP adapter maps each kind to
//! one status code (the mapping is Amebo's, see docs/amebo-compatibility.md).

/// Result with [`HubError`].
pub type HubResult<T> = Result<T, HubError>;

/// An error of the event hub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The request is malformed: a field is missing or of the wrong type.
    #[error("{0}")]
    BadRequest(String),
    /// No valid credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The payload does not conform to the action's schema.
    #[error("{message}")]
    SchemaViolation {
        /// Summary.
        message: String,
        /// Every violation, `"<JSON path>: <message>"`.
        errors: Vec<String>,
    },
    /// The resource exists already, differently.
    #[error("{message}")]
    Conflict {
        /// Summary.
        message: String,
        /// Details.
        reasons: Vec<String>,
    },
    /// The subscriber application is unknown or inactive.
    #[error("{0}")]
    UnknownSubscriber(String),
    /// Well-formed but refused by a domain rule.
    #[error("{message}")]
    Unprocessable {
        /// Summary.
        message: String,
        /// Details.
        reasons: Vec<String>,
    },
    /// The broker failed.
    #[error("storage failure: {0}")]
    Storage(#[from] tidings_core::Error),
}

impl HubError {
    /// A domain rule refusal without details.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::Unprocessable {
            message: message.into(),
            reasons: Vec::new(),
        }
    }

    /// A conflict without details.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict {
            message: message.into(),
            reasons: Vec::new(),
        }
    }
}
