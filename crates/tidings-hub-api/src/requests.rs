//! What the hub's operations take: one typed struct per request body, read
//! by the server and written by the clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// A length of time: seconds, or a duration such as `"24h"`, `"90m"`,
/// `"30d"`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(untagged)]
pub enum Period {
    /// Seconds.
    Seconds(u64),
    /// A duration with units (`24h`, `90m`, `2d`).
    Text(String),
}

/// `POST /v1/events`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewEvent {
    /// The action's name.
    pub action: String,
    /// The payload: any JSON value, or a string holding JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub payload: Box<RawValue>,
    /// Free-form metadata: an object, or a string holding one.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: Option<Box<RawValue>>,
    /// Idempotency key: a repeat within the action returns the original event.
    #[serde(default)]
    pub deduper: Option<String>,
    /// Seconds to wait before the first delivery.
    #[serde(default)]
    pub sleep_until: Option<f64>,
    /// The `Idempotency-Key` header (not a body field): it becomes the
    /// deduper, and a repeat with another payload is a conflict rather
    /// than the original event.
    #[serde(skip)]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/actions`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewAction {
    /// Name.
    pub action: String,
    /// Owning application.
    pub application: String,
    /// JSON Schema, as an object or a string holding JSON.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schemata: Value,
    /// How long its events are kept (seconds or `"90d"`); default: the
    /// hub's `--retain-events`.
    #[serde(default)]
    pub retention: Option<Period>,
    /// How long a deduper is remembered (seconds or `"24h"`); default: the
    /// hub's `--dedup-window`.
    #[serde(default)]
    pub dedup_window: Option<Period>,
}

/// `PATCH /v1/actions/:id`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ActionUpdate {
    /// New schema.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub schemata: Option<Value>,
    /// New retention of its events (applies to those stored too).
    #[serde(default)]
    pub retention: Option<Period>,
    /// New dedup window (applies to dedupers stored from now on).
    #[serde(default)]
    pub dedup_window: Option<Period>,
}

/// `POST /v1/applications`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewApplication {
    /// Name.
    pub application: String,
    /// Base URL of its handlers.
    pub address: String,
    /// HMAC secret (generated when absent).
    pub secret: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Queues and record tables it may use through the queue API (names, or
    /// prefixes ending in `*`); absent: all outside the hub's own.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
}

impl NewApplication {
    /// An application named `application` with its handlers under
    /// `address`, the rest left to the hub (a generated secret, every
    /// queue allowed).
    pub fn new(application: &str, address: &str) -> Self {
        Self {
            application: application.to_owned(),
            address: address.to_owned(),
            secret: None,
            description: None,
            queues: None,
        }
    }
}

/// `PUT /v1/applications/:id/secret`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SecretRotation {
    /// The new secret (16 characters or more); omitted: generated and returned.
    pub secret: Option<String>,
    /// How long the replaced secret stays valid: seconds or a duration
    /// (`"24h"`); default 24 hours, `0` ends it at once.
    pub grace_period: Option<Period>,
}

/// `PUT /v1/applications/:id`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplicationUpdate {
    /// New base URL (`location` is Amebo's other name for it).
    #[serde(alias = "location")]
    pub address: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New queue allow-list (`["*"]` for all).
    #[serde(default)]
    pub queues: Option<Vec<String>>,
}

/// `POST /v1/subscriptions`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSubscription {
    /// The subscribing application.
    pub application: String,
    /// The action.
    pub action: String,
    /// A path joined to the application's address, or a full URL.
    pub handler: String,
    /// Attempts per event.
    pub max_retries: Option<u32>,
    /// Seconds between attempts (the last value repeats).
    pub retry_schedule: Option<Vec<u64>>,
    /// One delivery at a time, in publish order.
    #[serde(default)]
    pub ordered: bool,
    /// Deliveries in flight at once, in all (1 to 256; shared out among the
    /// hub processes sharing the store; default: each process's setting).
    pub concurrency: Option<u32>,
    /// Free text.
    pub description: Option<String>,
    /// An id of the caller's choosing.
    pub subscription: Option<String>,
    /// The Standard Webhooks signing key (`whsec_` + base64 of 24 to 64
    /// random bytes); omitted: generated, and shown once in the answer.
    pub signing_key: Option<String>,
    /// Whether deliveries carry `x-amebo-signature`, keyed with the
    /// application's secret (default `true`: Amebo's receivers check it).
    pub amebo_signature: Option<bool>,
}

impl NewSubscription {
    /// `application` subscribed to `action`, delivered to `handler`, with
    /// the hub's defaults for the rest (retries, concurrency, a generated
    /// signing key).
    pub fn new(application: &str, action: &str, handler: &str) -> Self {
        Self {
            application: application.to_owned(),
            action: action.to_owned(),
            handler: handler.to_owned(),
            max_retries: None,
            retry_schedule: None,
            ordered: false,
            concurrency: None,
            description: None,
            subscription: None,
            signing_key: None,
            amebo_signature: None,
        }
    }
}

/// `POST /v1/subscriptions/:id/signing-key/rotate`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SigningKeyRotation {
    /// The new key (`whsec_` + base64 of 24 to 64 random bytes); omitted:
    /// generated.
    pub signing_key: Option<String>,
    /// How long the replaced key keeps signing deliveries too: seconds or
    /// a duration (`"24h"`); default 24 hours, `0` ends it at once.
    pub grace_period: Option<Period>,
}

/// `POST /v1/backfills` (any content type).
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backfill {
    /// The subscription to deliver to.
    pub subscription: String,
    /// From: ISO 8601, Unix seconds, or today, 7d, week, 30d, month.
    pub since: Option<String>,
    /// `since`, by its other name.
    pub timeline: Option<String>,
    /// Up to (excluded), as `since`; omitted: now.
    pub until: Option<String>,
    /// Count, do not deliver.
    #[serde(default)]
    pub dry_run: bool,
}

/// `PATCH /v1/applications/{id}` (any content type; no body: toggle).
#[derive(Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Toggle {
    /// Active or not; omitted: the opposite of now.
    pub active: Option<bool>,
}

/// `POST /v1/actions/{id}/validations` (any content type): `{"payload": ...}`,
/// or the payload itself.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Validate {
    /// The payload to check (or a string holding it as JSON).
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Value,
}
