//! Applications: list, create, rotate a secret, mint an API key, disable
//! and enable. A secret or key is shown once, on the page that made it, as
//! the API answers it once.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use tidings_hub::Page;
use tidings_hub::hub::{NewApplication, SecretRotation};
use tidings_hub::views::ApplicationView;

use super::format::when_iso;
use super::page::{csrf_field, empty, notice, render, render_with};
use super::session::Viewer;
use super::{ConsoleResult, Form, audit, refusal};
use crate::state::AppState;

/// The applications the viewer may see.
fn visible(state: &AppState, viewer: &Viewer) -> Vec<ApplicationView> {
    state
        .hub
        .list_applications(None, None, None, Page::new(Some(1), Some(i64::MAX)))
        .into_iter()
        .filter(|a| viewer.may_see(&a.application))
        .collect()
}

fn page_body(state: &AppState, viewer: &Viewer, result: Option<Markup>) -> Markup {
    let apps = visible(state, viewer);
    let now = state.hub.now_ms();
    html! {
        @if let Some(result) = result { (result) }
        @if viewer.is_admin() {
            details.panel open[apps.len() <= 1] {
                summary { "Create an application" }
                form.grid method="post" action="/console/applications" {
                    (csrf_field(&viewer.csrf))
                    label for="new-name" { "Name" }
                    input #new-name name="application" required pattern="[A-Za-z0-9_.\\-]+" placeholder="orders";
                    label for="new-address" { "Address" }
                    input #new-address name="address" required placeholder="https://orders.internal";
                    label for="new-description" { "Description" }
                    input #new-description name="description" placeholder="optional";
                    label for="new-queues" { "Queues" }
                    input #new-queues name="queues" placeholder="optional: the queues it may use, e.g. orders, orders.* (any when empty)";
                    label for="new-secret" { "Secret" }
                    input #new-secret name="secret" type="password" minlength="16" placeholder="optional: generated when empty" autocomplete="new-password";
                    button type="submit" { "Create" }
                }
            }
        }
        @if apps.is_empty() {
            (empty("No applications yet.", html! {
                p { "Create one above, or with curl:" }
                pre { code { "curl -X POST localhost:3310/v1/applications -H 'content-type: application/json' \\\n  -d '{\"application\": \"orders\", \"address\": \"http://localhost:4000\"}'" } }
            }))
        } @else {
            div.scroll {
                table {
                    caption.sr { "Applications" }
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Address" } th scope="col" { "State" } th scope="col" { "Created" } th scope="col" { "Queues" } th scope="col" { "Manage" } } }
                    tbody {
                        @for app in &apps {
                            tr {
                                th scope="row" {
                                    a href={"/console/actions?application=" (app.application)} { (app.application) }
                                    @if let Some(d) = &app.description { br; span.hint { (d) } }
                                }
                                td { code { (app.address) } }
                                td { @if app.active { span.badge.ok { "active" } } @else { span.badge.bad { "disabled" } } }
                                td { (when_iso(&app.timestamped, now)) }
                                td { @match &app.queues { Some(q) if !q.is_empty() => code { (q.join(", ")) }, _ => span.hint { "none" } } }
                                td { div.manage { (manage(viewer, app)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The buttons of one application's row: the admin's, and the rotation an
/// application may do to itself.
fn manage(viewer: &Viewer, app: &ApplicationView) -> Markup {
    let name = &app.application;
    html! {
        form method="post" action={"/console/applications/" (name) "/secret"} data-confirm={"Rotate the secret of " (name) "? The current one stays valid for 24 hours."} {
            (csrf_field(&viewer.csrf))
            button type="submit" { "Rotate secret" }
        }
        @if viewer.is_admin() {
            form method="post" action={"/console/applications/" (name) "/apikey"} data-confirm={"Mint a new API key for " (name) "? The current key stops working at once."} {
                (csrf_field(&viewer.csrf))
                button type="submit" { "New API key" }
            }
            form method="post" action={"/console/applications/" (name) "/active"} data-confirm=[(app.active).then(|| format!("Disable {name}? It can no longer publish, and its subscriptions stop receiving."))] {
                (csrf_field(&viewer.csrf))
                input type="hidden" name="active" value=(!app.active);
                @if app.active { button.danger type="submit" { "Disable" } } @else { button type="submit" { "Enable" } }
            }
        }
    }
}

/// A secret shown once.
fn shown_once(label: &str, value: &str) -> Markup {
    html! {
        p { (label) ": " code.secret { (value) } }
    }
}

/// `GET /console/applications`.
pub async fn list(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult {
    let body = page_body(&state, &viewer, None);
    Ok(render(&viewer, "Applications", "Applications", body))
}

/// The page again, with a form's outcome above it.
fn outcome(state: &AppState, viewer: &Viewer, status: StatusCode, result: Markup) -> ConsoleResult {
    let body = page_body(state, viewer, Some(result));
    Ok(render_with(
        viewer,
        status,
        "Applications",
        "Applications",
        body,
    ))
}

/// A refusal shown above the page.
fn refused(state: &AppState, viewer: &Viewer, e: tidings_hub::HubError) -> ConsoleResult {
    let (status, shown) = refusal(e)?;
    outcome(state, viewer, status, shown)
}

/// `POST /console/applications`.
pub async fn create(State(state): State<AppState>, viewer: Viewer, form: Form) -> ConsoleResult {
    let queues: Vec<String> = form
        .text("queues")
        .map(|q| {
            q.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let new = NewApplication {
        secret: form.text("secret"),
        description: form.text("description"),
        queues: (!queues.is_empty()).then_some(queues),
        ..NewApplication::new(
            &form.text("application").unwrap_or_default(),
            &form.text("address").unwrap_or_default(),
        )
    };
    match state.hub.create_application(&viewer.principal, new).await {
        Ok(made) => {
            audit(&state, &viewer, "application.create", &made.name).await;
            outcome(
                &state,
                &viewer,
                StatusCode::CREATED,
                notice(
                    "ok",
                    html! {
                        p { "Created " strong { (made.name) } ". Keep these now: they are not shown again." }
                        (shown_once("Secret", &made.secret))
                        (shown_once("API key", &made.apikey))
                        @for w in &made.warnings { p.warn { (w) } }
                    },
                ),
            )
        }
        Err(e) => refused(&state, &viewer, e),
    }
}

/// `POST /console/applications/{name}/secret`: a generated secret; the
/// replaced one stays valid for the default grace period.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(name): Path<String>,
    viewer: Viewer,
    _checked: Form,
) -> ConsoleResult {
    let rotation = SecretRotation {
        secret: None,
        grace_period: None,
    };
    match state
        .hub
        .rotate_secret(&viewer.principal, &name, rotation)
        .await
    {
        Ok(rotated) => {
            audit(&state, &viewer, "application.secret.rotate", &name).await;
            outcome(
                &state,
                &viewer,
                StatusCode::OK,
                notice(
                    "ok",
                    html! {
                        p { (rotated.message) }
                        @if let Some(secret) = &rotated.secret { (shown_once("New secret", secret)) }
                        @if let Some(until) = &rotated.previous_valid_until { p { "The replaced secret is accepted until " (until) "." } }
                    },
                ),
            )
        }
        Err(e) => refused(&state, &viewer, e),
    }
}

/// `POST /console/applications/{name}/apikey` (the admin).
pub async fn new_api_key(
    State(state): State<AppState>,
    Path(name): Path<String>,
    viewer: Viewer,
    _checked: Form,
) -> ConsoleResult {
    match state.hub.new_api_key(&viewer.principal, &name).await {
        Ok(issued) => {
            audit(&state, &viewer, "application.apikey.mint", &name).await;
            outcome(
                &state,
                &viewer,
                StatusCode::OK,
                notice(
                    "ok",
                    html! {
                        p { "A new API key for " strong { (issued.application) } "; the one before no longer works." }
                        (shown_once("API key", &issued.apikey))
                    },
                ),
            )
        }
        Err(e) => refused(&state, &viewer, e),
    }
}

/// `POST /console/applications/{name}/active` (the admin): `active=true`
/// or `false`.
pub async fn set_active(
    State(state): State<AppState>,
    Path(name): Path<String>,
    viewer: Viewer,
    form: Form,
) -> ConsoleResult {
    let active = form.get("active") == Some("true");
    match state
        .hub
        .set_application_active(&viewer.principal, &name, Some(active))
        .await
    {
        Ok(_) => {
            audit(&state, &viewer, "application.activate", &name).await;
            let said = if active { "enabled" } else { "disabled" };
            outcome(
                &state,
                &viewer,
                StatusCode::OK,
                notice("ok", html! { p { strong { (name) } " is " (said) "." } }),
            )
        }
        Err(e) => refused(&state, &viewer, e),
    }
}
