//! `/v1/applications`.

use axum::Json;
use tidings_hub::hub::{ApplicationUpdate, NewApplication, SecretRotation};
use tidings_hub::views::{
    ApiKeyIssued, ApplicationActivity, ApplicationView, RegisteredApplication, Removed,
    SecretRotated,
};
use tidings_hub_api::Toggle;

use crate::answer::{Answer, accepted, created_or_ok};
use crate::error::ApiResult;
use crate::error::ErrorBody;
use crate::request::{Call, Path};

#[utoipa::path(post, path = "/v1/applications", tag = "applications", request_body = NewApplication,
    responses((status = 201, description = "Registered; the secret and API key are shown only here", body = RegisteredApplication), (status = 409, description = "Exists", body = ErrorBody), (status = 422, description = "Bad name or secret", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn create(call: Call) -> ApiResult<Answer<RegisteredApplication>> {
    let who = call.admin()?;
    let new: NewApplication = call.json()?;
    Ok(created_or_ok(
        true,
        call.state.hub.create_application(who, new).await?,
    ))
}

#[utoipa::path(get, path = "/v1/applications", tag = "applications",
    params(("application" = Option<String>, Query, description = "Substring of the name"), ("address" = Option<String>, Query), ("page" = Option<i64>, Query), ("pagination" = Option<i64>, Query)),
    responses((status = 200, description = "Applications by name", body = [ApplicationView]), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn list(call: Call) -> ApiResult<Json<Vec<ApplicationView>>> {
    call.who()?;
    let (from, _) = call.time_range()?;
    let apps = call.state.hub.list_applications(
        call.param("application"),
        call.param("address"),
        from,
        call.page()?,
    );
    Ok(Json(apps))
}

#[utoipa::path(put, path = "/v1/applications/{id}", tag = "applications", request_body = ApplicationUpdate, params(("id" = String, Path, description = "Name or id")),
    responses((status = 202, description = "Changed", body = ApplicationView), (status = 404, description = "Unknown", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn update(Path(id): Path<String>, call: Call) -> ApiResult<Answer<ApplicationView>> {
    let who = call.admin()?;
    let update: ApplicationUpdate = call.json()?;
    Ok(accepted(
        call.state.hub.update_application(who, &id, update).await?,
    ))
}

#[utoipa::path(patch, path = "/v1/applications/{id}", tag = "applications", request_body = Option<Toggle>, params(("id" = String, Path, description = "Name or id")),
    responses((status = 200, description = "Activated or deactivated (`{\"active\": bool}`, omitted: toggle)", body = ApplicationActivity), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn toggle(Path(id): Path<String>, call: Call) -> ApiResult<Json<ApplicationActivity>> {
    let who = call.admin()?;
    let toggle: Toggle = serde_json::from_value(call.lenient_json()?)
        .map_err(|e| crate::error::ApiError::bad_request(format!("active - {e}")))?;
    Ok(Json(
        call.state
            .hub
            .set_application_active(who, &id, toggle.active)
            .await?,
    ))
}

#[utoipa::path(delete, path = "/v1/applications/{id}", tag = "applications", params(("id" = String, Path, description = "Name or id")),
    responses((status = 202, description = "Removed with its actions and subscriptions", body = Removed), (status = 422, description = "The built-in application, which cannot be removed", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn delete(Path(id): Path<String>, call: Call) -> ApiResult<Answer<Removed>> {
    let who = call.admin()?;
    Ok(accepted(call.state.hub.delete_application(who, &id).await?))
}

#[utoipa::path(put, path = "/v1/applications/{id}/secret", tag = "applications", request_body = Option<SecretRotation>, params(("id" = String, Path, description = "Name or id")),
    responses((status = 202, description = "Rotated (`secret`: generated and returned when omitted; `previous_valid_until`: the replaced secret is accepted until then; `warnings`: e.g. a weak secret)", body = SecretRotated), (status = 403, description = "Not this application's, or a signed request asking for a generated secret", body = ErrorBody), (status = 422, description = "The secret is shorter than 16 characters", body = ErrorBody), (status = 404, description = "No such application", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn rotate_secret(Path(id): Path<String>, call: Call) -> ApiResult<Answer<SecretRotated>> {
    let who = call.who()?;
    let body: SecretRotation = serde_json::from_value(call.lenient_json()?)
        .map_err(|e| crate::error::ApiError::bad_request(format!("secret - {e}")))?;
    // A generated secret is answered only to the admin or over the
    // application's own bearer credential (API key, session): never to a
    // signed request, whose signature is all a captor would need.
    if body.secret.is_none() && call.credential == Some(crate::auth::Credential::Signature) {
        return Err(crate::error::ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "a signed request may not ask for a generated secret: give the new secret, \
             or ask with the application's API key or a session",
        ));
    }
    Ok(accepted(
        call.state.hub.rotate_secret(who, &id, body).await?,
    ))
}

#[utoipa::path(post, path = "/v1/applications/{id}/apikey", tag = "applications", params(("id" = String, Path, description = "Name or id")),
    responses((status = 200, description = "A new API key; the old one stops working", body = ApiKeyIssued), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn new_api_key(Path(id): Path<String>, call: Call) -> ApiResult<Json<ApiKeyIssued>> {
    let who = call.admin()?;
    Ok(Json(call.state.hub.new_api_key(who, &id).await?))
}
