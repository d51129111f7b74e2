//! `/v1/gists` and the ways to deliver again: replay, requeue, backfill.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tidings_hub::hub::GistFilter;
use tidings_hub::model::GistStatus;
use tidings_hub::time::{now_ms, parse_time, timeline_start};

use super::{admin, bool_param, page, time_range};
use crate::error::{ApiError, ApiResult};
use crate::request::Call;
use crate::state::AppState;

fn filter(call: &Call) -> ApiResult<GistFilter> {
    let (from, to) = time_range(call)?;
    let status = call
        .param("status")
        .map(|s| {
            GistStatus::parse(s).ok_or_else(|| {
                ApiError::bad_request("status - one of pending, retrying, delivered, failed")
            })
        })
        .transpose()?;
    let text = |name: &str| call.param(name).map(str::to_owned);
    Ok(GistFilter {
        id: text("gist").or_else(|| text("id")),
        event: text("event"),
        subscription: text("subscription"),
        action: text("action"),
        subscriber: text("subscriber").or_else(|| text("destination")),
        status,
        completed: bool_param(call, "completed")?,
        from,
        to,
    })
}

pub async fn list(State(s): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    call.who()?;
    Ok(Json(s.hub.list_gists(&filter(&call)?, page(&call)?).await?))
}

pub async fn replay(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    admin(&call)?;
    let result = s.replayer.replay(&id).await?;
    let status = if result["delivered"] == Value::Bool(true) {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((status, Json(result)))
}

pub async fn requeue(State(s): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    let who = admin(&call)?;
    Ok(Json(s.hub.requeue(who, &filter(&call)?).await?))
}

#[derive(Deserialize)]
struct Backfill {
    subscription: String,
    since: Option<String>,
    timeline: Option<String>,
    until: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

pub async fn backfill(State(s): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    let who = admin(&call)?;
    let body: Backfill = serde_json::from_value(call.lenient_json()?)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let point = |text: &str| {
        timeline_start(text, now_ms())
            .or_else(|| parse_time(text))
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{text:?} is not a time or one of today, 7d, week, 30d, month"
                ))
            })
    };
    let since = match body.since.as_deref().or(body.timeline.as_deref()) {
        Some(text) => point(text)?,
        None => return Err(ApiError::bad_request("since - Field required")),
    };
    let until = body.until.as_deref().map(point).transpose()?;
    Ok(Json(
        s.hub
            .backfill(who, &body.subscription, since, until, body.dry_run)
            .await?,
    ))
}
