//! `/v1/subscriptions`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use tidings_hub::hub::NewSubscription;

use super::{bool_param, page};
use crate::error::ApiResult;
use crate::request::Call;
use crate::state::AppState;

pub async fn subscribe(
    State(s): State<AppState>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = call.who()?;
    let new: NewSubscription = call.json()?;
    let (view, created) = s.hub.subscribe(who, new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

pub async fn list(State(s): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    call.who()?;
    Ok(Json(Value::Array(s.hub.list_subscriptions(
        call.param("id"),
        call.param("application"),
        call.param("action"),
        bool_param(&call, "active")?,
        page(&call)?,
    ))))
}

pub async fn unsubscribe(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = call.who()?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.hub.unsubscribe(who, &id).await?),
    ))
}
