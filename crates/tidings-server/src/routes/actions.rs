//! `/v1/actions`.

use axum::Json;
use serde_json::Value;
use tidings_hub::hub::{ActionUpdate, NewAction};
use tidings_hub::views::{ActionEdited, ActionView, Removed, Validation};
use tidings_hub_api::Validate;

use crate::answer::{Answer, accepted, created_or_ok};
use crate::error::ApiResult;
use crate::error::ErrorBody;
use crate::request::{Call, Path};

#[utoipa::path(post, path = "/v1/actions", tag = "actions", request_body = NewAction,
    responses((status = 201, description = "Registered", body = ActionView), (status = 200, description = "The same schema was registered already (`unchanged`)", body = ActionView), (status = 404, description = "The application does not exist or is inactive", body = ErrorBody), (status = 409, description = "Exists with another schema", body = ErrorBody), (status = 422, description = "The schema does not compile", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn register(call: Call) -> ApiResult<Answer<ActionView>> {
    let who = call.who()?;
    let new: NewAction = call.json()?;
    let (view, created) = call.state.hub.register_action(who, new).await?;
    Ok(created_or_ok(created, view))
}

#[utoipa::path(get, path = "/v1/actions", tag = "actions",
    params(("id" = Option<String>, Query), ("action" = Option<String>, Query), ("application" = Option<String>, Query), ("page" = Option<i64>, Query), ("pagination" = Option<i64>, Query)),
    responses((status = 200, description = "Actions by name", body = [ActionView]), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn list(call: Call) -> ApiResult<Json<Vec<ActionView>>> {
    call.who()?;
    let (from, _) = call.time_range()?;
    Ok(Json(call.state.hub.list_actions(
        call.param("id"),
        call.param("action"),
        call.param("application"),
        from,
        call.page()?,
    )))
}

#[utoipa::path(patch, path = "/v1/actions/{id}", tag = "actions", request_body = ActionUpdate, params(("id" = String, Path, description = "Name or id")),
    responses((status = 200, description = "Schema replaced", body = ActionEdited), (status = 422, description = "No schemata given, or it does not compile", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn update(Path(id): Path<String>, call: Call) -> ApiResult<Json<ActionEdited>> {
    let who = call.who()?;
    let update: ActionUpdate = call.json()?;
    Ok(Json(call.state.hub.update_action(who, &id, update).await?))
}

#[utoipa::path(delete, path = "/v1/actions/{id}", tag = "actions", params(("id" = String, Path, description = "Name or id")),
    responses((status = 202, description = "Removed with its subscriptions", body = Removed), (status = 422, description = "A built-in action, which cannot be removed", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn delete(Path(id): Path<String>, call: Call) -> ApiResult<Answer<Removed>> {
    let who = call.admin()?;
    Ok(accepted(call.state.hub.delete_action(who, &id).await?))
}

#[utoipa::path(post, path = "/v1/actions/{id}/validations", tag = "actions", request_body = Option<Validate>, params(("id" = String, Path, description = "Name or id")),
    responses((status = 200, description = "`{action, valid, errors}` for `{\"payload\": ...}` or the payload itself", body = Validation), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn validate(Path(id): Path<String>, call: Call) -> ApiResult<Json<Validation>> {
    call.who()?;
    let body = call.lenient_json()?;
    let payload = match body.get("payload") {
        Some(Value::String(text)) => {
            serde_json::from_str(text).unwrap_or(Value::String(text.clone()))
        }
        Some(payload) => payload.clone(),
        None => body,
    };
    let bytes = call.body_len();
    Ok(Json(
        call.state.hub.validate_payload(&id, payload, bytes).await?,
    ))
}
