//! Probes.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::error::ErrorBody;
use crate::request::Call;
use crate::state::AppState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /health`: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process answers")))]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": VERSION}))
}

/// `GET /metrics`: Prometheus (OpenMetrics text), unauthenticated as in Amebo.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus (OpenMetrics text)")))]
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let text = state.hub.metrics_text().await?;
    Ok((
        [(header::CONTENT_TYPE, tidings_hub::metrics::CONTENT_TYPE)],
        text,
    ))
}

/// `GET /v1/stats`: totals over stored events and deliveries.
#[utoipa::path(get, path = "/v1/stats", tag = "operations", responses((status = 200, description = "Totals over stored events and deliveries"), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn stats(State(state): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    call.who()?;
    Ok(Json(state.hub.stats().await?))
}

/// `GET /readyz`: the storage answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "The storage answers"), (status = 503, description = "It does not")))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.hub.broker().list_queues().await {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "version": VERSION})),
        ),
        Err(e) => {
            // The detail is for the operator's log, not for whoever can reach /readyz.
            tracing::error!(error = %e, "not ready: the storage does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable"})),
            )
        }
    }
}
