//! The queue API's JSON, both ways, and its errors back into
//! [`tidings_core::Error`].

use std::collections::BTreeMap;

use reqwest::StatusCode;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tidings_core::{
    DeadLetter, DeadLetterSelection, Delivery, Error, GroupName, MessageId, Nack, OutgoingMessage,
    Payload, QueueName, Result, SendReceipt, Timestamp, TxOp,
};

/// A payload as its exact JSON text.
fn raw(payload: &Payload) -> Result<Box<RawValue>> {
    RawValue::from_string(payload.as_str().to_owned())
        .map_err(|e| Error::InvalidPayload(e.to_string()))
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn message_json(m: &OutgoingMessage) -> Result<Value> {
    let mut body = json!({ "payload": raw(&m.payload)?, "headers": m.headers });
    if let Some(map) = body.as_object_mut() {
        if let Some(id) = &m.dedup_id {
            map.insert("dedup_id".into(), json!(id));
        }
        if let Some(ttl) = m.ttl {
            map.insert("ttl".into(), json!(millis(ttl)));
        }
        if let Some(delay) = m.delay {
            map.insert("delay".into(), json!(millis(delay)));
        }
    }
    Ok(body)
}

pub(crate) fn selection_json(selection: &DeadLetterSelection) -> Value {
    match selection {
        DeadLetterSelection::All => json!({ "all": true }),
        DeadLetterSelection::Ids(ids) => json!({ "ids": ids }),
    }
}

pub(crate) fn tx_op_json(op: &TxOp) -> Result<Value> {
    Ok(match op {
        TxOp::Send { queue, message } => {
            json!({ "send": { "queue": queue, "message": message_json(message)? } })
        }
        TxOp::Ack { queue, group, ids } => {
            json!({ "ack": { "queue": queue, "group": group, "ids": ids } })
        }
        TxOp::Nack {
            queue,
            group,
            id,
            nack,
        } => match nack {
            Nack::Retry { delay } => json!({ "nack": {
                "queue": queue, "group": group, "id": id, "retry_after": millis(*delay),
            } }),
            Nack::DeadLetter { reason } => json!({ "nack": {
                "queue": queue, "group": group, "id": id, "dead_letter": reason,
            } }),
        },
        TxOp::Put {
            table,
            key,
            value,
            only_if_absent,
        } => {
            let kind = if *only_if_absent { "insert" } else { "put" };
            json!({ kind: { "table": table, "key": key, "value": raw(value)? } })
        }
        TxOp::Delete { table, key } => json!({ "delete": { "table": table, "key": key } }),
        TxOp::Add { table, key, delta } => {
            json!({ "add": { "table": table, "key": key, "delta": delta } })
        }
        TxOp::Expect { table, key, value } => json!({ "expect": {
            "table": table, "key": key, "value": value.as_ref().map(Payload::as_str),
        } }),
    })
}

#[derive(Deserialize)]
pub(crate) struct SendReceipts {
    pub(crate) messages: Vec<SendReceipt>,
}

/// `{"messages": [...]}` of a receive.
#[derive(Deserialize)]
pub(crate) struct Page<T> {
    #[serde(rename = "messages")]
    pub(crate) items: Vec<T>,
}

#[derive(Deserialize)]
pub(crate) struct DeliveryView {
    id: MessageId,
    payload: Box<RawValue>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    dedup_id: Option<String>,
    enqueued_at: u64,
    delivery_count: u32,
}

pub(crate) fn to_delivery(queue: &QueueName, d: DeliveryView) -> Result<Delivery> {
    Ok(Delivery {
        id: d.id,
        queue: queue.clone(),
        payload: Payload::from_json_str(d.payload.get().to_owned())?,
        headers: d.headers,
        dedup_id: d.dedup_id,
        enqueued_at: Timestamp(d.enqueued_at),
        delivery_count: d.delivery_count,
    })
}

/// The code of the server's 404 for a dead letter it does not have (the
/// queue exists), as against `queue_not_found`.
pub(crate) const NO_SUCH_DEAD_LETTER: &str = "dead_letter_not_found";

#[derive(Deserialize)]
pub(crate) struct DeadLetters {
    pub(crate) dead_letters: Vec<DeadLetterView>,
}

#[derive(Deserialize)]
pub(crate) struct DeadLetterView {
    id: MessageId,
    original_id: MessageId,
    group: Option<GroupName>,
    reason: String,
    attempts: u32,
    enqueued_at: u64,
    dead_lettered_at: u64,
    payload: Box<RawValue>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    dedup_id: Option<String>,
}

pub(crate) fn to_dead_letter(queue: &QueueName, d: DeadLetterView) -> Result<DeadLetter> {
    Ok(DeadLetter {
        id: d.id,
        original_id: d.original_id,
        queue: queue.clone(),
        group: d.group,
        reason: d.reason,
        attempts: d.attempts,
        enqueued_at: Timestamp(d.enqueued_at),
        dead_lettered_at: Timestamp(d.dead_lettered_at),
        payload: Payload::from_json_str(d.payload.get().to_owned())?,
        headers: d.headers,
        dedup_id: d.dedup_id,
    })
}

#[derive(Deserialize)]
pub(crate) struct Records {
    pub(crate) records: Vec<RecordView>,
}

#[derive(Deserialize)]
pub(crate) struct RecordView {
    pub(crate) key: String,
    pub(crate) value: String,
}

/// One field of an answer.
pub(crate) fn field<T: DeserializeOwned>(answer: &Value, name: &str) -> Result<T> {
    let value = answer.get(name).cloned().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(unreadable)
}

pub(crate) fn unreadable(e: serde_json::Error) -> Error {
    Error::Unavailable(format!(
        "the server's answer is not what this client reads: {e}"
    ))
}

/// The error an answer stands for: by its `code` where it has one (the
/// server's and this client's table is `tidings_core::Error::code`), else by
/// its status.
pub(crate) fn error_of(status: StatusCode, body: &Value) -> Error {
    let mut message = body["error"]
        .as_str()
        .map_or_else(|| format!("the server answered {status}"), str::to_owned);
    if let Some(id) = body["request_id"].as_str() {
        message = format!("{message} (request id {id})");
    }
    let empty = serde_json::Map::new();
    let fields = body.as_object().unwrap_or(&empty);
    if let Some(err) = body["code"]
        .as_str()
        .and_then(|code| Error::from_code(code, &message, fields))
    {
        return err;
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Denied(message),
        StatusCode::NOT_FOUND => Error::QueueNotFound(message),
        s if s.is_client_error() => Error::InvalidArgument(message),
        _ => Error::Unavailable(message),
    }
}
