//! Probes.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use tidings_hub::views::{ClusterView, Stats};

use crate::error::ApiResult;
use crate::error::ErrorBody;
use crate::request::Call;
use crate::state::AppState;
use crate::views::Probe;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /health`: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, description = "The process answers", body = Probe)))]
pub async fn health() -> Json<Probe> {
    Json(Probe {
        reason: None,
        warnings: Vec::new(),
        status: "ok",
        version: Some(VERSION),
    })
}

/// `GET /metrics`: Prometheus (OpenMetrics text). With an admin key it
/// needs the admin key or the metrics token (`--metrics-token`), unless the
/// server runs with `--public-metrics`: it names every application, action
/// and subscription.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus (OpenMetrics text)", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String), (status = 401, description = "No admin key or metrics token (servers with an admin key, without `--public-metrics`)", body = ErrorBody)))]
pub async fn metrics(call: Call) -> ApiResult<impl IntoResponse> {
    let state = &call.state;
    if !crate::auth::may_read_metrics(&state.auth, call.principal.as_ref(), &call.headers) {
        return Err(crate::error::ApiError::new(
            StatusCode::UNAUTHORIZED,
            "/metrics needs the admin key or the metrics token (Authorization: Bearer)",
        ));
    }
    let text = state.hub.metrics_text().await?;
    Ok((
        [(header::CONTENT_TYPE, tidings_hub::metrics::CONTENT_TYPE)],
        text,
    ))
}

/// `GET /v1/stats`: totals over stored events and deliveries.
#[utoipa::path(get, path = "/v1/stats", tag = "operations", responses((status = 200, description = "Totals over stored events and deliveries", body = Stats), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn stats(call: Call) -> ApiResult<Json<Stats>> {
    call.who()?;
    Ok(Json(call.state.hub.stats().await?))
}

/// `GET /v1/cluster`: the hub processes sharing this store, and which one
/// delivers each ordered subscription (the admin only).
#[utoipa::path(get, path = "/v1/cluster", tag = "operations", responses((status = 200, description = "The processes sharing this store (live or silent for under an hour) and the owners of ordered subscriptions", body = ClusterView), (status = 401, description = "No valid credentials", body = ErrorBody), (status = 403, description = "Not the admin", body = ErrorBody)))]
pub async fn cluster(call: Call) -> ApiResult<Json<ClusterView>> {
    call.admin()?;
    Ok(Json(call.state.hub.cluster().await?))
}

/// `GET /readyz`: the storage answers and takes writes.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "The storage answers and takes writes", body = Probe), (status = 503, description = "It does not (a failed store that cannot be reopened yet, a full disk)", body = Probe)))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    match state.hub.broker().ready().await {
        Ok(_) => (
            StatusCode::OK,
            Json(Probe {
                status: "ready",
                version: Some(VERSION),
                reason: None,
                warnings: state.hub.storage_warnings().await.unwrap_or_default(),
            }),
        ),
        Err(e) => {
            // The detail is for the operator's log, not for whoever can reach /readyz.
            tracing::error!(error = %e, "not ready: the storage does not take writes");
            let reason = match e {
                tidings_core::Error::StorageFull(_) => "storage_full",
                tidings_core::Error::Unavailable(_) | tidings_core::Error::OutcomeUnknown(_) => {
                    "storage_unreachable"
                }
                _ => "storage_failed",
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Probe {
                    status: "unavailable",
                    version: None,
                    reason: Some(reason),
                    warnings: Vec::new(),
                }),
            )
        }
    }
}
