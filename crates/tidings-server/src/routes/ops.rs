//! Probes.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use crate::error::ApiResult;
use crate::request::Call;
use crate::state::AppState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /health`: the process answers.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": VERSION}))
}

/// `GET /metrics`: Prometheus (OpenMetrics text), unauthenticated as in Amebo.
pub async fn metrics(State(state): State<AppState>) -> ApiResult<impl IntoResponse> {
    let text = state.hub.metrics_text().await?;
    Ok((
        [(header::CONTENT_TYPE, tidings_hub::metrics::CONTENT_TYPE)],
        text,
    ))
}

/// `GET /v1/stats`: totals over stored events and deliveries.
pub async fn stats(State(state): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    call.who()?;
    Ok(Json(state.hub.stats().await?))
}

/// `GET /readyz`: the storage answers.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    match state.hub.broker().list_queues().await {
        Ok(_) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "version": VERSION})),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "storage": e.to_string()})),
        ),
    }
}
