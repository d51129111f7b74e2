//! Command-line arguments.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Tidings: durable queues, dead letters and the patterns services build on them.
#[derive(Debug, Parser)]
#[command(name = "tidings", version, about)]
pub struct Cli {
    /// The broker: a data directory (embedded engine), `file:PATH`, `memory:`,
    /// `redis://host:port/db?prefix=mq:` (Redis, shared with Python LeanMQ),
    /// `postgres://user@host/db?schema=tidings` (PostgreSQL)
    /// or `http://host:3310` (a `tidings serve`; key from `TIDINGS_API_KEY`).
    #[arg(long, global = true, env = "TIDINGS_BROKER", default_value = tidings::DEFAULT_BROKER_URL)]
    pub broker: String,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, inspect, feed and drain queues.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Inspect, requeue and purge dead letters.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Run the event hub: the HTTP API (Amebo-compatible) and webhook delivery.
    Serve(Box<crate::serve::ServeArgs>),
    /// The event hub of a running `tidings serve`: applications, actions,
    /// subscriptions, events, deliveries.
    Hub(crate::hub_commands::HubArgs),
    /// Check a webhook receiver: send it signed deliveries (valid, repeated,
    /// tampered, wrongly signed, stale, re-ordered) and report which it
    /// accepted and refused. Sends only to the URL given.
    VerifyReceiver(crate::verify_receiver::VerifyReceiverArgs),
    /// Create or upgrade the broker's schema (PostgreSQL), then exit.
    Migrate {
        /// Only report the schema's version; change nothing.
        #[arg(long)]
        check: bool,
    },
}

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Create a queue (no change if it exists with the same settings).
    Create {
        /// Queue name.
        name: String,
        #[command(flatten)]
        settings: QueueSettings,
    },
    /// List queues.
    List,
    /// Show a queue's counts, groups and settings.
    Info {
        /// Queue name.
        name: String,
    },
    /// Send a message (the JSON payload as argument, or one payload per line on stdin).
    Send {
        /// Queue name.
        name: String,
        /// JSON payload; omit or use `-` to read one payload per line from stdin.
        payload: Option<String>,
        /// Header as NAME=VALUE (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Caller-chosen id for deduplication.
        #[arg(long)]
        dedup_id: Option<String>,
        /// Time to live, e.g. 30s.
        #[arg(long, value_parser = duration)]
        ttl: Option<Duration>,
        /// Deliver no earlier than this from now, e.g. 5m.
        #[arg(long, value_parser = duration)]
        delay: Option<Duration>,
    },
    /// Receive messages for a consumer of a group.
    Receive {
        /// Queue name.
        name: String,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Consumer name within the group.
        #[arg(long, default_value = "cli")]
        consumer: String,
        /// Most messages to take.
        #[arg(long, default_value_t = 10)]
        max: usize,
        /// How long to wait for the first message, e.g. 5s.
        #[arg(long, value_parser = duration, default_value = "0s")]
        wait: Duration,
        /// Acknowledge what was received.
        #[arg(long)]
        ack: bool,
    },
    /// Acknowledge messages delivered to a group.
    Ack {
        /// Queue name.
        name: String,
        /// Consumer group.
        #[arg(long)]
        group: String,
        /// Message ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Delete every message of a queue (dead letters stay).
    Purge {
        /// Queue name.
        name: String,
    },
    /// Delete a queue with its messages, groups and dead letters.
    Delete {
        /// Queue name.
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnExpiry {
    /// Delete expired messages.
    Drop,
    /// Move expired messages to the dead-letter queue.
    DeadLetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Sends return after fsync.
    Sync,
    /// Sends return once handed to the OS.
    Buffered,
}

#[derive(Debug, Args)]
pub struct QueueSettings {
    /// Redeliver a message not acked within this time.
    #[arg(long, value_parser = duration, default_value = "30s")]
    pub visibility_timeout: Duration,
    /// Dead-letter a message after this many deliveries.
    #[arg(long, default_value_t = 5)]
    pub max_deliveries: u32,
    /// Time to live of messages sent without one.
    #[arg(long, value_parser = duration)]
    pub default_ttl: Option<Duration>,
    /// What happens to expired messages.
    #[arg(long, value_enum, default_value = "drop")]
    pub on_expiry: OnExpiry,
    /// How long dedup ids are remembered.
    #[arg(long, value_parser = duration, default_value = "2m")]
    pub dedup_window: Duration,
    /// Keep at most this many messages acked by every group.
    #[arg(long)]
    pub retain_max_len: Option<u64>,
    /// Keep messages acked by every group at most this long.
    #[arg(long, value_parser = duration)]
    pub retain_max_age: Option<Duration>,
    /// Durability of sends (default: the broker's).
    #[arg(long, value_enum)]
    pub durability: Option<DurabilityArg>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List a queue's dead letters, oldest first.
    List {
        /// Queue name.
        name: String,
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this dead-letter id (the last one of the previous page).
        #[arg(long)]
        after: Option<String>,
    },
    /// Move dead letters back to their queue.
    Requeue {
        /// Queue name.
        name: String,
        /// Dead-letter ids (from `dlq list`).
        ids: Vec<String>,
        /// Requeue every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Delete dead letters.
    Purge {
        /// Queue name.
        name: String,
        /// Dead-letter ids (from `dlq list`).
        ids: Vec<String>,
        /// Delete every dead letter.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
}
