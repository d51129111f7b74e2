//! Subscriptions with their health: endpoint, success rate, deliveries
//! pending, retrying and dead, the last errors with their status codes,
//! this process's circuit breaker for the endpoint; create, disable and
//! enable, and send a test event.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use tidings_hub::delivery::BreakerState;
use tidings_hub::hub::{DeliveryCounts, GistFilter, NewSubscription};
use tidings_hub::model::GistStatus;
use tidings_hub::views::{GistView, SubscriptionView};
use tidings_hub::{Page, Principal};

use super::example::example;
use super::format::{count, counted, when_iso};
use super::page::{csrf_field, empty, notice, render_with};
use super::session::Viewer;
use super::{ConsoleError, ConsoleResult, Form, audit, refusal};
use crate::state::AppState;

/// Last errors shown per subscription.
const LAST_ERRORS: usize = 3;

#[derive(serde::Deserialize, Default)]
pub struct ListQuery {
    application: Option<String>,
    action: Option<String>,
}

/// One subscription's row: its view, counts, breaker and last failures.
struct Health {
    view: SubscriptionView,
    counts: DeliveryCounts,
    breaker: Option<BreakerState>,
    failures: Vec<GistView>,
}

async fn health(
    state: &AppState,
    viewer: &Viewer,
    query: &ListQuery,
) -> ConsoleResult<Vec<Health>> {
    let views = state.hub.list_subscriptions(
        &viewer.principal,
        None,
        query.application.as_deref().filter(|a| !a.is_empty()),
        query.action.as_deref().filter(|a| !a.is_empty()),
        None,
        Page::new(Some(1), Some(i64::MAX)),
    );
    let counts: BTreeMap<String, DeliveryCounts> = state.hub.delivery_counts().await?;
    let mut rows = Vec::with_capacity(views.len());
    for view in views {
        let counts = counts.get(&view.subscription).copied().unwrap_or_default();
        let mut failures = Vec::new();
        // Only where something failed: a healthy subscription costs no read.
        for status in [GistStatus::Retrying, GistStatus::Failed] {
            let has = match status {
                GistStatus::Retrying => counts.retrying,
                _ => counts.failed,
            };
            if has == 0 || failures.len() >= LAST_ERRORS {
                continue;
            }
            let filter = GistFilter {
                subscription: Some(view.subscription.clone()),
                status: Some(status),
                ..GistFilter::default()
            };
            let page = state
                .hub
                .list_gists(
                    &viewer.principal,
                    &filter,
                    Page::new(Some(1), Some(LAST_ERRORS as i64)),
                )
                .await?;
            failures.extend(page.data);
        }
        failures.truncate(LAST_ERRORS);
        let breaker = state.replayer.breaker_state(&view.endpoint);
        rows.push(Health {
            view,
            counts,
            breaker,
            failures,
        });
    }
    Ok(rows)
}

fn success_rate(counts: &DeliveryCounts) -> String {
    if counts.attempts == 0 {
        return "–".to_owned();
    }
    let rate = counts.delivered as f64 / counts.attempts as f64 * 100.0;
    format!("{rate:.1} %")
}

fn breaker(state: Option<BreakerState>) -> Markup {
    match state {
        None => {
            html! { span.hint title="This process has not delivered to this endpoint since it started" { "–" } }
        }
        Some(BreakerState::Closed) => html! { span.badge.ok { "closed" } },
        Some(BreakerState::HalfOpen) => html! { span.badge.warn { "half-open" } },
        Some(BreakerState::Open) => {
            html! { span.badge.bad title="Deliveries to this endpoint wait until the breaker lets a probe through" { "open" } }
        }
    }
}

fn create_form(state: &AppState, viewer: &Viewer) -> Markup {
    let actions: Vec<String> = state
        .hub
        .with_catalog(|c| c.actions.keys().cloned().collect());
    html! {
        details.panel {
            summary { "Subscribe an application to an action" }
            form.grid method="post" action="/console/subscriptions" {
                (csrf_field(&viewer.csrf))
                label for="sub-app" { "Application" }
                @match viewer.application() {
                    Some(app) => input #sub-app name="application" value=(app) readonly;,
                    None => input #sub-app name="application" required placeholder="the subscriber";,
                }
                label for="sub-action" { "Action" }
                input #sub-action name="action" required list="known-actions" placeholder="orders.created";
                datalist #known-actions { @for a in &actions { option value=(a) {} } }
                label for="sub-handler" { "Endpoint" }
                input #sub-handler name="handler" type="url" required placeholder="https://billing.internal/hooks/orders";
                label for="sub-retries" { "Max retries" }
                input #sub-retries name="max_retries" type="number" min="1" placeholder="the hub's default";
                label for="sub-concurrency" { "Concurrency" }
                input #sub-concurrency name="concurrency" type="number" min="1" placeholder="the hub's default";
                label for="sub-ordered" { "Ordered" }
                span { input #sub-ordered name="ordered" type="checkbox"; " one at a time, in publish order" }
                label for="sub-description" { "Description" }
                input #sub-description name="description" placeholder="optional";
                button type="submit" { "Subscribe" }
            }
        }
    }
}

fn page_body(state: &AppState, viewer: &Viewer, rows: &[Health], result: Option<Markup>) -> Markup {
    let now = state.hub.now_ms();
    html! {
        @if let Some(result) = result { (result) }
        (create_form(state, viewer))
        @if rows.is_empty() {
            (empty("No subscriptions yet.", html! {
                p { "A subscription delivers an action's events to an endpoint. Use the form above, or:" }
                pre { code { "curl -X POST localhost:3310/v1/subscriptions -H 'content-type: application/json' \\\n  -d '{\"application\": \"billing\", \"action\": \"orders.created\", \"handler\": \"http://localhost:4001/hooks\"}'" } }
            }))
        } @else {
            div.scroll {
                table.subscriptions {
                    caption.sr { "Subscriptions" }
                    thead { tr {
                        th scope="col" { "Subscription" } th scope="col" { "Endpoint" } th scope="col" { "Success" }
                        th scope="col" { "Pending" } th scope="col" { "Retrying" } th scope="col" { "Dead" }
                        th scope="col" { "Breaker" } th scope="col" { "Last errors" } th scope="col" { "Manage" }
                    } }
                    tbody {
                        @for row in rows {
                            @let v = &row.view;
                            tr data-subscription=(v.subscription) {
                                th scope="row" {
                                    code { (v.subscription) } br;
                                    (v.application) " ← " a href={"/console/actions/" (v.action)} { (v.action) }
                                    @if v.ordered { " " span.badge title="Delivered one at a time, in publish order" { "ordered" } }
                                    br;
                                    @if v.active { span.badge.ok { "active" } } @else {
                                        span.badge.bad { "disabled" }
                                        @if let Some(reason) = &v.disabled_reason { " " span.hint { (reason) } }
                                    }
                                    " " span.hint { "since " (when_iso(&v.timestamped, now)) }
                                }
                                td { code { (v.endpoint) } }
                                td { (success_rate(&row.counts)) br; span.hint { (count(row.counts.delivered)) " of " (counted(row.counts.attempts, "attempt", "attempts")) } }
                                td.num { (count(row.counts.pending)) }
                                td.num { (count(row.counts.retrying)) }
                                td.num { (count(row.counts.failed)) }
                                td { (breaker(row.breaker)) }
                                td {
                                    @if row.failures.is_empty() { span.hint { "none" } }
                                    @for g in &row.failures {
                                        div.failure {
                                            @match g.last_status_code { Some(code) if code > 0 => span.badge.bad { (code) }, _ => span.badge.bad { "no answer" } }
                                            " " (g.last_error.as_deref().unwrap_or("")) " "
                                            span.hint { (g.status) ", " (counted(u64::from(g.attempts), "attempt", "attempts")) }
                                        }
                                    }
                                }
                                td { div.manage {
                                    form method="post" action={"/console/subscriptions/" (v.subscription) "/test"} {
                                        (csrf_field(&viewer.csrf))
                                        button type="submit" disabled[!v.active] { "Send test event" }
                                    }
                                    form method="post" action={"/console/subscriptions/" (v.subscription) "/active"} data-confirm=[v.active.then(|| format!("Disable {}? New events are no longer queued for it.", v.subscription))] {
                                        (csrf_field(&viewer.csrf))
                                        input type="hidden" name="active" value=(!v.active);
                                        @if v.active { button.danger type="submit" { "Disable" } } @else { button type="submit" { "Enable" } }
                                    }
                                } }
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn show(
    state: &AppState,
    viewer: &Viewer,
    query: &ListQuery,
    status: StatusCode,
    result: Option<Markup>,
) -> ConsoleResult {
    let rows = health(state, viewer, query).await?;
    let body = page_body(state, viewer, &rows, result);
    Ok(render_with(
        viewer,
        status,
        "Subscriptions",
        "Subscriptions",
        body,
    ))
}

/// `GET /console/subscriptions`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(query): Query<ListQuery>,
) -> ConsoleResult {
    show(&state, &viewer, &query, StatusCode::OK, None).await
}

/// A refusal shown above the page.
async fn refused(state: &AppState, viewer: &Viewer, e: tidings_hub::HubError) -> ConsoleResult {
    let (status, shown) = refusal(e)?;
    show(state, viewer, &ListQuery::default(), status, Some(shown)).await
}

fn number(form: &Form, name: &str) -> Result<Option<u32>, ConsoleError> {
    form.text(name)
        .map(|v| {
            v.parse()
                .map_err(|_| ConsoleError::BadRequest(format!("{name} must be a whole number")))
        })
        .transpose()
}

/// `POST /console/subscriptions`.
pub async fn create(State(state): State<AppState>, viewer: Viewer, form: Form) -> ConsoleResult {
    let application = match viewer.application() {
        Some(own) => own.to_owned(),
        None => form.text("application").unwrap_or_default(),
    };
    let new = NewSubscription {
        max_retries: number(&form, "max_retries")?,
        concurrency: number(&form, "concurrency")?,
        ordered: form.ticked("ordered"),
        description: form.text("description"),
        ..NewSubscription::new(
            &application,
            &form.text("action").unwrap_or_default(),
            &form.text("handler").unwrap_or_default(),
        )
    };
    match state.hub.subscribe(&viewer.principal, new).await {
        Ok((view, created)) => {
            audit(&state, &viewer, "subscription.create", &view.subscription).await;
            let said = if created {
                "Subscribed"
            } else {
                "Enabled again"
            };
            let result = notice(
                "ok",
                html! {
                    p { (said) ": " code { (view.subscription) } " delivers " (view.action) " to " code { (view.endpoint) } "." }
                    @if let Some(key) = &view.signing_key {
                        p { "Its signing key (verify deliveries with it; shown here once): " code.secret { (key) } }
                    }
                },
            );
            show(
                &state,
                &viewer,
                &ListQuery::default(),
                StatusCode::CREATED,
                Some(result),
            )
            .await
        }
        Err(e) => refused(&state, &viewer, e).await,
    }
}

fn owned(state: &AppState, viewer: &Viewer, id: &str) -> Result<SubscriptionView, ConsoleError> {
    let found = state
        .hub
        .list_subscriptions(
            &Principal::Admin,
            Some(id),
            None,
            None,
            None,
            Page::new(Some(1), Some(1)),
        )
        .into_iter()
        .next()
        .ok_or_else(|| ConsoleError::NotFound(format!("No subscription {id}")))?;
    if !viewer.may_see(&found.application) {
        return Err(ConsoleError::Forbidden(format!(
            "Subscription {id} is not yours"
        )));
    }
    Ok(found)
}

/// `POST /console/subscriptions/{id}/active`: `active=false` stops queuing
/// events for it (as `DELETE /v1/subscriptions/{id}`), `true` resumes it.
pub async fn set_active(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    form: Form,
) -> ConsoleResult {
    let sub = owned(&state, &viewer, &id)?;
    let result = if form.get("active") == Some("true") {
        let again = NewSubscription::new(&sub.application, &sub.action, &sub.handler);
        state
            .hub
            .subscribe(
                &viewer.principal,
                NewSubscription {
                    ordered: sub.ordered,
                    concurrency: sub.concurrency,
                    max_retries: Some(sub.max_retries),
                    ..again
                },
            )
            .await
            .map(|_| ("subscription.create", "enabled"))
    } else {
        state
            .hub
            .unsubscribe(&viewer.principal, &id)
            .await
            .map(|_| ("subscription.deactivate", "disabled"))
    };
    match result {
        Ok((action, said)) => {
            audit(&state, &viewer, action, &id).await;
            let result = notice("ok", html! { p { code { (id) } " is " (said) "." } });
            show(
                &state,
                &viewer,
                &ListQuery::default(),
                StatusCode::OK,
                Some(result),
            )
            .await
        }
        Err(e) => refused(&state, &viewer, e).await,
    }
}

/// `POST /console/subscriptions/{id}/test`: posts an example event of its
/// action (made from the schema) to the endpoint now, signed; nothing is
/// stored.
pub async fn send_test(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    _checked: Form,
) -> ConsoleResult {
    let sub = owned(&state, &viewer, &id)?;
    let schema = state
        .hub
        .with_catalog(|c| c.action(&sub.action).map(|a| a.action.schemata.clone()))
        .unwrap_or_default();
    let payload = serde_json::value::to_raw_value(&example(&schema))
        .map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    match state
        .replayer
        .send_test(&viewer.principal, &id, payload)
        .await
    {
        Ok(sent) => {
            audit(&state, &viewer, "subscription.test", &id).await;
            let code = sent
                .status_code
                .map_or_else(|| "no answer".to_owned(), |c| c.to_string());
            let result = if sent.delivered {
                notice(
                    "ok",
                    html! { p { "Test event delivered to " code { (sub.endpoint) } ": " strong { (code) } " in " (sent.ms) " ms." } },
                )
            } else {
                notice(
                    "bad",
                    html! { p { "The test event was not accepted by " code { (sub.endpoint) } ": " strong { (code) } " " (sent.error.unwrap_or_default()) } },
                )
            };
            show(
                &state,
                &viewer,
                &ListQuery::default(),
                StatusCode::OK,
                Some(result),
            )
            .await
        }
        Err(e) => refused(&state, &viewer, e).await,
    }
}
