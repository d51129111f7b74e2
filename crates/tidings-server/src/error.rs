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
}

impl ApiError {
    /// An answer with `status` and `{"error": message}`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": message.into()}),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 401.
    pub fn unauthenticated() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Authentication required")
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    fn with(status: StatusCode, message: String, key: &str, list: Vec<String>) -> Self {
        let mut body = json!({"error": message});
        if !list.is_empty()
            && let Some(map) = body.as_object_mut()
        {
            map.insert(key.to_owned(), json!(list));
        }
        Self { status, body }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
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
            E::QueueNotFound(_) => StatusCode::NOT_FOUND,
            E::RecordExists { .. }
            | E::RecordChanged { .. }
            | E::QueueConfigConflict(_)
            | E::NotPending { .. } => StatusCode::CONFLICT,
            other => {
                tracing::error!(error = %other, "storage failure");
                return Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("storage unavailable: {other}"),
                );
            }
        };
        Self {
            status,
            body: core_error_body(&err),
        }
    }
}

/// `{"error": message, "code": ..., ...}`: the message for people, the code
/// and fields for clients that turn it back into a `tidings_core::Error`.
fn core_error_body(err: &tidings_core::Error) -> Value {
    use tidings_core::Error as E;
    let mut body = json!({ "error": err.to_string() });
    let fields = match err {
        E::InvalidName { kind, name, .. } => {
            json!({"code": "invalid_name", "kind": kind, "name": name})
        }
        E::InvalidPayload(m) => json!({"code": "invalid_payload", "detail": m}),
        E::PayloadTooLarge { size, limit } => {
            json!({"code": "payload_too_large", "size": size, "limit": limit})
        }
        E::InvalidArgument(m) => json!({"code": "invalid_argument", "detail": m}),
        E::QueueNotFound(q) => json!({"code": "queue_not_found", "queue": q}),
        E::QueueConfigConflict(q) => json!({"code": "queue_config_conflict", "queue": q}),
        E::NotPending { queue, group, id } => {
            json!({"code": "not_pending", "queue": queue, "group": group, "id": id})
        }
        E::RecordExists { table, key } => {
            json!({"code": "record_exists", "table": table, "key": key})
        }
        E::RecordChanged { table, key } => {
            json!({"code": "record_changed", "table": table, "key": key})
        }
        _ => json!({}),
    };
    if let (Some(map), Value::Object(extra)) = (body.as_object_mut(), fields) {
        map.extend(extra);
    }
    body
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
    /// ...), with the names involved in fields beside it.
    pub code: Option<String>,
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
