//! `POST /v1/tokens` (and Amebo's `/v8/tokens`): sessions for applications.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tidings_hub::hub::sessions::{SESSION_TTL_MS, TokenRequest};

use crate::answer::accepted;
use crate::error::ErrorBody;
use crate::error::{ApiError, ApiResult};
use crate::request::Call;
use crate::views::Token;

#[utoipa::path(post, path = "/v1/tokens", tag = "auth", request_body = TokenRequest,
    responses((status = 202, description = "A session, also set as the `Authentication` cookie", body = Token), (status = 429, description = "Too many attempts", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn create(call: Call) -> ApiResult<Response> {
    let too_many = || {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many authentication attempts; try again later",
        )
    };
    let state = &call.state;
    if let Some(client) = crate::auth::client_address(&state.auth, &call.headers, call.peer)
        && !state.login_attempts.allow(client)
    {
        return Err(too_many());
    }
    let request: TokenRequest = call.json()?;
    let name = request.username.clone();
    if !state.login_failures.open(&name) {
        return Err(too_many());
    }
    let token = match state.hub.open_session(request).await {
        Ok(token) => token,
        Err(e) => {
            if matches!(e, tidings_hub::HubError::Unauthenticated(_)) {
                state.login_failures.allow(name);
            }
            return Err(e.into());
        }
    };
    // Secure when the client reached us over HTTPS (ours, or a proxy's):
    // over plain HTTP a Secure cookie would never be sent back.
    let secure = call.state.tls
        || call
            .header("x-forwarded-proto")
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "Authentication={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL_MS / 1000,
        if secure { "; Secure" } else { "" }
    );
    let mut response = accepted(Token { token }).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}
