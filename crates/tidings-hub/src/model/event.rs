//! Events: one published payload of an action.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ids::row_time;
use crate::time::iso;
use crate::views::EventView;

/// A stored event. Payload and metadata are kept as the bytes the publisher
/// sent (validated JSON), so key order and number formatting survive.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// 32 hex characters; sorts by publish time.
    pub id: String,
    /// The row id (publish time and sequence), also in `id`.
    pub row: u64,
    /// The action's name.
    pub action: String,
    /// The payload.
    pub payload: Box<RawValue>,
    /// Free-form metadata, delivered with the payload.
    pub metadata: Box<RawValue>,
    /// The publisher's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deduper: Option<String>,
    /// Who published it: `service:<app>` or `admin`.
    pub publisher: String,
    /// W3C trace context of the publish request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// Not delivered before this time (ms since the epoch).
    pub deliver_at: u64,
    /// How many subscriptions it was fanned out to.
    pub fanout: u32,
}

impl Event {
    /// Publish time, ms since the epoch.
    pub fn published_at(&self) -> u64 {
        row_time(self.row)
    }

    /// The trace id of its trace context.
    pub fn trace_id(&self) -> Option<&str> {
        self.traceparent
            .as_deref()
            .and_then(|tp| tp.split('-').nth(1))
    }

    /// What the API shows (publish response and lists).
    pub fn view(&self) -> EventView {
        EventView {
            event: self.id.clone(),
            row_id: self.row,
            action: self.action.clone(),
            payload: self.payload.clone(),
            metadata: self.metadata.clone(),
            deduper: self.deduper.clone(),
            publisher: self.publisher.clone(),
            timestamped: iso(self.published_at()),
            sleep_until: iso(self.due_at()),
            trace_id: self.trace_id().map(str::to_owned),
            fanout: None,
            duplicate: false,
        }
    }

    /// When its first delivery is due, ms since the epoch (not before it
    /// was published).
    pub fn due_at(&self) -> u64 {
        self.deliver_at.max(self.published_at())
    }
}

/// Checks a `traceparent` header (W3C: version-traceid-parentid-flags).
pub fn valid_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.trim().split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() >= 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1] != "00000000000000000000000000000000"
}
