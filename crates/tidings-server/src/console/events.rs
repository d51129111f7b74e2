//! Events: search by action, application, time, event id and deduper; an
//! event's page with its payload and every delivery with its attempts as a
//! timeline; replay of one delivery (the admin).

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use tidings_hub::Page;
use tidings_hub::hub::{EventFilter, GistFilter};
use tidings_hub::model::Event;
use tidings_hub::views::GistView;

use super::format::{count, counted, millis, when};
use super::page::{csrf_field, empty, notice, render_with};
use super::session::Viewer;
use super::{ConsoleError, ConsoleResult, Form, audit};
use crate::state::AppState;

/// Events per page of the search.
const PER_PAGE: usize = 50;

/// The search form's fields.
#[derive(serde::Deserialize, Default, Clone)]
pub struct Search {
    action: Option<String>,
    application: Option<String>,
    id: Option<String>,
    deduper: Option<String>,
    from: Option<String>,
    to: Option<String>,
    page: Option<usize>,
}

fn given(field: &Option<String>) -> Option<String> {
    field
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// A time from the form: ISO 8601 (a browser's `datetime-local` omits the
/// seconds) or Unix seconds, read as UTC.
fn time(field: &Option<String>, name: &str) -> Result<Option<u64>, ConsoleError> {
    let Some(text) = given(field) else {
        return Ok(None);
    };
    let full = if text.len() == 16 && text.as_bytes().get(13) == Some(&b':') {
        format!("{text}:00")
    } else {
        text.clone()
    };
    tidings_hub::time::parse_time(&full)
        .map(Some)
        .ok_or_else(|| ConsoleError::BadRequest(format!("{name}: not a time ({text})")))
}

impl Search {
    fn query(&self, page: usize) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("action", &self.action),
            ("application", &self.application),
            ("id", &self.id),
            ("deduper", &self.deduper),
            ("from", &self.from),
            ("to", &self.to),
        ] {
            if let Some(v) = given(value) {
                query.append_pair(name, &v);
            }
        }
        query.append_pair("page", &page.to_string());
        query.finish()
    }
}

/// `GET /console/events`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(search): Query<Search>,
) -> ConsoleResult {
    let filter = EventFilter {
        id: given(&search.id),
        action: given(&search.action),
        deduper: given(&search.deduper),
        application: given(&search.application),
        from: time(&search.from, "from")?,
        to: time(&search.to, "to")?,
    };
    let page = search.page.unwrap_or(1).max(1);
    let events = state
        .hub
        .list_events(
            &viewer.principal,
            &filter,
            Page::new(Some(page as i64), Some(PER_PAGE as i64)),
        )
        .await?;
    let now = state.hub.now_ms();
    let value = |field: &Option<String>| given(field).unwrap_or_default();
    let body = html! {
        form.filters.wide method="get" action="/console/events" role="search" {
            label { "Action" input name="action" value=(value(&search.action)) placeholder="any"; }
            label { "Application" input name="application" value=(value(&search.application)) placeholder="any"; }
            label { "Event id" input name="id" value=(value(&search.id)); }
            label { "Deduper" input name="deduper" value=(value(&search.deduper)); }
            label { "From (UTC)" input name="from" type="datetime-local" step="1" value=(value(&search.from)); }
            label { "To (UTC)" input name="to" type="datetime-local" step="1" value=(value(&search.to)); }
            button type="submit" { "Search" }
        }
        @if events.is_empty() {
            (empty(if page > 1 { "No more events." } else { "No events match." }, html! {
                p { "Events appear here when applications publish, for example:" }
                pre { code { "curl -X POST localhost:3310/v1/events -H 'content-type: application/json' \\\n  -d '{\"action\": \"orders.created\", \"payload\": {\"id\": \"o-1\"}}'" } }
            }))
        } @else {
            div.scroll {
                table {
                    caption.sr { "Events, newest first" }
                    thead { tr { th scope="col" { "Event" } th scope="col" { "Action" } th scope="col" { "Publisher" } th scope="col" { "Published" } th scope="col" { "Deliveries" } th scope="col" { "Deduper" } } }
                    tbody {
                        @for event in &events {
                            tr {
                                th scope="row" { a href={"/console/events/" (event.id)} { code { (event.id) } } }
                                td { (event.action) }
                                td { (event.publisher) }
                                td { (when(event.published_at(), now)) }
                                td.num { (count(u64::from(event.fanout))) }
                                td { @if let Some(d) = &event.deduper { code { (d) } } }
                            }
                        }
                    }
                }
            }
        }
        nav.pages aria-label="Pages" {
            @if page > 1 { a href={"/console/events?" (search.query(page - 1))} { "← Newer" } }
            span { "Page " (page) }
            @if events.len() == PER_PAGE { a href={"/console/events?" (search.query(page + 1))} { "Older →" } }
        }
    };
    Ok(render_with(
        &viewer,
        StatusCode::OK,
        "Events",
        "Events",
        body,
    ))
}

/// One delivery with its attempts.
struct Delivery {
    view: GistView,
    history: Vec<tidings_hub::model::gist::AttemptRecord>,
    next_attempt_at: Option<u64>,
    delivered_at: Option<u64>,
    dead_at: Option<u64>,
    latency_ms: Option<u64>,
}

async fn deliveries(
    state: &AppState,
    viewer: &Viewer,
    event: &Event,
) -> ConsoleResult<Vec<Delivery>> {
    let filter = GistFilter {
        event: Some(event.id.clone()),
        ..GistFilter::default()
    };
    let listed = state
        .hub
        .list_gists(&viewer.principal, &filter, Page::new(Some(1), Some(10_000)))
        .await?;
    let mut all = Vec::with_capacity(listed.data.len());
    for view in listed.data {
        // Listed for this viewer: its record may be read.
        let gist = state.hub.gist(&view.key).await.ok();
        all.push(Delivery {
            history: gist.as_ref().map(|g| g.history.clone()).unwrap_or_default(),
            next_attempt_at: gist.as_ref().and_then(|g| g.next_attempt_at),
            delivered_at: gist.as_ref().and_then(|g| g.delivered_at),
            dead_at: gist.as_ref().and_then(|g| g.dead_at),
            latency_ms: gist.as_ref().and_then(|g| g.latency_ms),
            view,
        });
    }
    Ok(all)
}

fn status_badge(status: &str) -> Markup {
    let class = match status {
        "delivered" => "ok",
        "failed" => "bad",
        "retrying" => "warn",
        _ => "",
    };
    html! { span class={"badge " (class)} { (status) } }
}

fn timeline(d: &Delivery, admin: bool, now: u64) -> Markup {
    let skipped = d.view.attempts as usize > d.history.len();
    html! {
        ol.timeline aria-label={"Attempts to " (d.view.endpoint)} {
            @for (i, a) in d.history.iter().enumerate() {
                @if skipped && i == 1 {
                    li.gap { span.hint { (d.view.attempts as usize - d.history.len()) " earlier attempts not kept" } }
                }
                li class=(if (200..300).contains(&a.status) { "ok" } else { "bad" }) {
                    span.num { "#" (a.number) }
                    " " (when(a.at, now)) " "
                    @if a.status == 0 { span.badge.bad { "no answer" } } @else if (200..300).contains(&a.status) { span.badge.ok { (a.status) } } @else { span.badge.bad { (a.status) } }
                    " " span.hint { (millis(a.ms as f64)) }
                    @if a.replay { " " span.badge { "replay" } }
                    @if let Some(e) = a.shown_error(admin) { br; span.error { (e) } }
                }
            }
            @if d.history.is_empty() && d.view.attempts == 0 {
                li { span.hint { "Not attempted yet." } }
            }
            @if let Some(next) = d.next_attempt_at.filter(|_| d.view.status == "retrying" || d.view.status == "pending") {
                li.next { "Next attempt " (when(next, now)) }
            }
            @if let Some(at) = d.delivered_at {
                li.ok { "Delivered " (when(at, now)) @if let Some(ms) = d.latency_ms { " · " (millis(ms as f64)) " after it was due" } }
            }
            @if let Some(at) = d.dead_at {
                li.bad { "Dead-lettered " (when(at, now)) " after " (counted(u64::from(d.view.attempts), "attempt", "attempts")) }
            }
        }
    }
}

async fn event_page(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    status: StatusCode,
    result: Option<Markup>,
) -> ConsoleResult {
    let event = state.hub.event_for(&viewer.principal, id).await?;
    let deliveries = deliveries(state, viewer, &event).await?;
    let now = state.hub.now_ms();
    let pretty = |raw: &serde_json::value::RawValue| {
        serde_json::from_str::<serde_json::Value>(raw.get())
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or_else(|_| raw.get().to_owned())
    };
    let body = html! {
        @if let Some(result) = result { (result) }
        dl.facts {
            dt { "Action" } dd { a href={"/console/actions/" (event.action)} { (event.action) } }
            dt { "Publisher" } dd { (event.publisher) }
            dt { "Published" } dd { (when(event.published_at(), now)) }
            @if event.deliver_at > event.published_at() { dt { "Due" } dd { (when(event.deliver_at, now)) } }
            @if let Some(d) = &event.deduper { dt { "Deduper" } dd { code { (d) } } }
            @if let Some(t) = event.trace_id() { dt { "Trace" } dd { code { (t) } } }
        }
        div.two {
            section { h2 { "Payload" } pre.json tabindex="0" { code { (pretty(&event.payload)) } } }
            section { h2 { "Metadata" } pre.json tabindex="0" { code { (pretty(&event.metadata)) } } }
        }
        h2 { "Deliveries (" (deliveries.len()) ")" }
        @if deliveries.is_empty() {
            p.hint { "No subscription was active for this action when it was published (or none of them is yours)." }
        }
        @for d in &deliveries {
            section.delivery data-gist=(d.view.key) {
                h3 {
                    (status_badge(&d.view.status)) " "
                    (d.view.subscriber) " · " code { (d.view.endpoint) }
                    " " span.hint { (counted(u64::from(d.view.attempts), "attempt", "attempts")) " of " (d.view.max_retries) }
                }
                (timeline(d, viewer.is_admin(), now))
                @if viewer.is_admin() {
                    form method="post" action={"/console/events/" (event.id) "/replay"} data-confirm={"Deliver this event to " (d.view.endpoint) " again now?"} {
                        (csrf_field(&viewer.csrf))
                        input type="hidden" name="gist" value=(d.view.key);
                        button type="submit" { "Replay to this subscription" }
                    }
                }
            }
        }
    };
    Ok(render_with(
        viewer,
        status,
        "Events",
        &format!("Event {}", event.id),
        body,
    ))
}

/// `GET /console/events/{id}`.
pub async fn one(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
) -> ConsoleResult {
    event_page(&state, &viewer, &id, StatusCode::OK, None).await
}

/// `POST /console/events/{id}/replay` (the admin): delivers the event to
/// one subscription now (`gist`: the delivery's key), outside its retries.
pub async fn replay(
    State(state): State<AppState>,
    Path(id): Path<String>,
    viewer: Viewer,
    form: Form,
) -> ConsoleResult {
    if !viewer.is_admin() {
        return Err(ConsoleError::Forbidden("Replays are the admin's".into()));
    }
    let gist = form.text("gist").unwrap_or_default();
    if !gist.starts_with(&format!("{id}.")) {
        return Err(ConsoleError::BadRequest(
            "That delivery is not this event's".into(),
        ));
    }
    let replayed = state.replayer.replay(&gist).await?;
    audit(&state, &viewer, "delivery.replay", &gist).await;
    let code = replayed
        .status_code
        .map_or_else(|| "no answer".to_owned(), |c| c.to_string());
    let result = if replayed.delivered {
        notice(
            "ok",
            html! { p { "Replayed: delivered (" (code) ") in " (replayed.ms) " ms." } },
        )
    } else {
        notice(
            "bad",
            html! { p { "Replayed, not delivered: " (code) " " (replayed.error.unwrap_or_default()) } },
        )
    };
    event_page(&state, &viewer, &id, StatusCode::OK, Some(result)).await
}
