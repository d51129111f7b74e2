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
        match err {
            E::PayloadTooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, err.to_string()),
            E::InvalidName { .. } | E::InvalidPayload(_) | E::InvalidArgument(_) => {
                Self::new(StatusCode::BAD_REQUEST, err.to_string())
            }
            E::QueueNotFound(_) => Self::new(StatusCode::NOT_FOUND, err.to_string()),
            E::RecordExists { .. }
            | E::RecordChanged { .. }
            | E::QueueConfigConflict(_)
            | E::NotPending { .. } => Self::new(StatusCode::CONFLICT, err.to_string()),
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("storage unavailable: {other}"),
                )
            }
        }
    }
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
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
