//! `/v1/applications`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tidings_hub::hub::{ApplicationUpdate, NewApplication};

use super::{admin, page, time_range};
use crate::error::ApiResult;
use crate::request::Call;
use crate::state::AppState;

pub async fn create(State(s): State<AppState>, call: Call) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = admin(&call)?;
    let new: NewApplication = call.json()?;
    Ok((
        StatusCode::CREATED,
        Json(s.hub.create_application(who, new).await?),
    ))
}

pub async fn list(State(s): State<AppState>, call: Call) -> ApiResult<Json<Value>> {
    call.who()?;
    let (from, _) = time_range(&call)?;
    let apps = s.hub.list_applications(
        call.param("application"),
        call.param("address"),
        from,
        page(&call)?,
    );
    Ok(Json(Value::Array(apps)))
}

pub async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = admin(&call)?;
    let update: ApplicationUpdate = call.json()?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.hub.update_application(who, &id, update).await?),
    ))
}

#[derive(Deserialize)]
struct Toggle {
    active: Option<bool>,
}

pub async fn toggle(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<Json<Value>> {
    let who = admin(&call)?;
    let toggle: Toggle = serde_json::from_value(call.lenient_json()?)
        .map_err(|e| crate::error::ApiError::bad_request(format!("active - {e}")))?;
    Ok(Json(
        s.hub
            .set_application_active(who, &id, toggle.active)
            .await?,
    ))
}

pub async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = admin(&call)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.hub.delete_application(who, &id).await?),
    ))
}

#[derive(Deserialize)]
struct Secret {
    secret: Option<String>,
}

pub async fn rotate_secret(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let who = call.who()?;
    let body: Secret = serde_json::from_value(call.lenient_json()?)
        .map_err(|e| crate::error::ApiError::bad_request(format!("secret - {e}")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(s.hub.rotate_secret(who, &id, body.secret).await?),
    ))
}

pub async fn new_api_key(
    State(s): State<AppState>,
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<Json<Value>> {
    let who = admin(&call)?;
    Ok(Json(s.hub.new_api_key(who, &id).await?))
}
