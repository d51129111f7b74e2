//! `/v1/events`.

use axum::Json;
use tidings_hub::hub::{EventFilter, NewEvent};
use tidings_hub::model::event::valid_traceparent;
use tidings_hub::views::EventView;

use crate::answer::{Answer, created_or_ok};
use crate::error::ApiResult;
use crate::error::ErrorBody;
use crate::request::{Call, Path};

/// The trace context to keep: `traceparent`, or Amebo's `x-amebo-trace-id`.
fn trace_context(call: &Call) -> Option<String> {
    if let Some(tp) = call
        .header("traceparent")
        .filter(|tp| valid_traceparent(tp))
    {
        return Some(tp.trim().to_ascii_lowercase());
    }
    let id = call.header("x-amebo-trace-id")?.trim().to_ascii_lowercase();
    let candidate = format!("00-{id}-0000000000000001-01");
    valid_traceparent(&candidate).then_some(candidate)
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = NewEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "The deduper's other form (as Stripe and Svix take it): a repeat returns the original event; reused for another payload, 409")),
    responses((status = 201, description = "Stored durably and queued for every active subscription (`fanout`: how many)", body = EventView), (status = 200, description = "Duplicate deduper or Idempotency-Key: the original event (`duplicate`)", body = EventView), (status = 409, description = "The Idempotency-Key was used for another payload", body = ErrorBody), (status = 406, description = "Schema violations, every one with its JSON path", body = ErrorBody), (status = 413, description = "Body too large", body = ErrorBody), (status = 415, description = "Not JSON", body = ErrorBody), (status = 422, description = "Unknown action", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn publish(call: Call) -> ApiResult<Answer<EventView>> {
    let who = call.who()?;
    let mut new: NewEvent = call.json()?;
    new.idempotency_key = call.header("idempotency-key").map(str::to_owned);
    let published = call
        .state
        .hub
        .publish(who, new, trace_context(&call))
        .await?;
    Ok(created_or_ok(!published.duplicate, published.view))
}

#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("id" = Option<String>, Query), ("action" = Option<String>, Query), ("deduper" = Option<String>, Query), ("application" = Option<String>, Query, description = "Events of the actions this application owns"), ("from" = Option<String>, Query, description = "ISO 8601 or Unix seconds"), ("to" = Option<String>, Query), ("timeline" = Option<String>, Query, description = "today, 7d, week, 30d, month"), ("page" = Option<i64>, Query), ("pagination" = Option<i64>, Query)),
    responses((status = 200, description = "Events, newest first", body = [EventView]), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn list(call: Call) -> ApiResult<Json<Vec<EventView>>> {
    let who = call.who()?;
    let (from, to) = call.time_range()?;
    let filter = EventFilter {
        id: call.param("id").map(str::to_owned),
        action: call.param("action").map(str::to_owned),
        deduper: call.param("deduper").map(str::to_owned),
        application: call.param("application").map(str::to_owned),
        from,
        to,
    };
    let events = call
        .state
        .hub
        .list_events(who, &filter, call.page()?)
        .await?;
    Ok(Json(events.iter().map(|e| e.view()).collect()))
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "events", params(("id" = String, Path)),
    responses((status = 200, description = "The event", body = EventView), (status = 404, description = "Unknown", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn one(Path(id): Path<String>, call: Call) -> ApiResult<Json<EventView>> {
    let who = call.who()?;
    Ok(Json(call.state.hub.event_for(who, &id).await?.view()))
}
