//! `/v1/subscriptions`.

use axum::Json;
use tidings_hub::hub::NewSubscription;
use tidings_hub::views::{SubscriptionView, Unsubscribed};

use crate::answer::{Answer, accepted, created_or_ok};
use crate::error::ApiResult;
use crate::error::ErrorBody;
use crate::request::{Call, Path};

#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = NewSubscription,
    responses((status = 201, description = "Subscribed", body = SubscriptionView), (status = 200, description = "Reactivated (`reactivated`)", body = SubscriptionView), (status = 404, description = "The action does not exist", body = ErrorBody), (status = 409, description = "A subscription with this id exists", body = ErrorBody), (status = 417, description = "Unknown or inactive subscriber", body = ErrorBody), (status = 422, description = "The handler's address is refused by the address policy (the message names the setting that allows it)", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
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
