//! Key layouts and record encodings of the embedded engine.
//!
//! Ids (queues, groups, messages, dead letters) come from one counter and are
//! never reused, so stale keys of a deleted queue can never be mistaken for a
//! new one's. Keys are big-endian so that key order is id order.
//!
//! | space    | key                         | value            |
//! |----------|-----------------------------|------------------|
//! | meta     | `"format"`, `"seq"`         | u64              |
//! | queues   | queue name                  | [`QueueRecord`]  |
//! | groups   | queue id, group name        | [`GroupRecord`]  |
//! | messages | queue id, seq               | [`MessageRecord`]|
//! | requeued | queue id, seq               | [`RequeuedRecord`]|
//! | marks    | queue id, group id, seq     | [`Mark`]         |
//! | marks    | queue id, group id, id, `r` | [`Receipt`]      |
//! | dedup    | queue id, dedup id          | [`DedupRecord`]  |
//! | dead     | queue id, dead-letter seq   | [`DeadRecord`]   |
//! | records  | table name, 0, record key   | JSON text        |

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use tidings_core::{Error, QueueConfig, Result};

/// Version of this layout, stored under `meta/format`.
pub(crate) const FORMAT: u64 = 1;

pub(crate) const META_FORMAT: &[u8] = b"format";
pub(crate) const META_SEQ: &[u8] = b"seq";
/// Written by each readiness check (the time, ms), to show writes go through.
pub(crate) const META_PROBE: &[u8] = b"probe";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueueRecord {
    pub(crate) id: u64,
    pub(crate) config: QueueConfig,
    pub(crate) created_at: u64,
    pub(crate) expired_total: u64,
    pub(crate) dead_lettered_total: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct GroupRecord {
    pub(crate) id: u64,
    pub(crate) created_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MessageRecord {
    pub(crate) enqueued_at: u64,
    pub(crate) expires_at: Option<u64>,
    pub(crate) deliver_at: Option<u64>,
    /// Set on requeued dead letters: only this group receives the message.
    pub(crate) only_group: Option<u64>,
    pub(crate) dedup_id: Option<String>,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) payload: String,
}

/// A message requeued from the dead letters. Its body stays in its
/// dead-letter record (`dead`), kept (and no longer listed) until the
/// message is deleted: a requeue writes this small record, not the body
/// again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RequeuedRecord {
    pub(crate) enqueued_at: u64,
    /// The group that gave up on it, which alone gets it again (`None`:
    /// every group, for a message that expired).
    pub(crate) only_group: Option<u64>,
    /// The dead-letter seq of its record.
    pub(crate) dead: u64,
}

impl RequeuedRecord {
    /// The message it stands for, with the body of its dead-letter record.
    pub(crate) fn message(&self, dead: DeadRecord) -> MessageRecord {
        MessageRecord {
            enqueued_at: self.enqueued_at,
            expires_at: None,
            deliver_at: None,
            only_group: self.only_group,
            ..dead.message
        }
    }
}

/// Per-group state of a stored message, written only when it is not the default
/// ("owed, never delivered"). Deliveries and retry delays survive a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Mark {
    /// Delivered `count` times; the last delivery, to `consumer`, is in flight
    /// until `deadline` (after which it is deliverable again).
    Delivered {
        count: u32,
        deadline: u64,
        consumer: String,
    },
    /// Delivered `count` times, given back, deliverable again at `due`.
    Retry { count: u32, due: u64 },
    /// Acked, dead-lettered or otherwise finished by this group.
    Done,
}

/// The deliveries of one receive on a queue with a bound on deliveries,
/// written before they are handed out, so that a crash in the consumer's
/// handler cannot undo their counts: one record however many messages the
/// receive took. It lives only until the engine writes the marks of those
/// still in flight ([`MARK_DELAY_MS`](crate::state::MARK_DELAY_MS) later)
/// and deletes it in the same batch; one found at opening is turned into
/// marks then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Receipt {
    pub(crate) consumer: String,
    pub(crate) deadline: u64,
    /// Each message's seq and delivery count.
    pub(crate) deliveries: Vec<(u64, u32)>,
}

/// The last byte of a [`Receipt`]'s key, after the three ids of a mark's.
pub(crate) const RECEIPT_TAG: u8 = b'r';

pub(crate) fn receipt_key(queue: u64, group: u64, id: u64) -> Vec<u8> {
    let mut key = mark_key(queue, group, id);
    key.push(RECEIPT_TAG);
    key
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DedupRecord {
    pub(crate) seq: u64,
    pub(crate) expires_at: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeadRecord {
    pub(crate) original_seq: u64,
    pub(crate) group: Option<String>,
    pub(crate) reason: String,
    pub(crate) attempts: u32,
    pub(crate) dead_lettered_at: u64,
    pub(crate) message: MessageRecord,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| Error::Corrupt {
        location: what.to_owned(),
        detail: e.to_string(),
    })
}

pub(crate) fn seq_key(queue: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(16);
    key.extend_from_slice(&queue.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn mark_key(queue: u64, group: u64, seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(24);
    key.extend_from_slice(&queue.to_be_bytes());
    key.extend_from_slice(&group.to_be_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub(crate) fn named_key(queue: u64, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + name.len());
    key.extend_from_slice(&queue.to_be_bytes());
    key.extend_from_slice(name.as_bytes());
    key
}

/// Key of a record: its table's name (which never contains a 0 byte), a 0
/// byte, and the record's key, so each table is one contiguous key range.
pub(crate) fn record_key(table: &str, key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(table.len() + 1 + key.len());
    out.extend_from_slice(table.as_bytes());
    out.push(0);
    out.extend_from_slice(key.as_bytes());
    out
}

pub(crate) use tidings_core::record::prefix_end;

/// Splits a key into its leading big-endian u64s and the rest.
pub(crate) fn split_key<'k, const N: usize>(
    what: &str,
    key: &'k [u8],
) -> Result<([u64; N], &'k [u8])> {
    let mut ids = [0u64; N];
    let mut rest = key;
    for id in &mut ids {
        let Some((head, tail)) = rest.split_first_chunk::<8>() else {
            return Err(Error::Corrupt {
                location: what.to_owned(),
                detail: format!("key of {} bytes is too short", key.len()),
            });
        };
        *id = u64::from_be_bytes(*head);
        rest = tail;
    }
    Ok((ids, rest))
}

pub(crate) fn u64_value(what: &str, bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Corrupt {
        location: what.to_owned(),
        detail: format!("expected 8 bytes, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(arr))
}
