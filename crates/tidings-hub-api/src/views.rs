//! What the hub's operations answer: one typed struct per answer, with the
//! wire shape Amebo's clients expect. The hub builds them, the server
//! returns them as they are, clients read them back (each derives both
//! `Serialize` and `Deserialize`), and (with the `openapi` feature) the
//! server's OpenAPI document describes them: the document, the clients and
//! the console come from one definition.
//!
//! Times are ISO 8601 strings (`timestamped` is the creation time). A field
//! marked "only when ..." is left out otherwise.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

fn is_false(b: &bool) -> bool {
    !*b
}

/// An application, as lists show it (no secret, no key).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplicationView {
    /// Its name.
    pub application: String,
    /// The base URL its path handlers are joined to.
    pub address: String,
    /// Whether it may authenticate, publish and receive.
    pub active: bool,
    /// When it was registered.
    pub timestamped: String,
    /// Free text.
    pub description: Option<String>,
    /// Queues and tables it may use through the queue API (`null`: every
    /// one outside the hub's own).
    pub queues: Option<Vec<String>>,
}

/// A newly registered application, with its credentials: the only time
/// they are shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisteredApplication {
    /// The application.
    #[serde(flatten)]
    pub view: ApplicationView,
    /// Its name again (Amebo's field).
    pub name: String,
    /// Its secret: its password, the key of its signed requests and of the
    /// `x-amebo-signature` of the webhooks it receives.
    pub secret: String,
    /// Its API key.
    pub apikey: String,
    /// Only when there is something to heed: e.g. that the secret is weak.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// An application switched on or off.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplicationActivity {
    /// Its name.
    pub application: String,
    /// Whether it is active now.
    pub active: bool,
}

/// A secret replaced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretRotated {
    /// `Secret updated successfully`.
    pub message: String,
    /// The new secret, only when the server generated it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the replaced secret is still accepted (requests,
    /// sessions, and a second `x-amebo-signature-previous` on deliveries);
    /// only when there is a grace period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<String>,
    /// Only when there is something to heed: e.g. that the secret is weak.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A subscription's signing key, for its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKeyView {
    /// The subscription.
    pub subscription: String,
    /// The key that signs the `webhook-signature` header: `whsec_` and the
    /// base64 of its bytes, as Standard Webhooks verifiers take it.
    /// `null` for a subscription made before keys were per subscription:
    /// it is signed with its application's secret until rotated.
    pub signing_key: Option<String>,
    /// Until when the replaced key still signs deliveries too; only during
    /// a grace period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<String>,
}

/// A new API key; the old one no longer works.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeyIssued {
    /// The key: shown only here.
    pub apikey: String,
    /// Whose it is.
    pub application: String,
}

/// Something removed (an application or an action, with what hung on it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Removed {
    /// Its name.
    pub removed: String,
}

/// An action (event type) and its schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionView {
    /// Its numeric id (routes take it or the name).
    pub id: u64,
    /// Its name.
    pub action: String,
    /// The application that publishes it.
    pub application: String,
    /// The JSON Schema of its payloads.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schemata: Value,
    /// `active`.
    pub status: String,
    /// When it was registered.
    pub timestamped: String,
    /// Only when a registration repeated the registered schema: `true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unchanged: bool,
    /// How long its events are kept, when it sets its own (else the hub's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    /// How long its dedupers are remembered, when it sets its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_window: Option<String>,
}

/// An action whose schema was replaced.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionEdited {
    /// Its name.
    pub action: String,
    /// The new schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schemata: Value,
    /// `true`.
    pub edited: bool,
}

/// A payload checked against an action's schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validation {
    /// The action.
    pub action: String,
    /// Whether the payload conforms.
    pub valid: bool,
    /// Each violation, with its JSON path.
    pub errors: Vec<String>,
}

/// A subscription: an application's handler for one action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionView {
    /// Its id.
    pub subscription: String,
    /// The subscribing application.
    pub application: String,
    /// The action it receives.
    pub action: String,
    /// The handler as given: a path or a full URL.
    pub handler: String,
    /// The URL deliveries are posted to.
    pub endpoint: String,
    /// Attempts per event before it is dead-lettered.
    pub max_retries: u32,
    /// Seconds between attempts (`null`: the server's schedule).
    pub retry_schedule: Option<Vec<u64>>,
    /// One delivery at a time, in publish order.
    pub ordered: bool,
    /// Deliveries in flight at once, in all processes (`null`: each
    /// process's default).
    pub concurrency: Option<u32>,
    /// Free text.
    pub description: Option<String>,
    /// Whether it receives deliveries.
    pub active: bool,
    /// Why it was disabled (e.g. its endpoint answered 410), if it was.
    pub disabled_reason: Option<String>,
    /// When it was made.
    pub timestamped: String,
    /// Whether deliveries carry `x-amebo-signature` (keyed with the
    /// application's secret).
    pub amebo_signature: bool,
    /// Only in the answer that created it: the signing key of its
    /// `webhook-signature` header (shown again only by the reveal call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// Only after a signing key was rotated with a grace period: when the
    /// replaced key stops (or stopped) signing deliveries too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_signing_key_until: Option<String>,
    /// Only when a subscribe reactivated it: `true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reactivated: bool,
    /// Only when the subscribe registered its application on the spot (an
    /// admin subscribing an unknown application to a full URL): that
    /// application with its credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registered_application: Option<RegisteredApplication>,
}

/// A subscription deactivated.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Unsubscribed {
    /// Its id.
    pub unsubscribed: String,
    /// `false`.
    pub active: bool,
}

/// An event of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventView {
    /// Its id (sorts by publish time).
    pub event: String,
    /// Its row id (publish time and sequence).
    pub row_id: u64,
    /// The action.
    pub action: String,
    /// The payload, byte for byte as published.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Box<RawValue>,
    /// Its metadata, as published.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Box<RawValue>,
    /// The publisher's idempotency key.
    pub deduper: Option<String>,
    /// Who published it: `service:<application>` or `admin`.
    pub publisher: String,
    /// When it was published.
    pub timestamped: String,
    /// Not delivered before this time.
    pub sleep_until: String,
    /// Only when it was published with a trace context: its trace id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Only in a publish's answer: how many subscriptions it was queued for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fanout: Option<u32>,
    /// Only when a publish repeated an earlier deduper (this is that
    /// earlier event): `true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

/// A delivery of one event to one subscription (a "gist").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GistView {
    /// Its id.
    pub id: String,
    /// Its id again (Amebo's field).
    pub gist: String,
    /// Its id again (Amebo's field).
    pub key: String,
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
    /// `pending`, `retrying`, `delivered` or `failed`.
    pub status: String,
    /// Whether it was delivered.
    pub completed: bool,
    /// Attempts made (Amebo's field).
    pub retries: u32,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts allowed before it is dead-lettered.
    pub max_retries: u32,
    /// The HTTP status of the last attempt.
    pub last_status_code: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When it was last attempted.
    pub last_attempted_at: Option<String>,
    /// How long the last attempt took, ms.
    pub last_ms: Option<u64>,
    /// From publish to delivery, ms.
    pub latency_ms: Option<u64>,
    /// When the next attempt is due.
    pub next_attempt_at: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<String>,
    /// When it was dead-lettered.
    pub dead_at: Option<String>,
    /// When it was made.
    pub timestamped: String,
    /// In lists, while its event is stored: the event's `metadata.workspace_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub workspace: Option<Value>,
    /// In lists, while its event is stored: the event's payload.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Value>))]
    pub payload: Option<Box<RawValue>>,
    /// In lists, while its event is stored: the event's metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub metadata: Option<Value>,
    /// In lists, while its event is stored: who published the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    /// In lists, while its event is stored: when the event was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sleep_until: Option<String>,
}

/// A page of deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GistPage {
    /// The deliveries, newest event first.
    pub data: Vec<GistView>,
    /// How many match, over every page.
    pub total: usize,
    /// Whether `total` is exact: with a time window (`from`, `to`) at most
    /// 10,000 matches are counted, and beyond that `total` says 10,000.
    pub total_exact: bool,
    /// This page's number, from 1.
    pub page: usize,
    /// Deliveries per page.
    pub pagination: usize,
    /// How many pages there are.
    pub pages: usize,
}

/// What a replay did: one attempt, now.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Replayed {
    /// The delivery.
    pub gist: String,
    /// Whether the endpoint accepted it.
    pub delivered: bool,
    /// The endpoint's HTTP status, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// How long the attempt took, ms.
    pub ms: u64,
}

/// How many were sent again (deliveries, or a queue's dead letters).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Requeued {
    /// How many.
    pub requeued: u64,
}

/// Past events delivered to a subscription, or (a dry run) counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backfilled {
    /// The subscription's action.
    pub action: String,
    /// The subscription.
    pub subscription: String,
    /// Only when not a dry run: how many events were queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backfilled: Option<usize>,
    /// Only in a dry run: how many events would be.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Only in a dry run: `true`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// Only when the window reaches back past the action's retention: the
    /// time before which its events were removed by retention and cannot
    /// be backfilled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_before: Option<String>,
}

/// Totals over the stored events and deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stats {
    /// Events stored.
    pub events: usize,
    /// Deliveries delivered.
    pub delivered: u64,
    /// Deliveries not yet attempted.
    pub pending: u64,
    /// Deliveries failed at least once and to be retried.
    pub retrying: u64,
    /// Deliveries dead-lettered.
    pub failed: u64,
    /// Deliveries stored.
    pub total: usize,
    /// Attempts made.
    pub attempts: u64,
    /// Attempts that succeeded.
    pub attempts_ok: u64,
    /// The server's version.
    pub version: String,
}

/// The hub processes sharing a store, as `GET /v1/cluster` shows them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterView {
    /// The id of the process that answered.
    pub this: String,
    /// How often each process reports itself (e.g. `5s`); one is shown as
    /// not live after three missed reports.
    pub heartbeat: String,
    /// Every process that reported itself and did not stop gracefully
    /// (a dead one's record is removed after an hour of silence), oldest
    /// first.
    pub processes: Vec<ProcessView>,
    /// Which process delivers each ordered subscription (those without an
    /// owner are not listed: no process delivers them yet, or the last
    /// owner stopped gracefully and another is about to take them).
    pub ordered: Vec<LeaseView>,
}

/// One hub process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ProcessView {
    /// Its id (random at each start): also the name it consumes with
    /// (`process-<id>`).
    pub id: String,
    /// Whether it reported itself in the last three heartbeat intervals (by
    /// the answering process's clock).
    pub live: bool,
    /// Whether it is the process that answered.
    pub this: bool,
    /// The version of Tidings it runs.
    pub version: String,
    /// When it started.
    pub started: String,
    /// Its last report.
    pub heartbeat: String,
    /// Its operating-system process id.
    pub pid: u32,
    /// Its machine's name, where known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Who delivers an ordered subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LeaseView {
    /// The subscription.
    pub subscription: String,
    /// The id of the process holding its lease.
    pub process: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Reads `text` as `T` and writes it again: the same JSON.
    fn round_trip<T: Serialize + for<'de> Deserialize<'de>>(text: &str) {
        let value: T = serde_json::from_str(text).unwrap();
        let again = serde_json::to_value(&value).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<Value>(text).unwrap(),
            "{text}"
        );
    }

    #[test]
    fn answers_read_back_as_written() {
        round_trip::<EventView>(
            r#"{"event":"e","row_id":1,"action":"a","payload":{"n":1,"big":12345678901234567890},"metadata":{},"deduper":null,"publisher":"admin","timestamped":"t","sleep_until":"t","fanout":2}"#,
        );
        round_trip::<EventView>(
            r#"{"event":"e","row_id":1,"action":"a","payload":[1],"metadata":{},"deduper":"d","publisher":"admin","timestamped":"t","sleep_until":"t","duplicate":true}"#,
        );
        round_trip::<RegisteredApplication>(
            r#"{"application":"shop","address":"http://s/","active":true,"timestamped":"t","description":null,"queues":null,"name":"shop","secret":"s","apikey":"k"}"#,
        );
    }

    #[test]
    fn a_payload_keeps_its_bytes() {
        let text = r#"{"event":"e","row_id":1,"action":"a","payload":{"b":1.50,"a":2},"metadata":{},"deduper":null,"publisher":"p","timestamped":"t","sleep_until":"t"}"#;
        let event: EventView = serde_json::from_str(text).unwrap();
        assert_eq!(event.payload.get(), r#"{"b":1.50,"a":2}"#);
    }
}
