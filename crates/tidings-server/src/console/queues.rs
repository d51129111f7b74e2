//! Queues (the queue API's, not the hub's own): each with its length, dead
//! letters and oldest message's age; a queue's page with its groups
//! (ready, delayed, pending, consumers and when each was last seen) and its
//! dead letters to inspect, requeue or purge. The same rules as the queue
//! API: an application sees the queues its allow-list names.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use tidings_core::{DeadLetterSelection, MessageId, QueueInfo, QueueName};

use super::format::{count, counted, millis, when};
use super::page::{csrf_field, empty, notice, render_with};
use super::session::Viewer;
use super::{ConsoleError, ConsoleResult, Form, audit};
use crate::state::AppState;

/// Dead letters listed on a queue's page.
const SHOWN: usize = 50;
/// Messages peeked at per page.
const PEEKED: usize = 20;

/// Where the page of peeked messages starts.
#[derive(serde::Deserialize, Default)]
pub struct PeekFrom {
    after: Option<String>,
}

/// A queue the viewer may see, as the queue API decides.
fn queue(state: &AppState, viewer: &Viewer, name: &str) -> Result<QueueName, ConsoleError> {
    let queue = QueueName::new(name).map_err(|e| ConsoleError::BadRequest(e.to_string()))?;
    if name.starts_with("hub.") {
        return Err(ConsoleError::Forbidden(
            "Queues named hub.… belong to the event hub: see Subscriptions and Dead letters".into(),
        ));
    }
    if !state.hub.may_use_queue(&viewer.principal, name) {
        return Err(ConsoleError::Forbidden(format!(
            "Queue {name} is not among this application's queues"
        )));
    }
    Ok(queue)
}

fn age(info: &QueueInfo) -> String {
    info.oldest_message_age
        .map_or_else(|| "–".to_owned(), |a| millis(a.as_millis() as f64))
}

/// The queues the viewer may use, with their counts (as the queue API
/// lists them: not the hub's own).
pub(super) async fn visible(state: &AppState, viewer: &Viewer) -> ConsoleResult<Vec<QueueInfo>> {
    let broker = state.hub.broker();
    let mut infos = Vec::new();
    for name in broker
        .list_queues()
        .await
        .map_err(tidings_hub::HubError::from)?
    {
        let shown = !name.as_str().starts_with("hub.")
            && state.hub.may_use_queue(&viewer.principal, name.as_str());
        if !shown {
            continue;
        }
        match broker.queue_info(&name).await {
            Ok(info) => infos.push(info),
            // Deleted between the two reads.
            Err(tidings_core::Error::QueueNotFound(_)) => {}
            Err(e) => return Err(tidings_hub::HubError::from(e).into()),
        }
    }
    Ok(infos)
}

/// `GET /console/queues`.
pub async fn list(State(state): State<AppState>, viewer: Viewer) -> ConsoleResult {
    let infos = visible(&state, &viewer).await?;
    let body = html! {
        @if infos.is_empty() {
            (empty("No queues yet.", html! {
                p { "Queues are made by services that send to them (any Tidings client, or LeanMQ on Redis), or with:" }
                pre { code { "curl -X POST localhost:3310/v1/queues -H 'content-type: application/json' -d '{\"name\": \"emails\"}'" } }
            }))
        } @else {
            div.scroll {
                table {
                    caption.sr { "Queues" }
                    thead { tr { th scope="col" { "Queue" } th scope="col" { "Length" } th scope="col" { "Groups" } th scope="col" { "Pending" } th scope="col" { "Oldest message" } th scope="col" { "Dead letters" } } }
                    tbody {
                        @for info in &infos {
                            tr {
                                th scope="row" { a href={"/console/queues/" (info.name)} { (info.name) } }
                                td.num { (count(info.length)) }
                                td.num { (info.groups.len()) }
                                td.num { (count(info.groups.iter().map(|g| g.pending).sum())) }
                                td { (age(info)) }
                                td.num { @if info.dead_letters > 0 { span.badge.bad { (count(info.dead_letters)) } } @else { "0" } }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(render_with(
        &viewer,
        StatusCode::OK,
        "Queues",
        "Queues",
        body,
    ))
}

async fn queue_page(
    state: &AppState,
    viewer: &Viewer,
    queue: &QueueName,
    (status, result): (StatusCode, Option<Markup>),
    after: Option<&str>,
) -> ConsoleResult {
    let broker = state.hub.broker();
    let after = after.filter(|a| !a.is_empty()).map(MessageId::from);
    let peeked = broker
        .peek(queue, after.as_ref(), PEEKED)
        .await
        .map_err(tidings_hub::HubError::from)?;
    let info = broker.queue_info(queue).await.map_err(|e| match e {
        tidings_core::Error::QueueNotFound(_) => {
            ConsoleError::NotFound(format!("No queue {queue}"))
        }
        e => tidings_hub::HubError::from(e).into(),
    })?;
    let letters = broker
        .dead_letters(queue, None, SHOWN)
        .await
        .map_err(tidings_hub::HubError::from)?;
    let now = state.hub.now_ms();
    let action = format!("/console/queues/{queue}/dead-letters");
    let body = html! {
        @if let Some(result) = result { (result) }
        section.cards {
            div.card { h2 { "Length" } p.big { (count(info.length)) } p.hint { (count(info.retained)) " retained" } }
            div.card { h2 { "Oldest message" } p.big { (age(&info)) } }
            div.card { h2 { "Dead letters" } p.big { (count(info.dead_letters)) } p.hint { (count(info.dead_lettered_total)) " in all, " (count(info.expired_total)) " expired" } }
            div.card { h2 { "Created" } p { (when(info.created_at.as_millis(), now)) } }
        }
        h2 { "Consumer groups" }
        @if info.groups.is_empty() {
            p.hint { "No group has received from this queue yet." }
        } @else {
            div.scroll {
                table {
                    caption.sr { "Consumer groups" }
                    thead { tr { th scope="col" { "Group" } th scope="col" { "Ready (lag)" } th scope="col" { "Delayed" } th scope="col" { "Pending" } th scope="col" { "Consumers" } } }
                    tbody {
                        @for g in &info.groups {
                            tr {
                                th scope="row" { (g.name) }
                                td.num { (count(g.ready)) }
                                td.num { (count(g.delayed)) }
                                td.num { (count(g.pending)) }
                                td {
                                    @if g.consumers.is_empty() { span.hint { "none" } }
                                    @for c in &g.consumers {
                                        div { code { (c.name) } " " span.hint { (counted(c.pending, "pending", "pending")) ", seen " (when(c.last_seen.as_millis(), now)) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Messages" }
        @if peeked.is_empty() {
            p.hint { @if after.is_some() { "No more messages. " a href={"/console/queues/" (queue)} { "From the start" } } @else { "The queue holds no message." } }
        } @else {
            p.hint { "Looked at, not taken: oldest first, " (if after.is_some() { "after the page before" } else { "from the start" }) "." }
            div.scroll {
                table.messages {
                    caption.sr { "Messages, oldest first" }
                    thead { tr { th scope="col" { "Message" } th scope="col" { "Enqueued" } th scope="col" { "Payload" } } }
                    tbody {
                        @for m in &peeked {
                            tr {
                                th scope="row" { code { (m.id) } @if let Some(d) = &m.dedup_id { br; span.hint { "dedup " (d) } } }
                                td { (when(m.enqueued_at.as_millis(), now)) }
                                td {
                                    details {
                                        summary { code { (preview(m.payload.as_str())) } }
                                        pre.json { code { (pretty(m.payload.as_str())) } }
                                        @if !m.headers.is_empty() {
                                            dl.facts { @for (k, v) in m.headers.iter() { dt { (k) } dd { code { (v) } } } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if peeked.len() == PEEKED {
                @if let Some(last) = peeked.last() {
                    nav.pages aria-label="Messages" { a href={"/console/queues/" (queue) "?after=" (last.id)} { "Later messages →" } }
                }
            }
        }
        h2 { "Dead letters" }
        @if letters.is_empty() {
            p.hint { "None." }
        } @else {
            div.manage {
                form method="post" action=(action) data-confirm={"Requeue all " (count(info.dead_letters)) " dead letters of " (queue) "?"} {
                    (csrf_field(&viewer.csrf)) input type="hidden" name="all" value="true";
                    button type="submit" name="do" value="requeue" { "Requeue all" }
                }
                form method="post" action=(action) data-confirm={"Purge all " (count(info.dead_letters)) " dead letters of " (queue) "? They are deleted."} {
                    (csrf_field(&viewer.csrf)) input type="hidden" name="all" value="true";
                    button.danger type="submit" name="do" value="purge" { "Purge all" }
                }
            }
            form #selected-letters method="post" action=(action) { (csrf_field(&viewer.csrf)) }
            div.scroll {
                table {
                    caption.sr { "Dead letters, oldest first" }
                    thead { tr { th scope="col" { span.sr { "Select" } } th scope="col" { "Letter" } th scope="col" { "Reason" } th scope="col" { "Attempts" } th scope="col" { "Died" } } }
                    tbody {
                        @for d in &letters {
                            tr {
                                td { input type="checkbox" name="id" value=(d.id) form="selected-letters" aria-label={"Select " (d.id)}; }
                                th scope="row" {
                                    details {
                                        summary { code { (d.id) } }
                                        @if let Some(group) = &d.group { p.hint { "group " (group) } }
                                        pre.json { code { (pretty(d.payload.as_str())) } }
                                        @if !d.headers.is_empty() {
                                            dl.facts { @for (k, v) in d.headers.iter() { dt { (k) } dd { code { (v) } } } }
                                        }
                                    }
                                }
                                td { (d.reason) }
                                td.num { (d.attempts) }
                                td { (when(d.dead_lettered_at.as_millis(), now)) }
                            }
                        }
                    }
                }
            }
            div.manage {
                button type="submit" form="selected-letters" name="do" value="requeue" { "Requeue selected" }
                button.danger type="submit" form="selected-letters" name="do" value="purge" data-confirm="Purge the selected dead letters? They are deleted." { "Purge selected" }
            }
            @if info.dead_letters as usize > letters.len() {
                p.hint { "The oldest " (letters.len()) " of " (count(info.dead_letters)) " are listed; “all” acts on every one." }
            }
        }
    };
    Ok(render_with(
        viewer,
        status,
        "Queues",
        &format!("Queue {queue}"),
        body,
    ))
}

/// The start of a payload, on one line.
fn preview(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(80) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_owned())
}

/// `GET /console/queues/{name}`.
pub async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
    viewer: Viewer,
    Query(from): Query<PeekFrom>,
) -> ConsoleResult {
    let queue = queue(&state, &viewer, &name)?;
    let shown = (StatusCode::OK, None);
    queue_page(&state, &viewer, &queue, shown, from.after.as_deref()).await
}

/// `POST /console/queues/{name}/dead-letters`: `do=requeue|purge`, for
/// `all=true` or the `id` fields given (as the queue API allows).
pub async fn act(
    State(state): State<AppState>,
    Path(name): Path<String>,
    viewer: Viewer,
    form: Form,
) -> ConsoleResult {
    let queue = queue(&state, &viewer, &name)?;
    let selection = if form.get("all") == Some("true") {
        DeadLetterSelection::All
    } else {
        let ids: Vec<MessageId> = form.all("id").into_iter().map(MessageId::from).collect();
        if ids.is_empty() {
            let result = notice("bad", html! { p { "Select at least one dead letter." } });
            return queue_page(
                &state,
                &viewer,
                &queue,
                (StatusCode::BAD_REQUEST, Some(result)),
                None,
            )
            .await;
        }
        DeadLetterSelection::Ids(ids)
    };
    let broker = state.hub.broker();
    let (done, action, said) = match form.get("do") {
        Some("requeue") => (
            broker.requeue_dead_letters(&queue, selection).await,
            "queue.dead_letters.requeue",
            "requeued",
        ),
        Some("purge") => (
            broker.purge_dead_letters(&queue, selection).await,
            "queue.dead_letters.purge",
            "purged",
        ),
        _ => return Err(ConsoleError::BadRequest("do: requeue or purge".into())),
    };
    let done = done.map_err(tidings_hub::HubError::from)?;
    audit(&state, &viewer, action, &name).await;
    let result = notice(
        "ok",
        html! { p { (counted(done, "dead letter", "dead letters")) " " (said) "." } },
    );
    queue_page(
        &state,
        &viewer,
        &queue,
        (StatusCode::OK, Some(result)),
        None,
    )
    .await
}
