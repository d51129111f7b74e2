//! Converting between Tidings messages and stream entries.

use tidings_core::{
    DeadLetter, Delivery, GroupName, MessageId, OutgoingMessage, Payload, QueueConfig, QueueName,
    Timestamp,
};

use super::millis;
use crate::wire::entry::{
    Entry, append_to_list, compose, failure, last_failure, metadata, new_message_id, requeue,
};

/// The six script arguments of one message: data, pl, headers, dedup id,
/// ttl ms, delay ms.
pub(crate) fn message_args(message: &OutgoingMessage, config: &QueueConfig) -> [Vec<u8>; 6] {
    let ttl = message.ttl.or(config.default_ttl);
    let id = message.dedup_id.clone().unwrap_or_else(new_message_id);
    // LeanMQ's ttl is whole seconds; the exact time goes to the expiry index.
    let ttl_seconds = ttl
        .map(|t| t.as_millis().div_ceil(1000))
        .map(|s| u64::try_from(s).unwrap_or(u64::MAX));
    let (data, pl) = compose(
        message.payload.as_str(),
        &[("_metadata", metadata(&id, ttl_seconds))],
    );
    let headers = if message.headers.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&message.headers).unwrap_or_default()
    };
    [
        data.into_bytes(),
        pl.into_bytes(),
        headers.into_bytes(),
        message.dedup_id.clone().unwrap_or_default().into_bytes(),
        ttl.map_or(0, millis).to_string().into_bytes(),
        message.delay.map_or(0, millis).to_string().into_bytes(),
    ]
}

/// A delivery from an entry, or why the entry cannot be read.
pub(crate) fn delivery(queue: &QueueName, entry: &Entry, count: u32) -> Result<Delivery, String> {
    Ok(Delivery {
        id: MessageId(entry.id.clone()),
        queue: queue.clone(),
        payload: entry.payload()?,
        headers: entry.headers(),
        dedup_id: entry.dedup_id(),
        enqueued_at: Timestamp(entry.millis()),
        delivery_count: count,
    })
}

/// The fields of the dead-letter entry for `entry`.
pub(crate) fn dead_letter_fields(
    entry: &Entry,
    group: Option<&GroupName>,
    attempts: u32,
    reason: &str,
) -> Vec<(String, String)> {
    let reserved = entry.reserved();
    let old = |key: &str| reserved.iter().find(|m| m.key == key).map(|m| m.value);
    let id = entry.metadata_id().unwrap_or_else(new_message_id);
    let mut tail = vec![
        ("_metadata", metadata(&id, None)),
        (
            "_failures",
            append_to_list(old("_failures"), &failure(reason)),
        ),
    ];
    if let Some(requeues) = old("_requeues") {
        tail.push(("_requeues", requeues.to_owned()));
    }
    let mut fields = moved_on(entry, &tail);
    fields.push(("orig".into(), entry.id.clone()));
    if let Some(group) = group {
        fields.push(("g".into(), group.to_string()));
    }
    fields.push(("n".into(), attempts.to_string()));
    fields.push(("at".into(), entry.millis().to_string()));
    fields.push(("why".into(), reason.to_owned()));
    fields
}

/// The fields of the message a dead letter becomes again when requeued.
pub(crate) fn requeued_fields(
    entry: &Entry,
    from_dlq: &str,
    to_queue: &str,
) -> Vec<(String, String)> {
    let reserved = entry.reserved();
    let old = |key: &str| reserved.iter().find(|m| m.key == key).map(|m| m.value);
    let id = entry.metadata_id().unwrap_or_else(new_message_id);
    let mut tail = vec![("_metadata", metadata(&id, None))];
    if let Some(failures) = old("_failures") {
        tail.push(("_failures", failures.to_owned()));
    }
    tail.push((
        "_requeues",
        append_to_list(old("_requeues"), &requeue(from_dlq, to_queue)),
    ));
    moved_on(entry, &tail)
}

/// The fields of a copy of `entry` with new reserved keys: its payload's
/// bytes followed by `tail`, and its headers and dedup id. An unreadable
/// entry keeps its data as it was, for a human to look at.
fn moved_on(entry: &Entry, tail: &[(&str, String)]) -> Vec<(String, String)> {
    let mut fields = Vec::new();
    match entry.raw_payload() {
        Ok(payload) => {
            let (data, pl) = compose(&payload, tail);
            fields.push(("data".into(), data));
            fields.push(("pl".into(), pl));
        }
        Err(_) => fields.push((
            "data".into(),
            entry.field("data").unwrap_or_default().to_owned(),
        )),
    }
    for name in ["h", "dd"] {
        if let Some(v) = entry.field(name) {
            fields.push((name.into(), v.to_owned()));
        }
    }
    fields
}

/// A dead letter from an entry of the dead-letter stream (written by Tidings
/// or by LeanMQ's `move_to_dlq`).
pub(crate) fn dead_letter(queue: &QueueName, entry: &Entry) -> DeadLetter {
    let reserved = entry.reserved();
    let (last_reason, failures) = reserved
        .iter()
        .find(|m| m.key == "_failures")
        .map(|m| last_failure(m.value))
        .unwrap_or((None, 0));
    let payload = entry.payload().unwrap_or_else(|why| {
        let raw = entry.field("data").unwrap_or_default();
        Payload::from_value(&serde_json::json!({ "unreadable": raw, "why": why }))
            .unwrap_or_else(|_| Payload::from_trusted("null"))
    });
    let number = |name: &str| entry.field(name).and_then(|v| v.parse::<u64>().ok());
    DeadLetter {
        id: MessageId(entry.id.clone()),
        original_id: MessageId(
            entry
                .field("orig")
                .map(str::to_owned)
                .or_else(|| entry.metadata_id())
                .unwrap_or_else(|| entry.id.clone()),
        ),
        queue: queue.clone(),
        group: entry.field("g").and_then(|g| GroupName::new(g).ok()),
        reason: entry
            .field("why")
            .map(str::to_owned)
            .or(last_reason)
            .unwrap_or_default(),
        attempts: number("n")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(failures),
        enqueued_at: Timestamp(number("at").unwrap_or_else(|| entry.millis())),
        dead_lettered_at: Timestamp(entry.millis()),
        payload,
        headers: entry.headers(),
        dedup_id: entry.dedup_id(),
    }
}

/// Flattens fields to script arguments.
pub(crate) fn flat(fields: Vec<(String, String)>) -> Vec<Vec<u8>> {
    fields
        .into_iter()
        .flat_map(|(k, v)| [k.into_bytes(), v.into_bytes()])
        .collect()
}
