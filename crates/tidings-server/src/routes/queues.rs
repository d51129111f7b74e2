//! `/v1/queues` and `/v1/transactions`: the queue API over HTTP, a thin
//! adapter over the same `Broker` the hub runs on.
//!
//! Durations are milliseconds. Queue names starting with `hub.` belong to the
//! event hub and are refused here.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tidings_core::{
    ConsumerName, DeadLetterSelection, GroupName, MessageId, Nack, OutgoingMessage, Payload,
    QueueConfig, QueueInfo, QueueName, ReceiveOptions, RecordScan, TableName, Transaction,
};
use tidings_hub::views::Requeued;

use crate::answer::{Answer, created_or_ok};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::request::{Call, Path};
use crate::views::{
    Acked, ConsumerForgotten, DeadLetterList, DeadLetterView, DeliveryView, GroupDeleted,
    NackCount, Nacked, Peeked, PendingList, Purged, QueueCreated, QueueList, Received, RecordList,
    RecordView, Sent,
};

/// The longest a receive may wait for a message.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// The most messages one receive returns.
pub const MAX_RECEIVE: usize = 1000;

/// Whether the caller may use queue or table `name`: outside the hub's own,
/// and, for an application, named by its allow-list.
fn allowed(call: &Call, kind: &str, name: &str) -> ApiResult<()> {
    let who = call.who()?;
    if name.starts_with("hub.") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{kind} {name:?}: names starting with \"hub.\" belong to the event hub"),
        ));
    }
    if !call.state.hub.may_use_queue(who, name) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{kind} {name:?} is not among this application's queues"),
        ));
    }
    Ok(())
}

/// A queue the caller may use.
pub(super) fn queue_name(call: &Call, name: &str) -> ApiResult<QueueName> {
    let queue = QueueName::new(name)?;
    allowed(call, "queue", name)?;
    Ok(queue)
}

/// A table the caller may use.
fn table_name(call: &Call, name: &str) -> ApiResult<TableName> {
    let table = TableName::new(name)?;
    allowed(call, "table", name)?;
    Ok(table)
}

/// The `limit` of a listing: 1 to 1000, 100 by default.
fn limit_param(call: &Call) -> ApiResult<usize> {
    match call.param("limit") {
        None => Ok(100),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_RECEIVE).contains(n))
            .ok_or_else(|| ApiError::bad_request("limit - must be 1 to 1000")),
    }
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// `POST /v1/queues`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQueue {
    /// The queue's name: letters, digits, `_`, `-`, `.`.
    name: String,
    /// Settings (times in milliseconds): `visibility_timeout`,
    /// `max_deliveries`, `default_ttl`, `on_expiry` (`drop` or
    /// `dead_letter`), `dedup_window`, `retention` (`max_len`, `max_age`),
    /// `durability` (`sync` or `buffered`).
    #[serde(default)]
    #[schema(value_type = Object)]
    settings: Option<QueueConfig>,
}

#[utoipa::path(post, path = "/v1/queues", tag = "queues", request_body = NewQueue,
    responses((status = 201, description = "Created", body = QueueCreated), (status = 200, description = "It existed with these settings", body = QueueCreated), (status = 409, description = "It exists with other settings", body = ErrorBody), (status = 400, description = "Bad name or settings", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn create(call: Call) -> ApiResult<Answer<QueueCreated>> {
    call.who()?;
    let new: NewQueue = call.json()?;
    let queue = queue_name(&call, &new.name)?;
    let config = new.settings.unwrap_or_default();
    let created = call
        .state
        .hub
        .broker()
        .create_queue(&queue, config.clone())
        .await?;
    let view = QueueCreated {
        name: queue,
        settings: config,
    };
    Ok(created_or_ok(created, view))
}

#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, description = "The queues the caller may use, sorted", body = QueueList), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn list(call: Call) -> ApiResult<Json<QueueList>> {
    let who = call.who()?;
    let queues: Vec<QueueName> = call
        .state
        .hub
        .broker()
        .list_queues()
        .await?
        .into_iter()
        .filter(|q| {
            !q.as_str().starts_with("hub.") && call.state.hub.may_use_queue(who, q.as_str())
        })
        .collect();
    Ok(Json(QueueList { queues }))
}

#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, description = "Counts per group, settings", body = QueueInfo), (status = 404, description = "No such queue", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn info(Path(name): Path<String>, call: Call) -> ApiResult<Json<QueueInfo>> {
    let queue = queue_name(&call, &name)?;
    Ok(Json(call.state.hub.broker().queue_info(&queue).await?))
}

#[utoipa::path(delete, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path)),
    responses((status = 204, description = "Deleted with its messages, groups and dead letters"), (status = 404, description = "No such queue", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn delete(Path(name): Path<String>, call: Call) -> ApiResult<StatusCode> {
    let queue = queue_name(&call, &name)?;
    call.state.hub.broker().delete_queue(&queue).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/queues/{name}/purge", tag = "queues", params(("name" = String, Path)),
    responses((status = 200, description = "Messages deleted (not dead letters)", body = Purged), (status = 404, description = "No such queue", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn purge(Path(name): Path<String>, call: Call) -> ApiResult<Json<Purged>> {
    let queue = queue_name(&call, &name)?;
    let purged = call.state.hub.broker().purge_queue(&queue).await?;
    Ok(Json(Purged { purged }))
}

/// A message to send.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// Any JSON value.
    #[schema(value_type = Object)]
    payload: Value,
    /// String headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A caller's id: a second send with it within the queue's dedup window
    /// returns the first message's id.
    dedup_id: Option<String>,
    /// Time to live, ms.
    ttl: Option<u64>,
    /// Delay before it may be delivered, ms.
    delay: Option<u64>,
}

impl NewMessage {
    fn into_message(self) -> ApiResult<OutgoingMessage> {
        let mut message = OutgoingMessage::new(Payload::from_value(&self.payload)?);
        for (k, v) in self.headers {
            message = message.header(k, v);
        }
        if let Some(id) = self.dedup_id {
            message = message.dedup_id(id);
        }
        if let Some(ttl) = self.ttl {
            message = message.ttl(millis(ttl));
        }
        if let Some(delay) = self.delay {
            message = message.delay(millis(delay));
        }
        Ok(message)
    }
}

/// One message, or several as `{"messages": [...]}` (sent atomically, in order).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// The messages.
    messages: Vec<NewMessage>,
}

#[utoipa::path(post, path = "/v1/queues/{name}/messages", tag = "queues", params(("name" = String, Path)), request_body(content = NewMessage, description = "One message, or `{\"messages\": [...]}` (a `Batch`) sent atomically, in order"),
    responses((status = 201, description = "A receipt per message, in order", body = Sent), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed message", body = ErrorBody), (status = 413, description = "Too large", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn send(Path(name): Path<String>, call: Call) -> ApiResult<Answer<Sent>> {
    let queue = queue_name(&call, &name)?;
    let body: Value = call.json()?;
    let messages = if body.get("messages").is_some() {
        serde_json::from_value::<Batch>(body).map(|b| b.messages)
    } else {
        serde_json::from_value::<NewMessage>(body).map(|m| vec![m])
    }
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if messages.is_empty() {
        return Err(ApiError::bad_request("messages - give at least one"));
    }
    let messages = messages
        .into_iter()
        .map(NewMessage::into_message)
        .collect::<ApiResult<Vec<_>>>()?;
    let receipts = call.state.hub.broker().send_batch(&queue, messages).await?;
    Ok(created_or_ok(true, Sent { messages: receipts }))
}

/// `POST /v1/queues/{name}/receive`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Receive {
    /// The consumer group (made on first use).
    group: String,
    /// This consumer's name, unique among the group's consumers.
    consumer: String,
    /// Most messages to return (1 to 1000; default 1).
    #[serde(default = "one")]
    max: usize,
    /// How long to wait for a first message, ms (up to 30,000; default 0).
    /// The answer comes as soon as one arrives.
    #[serde(default)]
    wait: u64,
}

fn one() -> usize {
    1
}

#[utoipa::path(post, path = "/v1/queues/{name}/receive", tag = "queues", params(("name" = String, Path)), request_body = Receive,
    responses((status = 200, description = "The messages taken; none if none came within `wait`", body = Received), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn receive(Path(name): Path<String>, call: Call) -> ApiResult<Json<Received>> {
    let queue = queue_name(&call, &name)?;
    let r: Receive = call.json()?;
    if r.max == 0 || r.max > MAX_RECEIVE {
        return Err(ApiError::bad_request(format!(
            "max - must be 1 to {MAX_RECEIVE}"
        )));
    }
    if millis(r.wait) > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait - at most {} ms",
            MAX_WAIT.as_millis()
        )));
    }
    let (group, consumer) = (GroupName::new(r.group)?, ConsumerName::new(r.consumer)?);
    let got = call
        .state
        .hub
        .broker()
        .receive(
            &queue,
            &group,
            &consumer,
            ReceiveOptions::new(r.max, millis(r.wait)),
        )
        .await?;
    let messages = got
        .into_iter()
        .map(DeliveryView::of)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Received { messages }))
}

#[utoipa::path(get, path = "/v1/queues/{name}/messages", tag = "queues",
    params(("name" = String, Path), ("after" = Option<String>, Query, description = "The last id of the previous page"), ("limit" = Option<usize>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "The messages stored, oldest first (waiting for their groups, delayed, or kept by retention after the acks); nothing is taken", body = Peeked), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn peek(Path(name): Path<String>, call: Call) -> ApiResult<Json<Peeked>> {
    let queue = queue_name(&call, &name)?;
    let limit = limit_param(&call)?;
    let after = call.param("after").map(MessageId::from);
    let got = call
        .state
        .hub
        .broker()
        .peek(&queue, after.as_ref(), limit)
        .await?;
    let messages = got
        .into_iter()
        .map(DeliveryView::of)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Peeked { messages }))
}

/// `POST /v1/queues/{name}/ack`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// The group the messages were delivered to.
    group: String,
    /// Their ids.
    ids: Vec<String>,
}

#[utoipa::path(post, path = "/v1/queues/{name}/ack", tag = "queues", params(("name" = String, Path)), request_body = Ack,
    responses((status = 200, description = "How many applied: ids not pending in the group are skipped", body = Acked), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn ack(Path(name): Path<String>, call: Call) -> ApiResult<Json<Acked>> {
    let queue = queue_name(&call, &name)?;
    let a: Ack = call.json()?;
    let ids: Vec<MessageId> = a.ids.into_iter().map(MessageId::from).collect();
    let acked = call
        .state
        .hub
        .broker()
        .ack(&queue, &GroupName::new(a.group)?, &ids)
        .await?;
    Ok(Json(Acked { acked }))
}

/// `POST /v1/queues/{name}/nack`: retry after a delay, or dead-letter now.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    /// The group it was delivered to.
    group: String,
    /// Its id (one message).
    id: Option<String>,
    /// Their ids (several: the answer counts those nacked).
    ids: Option<Vec<String>>,
    /// Deliver it again after this many ms (default 0).
    retry_after: Option<u64>,
    /// Move it to the dead letters now, with this reason.
    dead_letter: Option<String>,
}

/// A retry after `retry_after` ms (default 0), or a dead letter with a reason.
fn nack_of(retry_after: Option<u64>, dead_letter: Option<String>) -> ApiResult<Nack> {
    match (retry_after, dead_letter) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "retry_after and dead_letter - give one, not both",
        )),
        (_, Some(reason)) => Ok(Nack::DeadLetter { reason }),
        (delay, None) => Ok(Nack::Retry {
            delay: millis(delay.unwrap_or(0)),
        }),
    }
}

#[utoipa::path(post, path = "/v1/queues/{name}/nack", tag = "queues", params(("name" = String, Path)), request_body = NackRequest,
    responses((status = 200, description = "`nacked`: for an `id`, whether it was pending in the group; for `ids`, how many were", body = Nacked), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn nack(Path(name): Path<String>, call: Call) -> ApiResult<Json<Nacked>> {
    let queue = queue_name(&call, &name)?;
    let n: NackRequest = call.json()?;
    let nack = nack_of(n.retry_after, n.dead_letter)?;
    let group = GroupName::new(n.group)?;
    let broker = call.state.hub.broker();
    let nacked = match (n.id, n.ids) {
        (Some(id), None) => NackCount::One(
            broker
                .nack(&queue, &group, &MessageId::from(id), nack)
                .await?,
        ),
        (None, Some(ids)) => {
            let ids: Vec<MessageId> = ids.into_iter().map(MessageId::from).collect();
            NackCount::Many(broker.nack_many(&queue, &group, &ids, nack).await?)
        }
        _ => return Err(ApiError::bad_request("id or ids - give one, not both")),
    };
    Ok(Json(Nacked { nacked }))
}

#[utoipa::path(get, path = "/v1/queues/{name}/groups/{group}/pending", tag = "queues",
    params(("name" = String, Path), ("group" = String, Path), ("limit" = Option<usize>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "Deliveries its consumers hold, oldest message first, with when each comes back if not acked (none for a group the queue does not have)", body = PendingList), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn pending(
    Path((name, group)): Path<(String, String)>,
    call: Call,
) -> ApiResult<Json<PendingList>> {
    let queue = queue_name(&call, &name)?;
    let group = GroupName::new(group)?;
    let limit = limit_param(&call)?;
    let pending = call
        .state
        .hub
        .broker()
        .pending(&queue, &group, limit)
        .await?;
    Ok(Json(PendingList { pending }))
}

#[utoipa::path(delete, path = "/v1/queues/{name}/groups/{group}/consumers/{consumer}", tag = "queues",
    params(("name" = String, Path), ("group" = String, Path), ("consumer" = String, Path)),
    responses((status = 200, description = "Removed from the group's consumers if it holds no delivery (`forgotten`)", body = ConsumerForgotten), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn forget_consumer(
    Path((name, group, consumer)): Path<(String, String, String)>,
    call: Call,
) -> ApiResult<Json<ConsumerForgotten>> {
    let queue = queue_name(&call, &name)?;
    let group = GroupName::new(group)?;
    let consumer = ConsumerName::new(consumer)?;
    let forgotten = call
        .state
        .hub
        .broker()
        .forget_consumer(&queue, &group, &consumer)
        .await?;
    Ok(Json(ConsumerForgotten { forgotten }))
}

#[utoipa::path(delete, path = "/v1/queues/{name}/groups/{group}", tag = "queues",
    params(("name" = String, Path), ("group" = String, Path)),
    responses((status = 200, description = "The group is deleted with what it owed: messages no other group owes leave the queue (`deleted`: whether it existed)", body = GroupDeleted), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn delete_group(
    Path((name, group)): Path<(String, String)>,
    call: Call,
) -> ApiResult<Json<GroupDeleted>> {
    let queue = queue_name(&call, &name)?;
    let group = GroupName::new(group)?;
    let deleted = call.state.hub.broker().delete_group(&queue, &group).await?;
    Ok(Json(GroupDeleted { deleted }))
}

#[utoipa::path(get, path = "/v1/queues/{name}/dead-letters", tag = "queues",
    params(("name" = String, Path), ("after" = Option<String>, Query, description = "The last id of the previous page"), ("limit" = Option<usize>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "Dead letters, oldest first", body = DeadLetterList), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn dead_letters(Path(name): Path<String>, call: Call) -> ApiResult<Json<DeadLetterList>> {
    let queue = queue_name(&call, &name)?;
    let limit = limit_param(&call)?;
    let after = call.param("after").map(MessageId::from);
    let letters = call
        .state
        .hub
        .broker()
        .dead_letters(&queue, after.as_ref(), limit)
        .await?;
    let dead_letters = letters
        .into_iter()
        .map(DeadLetterView::of)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(DeadLetterList { dead_letters }))
}

#[utoipa::path(get, path = "/v1/queues/{name}/dead-letters/{id}", tag = "queues",
    params(("name" = String, Path), ("id" = String, Path, description = "A dead letter's id")),
    responses((status = 200, description = "The dead letter: payload, headers, reason, group, attempts, times", body = DeadLetterView), (status = 404, description = "No such queue or dead letter", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn dead_letter(
    Path((name, id)): Path<(String, String)>,
    call: Call,
) -> ApiResult<Json<DeadLetterView>> {
    let queue = queue_name(&call, &name)?;
    match call
        .state
        .hub
        .broker()
        .dead_letter(&queue, &MessageId::from(id.clone()))
        .await?
    {
        Some(found) => Ok(Json(DeadLetterView::of(found)?)),
        None => Err(ApiError::not_found_coded(
            "dead_letter_not_found",
            format!("queue {name:?} has no dead letter {id:?}"),
        )),
    }
}

/// Which dead letters: `{"ids": [...]}` or `{"all": true}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Selection {
    /// Dead-letter ids.
    ids: Option<Vec<String>>,
    /// Every dead letter of the queue.
    #[serde(default)]
    all: bool,
}

impl Selection {
    fn into_selection(self) -> ApiResult<DeadLetterSelection> {
        match (self.ids, self.all) {
            (Some(_), true) => Err(ApiError::bad_request("ids and all - give one, not both")),
            (Some(ids), false) => Ok(DeadLetterSelection::Ids(
                ids.into_iter().map(MessageId::from).collect(),
            )),
            (None, true) => Ok(DeadLetterSelection::All),
            (None, false) => Err(ApiError::bad_request("ids or all - say which dead letters")),
        }
    }
}

#[utoipa::path(post, path = "/v1/queues/{name}/dead-letters/requeue", tag = "queues", params(("name" = String, Path)), request_body = Selection,
    responses((status = 200, description = "How many went back in the queue, for the group that gave up on them", body = Requeued), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn requeue(Path(name): Path<String>, call: Call) -> ApiResult<Json<Requeued>> {
    let queue = queue_name(&call, &name)?;
    let selection = call.json::<Selection>()?.into_selection()?;
    let requeued = call
        .state
        .hub
        .broker()
        .requeue_dead_letters(&queue, selection)
        .await?;
    Ok(Json(Requeued { requeued }))
}

#[utoipa::path(post, path = "/v1/queues/{name}/dead-letters/purge", tag = "queues", params(("name" = String, Path)), request_body = Selection,
    responses((status = 200, description = "How many were deleted", body = Purged), (status = 404, description = "No such queue", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn purge_dead_letters(Path(name): Path<String>, call: Call) -> ApiResult<Json<Purged>> {
    let queue = queue_name(&call, &name)?;
    let selection = call.json::<Selection>()?.into_selection()?;
    let purged = call
        .state
        .hub
        .broker()
        .purge_dead_letters(&queue, selection)
        .await?;
    Ok(Json(Purged { purged }))
}

/// One operation of a transaction.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TxRequestOp {
    /// Send a message to a queue.
    Send {
        /// The queue.
        queue: String,
        /// The message.
        message: NewMessage,
    },
    /// Ack messages of a group; each must be pending, or nothing is applied.
    Ack {
        /// The queue.
        queue: String,
        /// The group.
        group: String,
        /// The ids.
        ids: Vec<String>,
    },
    /// Give a delivered message back (retry after `retry_after` ms, or
    /// dead-letter with the reason `dead_letter`); it must be pending, or
    /// nothing is applied.
    Nack {
        /// The queue.
        queue: String,
        /// The group.
        group: String,
        /// The id.
        id: String,
        /// Deliver it again after this many ms (default 0).
        retry_after: Option<u64>,
        /// Move it to the dead letters now, with this reason.
        dead_letter: Option<String>,
    },
    /// Write a record (overwriting).
    Put {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// Any JSON value.
        #[schema(value_type = Object)]
        value: Value,
    },
    /// Write a record whose key must be free, or nothing is applied.
    Insert {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// Any JSON value.
        #[schema(value_type = Object)]
        value: Value,
    },
    /// Delete a record.
    Delete {
        /// The table.
        table: String,
        /// The key.
        key: String,
    },
    /// Add `delta` to the integer a record holds (absent: 0); a record
    /// holding anything else fails the transaction (400).
    Add {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// What to add (negative: subtract).
        delta: i64,
    },
    /// Require a record to hold `value` (exactly as stored; `null`: to be
    /// absent) beforehand, or nothing is applied (409, `record_changed`).
    Expect {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// The stored JSON text, or null.
        value: Option<String>,
    },
}

/// `POST /v1/transactions`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TxRequest {
    /// Sends, acks, nacks and record writes, applied all or nothing.
    ops: Vec<TxRequestOp>,
}

#[utoipa::path(post, path = "/v1/transactions", tag = "queues", request_body = TxRequest,
    responses((status = 200, description = "The sends' receipts, in order", body = Sent), (status = 404, description = "A queue does not exist: nothing applied", body = ErrorBody), (status = 409, description = "An ack or nack of a message not pending, a record taken or changed: nothing applied", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn transaction(call: Call) -> ApiResult<Json<Sent>> {
    call.who()?;
    let request: TxRequest = call.json()?;
    if request.ops.is_empty() {
        return Err(ApiError::bad_request("ops - give at least one"));
    }
    let mut tx = Transaction::new();
    for op in request.ops {
        match op {
            TxRequestOp::Send { queue, message } => {
                tx.send(queue_name(&call, &queue)?, message.into_message()?);
            }
            TxRequestOp::Ack { queue, group, ids } => {
                tx.ack(
                    queue_name(&call, &queue)?,
                    GroupName::new(group)?,
                    ids.into_iter().map(MessageId::from),
                );
            }
            TxRequestOp::Nack {
                queue,
                group,
                id,
                retry_after,
                dead_letter,
            } => {
                tx.nack(
                    queue_name(&call, &queue)?,
                    GroupName::new(group)?,
                    MessageId::from(id),
                    nack_of(retry_after, dead_letter)?,
                );
            }
            TxRequestOp::Put { table, key, value } => {
                tx.put(
                    table_name(&call, &table)?,
                    key,
                    Payload::from_value(&value)?,
                );
            }
            TxRequestOp::Insert { table, key, value } => {
                tx.insert(
                    table_name(&call, &table)?,
                    key,
                    Payload::from_value(&value)?,
                );
            }
            TxRequestOp::Delete { table, key } => {
                tx.delete(table_name(&call, &table)?, key);
            }
            TxRequestOp::Add { table, key, delta } => {
                tx.add(table_name(&call, &table)?, key, delta);
            }
            TxRequestOp::Expect { table, key, value } => {
                let value = value.map(Payload::from_json_str).transpose()?;
                tx.expect(table_name(&call, &table)?, key, value);
            }
        }
    }
    let messages = call.state.hub.broker().commit(tx).await?;
    Ok(Json(Sent { messages }))
}

#[utoipa::path(get, path = "/v1/tables/{table}/record", tag = "records",
    params(("table" = String, Path), ("key" = String, Query)),
    responses((status = 200, description = "The record: its stored JSON text, or null if there is no such record", body = RecordView), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn record(Path(table): Path<String>, call: Call) -> ApiResult<Json<RecordView>> {
    let table = table_name(&call, &table)?;
    let key = call
        .param("key")
        .ok_or_else(|| ApiError::bad_request("key - required"))?;
    let value = call.state.hub.broker().get_record(&table, key).await?;
    Ok(Json(RecordView {
        key: key.to_owned(),
        value: value.map(|v| v.as_str().to_owned()),
    }))
}

#[utoipa::path(get, path = "/v1/tables/{table}/records", tag = "records",
    params(("table" = String, Path), ("prefix" = Option<String>, Query), ("from" = Option<String>, Query, description = "First key, included"), ("to" = Option<String>, Query, description = "Stop before this key"), ("limit" = Option<usize>, Query, description = "1 to 1000, default 100"), ("reverse" = Option<bool>, Query)),
    responses((status = 200, description = "Records in key order", body = RecordList), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn records(Path(table): Path<String>, call: Call) -> ApiResult<Json<RecordList>> {
    let table = table_name(&call, &table)?;
    let limit = limit_param(&call)?;
    let mut scan = RecordScan::prefix(call.param("prefix").unwrap_or_default()).limit(limit);
    if let Some(from) = call.param("from") {
        scan = scan.from(from);
    }
    if let Some(to) = call.param("to") {
        scan = scan.to(to);
    }
    if call.bool_param("reverse")?.unwrap_or(false) {
        scan = scan.reverse();
    }
    let found = call.state.hub.broker().scan_records(&table, scan).await?;
    let records = found
        .into_iter()
        .map(|r| RecordView {
            key: r.key,
            value: Some(r.value.as_str().to_owned()),
        })
        .collect();
    Ok(Json(RecordList { records }))
}
