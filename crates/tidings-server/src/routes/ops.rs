//! Probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /health`: the process answers.
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok", "version": VERSION}))
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
