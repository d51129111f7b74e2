//! What the server's own routes answer (the hub's answers are
//! [`tidings_hub::views`]): probes, sessions and the queue API. One typed
//! struct per answer, so that /openapi.json describes every body.
//!
//! Times are milliseconds since the Unix epoch.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::value::RawValue;
use tidings_core::{
    DeadLetter, Delivery, GroupName, MessageId, Payload, QueueConfig, QueueName, SendReceipt,
};

use crate::error::{ApiError, ApiResult};

/// What the probes answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Probe {
    /// `ok` (`/health`), `ready` or `unavailable` (`/readyz`).
    pub status: &'static str,
    /// The server's version; not shown when unavailable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
    /// Only when unavailable: why, without internals (`storage_full`: the
    /// disk is full; `storage_failed`: the store failed and cannot be
    /// reopened yet; `storage_unreachable`: Redis or the database does
    /// not answer). The log has the detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// Only when ready with something to heed: e.g. free disk space under
    /// `--disk-free-warning`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// One server-sent event of a stream, as its `event:` and `data:` lines.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    /// `message`: `data` is a delivery (`DeliveryView`) as JSON; `error`:
    /// `data` is an error body (`ErrorBody`) as JSON, and the stream ends.
    pub event: String,
    /// The event's data: one line of JSON.
    pub data: String,
}

/// A session token.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Token {
    /// Send it as `Authorization: Bearer <token>`; it is also set as the
    /// `Authentication` cookie.
    pub token: String,
}

/// A queue made (or found with the same settings).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueCreated {
    /// Its name.
    pub name: QueueName,
    /// Its settings.
    pub settings: QueueConfig,
}

/// The queues the caller may use.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QueueList {
    /// Their names, sorted.
    pub queues: Vec<QueueName>,
}

/// Deliveries of a group that consumers hold (neither acked nor given back).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PendingList {
    /// Oldest message first.
    pub pending: Vec<tidings_core::PendingDelivery>,
}

/// Whether a consumer was removed from its group.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ConsumerForgotten {
    /// `false`: the group does not know it, or it still holds deliveries.
    pub forgotten: bool,
}

/// Whether a group was deleted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GroupDeleted {
    /// `false`: the queue has no such group.
    pub deleted: bool,
}

/// How many were deleted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Purged {
    /// How many.
    pub purged: u64,
}

/// The stored messages of a send or a transaction, in order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Sent {
    /// One receipt per message sent.
    pub messages: Vec<SendReceipt>,
}

/// A payload as it was sent, byte for byte (numbers beyond 64 bits included).
fn raw(payload: &Payload) -> ApiResult<Box<RawValue>> {
    RawValue::from_string(payload.as_str().to_owned())
        .map_err(|e| ApiError::bad_request(format!("stored payload is not JSON: {e}")))
}

/// A delivered message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// Its id: what ack and nack take.
    pub id: MessageId,
    /// The payload, as sent.
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
    /// The sender's dedup id.
    pub dedup_id: Option<String>,
    /// When it was sent.
    pub enqueued_at: u64,
    /// How many times it was delivered, this one included.
    pub delivery_count: u32,
}

impl DeliveryView {
    /// The view of a delivery.
    pub fn of(d: Delivery) -> ApiResult<Self> {
        Ok(Self {
            payload: raw(&d.payload)?,
            headers: d.headers.into_iter().collect(),
            id: d.id,
            dedup_id: d.dedup_id,
            enqueued_at: d.enqueued_at.as_millis(),
            delivery_count: d.delivery_count,
        })
    }
}

/// What a receive took.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Received {
    /// The messages, empty if none came within `wait`.
    pub messages: Vec<DeliveryView>,
}

/// Messages of a queue looked at without taking them, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Peeked {
    /// The messages (each with a `delivery_count` of 0).
    pub messages: Vec<DeliveryView>,
}

/// How many acks applied.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Acked {
    /// Ids not pending in the group are skipped, and not counted.
    pub acked: u64,
}

/// What a nack did: for one `id`, whether it was pending; for `ids`, how
/// many were.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum NackCount {
    /// One id: whether it was pending in the group.
    One(bool),
    /// Several: how many were.
    Many(u64),
}

/// What a nack did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Nacked {
    /// `true`/`false` for an `id`, a count for `ids`.
    pub nacked: NackCount,
}

/// A dead letter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterView {
    /// Its id in the dead letters.
    pub id: MessageId,
    /// The id it had in the queue.
    pub original_id: MessageId,
    /// The group that gave up on it.
    pub group: Option<GroupName>,
    /// Why.
    pub reason: String,
    /// Deliveries made.
    pub attempts: u32,
    /// When it was sent.
    pub enqueued_at: u64,
    /// When it was dead-lettered.
    pub dead_lettered_at: u64,
    /// The payload, as sent.
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    /// Its headers.
    pub headers: BTreeMap<String, String>,
    /// The sender's dedup id.
    pub dedup_id: Option<String>,
}

impl DeadLetterView {
    /// The view of a dead letter.
    pub fn of(d: DeadLetter) -> ApiResult<Self> {
        Ok(Self {
            payload: raw(&d.payload)?,
            headers: d.headers.into_iter().collect(),
            id: d.id,
            original_id: d.original_id,
            group: d.group,
            reason: d.reason,
            attempts: d.attempts,
            enqueued_at: d.enqueued_at.as_millis(),
            dead_lettered_at: d.dead_lettered_at.as_millis(),
            dedup_id: d.dedup_id,
        })
    }
}

/// A page of dead letters.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterList {
    /// Oldest first.
    pub dead_letters: Vec<DeadLetterView>,
}

/// A record. `value` is the stored JSON text, so that a client can hand it
/// back unchanged to a transaction's `expect`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    /// Its key.
    pub key: String,
    /// The stored JSON text; `null` if there is no such record.
    pub value: Option<String>,
}

/// Records in key order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordList {
    /// The records.
    pub records: Vec<RecordView>,
}

/// A stream's credit.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Credit {
    /// Messages the stream may still send.
    pub credit: usize,
}
