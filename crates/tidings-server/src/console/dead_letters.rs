//! Dead letters of subscriptions: the deliveries that gave up, per
//! subscription, each with its last error; requeue one, the selected or
//! all, or purge them (with confirmation). The queues' own dead letters
//! are on each queue's page ([`super::queues`]).

use axum::extract::{Query, State};
use axum::http::StatusCode;
use maud::{Markup, html};
use tidings_hub::Page;
use tidings_hub::hub::GistFilter;
use tidings_hub::model::GistStatus;

use super::format::{count, counted, when_iso};
use super::page::{csrf_field, empty, notice, render_with};
use super::session::Viewer;
use super::{ConsoleError, ConsoleResult, Form, audit};
use crate::state::AppState;

/// Dead letters listed per subscription.
const SHOWN: usize = 50;

#[derive(serde::Deserialize, Default)]
pub struct Which {
    subscription: Option<String>,
}

async fn page_body(
    state: &AppState,
    viewer: &Viewer,
    which: &Which,
    result: Option<Markup>,
) -> ConsoleResult<Markup> {
    let counts = state.hub.delivery_counts().await?;
    let subs: Vec<_> = state
        .hub
        .list_subscriptions(
            &viewer.principal,
            which.subscription.as_deref().filter(|s| !s.is_empty()),
            None,
            None,
            None,
            Page::new(Some(1), Some(i64::MAX)),
        )
        .into_iter()
        .filter(|s| counts.get(&s.subscription).is_some_and(|c| c.failed > 0))
        .collect();
    let now = state.hub.now_ms();
    let admin = viewer.is_admin();
    let mut sections = Vec::with_capacity(subs.len());
    for sub in &subs {
        let total = counts.get(&sub.subscription).map_or(0, |c| c.failed);
        let filter = GistFilter {
            subscription: Some(sub.subscription.clone()),
            status: Some(GistStatus::Failed),
            ..GistFilter::default()
        };
        let letters = state
            .hub
            .list_gists(
                &viewer.principal,
                &filter,
                Page::new(Some(1), Some(SHOWN as i64)),
            )
            .await?
            .data;
        let form_id = format!("selected-{}", sub.subscription);
        sections.push(html! {
            section.delivery data-subscription=(sub.subscription) {
                h2 {
                    (sub.application) " ← " (sub.action) " · " code { (sub.endpoint) }
                    " " span.badge.bad { (counted(total, "dead letter", "dead letters")) }
                }
                @if admin {
                    div.manage {
                        form method="post" action="/console/dead-letters" data-confirm={"Requeue all " (count(total)) " dead letters of " (sub.subscription) "? Each is delivered again from its first attempt."} {
                            (csrf_field(&viewer.csrf))
                            input type="hidden" name="subscription" value=(sub.subscription);
                            input type="hidden" name="all" value="true";
                            button type="submit" name="do" value="requeue" { "Requeue all" }
                        }
                        form method="post" action="/console/dead-letters" data-confirm={"Purge all " (count(total)) " dead letters of " (sub.subscription) "? They are discarded and cannot be requeued."} {
                            (csrf_field(&viewer.csrf))
                            input type="hidden" name="subscription" value=(sub.subscription);
                            input type="hidden" name="all" value="true";
                            button.danger type="submit" name="do" value="purge" { "Purge all" }
                        }
                    }
                    form id=(form_id) method="post" action="/console/dead-letters" {
                        (csrf_field(&viewer.csrf))
                        input type="hidden" name="subscription" value=(sub.subscription);
                    }
                }
                div.scroll {
                    table {
                        caption.sr { "Dead letters of " (sub.subscription) }
                        thead { tr {
                            @if admin { th scope="col" { span.sr { "Select" } } }
                            th scope="col" { "Event" } th scope="col" { "Attempts" } th scope="col" { "Last error" } th scope="col" { "Died" }
                            @if admin { th scope="col" { span.sr { "Requeue" } } }
                        } }
                        tbody {
                            @for g in &letters {
                                tr {
                                    @if admin { td { input type="checkbox" name="gist" value=(g.key) form=(form_id) aria-label={"Select " (g.event)}; } }
                                    th scope="row" { a href={"/console/events/" (g.event)} { code { (g.event) } } }
                                    td.num { (g.attempts) }
                                    td {
                                        @match g.last_status_code { Some(c) if c > 0 => span.badge.bad { (c) }, _ => span.badge.bad { "no answer" } }
                                        " " (g.last_error.as_deref().unwrap_or(""))
                                    }
                                    td { @if let Some(at) = &g.dead_at { (when_iso(at, now)) } }
                                    @if admin {
                                        td {
                                            form method="post" action="/console/dead-letters" {
                                                (csrf_field(&viewer.csrf))
                                                input type="hidden" name="subscription" value=(sub.subscription);
                                                input type="hidden" name="gist" value=(g.key);
                                                button type="submit" name="do" value="requeue" { "Requeue" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if admin {
                    div.manage {
                        button type="submit" form=(form_id) name="do" value="requeue" { "Requeue selected" }
                        button.danger type="submit" form=(form_id) name="do" value="purge" data-confirm="Purge the selected dead letters? They cannot be requeued afterwards." { "Purge selected" }
                    }
                }
                @if total as usize > letters.len() {
                    p.hint { "The oldest " (letters.len()) " of " (count(total)) " are listed; “all” acts on every one." }
                }
            }
        });
    }
    let queues = queues_with_letters(state, viewer).await?;
    Ok(html! {
        @if let Some(result) = result { (result) }
        @if subs.is_empty() {
            (empty("No dead letters of subscriptions.", html! {
                p { "A delivery becomes a dead letter when its endpoint has failed every attempt; it is listed here to requeue or purge." }
            }))
        }
        @for section in sections { (section) }
        h2 { "Queues" }
        @if queues.is_empty() {
            p.hint { "No queue holds dead letters." }
        } @else {
            ul {
                @for (name, n) in &queues {
                    li { a href={"/console/queues/" (name)} { (name) } ": " (counted(*n, "dead letter", "dead letters")) " (inspect, requeue or purge them on its page)" }
                }
            }
        }
    })
}

/// The queues the viewer may use that hold dead letters, with how many.
async fn queues_with_letters(
    state: &AppState,
    viewer: &Viewer,
) -> ConsoleResult<Vec<(String, u64)>> {
    Ok(super::queues::visible(state, viewer)
        .await?
        .into_iter()
        .filter(|info| info.dead_letters > 0)
        .map(|info| (info.name.to_string(), info.dead_letters))
        .collect())
}

/// `GET /console/dead-letters`.
pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(which): Query<Which>,
) -> ConsoleResult {
    let body = page_body(&state, &viewer, &which, None).await?;
    Ok(render_with(
        &viewer,
        StatusCode::OK,
        "Dead letters",
        "Dead letters",
        body,
    ))
}

/// `POST /console/dead-letters` (the admin): `do=requeue|purge` for one
/// subscription's dead letters: `all=true`, or the `gist` fields given.
pub async fn act(State(state): State<AppState>, viewer: Viewer, form: Form) -> ConsoleResult {
    if !viewer.is_admin() {
        return Err(ConsoleError::Forbidden(
            "Requeuing and purging dead letters are the admin's".into(),
        ));
    }
    let subscription = form
        .text("subscription")
        .ok_or_else(|| ConsoleError::BadRequest("which subscription?".into()))?;
    let purge = match form.get("do") {
        Some("requeue") => false,
        Some("purge") => true,
        _ => return Err(ConsoleError::BadRequest("do: requeue or purge".into())),
    };
    let selected: Vec<String> = form.all("gist");
    let all = form.get("all") == Some("true");
    if !all && selected.is_empty() {
        let body = page_body(
            &state,
            &viewer,
            &Which::default(),
            Some(notice(
                "bad",
                html! { p { "Select at least one dead letter." } },
            )),
        )
        .await?;
        return Ok(render_with(
            &viewer,
            StatusCode::BAD_REQUEST,
            "Dead letters",
            "Dead letters",
            body,
        ));
    }
    let filters: Vec<GistFilter> = if all {
        vec![GistFilter {
            subscription: Some(subscription.clone()),
            ..GistFilter::default()
        }]
    } else {
        selected
            .iter()
            .filter(|key| key.ends_with(&format!(".{subscription}")))
            .map(|key| GistFilter {
                id: Some(key.clone()),
                subscription: Some(subscription.clone()),
                ..GistFilter::default()
            })
            .collect()
    };
    let mut done = 0u64;
    for filter in &filters {
        done += if purge {
            state
                .hub
                .purge_dead_deliveries(&viewer.principal, filter)
                .await?
        } else {
            state.hub.requeue(&viewer.principal, filter).await?.requeued
        };
    }
    let (action, said) = if purge {
        ("delivery.purge", "purged")
    } else {
        ("delivery.requeue", "requeued")
    };
    audit(&state, &viewer, action, &subscription).await;
    let result = notice(
        "ok",
        html! { p { (counted(done, "dead letter", "dead letters")) " " (said) "." } },
    );
    let body = page_body(&state, &viewer, &Which::default(), Some(result)).await?;
    Ok(render_with(
        &viewer,
        StatusCode::OK,
        "Dead letters",
        "Dead letters",
        body,
    ))
}
