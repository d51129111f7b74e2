//! `/v1/actions`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;
use tidings_hub::hub::{ActionUpdate, NewAction};

use super::{admin, page, time_range};
use crate::error::ApiResult;
use crate::request::Call;
use crate::state::AppState;

pub async fn register(
    State(s): State<AppState>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = call.who()?;
    let new: NewAction = call.json()?;
    let (view, created) = s.hub.register_action(who, new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

pub async fn list(State(s): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    call.who()?;
    let (from, _) = time_range(&call)?;
    Ok(Json(Value::Array(s.hub.list_actions(
        call.param("id"),
        call.param("action"),
        call.param("application"),
        from,
        page(&call)?,
    ))))
}

pub async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<Json<Value>> {
    let who = call.who()?;
    let update: ActionUpdate = call.json()?;
    Ok(Json(s.hub.update_action(who, &id, update).await?))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = admin(&call)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.hub.delete_action(who, &id).await?),
    ))
}

/// Body `{"payload": ...}` or the payload itself.
pub async fn validate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<Json<Value>> {
    call.who()?;
    let body = call.lenient_json()?;
    let payload = match body.get("payload") {
        Some(Value::String(text)) => {
            serde_json::from_str(text).unwrap_or(Value::String(text.clone()))
        }
        Some(payload) => payload.clone(),
        None => body,
    };
    Ok(Json(s.hub.validate_payload(&id, &payload)?))
}
