//! Errors as HTTP answers: the right status and a JSON body
//! `{"error": ..., "reasons"?: [...], "errors"?: [...]}`, never a 500 for bad input.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tidings_hub::HubError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Value,
    /// For the log only: what failed inside the server.
    internal: Option<String>,
}

impl ApiError {
    /// An answer with `status` and `{"error": message}`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": message.into()}),
            internal: None,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 with a `code`, for a thing that is not a queue (a dead letter).
    pub fn not_found_coded(code: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            body: json!({"error": message.into(), "code": code}),
            internal: None,
        }
    }

    /// 401.
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Authentication required")
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Its status, its body, and what failed inside the server (for the
    /// log only), for an answer in another form (the console's pages).
    pub fn into_parts(self) -> (StatusCode, Value, Option<String>) {
        (self.status, self.body, self.internal)
    }

    fn with(status: StatusCode, message: String, key: &str, list: Vec<String>) -> Self {
        let mut body = json!({"error": message});
        if !list.is_empty()
            && let Some(map) = body.as_object_mut()
        {
            map.insert(key.to_owned(), json!(list));
        }
        Self {
            status,
            body,
            internal: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = Failure::of(&self.body);
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(detail) = self.internal {
            response
                .extensions_mut()
                .insert(InternalFailure { detail, kind });
        }
        response
    }
}

impl From<HubError> for ApiError {
    fn from(err: HubError) -> Self {
        match err {
            HubError::BadRequest(m) => Self::new(StatusCode::BAD_REQUEST, m),
            HubError::Unauthenticated(m) => Self::new(StatusCode::UNAUTHORIZED, m),
            HubError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, m),
            HubError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            HubError::SchemaViolation { message, errors } => {
                Self::with(StatusCode::NOT_ACCEPTABLE, message, "errors", errors)
            }
            HubError::Conflict { message, reasons } => {
                Self::with(StatusCode::CONFLICT, message, "reasons", reasons)
            }
            HubError::UnknownSubscriber(m) => Self::new(StatusCode::EXPECTATION_FAILED, m),
            HubError::Unprocessable { message, reasons } => Self::with(
                StatusCode::UNPROCESSABLE_ENTITY,
                message,
                "reasons",
                reasons,
            ),
            HubError::Storage(e) => e.into(),
            other => Self::new(StatusCode::UNPROCESSABLE_ENTITY, other.to_string()),
        }
    }
}

impl From<tidings_core::Error> for ApiError {
    fn from(err: tidings_core::Error) -> Self {
        use tidings_core::Error as E;
        let status = match &err {
            E::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::InvalidName { .. } | E::InvalidPayload(_) | E::InvalidArgument(_) => {
                StatusCode::BAD_REQUEST
            }
            E::Denied(_) => StatusCode::FORBIDDEN,
            E::QueueNotFound(_) => StatusCode::NOT_FOUND,
            E::RecordExists { .. }
            | E::RecordChanged { .. }
            | E::QueueConfigConflict(_)
            | E::NotPending { .. } => StatusCode::CONFLICT,
            _ => return Self::internal(&err),
        };
        let mut body = json!({ "error": err.to_string(), "code": err.code() });
        if let Some(map) = body.as_object_mut() {
            map.extend(err.fields());
        }
        Self {
            status,
            body,
            internal: None,
        }
    }
}

/// The detail of a server-side failure, carried from the handler to the
/// middleware on the response, which logs it with the request id and sends
/// the caller only a generic message with that id.
#[derive(Debug, Clone)]
pub(crate) struct InternalFailure {
    /// What failed, for the log.
    pub(crate) detail: String,
    /// What the caller is told.
    pub(crate) kind: Failure,
}

/// What a caller is told of a failure of the server's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Nothing was applied; retry later.
    Unavailable,
    /// The storage is full: nothing was stored.
    StorageFull,
    /// It may have been applied.
    OutcomeUnknown,
}

impl Failure {
    fn of(body: &Value) -> Self {
        match body["code"].as_str() {
            Some("storage_full") => Self::StorageFull,
            Some("outcome_unknown") => Self::OutcomeUnknown,
            _ => Self::Unavailable,
        }
    }

    /// The body: a message without internals, the code, the request id
    /// under which the log has the detail, and for an unknown outcome
    /// `"outcome": "unknown"`.
    pub(crate) fn body(self, request_id: Option<&str>) -> Value {
        match self {
            Self::Unavailable => failure_body(request_id),
            Self::StorageFull => json!({
                "error": "the server's storage is full: nothing was stored; retry once the \
                          operator has freed space",
                "code": "storage_full",
                "request_id": request_id,
            }),
            Self::OutcomeUnknown => json!({
                "error": "the storage did not confirm the write in time: it may or may not have \
                          been applied; retry with the same deduper or Idempotency-Key to be safe",
                "code": "outcome_unknown",
                "outcome": "unknown",
                "request_id": request_id,
            }),
        }
    }
}

impl ApiError {
    /// A failure of the server's own: 507 for a full disk (nothing was
    /// stored), 503 otherwise, with `"outcome": "unknown"` when the write
    /// may have been applied (the storage took it but did not answer). The
    /// detail is logged with the request id, never shown to the caller.
    pub fn internal(err: &tidings_core::Error) -> Self {
        use tidings_core::Error as E;
        let (status, kind) = match err {
            E::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, Failure::StorageFull),
            E::OutcomeUnknown(_) => (StatusCode::SERVICE_UNAVAILABLE, Failure::OutcomeUnknown),
            _ => (StatusCode::SERVICE_UNAVAILABLE, Failure::Unavailable),
        };
        Self {
            status,
            body: kind.body(None),
            internal: Some(err.to_string()),
        }
    }

    /// The body to send where no response carries it (a stream's `error`
    /// event): the detail of a server-side failure is logged here, and the
    /// caller gets only the generic body.
    pub(crate) fn into_logged_body(self) -> Value {
        if let Some(detail) = &self.internal {
            tracing::error!(error = %detail, "request failed");
        }
        self.body
    }
}

/// What a caller is told of a server-side failure: a generic message, the
/// code `unavailable`, and (once the middleware knows it) the request id
/// under which the log has the detail.
pub(crate) fn failure_body(request_id: Option<&str>) -> Value {
    json!({
        "error": "the server could not complete the request; retry later, \
                  or give the operator this answer's request id",
        "code": "unavailable",
        "request_id": request_id,
    })
}

/// The shape of every error answer (for the OpenAPI document).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// Why (domain errors, conflicts).
    pub reasons: Option<Vec<String>>,
    /// Every violation with its JSON path (406).
    pub errors: Option<Vec<String>>,
    /// For queue and record errors: what kind (`queue_not_found`,
    /// `not_pending`, `record_exists`, `record_changed`, `invalid_argument`,
    /// ...: `tidings_core::Error::code`), with the names involved in fields
    /// beside it; `unavailable` for a failure of the server's own.
    pub code: Option<String>,
    /// On a 5xx answer: the request id to give the operator, whose log has
    /// the detail.
    pub request_id: Option<String>,
    /// `unknown` when the storage may have applied the write although the
    /// answer is an error (code `outcome_unknown`).
    pub outcome: Option<String>,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
