//! Gists: the delivery of one event to one subscription.

use serde::{Deserialize, Serialize};

use crate::model::Subscription;
use crate::time::iso;
use crate::views::GistView;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GistStatus {
    /// Not attempted yet.
    Pending,
    /// Attempted and failed; another attempt is scheduled.
    Retrying,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt failed: dead-lettered.
    Failed,
}

impl GistStatus {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Retrying => "retrying",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Parses an API name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "retrying" => Some(Self::Retrying),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A delivery record, keyed `{event}.{subscription}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gist {
    /// The event.
    pub event: String,
    /// The subscription.
    pub subscription: String,
    /// The event's action.
    pub action: String,
    /// The subscribing application.
    pub subscriber: String,
    /// Where it is posted.
    pub endpoint: String,
    /// Its state.
    pub status: GistStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_retries: u32,
    /// HTTP status of the last attempt (0: no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status_code: Option<u16>,
    /// What went wrong last (status line and start of the body, or the transport error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last attempt was refused by the hub's address policy: its
    /// error names the address, for the admin only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// When the last attempt started, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_at: Option<u64>,
    /// How long the last attempt took, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ms: Option<u64>,
    /// Publish to successful delivery, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// When the next attempt is due, ms since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    /// When it was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<u64>,
    /// When it was dead-lettered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_at: Option<u64>,
    /// Creation time (the publish, or a backfill), ms since the epoch.
    pub created_at: u64,
    /// Its attempts, oldest first: the first and the last
    /// [`HISTORY_KEPT`] (`attempts` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<AttemptRecord>,
}

/// Attempts a delivery record keeps in its history: the first, and the
/// latest up to this many in all.
pub const HISTORY_KEPT: usize = 12;

/// One attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Its number, from 1.
    pub number: u32,
    /// When it started, ms since the epoch.
    pub at: u64,
    /// How long it took, ms.
    pub ms: u64,
    /// The HTTP status (0: no answer).
    pub status: u16,
    /// What went wrong, if it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The hub's address policy refused it (its error is the admin's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// A replay asked for by the admin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

impl AttemptRecord {
    /// Its error as `admin` (or else the subscriber) may see it.
    pub fn shown_error(&self, admin: bool) -> Option<String> {
        if self.refused && !admin {
            Some(crate::destination::GENERIC_REFUSAL.to_owned())
        } else {
            self.error.clone()
        }
    }
}

impl Gist {
    /// A delivery of `event` (of `action`) to `sub` not attempted yet, due at `due`.
    pub fn pending(
        event: &str,
        action: &str,
        sub: &Subscription,
        due: Option<u64>,
        now: u64,
    ) -> Self {
        Self {
            event: event.to_owned(),
            subscription: sub.id.clone(),
            action: action.to_owned(),
            subscriber: sub.application.clone(),
            endpoint: sub.endpoint.clone(),
            status: GistStatus::Pending,
            attempts: 0,
            max_retries: sub.max_retries,
            last_status_code: None,
            last_error: None,
            refused: false,
            last_attempted_at: None,
            last_ms: None,
            latency_ms: None,
            next_attempt_at: due,
            delivered_at: None,
            dead_at: None,
            created_at: now,
            history: Vec::new(),
        }
    }

    /// Adds an attempt to the history, keeping the first and the latest.
    pub fn remember(&mut self, attempt: AttemptRecord) {
        if self.history.len() >= HISTORY_KEPT {
            self.history.remove(1);
        }
        self.history.push(attempt);
    }

    /// Its key: `{event}.{subscription}`.
    pub fn key(&self) -> String {
        key(&self.event, &self.subscription)
    }

    /// What the API shows.
    /// The last error as `admin` (or else the subscriber) may see it: a
    /// refused destination's detail would map the hub's network.
    pub fn shown_error(&self, admin: bool) -> Option<String> {
        if self.refused && !admin {
            Some(crate::destination::GENERIC_REFUSAL.to_owned())
        } else {
            self.last_error.clone()
        }
    }

    /// What the API shows to the admin (`admin`) or the subscriber.
    pub fn view(&self, admin: bool) -> GistView {
        let key = self.key();
        GistView {
            id: key.clone(),
            gist: key.clone(),
            key,
            event: self.event.clone(),
            subscription: self.subscription.clone(),
            action: self.action.clone(),
            subscriber: self.subscriber.clone(),
            endpoint: self.endpoint.clone(),
            status: self.status.as_str().to_owned(),
            completed: self.status == GistStatus::Delivered,
            retries: self.attempts,
            attempts: self.attempts,
            max_retries: self.max_retries,
            last_status_code: self.last_status_code,
            last_error: self.shown_error(admin),
            last_attempted_at: self.last_attempted_at.map(iso),
            last_ms: self.last_ms,
            latency_ms: self.latency_ms,
            next_attempt_at: self.next_attempt_at.map(iso),
            delivered_at: self.delivered_at.map(iso),
            dead_at: self.dead_at.map(iso),
            timestamped: iso(self.created_at),
            workspace: None,
            payload: None,
            metadata: None,
            publisher: None,
            sleep_until: None,
        }
    }
}

/// The key of the gist of `event` for `subscription`.
pub fn key(event: &str, subscription: &str) -> String {
    format!("{event}.{subscription}")
}

/// It holds no secrets.
impl crate::sealing::HoldsSecrets for Gist {}
