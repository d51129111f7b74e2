//! Signing in and out: with the admin key, an application's API key, or an
//! application's name and secret (which opens a hub session, as
//! `POST /v1/tokens` does).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use tidings_hub::hub::sessions::TokenRequest;

use super::page::{answer, csrf_field, frame};
use super::session::{Grant, SESSION_COOKIE, SESSION_MS, Ticket, Visit, set_cookie};
use super::{ConsoleResult, Form};
use crate::state::AppState;

/// Where to go after signing in: a console path, never another site.
fn destination(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with("/console/") && !path.starts_with("//") => path,
        _ => "/console/",
    }
}

#[derive(serde::Deserialize)]
pub struct Next {
    next: Option<String>,
}

fn sign_in_page(visit: &Visit, next: &str, problem: Option<&str>) -> Markup {
    frame(
        "Sign in",
        html! {
            main id="main" .narrow {
                h1 { "Sign in to Tidings" }
                @if let Some(problem) = problem {
                    p.error role="alert" { (problem) }
                }
                form.stack method="post" action="/console/sign-in" {
                    (csrf_field(&visit.csrf))
                    input type="hidden" name="next" value=(next);
                    fieldset {
                        legend { "As the operator" }
                        label for="admin_key" { "Admin key" }
                        input #admin_key type="password" name="admin_key" autocomplete="current-password";
                    }
                    fieldset {
                        legend { "As an application" }
                        label for="api_key" { "API key" }
                        input #api_key type="password" name="api_key" autocomplete="off";
                        p.hint { "or its name and secret:" }
                        label for="application" { "Application" }
                        input #application type="text" name="application" autocomplete="username";
                        label for="secret" { "Secret" }
                        input #secret type="password" name="secret" autocomplete="current-password";
                    }
                    button type="submit" { "Sign in" }
                }
                p.hint {
                    "An application sees only its own actions, subscriptions, events and deliveries."
                }
            }
        },
    )
}

/// `GET /console/sign-in`.
pub async fn form(visit: Visit, Query(next): Query<Next>) -> Response {
    let next = destination(next.next.as_deref());
    if visit.viewer.is_some() {
        return Redirect::to(next).into_response();
    }
    answer(
        StatusCode::OK,
        sign_in_page(&visit, next, None),
        visit.new_csrf_cookie.as_deref(),
        visit.secure,
    )
}

/// What a sign-in form asks for.
async fn grant(state: &AppState, form: &Form) -> Option<Grant> {
    if let Some(given) = form.text("admin_key") {
        let admin = state.auth.admin_key.as_deref()?;
        return (tidings_hub::signature::digest(admin) == tidings_hub::signature::digest(&given))
            .then_some(Grant::Admin);
    }
    if let Some(api_key) = form.text("api_key") {
        let digest = tidings_hub::signature::digest(&api_key);
        return state
            .hub
            .application_by_api_key_digest(&digest)
            .map(|_| Grant::ApiKey { digest });
    }
    let (username, password) = (form.text("application")?, form.text("secret")?);
    let token = state
        .hub
        .open_session(TokenRequest {
            username,
            password,
            scheme: "token".to_owned(),
        })
        .await
        .ok()?;
    Some(Grant::Session { token })
}

/// `POST /console/sign-in`.
pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    visit: Visit,
    form: Form,
) -> ConsoleResult {
    let next = destination(form.get("next")).to_owned();
    let refuse = |problem: &str| {
        answer(
            StatusCode::UNAUTHORIZED,
            sign_in_page(&visit, &next, Some(problem)),
            visit.new_csrf_cookie.as_deref(),
            visit.secure,
        )
    };
    // Failed attempts are counted per address, with the API's logins.
    let client = crate::auth::client_address(&state.auth, &headers, Some(peer));
    if client.is_some_and(|c| !state.login_attempts.open(&c)) {
        return Ok(refuse(
            "Too many failed sign-in attempts from this address; wait a minute and try again.",
        ));
    }
    let Some(grant) = grant(&state, &form).await else {
        if let Some(client) = client {
            state.login_attempts.allow(client);
        }
        return Ok(refuse(
            "Those credentials were not accepted. Check the key (or the application's name and secret) and try again.",
        ));
    };
    let ticket = Ticket {
        grant,
        until: state.hub.now_ms() + SESSION_MS,
    };
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            SESSION_COOKIE,
            &state.console.key.seal(&ticket),
            SESSION_MS / 1000,
            visit.secure,
        ),
    );
    Ok(response)
}

/// `POST /console/sign-out`: forgets the session cookie.
/// (The form is taken for its CSRF token: signing out is a change too.)
pub async fn sign_out(visit: Visit, _checked: Form) -> ConsoleResult {
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", 0, visit.secure),
    );
    Ok(response)
}
