//! The overview: the hub's health and disk, what is pending, retrying and
//! dead, and the last hour's rates and latencies as charts that refresh
//! themselves (`GET /console/live` answers the live part alone).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::chart::{Series, line_chart};
use super::format::{bytes, count, count_value, counted, millis, rate};
use super::page::{empty, render};
use super::session::Viewer;
use super::trend::{Point, SPAN_MS};
use super::{ConsoleResult, page};
use crate::state::AppState;

/// `GET /console/`.
pub async fn page(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult {
    if let Some(app) = viewer.application() {
        return Ok(application_overview(&state, &viewer, app));
    }
    let live = live_part(&state).await?;
    let ready = state.hub.broker().ready().await;
    let usage = state.hub.broker().storage_usage().await.ok();
    let warnings = state.hub.storage_warnings().await.unwrap_or_default();
    let applications = state.hub.with_catalog(|c| c.applications.len());
    let body = html! {
        section.cards aria-label="Health" {
            div.card {
                h2 { "Health" }
                @match &ready {
                    Ok(_) => p.ok { "Ready: the storage takes writes" },
                    Err(_) => p.bad role="alert" { "Not ready: the storage does not take writes (see the server's log)" },
                }
                @for warning in &warnings { p.warn { (warning) } }
                p.hint { (counted(state.hub.live_processes() as u64, "hub process", "hub processes")) " live on this store" }
            }
            div.card {
                h2 { "Disk" }
                @match usage.as_ref().map(|u| (u.used_bytes, u.free_bytes)) {
                    Some((Some(used), free)) => {
                        p { strong { (bytes(used)) } " used" }
                        @if let Some(free) = free { p { (bytes(free)) " free" } }
                    }
                    _ => p.hint { "This storage does not report its size (see the database's own tools)." },
                }
            }
        }
        @if applications <= 1 {
            (empty("No applications yet.", html! {
                p { "Create one on the " a href="/console/applications" { "applications page" } ", or with curl:" }
                pre { code { "curl -X POST localhost:3310/v1/applications -H 'content-type: application/json' \\\n  -d '{\"application\": \"orders\", \"address\": \"http://localhost:4000\"}'" } }
            }))
        }
        div #live data-refresh="/console/live" data-every="10000" { (live) }
    };
    Ok(render(&viewer, "Overview", "Overview", body))
}

/// An application's overview: what it owns, and where to look.
fn application_overview(state: &AppState, viewer: &Viewer, app: &str) -> Response {
    let (actions, subscriptions) = state.hub.with_catalog(|c| {
        (
            c.actions
                .values()
                .filter(|a| a.action.application == app)
                .count(),
            c.subscriptions
                .values()
                .filter(|s| s.application == app)
                .count(),
        )
    });
    let body = html! {
        section.cards {
            div.card { h2 { "Actions" } p.big { (count(actions as u64)) } a href="/console/actions" { "See actions" } }
            div.card { h2 { "Subscriptions" } p.big { (count(subscriptions as u64)) } }
        }
        p.hint { "The hub-wide charts are the operator's; signed in as an application you see what is yours." }
    };
    render(viewer, "Overview", &format!("Overview of {app}"), body)
}

/// `GET /console/live`: the live part of the overview (refreshed by the
/// page's script).
pub async fn live(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult {
    if !viewer.is_admin() {
        return Err(super::ConsoleError::Forbidden(
            "The hub-wide overview is the admin's".into(),
        ));
    }
    let live = live_part(&state).await?;
    Ok(page::answer(
        StatusCode::OK,
        live,
        viewer.new_csrf_cookie.as_deref(),
        viewer.secure,
    ))
}

async fn live_part(state: &AppState) -> ConsoleResult<Markup> {
    let stats = state.hub.stats().await?;
    let points = state.console.trend.points();
    let now = state.hub.now_ms();
    let window = (now.saturating_sub(SPAN_MS), now);
    let series =
        |name: &'static str, class: &'static str, value: fn(&Point) -> Option<f64>| Series {
            name,
            class,
            points: points.iter().map(|p| (p.at, value(p))).collect(),
        };
    let last = points.last();
    Ok(html! {
        section.cards aria-label="Deliveries now" {
            div.card { h2 { "Events stored" } p.big { (count(stats.events as u64)) } }
            div.card { h2 { "Pending" } p.big { (count(stats.pending)) } p.hint { "waiting for a first attempt" } }
            div.card { h2 { "Retrying" } p.big { (count(stats.retrying)) } p.hint { "failed, to be tried again" } }
            div.card { h2 { "Dead letters" } p.big { (count(stats.failed)) } p.hint { "gave up: requeue or replay them" } }
            div.card { h2 { "Delivered" } p.big { (count(stats.delivered)) } p.hint { (counted(stats.attempts, "attempt", "attempts")) " in all" } }
        }
        section.charts aria-label="The last hour" {
            (line_chart("chart-published", "Publish rate", &[series("published", "s1", |p| Some(p.published))], window, rate))
            (line_chart("chart-deliveries", "Deliveries", &[
                series("delivered", "s2", |p| Some(p.delivered)),
                series("failed", "s3", |p| Some(p.failed)),
            ], window, rate))
            (line_chart("chart-latency", "Publish → webhook latency", &[
                series("p50", "s1", |p| p.p50),
                series("p99", "s4", |p| p.p99),
            ], window, millis))
            (line_chart("chart-backlog", "Pending, retrying and dead", &[
                series("pending", "s1", |p| Some(p.pending as f64)),
                series("retrying", "s4", |p| Some(p.retrying as f64)),
                series("dead", "s3", |p| Some(p.dead as f64)),
            ], window, count_value))
        }
        p.hint {
            "Rates and latencies are summed over every live hub process; "
            @match last {
                Some(p) => { "last reading " (super::format::when(p.at, now)) "." }
                None => "the first reading comes within seconds of the server's start.",
            }
        }
    })
}
