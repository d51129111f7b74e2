//! `tidings hub ...`: the event hub of a running `tidings serve`, for
//! operators: applications, actions, subscriptions, events and deliveries,
//! as tables or `--json`, through the typed `HubClient`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::value::RawValue;
use tidings_http::{EventQuery, GistQuery, HubClient};
use tidings_hub_api::{Backfill, NewAction, NewApplication, NewEvent, NewSubscription};

use crate::output;

/// `tidings hub`'s arguments.
#[derive(Debug, Args)]
pub struct HubArgs {
    /// The server (`tidings serve`). Credentials come from `TIDINGS_API_KEY`
    /// (an application) or `TIDINGS_ADMIN_KEY` (the admin); with neither,
    /// none (the admin in protected mode, on the server's host).
    #[arg(long, env = "TIDINGS_URL", default_value = "http://127.0.0.1:3310")]
    pub url: String,
    #[command(subcommand)]
    pub command: HubCommand,
}

/// What to do on the hub.
#[derive(Debug, Subcommand)]
pub enum HubCommand {
    /// Applications.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// Actions and their schemas.
    #[command(subcommand)]
    Actions(ActionsCommand),
    /// Subscriptions.
    #[command(subcommand)]
    Subscriptions(SubscriptionsCommand),
    /// Events.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Deliveries (gists): list, requeue or purge the failed, replay.
    #[command(subcommand)]
    Gists(GistsCommand),
}

/// `tidings hub apps`.
#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List the applications.
    List,
    /// Register an application (admin); prints its secret and API key once.
    Create {
        /// Its name.
        name: String,
        /// The base URL of its handlers.
        address: String,
    },
}

/// `tidings hub actions`.
#[derive(Debug, Subcommand)]
pub enum ActionsCommand {
    /// List the actions.
    List,
    /// Show one action with its schema.
    Show {
        /// Its name.
        action: String,
    },
    /// Register an action with its JSON Schema.
    Create {
        /// Its name.
        action: String,
        /// The owning application.
        #[arg(long)]
        application: String,
        /// The JSON Schema of its payloads.
        #[arg(long)]
        schema: String,
    },
}

/// `tidings hub subscriptions`.
#[derive(Debug, Subcommand)]
pub enum SubscriptionsCommand {
    /// List the subscriptions (of one action).
    List {
        /// Only this action's.
        #[arg(long)]
        action: Option<String>,
    },
    /// Subscribe an application to an action; prints the signing key once.
    Create {
        /// The subscribing application.
        #[arg(long)]
        application: String,
        /// The action.
        #[arg(long)]
        action: String,
        /// Where to deliver: a path under the application's address, or a URL.
        #[arg(long)]
        handler: String,
    },
}

/// `tidings hub events`.
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// List events, newest first.
    List {
        /// Of this action.
        #[arg(long)]
        action: Option<String>,
        /// Published at or after (ISO 8601 or Unix seconds).
        #[arg(long)]
        from: Option<String>,
        /// Published before.
        #[arg(long)]
        to: Option<String>,
    },
    /// Show one event with its payload.
    Show {
        /// Its id.
        id: String,
    },
    /// Publish an event (the payload as JSON).
    Publish {
        /// The action.
        action: String,
        /// The payload.
        payload: String,
        /// An idempotency key: a repeat returns the first event.
        #[arg(long)]
        deduper: Option<String>,
    },
    /// Deliver the stored events of a date range to a subscription (admin).
    Backfill {
        /// The subscription.
        subscription: String,
        /// From: ISO 8601, Unix seconds, or today, 7d, week, 30d, month.
        #[arg(long)]
        since: Option<String>,
        /// Up to (excluded); default now.
        #[arg(long)]
        until: Option<String>,
        /// Only count them.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which deliveries.
#[derive(Debug, Args)]
pub struct GistFilter {
    /// Of this event.
    #[arg(long)]
    event: Option<String>,
    /// Of this subscription.
    #[arg(long)]
    subscription: Option<String>,
    /// Of this action.
    #[arg(long)]
    action: Option<String>,
    /// pending, retrying, delivered or failed.
    #[arg(long)]
    status: Option<String>,
}

impl GistFilter {
    fn query(&self) -> GistQuery {
        GistQuery {
            event: self.event.clone(),
            subscription: self.subscription.clone(),
            action: self.action.clone(),
            status: self.status.clone(),
        }
    }
}

/// `tidings hub gists`.
#[derive(Debug, Subcommand)]
pub enum GistsCommand {
    /// List deliveries (the first page of 100), newest event first.
    List(GistFilter),
    /// Send the failed deliveries matching the filter again (admin).
    Requeue(GistFilter),
    /// Discard the failed deliveries matching the filter (admin): their
    /// dead letters and records go, the events stay.
    Purge(GistFilter),
    /// Deliver each delivery matching the filter again, now, once (admin),
    /// with a progress bar.
    Replay(GistFilter),
}

fn client(url: &str) -> anyhow::Result<HubClient> {
    let hub = HubClient::connect(url)?;
    Ok(
        match (
            std::env::var("TIDINGS_API_KEY"),
            std::env::var("TIDINGS_ADMIN_KEY"),
        ) {
            (Ok(key), _) if !key.is_empty() => hub.with_api_key(&key),
            (_, Ok(key)) if !key.is_empty() => hub.with_admin_key(&key),
            _ => hub,
        },
    )
}

fn raw(text: &str, what: &str) -> anyhow::Result<Box<RawValue>> {
    RawValue::from_string(text.to_owned()).with_context(|| format!("{what} is not JSON"))
}

/// Runs a `tidings hub` command.
pub async fn run(args: HubArgs, json: bool) -> anyhow::Result<()> {
    let hub = client(&args.url)?;
    match args.command {
        HubCommand::Apps(c) => apps(&hub, c, json).await,
        HubCommand::Actions(c) => actions(&hub, c, json).await,
        HubCommand::Subscriptions(c) => subscriptions(&hub, c, json).await,
        HubCommand::Events(c) => events(&hub, c, json).await,
        HubCommand::Gists(c) => gists(&hub, c, json).await,
    }
}

async fn apps(hub: &HubClient, command: AppsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        AppsCommand::List => {
            let apps = hub.applications().await?;
            if json {
                return output::json(&apps);
            }
            let rows = apps
                .iter()
                .map(|a| {
                    vec![
                        a.application.clone(),
                        a.address.clone(),
                        a.active.to_string(),
                        a.timestamped.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            output::table(&["application", "address", "active", "created"], &rows);
        }
        AppsCommand::Create { name, address } => {
            let made = hub
                .create_application(&NewApplication::new(&name, &address))
                .await?;
            if json {
                return output::json(&made);
            }
            println!(
                "application {}\nsecret  {}\napikey  {}\n(shown only now)",
                made.name, made.secret, made.apikey
            );
        }
    }
    Ok(())
}

async fn actions(hub: &HubClient, command: ActionsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        ActionsCommand::List => {
            let actions = hub.actions(None).await?;
            if json {
                return output::json(&actions);
            }
            let rows = actions
                .iter()
                .map(|a| {
                    vec![
                        a.id.to_string(),
                        a.action.clone(),
                        a.application.clone(),
                        a.status.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            output::table(&["id", "action", "application", "status"], &rows);
        }
        ActionsCommand::Show { action } => {
            let found = hub.actions(Some(&action)).await?;
            let one = found
                .into_iter()
                .find(|a| a.action == action)
                .with_context(|| format!("no action {action:?}"))?;
            output::json(&one)?;
        }
        ActionsCommand::Create {
            action,
            application,
            schema,
        } => {
            let schemata = serde_json::from_str(&schema).context("--schema is not JSON")?;
            let made = hub
                .register_action(&NewAction {
                    action,
                    application,
                    schemata,
                    retention: None,
                    dedup_window: None,
                })
                .await?;
            if json {
                return output::json(&made);
            }
            println!("action {} (id {}) {}", made.action, made.id, made.status);
        }
    }
    Ok(())
}

async fn subscriptions(
    hub: &HubClient,
    command: SubscriptionsCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        SubscriptionsCommand::List { action } => {
            let subs = hub.subscriptions(action.as_deref()).await?;
            if json {
                return output::json(&subs);
            }
            let rows = subs
                .iter()
                .map(|s| {
                    vec![
                        s.subscription.clone(),
                        s.application.clone(),
                        s.action.clone(),
                        s.endpoint.clone(),
                        s.active.to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            output::table(
                &[
                    "subscription",
                    "application",
                    "action",
                    "endpoint",
                    "active",
                ],
                &rows,
            );
        }
        SubscriptionsCommand::Create {
            application,
            action,
            handler,
        } => {
            let made = hub
                .subscribe(&NewSubscription::new(&application, &action, &handler))
                .await?;
            if json {
                return output::json(&made);
            }
            println!(
                "subscription {} -> {}\nsigning key  {} (shown only now)",
                made.subscription,
                made.endpoint,
                made.signing_key.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(())
}

async fn events(hub: &HubClient, command: EventsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        EventsCommand::List { action, from, to } => {
            let query = EventQuery {
                action,
                from,
                to,
                ..EventQuery::default()
            };
            let events = hub.events(&query).await?;
            if json {
                return output::json(&events);
            }
            let rows = events
                .iter()
                .map(|e| {
                    vec![
                        e.event.clone(),
                        e.action.clone(),
                        e.timestamped.clone(),
                        e.payload.get().chars().take(60).collect(),
                    ]
                })
                .collect::<Vec<_>>();
            output::table(&["event", "action", "published", "payload"], &rows);
        }
        EventsCommand::Show { id } => output::json(&hub.event(&id).await?)?,
        EventsCommand::Publish {
            action,
            payload,
            deduper,
        } => {
            let event = hub
                .publish(&NewEvent {
                    action,
                    payload: raw(&payload, "the payload")?,
                    metadata: None,
                    deduper,
                    sleep_until: None,
                    idempotency_key: None,
                })
                .await?;
            if json {
                return output::json(&event);
            }
            println!(
                "{} {} ({} subscriptions{})",
                event.event,
                event.action,
                event.fanout.unwrap_or(0),
                if event.duplicate { ", a repeat" } else { "" }
            );
        }
        EventsCommand::Backfill {
            subscription,
            since,
            until,
            dry_run,
        } => {
            let spinner = indicatif::ProgressBar::new_spinner()
                .with_message(format!("backfilling {subscription}"));
            spinner.enable_steady_tick(Duration::from_millis(120));
            let done = hub
                .backfill(&Backfill {
                    subscription,
                    since,
                    until,
                    dry_run,
                    timeline: None,
                })
                .await;
            spinner.finish_and_clear();
            let done = done?;
            if json {
                return output::json(&done);
            }
            match (done.count, done.backfilled) {
                (Some(n), _) => println!("{n} events would be delivered (dry run)"),
                (_, Some(n)) => println!("{n} events queued for {}", done.subscription),
                _ => println!("nothing to do"),
            }
        }
    }
    Ok(())
}

async fn gists(hub: &HubClient, command: GistsCommand, json: bool) -> anyhow::Result<()> {
    match command {
        GistsCommand::List(filter) => {
            let page = hub.gists(&filter.query(), 1).await?;
            if json {
                return output::json(&page);
            }
            let rows = page
                .data
                .iter()
                .map(|g| {
                    vec![
                        g.id.clone(),
                        g.status.clone(),
                        g.attempts.to_string(),
                        g.last_status_code
                            .map(|c| c.to_string())
                            .unwrap_or_default(),
                        g.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            output::table(
                &["gist", "status", "attempts", "last code", "last error"],
                &rows,
            );
            if page.pages > 1 {
                println!("(page 1 of {}, {} in all)", page.pages, page.total);
            }
        }
        GistsCommand::Requeue(filter) => {
            let done = hub.requeue(&filter.query()).await?;
            if json {
                return output::json(&done);
            }
            println!("{} deliveries sent again", done.requeued);
        }
        GistsCommand::Purge(filter) => {
            let purged = hub.purge(&filter.query()).await?;
            if json {
                return output::json(&serde_json::json!({ "purged": purged }));
            }
            println!("{purged} dead deliveries discarded");
        }
        GistsCommand::Replay(filter) => {
            let mut ids = Vec::new();
            for page in 1.. {
                let got = hub.gists(&filter.query(), page).await?;
                ids.extend(got.data.into_iter().map(|g| g.id));
                if page >= got.pages {
                    break;
                }
            }
            let bar = indicatif::ProgressBar::new(ids.len() as u64);
            let mut delivered = 0u64;
            let mut results = Vec::new();
            for id in ids {
                let replayed = hub.replay(&id).await?;
                delivered += u64::from(replayed.delivered);
                results.push(replayed);
                bar.inc(1);
            }
            bar.finish_and_clear();
            if json {
                return output::json(&results);
            }
            println!("{delivered} of {} delivered", results.len());
        }
    }
    Ok(())
}
