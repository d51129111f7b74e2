//! Messages that could not be processed, kept with the reason.

use serde::{Deserialize, Serialize};

use crate::{GroupName, Headers, MessageId, Payload, QueueName, Timestamp};

/// A message in a queue's dead-letter queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Id of this dead-letter entry: what `requeue` takes.
    pub id: MessageId,
    /// Id the message had in the queue.
    pub original_id: MessageId,
    /// The queue it came from.
    pub queue: QueueName,
    /// The group that gave up on it; `None` when it expired (for every group).
    pub group: Option<GroupName>,
    /// Why it was dead-lettered.
    pub reason: String,
    /// How many times it was delivered to that group.
    pub attempts: u32,
    /// When it was first stored in the queue.
    pub enqueued_at: Timestamp,
    /// When it was dead-lettered.
    pub dead_lettered_at: Timestamp,
    /// The payload.
    pub payload: Payload,
    /// The headers.
    pub headers: Headers,
    /// The caller-chosen id, if one was given.
    pub dedup_id: Option<String>,
}

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterSelection {
    /// Every dead letter of the queue.
    All,
    /// These entries (ids from [`DeadLetter::id`]); unknown ids are skipped.
    Ids(Vec<MessageId>),
}
