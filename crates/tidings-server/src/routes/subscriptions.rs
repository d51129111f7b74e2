//! `/v1/subscriptions`.

use axum::Json;
use tidings_hub::hub::{NewSubscription, SigningKeyRotation};
use tidings_hub::views::{SigningKeyView, SubscriptionView, Unsubscribed};

use crate::answer::{Answer, accepted, created_or_ok};
use crate::error::ApiResult;
use crate::error::ErrorBody;
use crate::request::{Call, Path};

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = NewSubscription,
    responses((status = 201, description = "Subscribed; `signing_key` is shown only here (and by the reveal call)", body = SubscriptionView), (status = 200, description = "Reactivated (`reactivated`)", body = SubscriptionView), (status = 404, description = "The action does not exist", body = ErrorBody), (status = 409, description = "A subscription with this id exists, or this one exists with another signing key", body = ErrorBody), (status = 417, description = "Unknown or inactive subscriber", body = ErrorBody), (status = 422, description = "The handler's address is refused by the address policy (the message names the setting that allows it), or the signing key is not `whsec_` + base64 of 24 to 64 bytes", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn subscribe(call: Call) -> ApiResult<Answer<SubscriptionView>> {
    let who = call.who()?;
    let new: NewSubscription = call.json()?;
    let (view, created) = call.state.hub.subscribe(who, new).await?;
    Ok(created_or_ok(created, view))
}

#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions",
    params(("id" = Option<String>, Query), ("application" = Option<String>, Query), ("action" = Option<String>, Query), ("active" = Option<bool>, Query), ("page" = Option<i64>, Query), ("pagination" = Option<i64>, Query)),
    responses((status = 200, description = "Subscriptions, newest first", body = [SubscriptionView]), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn list(call: Call) -> ApiResult<Json<Vec<SubscriptionView>>> {
    let who = call.who()?;
    Ok(Json(call.state.hub.list_subscriptions(
        who,
        call.param("id"),
        call.param("application"),
        call.param("action"),
        call.bool_param("active")?,
        call.page()?,
    )))
}

#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions", params(("id" = String, Path)),
    responses((status = 202, description = "Deactivated", body = Unsubscribed), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn unsubscribe(Path(id): Path<String>, call: Call) -> ApiResult<Answer<Unsubscribed>> {
    let who = call.who()?;
    Ok(accepted(call.state.hub.unsubscribe(who, &id).await?))
}

#[utoipa::path(get, path = "/v1/subscriptions/{id}/signing-key", tag = "subscriptions", params(("id" = String, Path)),
    responses((status = 200, description = "The subscription's signing key (its owner or the admin only)", body = SigningKeyView), (status = 403, description = "Another application's subscription", body = ErrorBody), (status = 404, description = "No such subscription", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn signing_key(Path(id): Path<String>, call: Call) -> ApiResult<Json<SigningKeyView>> {
    let who = call.who()?;
    Ok(Json(call.state.hub.signing_key(who, &id)?))
}

#[utoipa::path(post, path = "/v1/subscriptions/{id}/signing-key/rotate", tag = "subscriptions", params(("id" = String, Path)), request_body = Option<SigningKeyRotation>,
    responses((status = 200, description = "Rotated: the new key; the replaced one keeps signing deliveries too until `previous_valid_until`", body = SigningKeyView), (status = 403, description = "Another application's subscription", body = ErrorBody), (status = 404, description = "No such subscription", body = ErrorBody), (status = 422, description = "The key is not `whsec_` + base64 of 24 to 64 bytes", body = ErrorBody), (status = 400, description = "Malformed request, or a grace period that cannot be read or is over 30 days", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn rotate_signing_key(
    Path(id): Path<String>,
    call: Call,
) -> ApiResult<Json<SigningKeyView>> {
    let who = call.who()?;
    let rotation: SigningKeyRotation = serde_json::from_value(call.lenient_json()?)
        .map_err(|e| crate::error::ApiError::bad_request(e.to_string()))?;
    Ok(Json(
        call.state
            .hub
            .rotate_signing_key(who, &id, rotation)
            .await?,
    ))
}
