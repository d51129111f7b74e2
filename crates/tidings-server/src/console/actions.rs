//! Actions: the list, one action's schema with an example payload, and a
//! "try publish" form that checks the payload against the schema first
//! and shows the reasons a payload is refused.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use serde_json::Value;
use tidings_hub::Page;
use tidings_hub::hub::{NewAction, NewEvent};
use tidings_hub::views::ActionView;

use super::example::example;
use super::format::{counted, when_iso};
use super::page::{csrf_field, empty, notice, render, render_with};
use super::session::Viewer;
use super::{ConsoleError, ConsoleResult, Form};
use crate::state::AppState;

#[derive(serde::Deserialize)]
pub struct ListQuery {
    application: Option<String>,
}

/// `GET /console/actions`: every action (as the API lists them: an
/// application subscribes to others' actions), filtered by application.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> ConsoleResult {
    let application = query.application.filter(|a| !a.is_empty());
    let actions: Vec<ActionView> = state
        .hub
        .list_actions(None, None, None, None, Page::new(Some(1), Some(i64::MAX)))
        .into_iter()
        .filter(|a| application.as_ref().is_none_or(|app| &a.application == app))
        .collect();
    let body = list_body(&state, &viewer, &actions, application.as_deref(), None);
    Ok(render(&viewer, "Actions", "Actions", body))
}

fn list_body(
    state: &AppState,
    viewer: &Viewer,
    actions: &[ActionView],
    application: Option<&str>,
    result: Option<Markup>,
) -> Markup {
    let now = state.hub.now_ms();
    html! {
        @if let Some(result) = result { (result) }
        details.panel open[actions.is_empty()] {
            summary { "Register an action" }
            form.grid method="post" action="/console/actions" {
                (csrf_field(&viewer.csrf))
                label for="act-name" { "Action" }
                input #act-name name="action" required placeholder="orders.created";
                label for="act-app" { "Application" }
                @match viewer.application() {
                    Some(app) => input #act-app name="application" value=(app) readonly;,
                    None => input #act-app name="application" required placeholder="the publisher";,
                }
                label for="act-schema" { "JSON Schema" }
                textarea #act-schema name="schemata" rows="8" spellcheck="false" {
                    "{\n  \"type\": \"object\",\n  \"properties\": {\"id\": {\"type\": \"string\"}},\n  \"required\": [\"id\"]\n}"
                }
                button type="submit" { "Register" }
            }
        }
        form.filters method="get" action="/console/actions" role="search" {
            label for="filter-app" { "Application" }
            input #filter-app name="application" value=[application] placeholder="all";
            button type="submit" { "Filter" }
        }
        @if actions.is_empty() {
            (empty("No actions yet.", html! {
                p { "An application registers the events it publishes as actions, each with a JSON Schema:" }
                pre { code { "curl -X POST localhost:3310/v1/actions -H 'content-type: application/json' \\\n  -d '{\"action\": \"orders.created\", \"application\": \"orders\", \"schemata\": {\"type\": \"object\"}}'" } }
            }))
        } @else {
            p.hint { (counted(actions.len() as u64, "action", "actions")) }
            div.scroll {
                table {
                    caption.sr { "Actions" }
                    thead { tr { th scope="col" { "Action" } th scope="col" { "Application" } th scope="col" { "Fields" } th scope="col" { "Registered" } } }
                    tbody {
                        @for action in actions {
                            tr {
                                th scope="row" { a href={"/console/actions/" (action.id)} { (action.action) } }
                                td { (action.application) }
                                td { (fields(&action.schemata)) }
                                td { (when_iso(&action.timestamped, now)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /console/actions`: registers an action (the admin, or an
/// application its own).
pub async fn register(State(state): State<AppState>, viewer: Viewer, form: Form) -> ConsoleResult {
    let application = match viewer.application() {
        Some(own) => own.to_owned(),
        None => form.text("application").unwrap_or_default(),
    };
    let schema_text = form.get("schemata").unwrap_or("{}");
    let all = |state: &AppState| {
        state
            .hub
            .list_actions(None, None, None, None, Page::new(Some(1), Some(i64::MAX)))
    };
    let schemata: Value = match serde_json::from_str(schema_text) {
        Ok(schema) => schema,
        Err(e) => {
            let body = list_body(
                &state,
                &viewer,
                &all(&state),
                None,
                Some(notice(
                    "bad",
                    html! { p { "The schema is not JSON: " (e) } },
                )),
            );
            return Ok(render_with(
                &viewer,
                StatusCode::BAD_REQUEST,
                "Actions",
                "Actions",
                body,
            ));
        }
    };
    let new = NewAction {
        action: form.text("action").unwrap_or_default(),
        application,
        schemata,
        retention: None,
        dedup_window: None,
    };
    match state.hub.register_action(&viewer.principal, new).await {
        Ok((view, _)) => {
            super::audit(&state, &viewer, "action.register", &view.action).await;
            let payload =
                serde_json::to_string_pretty(&example(&view.schemata)).unwrap_or_default();
            let result = notice(
                "ok",
                html! { p { "Registered " strong { (view.action) } ". Try publishing it below." } },
            );
            Ok(action_page(
                &viewer,
                &view,
                StatusCode::CREATED,
                &payload,
                Some(result),
            ))
        }
        Err(e) => {
            let (status, shown) = super::refusal(e)?;
            let body = list_body(&state, &viewer, &all(&state), None, Some(shown));
            Ok(render_with(&viewer, status, "Actions", "Actions", body))
        }
    }
}

/// The top-level properties a schema names, required ones marked.
fn fields(schema: &Value) -> Markup {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let names: Vec<&String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().collect())
        .unwrap_or_default();
    html! {
        @if names.is_empty() { span.hint { "any JSON object" } }
        @for name in names {
            code.field { (name) @if required.contains(&name.as_str()) { abbr title="required" { "*" } } } " "
        }
    }
}

fn find(state: &AppState, id: &str) -> Result<ActionView, ConsoleError> {
    state
        .hub
        .list_actions(Some(id), None, None, None, Page::new(Some(1), Some(1)))
        .into_iter()
        .next()
        .ok_or_else(|| ConsoleError::NotFound(format!("No action {id}")))
}

fn action_page(
    viewer: &Viewer,
    action: &ActionView,
    status: StatusCode,
    payload: &str,
    result: Option<Markup>,
) -> axum::response::Response {
    let schema = serde_json::to_string_pretty(&action.schemata).unwrap_or_default();
    let may_publish = viewer.may_see(&action.application);
    let body = html! {
        p { "Published by " strong { (action.application) } ". " a href="/console/actions" { "All actions" } }
        div.two {
            section {
                h2 { "Schema" }
                pre.json tabindex="0" { code { (schema) } }
            }
            section {
                h2 { "Try publish" }
                @if may_publish {
                    @if let Some(result) = result { (result) }
                    form.stack method="post" action={"/console/actions/" (action.id) "/try"} {
                        (csrf_field(&viewer.csrf))
                        label for="payload" { "Payload (JSON); the example is made from the schema" }
                        textarea #payload name="payload" rows="14" spellcheck="false" { (payload) }
                        label for="deduper" { "Deduper (optional)" }
                        input #deduper name="deduper" placeholder="e.g. order-1234";
                        div.row {
                            button type="submit" name="mode" value="check" { "Check only" }
                            button type="submit" name="mode" value="publish" { "Publish" }
                        }
                    }
                } @else {
                    p.hint { "Only " (action.application) " (or the admin) publishes this action." }
                }
            }
        }
    };
    render_with(
        viewer,
        status,
        "Actions",
        &format!("Action {}", action.action),
        body,
    )
}

/// `GET /console/actions/{id}`.
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
) -> ConsoleResult {
    let action = find(&state, &id)?;
    let payload = serde_json::to_string_pretty(&example(&action.schemata)).unwrap_or_default();
    Ok(action_page(
        &viewer,
        &action,
        StatusCode::OK,
        &payload,
        None,
    ))
}

/// `POST /console/actions/{id}/try`: checks the payload (`mode=check`) or
/// publishes it (`mode=publish`); a payload the schema refuses answers 406
/// with the reasons, as the API does.
pub async fn try_publish(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    form: Form,
) -> ConsoleResult {
    let action = find(&state, &id)?;
    if !viewer.may_see(&action.application) {
        return Err(ConsoleError::Forbidden(format!(
            "Only {} (or the admin) publishes {}",
            action.application, action.action
        )));
    }
    let text = form.get("payload").unwrap_or_default().to_owned();
    let shown = |status, result| Ok(action_page(&viewer, &action, status, &text, Some(result)));
    let payload: Value = match serde_json::from_str(&text) {
        Ok(value) => value,
        Err(e) => {
            return shown(
                StatusCode::BAD_REQUEST,
                notice("bad", html! { p { "That is not JSON: " (e) } }),
            );
        }
    };
    let validation = state
        .hub
        .validate_payload(&action.action, payload, text.len())
        .await?;
    if !validation.valid {
        return shown(
            StatusCode::NOT_ACCEPTABLE,
            notice(
                "bad",
                html! {
                    p { "The schema refuses this payload:" }
                    ul.reasons { @for e in &validation.errors { li { (e) } } }
                },
            ),
        );
    }
    if form.get("mode") != Some("publish") {
        return shown(
            StatusCode::OK,
            notice("ok", html! { p { "The payload meets the schema." } }),
        );
    }
    let raw = serde_json::value::RawValue::from_string(text.clone())
        .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    let new = NewEvent {
        action: action.action.clone(),
        payload: raw,
        metadata: None,
        deduper: form.text("deduper"),
        sleep_until: None,
        idempotency_key: None,
    };
    match state.hub.publish(&viewer.principal, new, None).await {
        Ok(published) => {
            let event = &published.view;
            shown(
                StatusCode::CREATED,
                notice(
                    "ok",
                    html! {
                        @if published.duplicate {
                            p { "Not published again: the deduper matches event " code { (event.event) } "." }
                        } @else {
                            p { "Published event " code.event-id { (event.event) } " to "
                                (counted(u64::from(event.fanout.unwrap_or(0)), "subscription", "subscriptions")) "." }
                        }
                    },
                ),
            )
        }
        Err(tidings_hub::HubError::SchemaViolation { message, errors }) => shown(
            StatusCode::NOT_ACCEPTABLE,
            notice(
                "bad",
                html! { p { (message) } ul.reasons { @for e in &errors { li { (e) } } } },
            ),
        ),
        Err(e) => Err(e.into()),
    }
}
