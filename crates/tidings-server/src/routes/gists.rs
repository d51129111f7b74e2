//! `/v1/gists` and the ways to deliver again: replay, requeue, backfill.

use axum::Json;
use axum::http::StatusCode;
use tidings_hub::hub::GistFilter;
use tidings_hub::model::GistStatus;
use tidings_hub::time::{now_ms, parse_time, timeline_start};
use tidings_hub::views::{Backfilled, GistPage, Replayed, Requeued};
use tidings_hub_api::Backfill;

use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};
use crate::request::{Call, Path};

fn filter(call: &Call) -> ApiResult<GistFilter> {
    let (from, to) = call.time_range()?;
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
        completed: call.bool_param("completed")?,
        from,
        to,
    })
}

#[utoipa::path(get, path = "/v1/gists", tag = "deliveries",
    params(("gist" = Option<String>, Query), ("event" = Option<String>, Query), ("subscription" = Option<String>, Query), ("action" = Option<String>, Query), ("subscriber" = Option<String>, Query), ("status" = Option<String>, Query, description = "pending, retrying, delivered, failed"), ("completed" = Option<bool>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query), ("timeline" = Option<String>, Query), ("page" = Option<i64>, Query), ("pagination" = Option<i64>, Query)),
    responses((status = 200, description = "A page of deliveries, newest event first", body = GistPage), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn list(call: Call) -> ApiResult<Json<GistPage>> {
    let who = call.who()?;
    Ok(Json(
        call.state
            .hub
            .list_gists(who, &filter(&call)?, call.page()?)
            .await?,
    ))
}

#[utoipa::path(post, path = "/v1/regists/{id}", tag = "deliveries", params(("id" = String, Path, description = "Gist id")),
    responses((status = 200, description = "Delivered now", body = Replayed), (status = 502, description = "The endpoint failed", body = Replayed), (status = 404, description = "Unknown gist", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn replay(Path(id): Path<String>, call: Call) -> ApiResult<(StatusCode, Json<Replayed>)> {
    call.admin()?;
    let result = call.state.replayer.replay(&id).await?;
    let status = if result.delivered {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((status, Json(result)))
}

#[utoipa::path(post, path = "/v1/requeues", tag = "deliveries",
    responses((status = 200, description = "Failed deliveries matching the query's filters, sent again from their first attempt", body = Requeued), (status = 422, description = "A status other than failed", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn requeue(call: Call) -> ApiResult<Json<Requeued>> {
    let who = call.admin()?;
    Ok(Json(call.state.hub.requeue(who, &filter(&call)?).await?))
}

#[utoipa::path(post, path = "/v1/purges", tag = "deliveries",
    responses((status = 200, description = "Failed deliveries matching the query's filters discarded: their dead letters removed from the subscription's queue and their records deleted (the events stay)", body = crate::views::Purged), (status = 422, description = "A status other than failed", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn purge(call: Call) -> ApiResult<Json<crate::views::Purged>> {
    let who = call.admin()?;
    let purged = call
        .state
        .hub
        .purge_dead_deliveries(who, &filter(&call)?)
        .await?;
    Ok(Json(crate::views::Purged { purged }))
}

#[utoipa::path(post, path = "/v1/backfills", tag = "deliveries", request_body = Option<Backfill>,
    responses((status = 200, description = "Past events of the window (`since`, `until`) delivered to the subscription, or counted (`dry_run`)", body = Backfilled), (status = 404, description = "The subscription does not exist", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn backfill(call: Call) -> ApiResult<Json<Backfilled>> {
    let who = call.admin()?;
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
        call.state
            .hub
            .backfill(who, &body.subscription, since, until, body.dry_run)
            .await?,
    ))
}
