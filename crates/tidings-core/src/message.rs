//! What is sent, what is received, and how a receiver settles it.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::payload::check_headers;
use crate::{Error, Headers, Payload, QueueName, Result, Timestamp};

/// Longest caller-chosen dedup id, in bytes.
pub const MAX_DEDUP_ID_BYTES: usize = 256;

/// The broker-assigned id of a stored message: what `ack` and `nack` take.
/// Opaque; each backend has its own format.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageId(pub String);

impl MessageId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MessageId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for MessageId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// A message to send, with its options.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingMessage {
    /// The JSON payload.
    pub payload: Payload,
    /// Optional headers.
    pub headers: Headers,
    /// Caller-chosen message id. A second send with the same id within the
    /// queue's dedup window is not stored again; it returns the original id.
    pub dedup_id: Option<String>,
    /// Time to live; past it the message is never delivered. Defaults to the
    /// queue's `default_ttl`.
    pub ttl: Option<Duration>,
    /// Not delivered before this much time has passed.
    pub delay: Option<Duration>,
}

impl OutgoingMessage {
    /// A message with this payload and no options.
    pub fn new(payload: Payload) -> Self {
        Self {
            payload,
            headers: Headers::new(),
            dedup_id: None,
            ttl: None,
            delay: None,
        }
    }

    /// A message whose payload is `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        Ok(Self::new(Payload::from_value(value)?))
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the caller-chosen id used for deduplication.
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }

    /// Sets the time to live.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Delays delivery.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// Checks every message of a batch (see [`OutgoingMessage::validate`]).
    pub fn validate_all(messages: &[Self]) -> Result<()> {
        messages.iter().try_for_each(Self::validate)
    }

    /// Checks the parts a backend cannot check by type: header size, dedup id
    /// length, a zero TTL.
    pub fn validate(&self) -> Result<()> {
        check_headers(&self.headers)?;
        if let Some(id) = &self.dedup_id
            && (id.is_empty() || id.len() > MAX_DEDUP_ID_BYTES)
        {
            return Err(Error::InvalidArgument(format!(
                "dedup id must be 1 to {MAX_DEDUP_ID_BYTES} bytes long"
            )));
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(Error::InvalidArgument(
                "ttl must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

/// What a send returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SendReceipt {
    /// The id of the stored message.
    pub id: MessageId,
    /// True when the dedup id matched an earlier message, which was not stored again.
    pub duplicate: bool,
}

/// How many messages to take, and how long to wait for the first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// Most messages to return (at least 1).
    pub max_messages: usize,
    /// How long to block when nothing is ready. Zero returns at once.
    pub wait: Duration,
}

impl ReceiveOptions {
    /// Up to `max_messages`, waiting up to `wait`.
    pub fn new(max_messages: usize, wait: Duration) -> Self {
        Self { max_messages, wait }
    }

    /// Checks the options every backend refuses: asking for no message.
    pub fn validate(&self) -> Result<()> {
        if self.max_messages == 0 {
            return Err(Error::InvalidArgument(
                "max_messages must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        Self::new(1, Duration::ZERO)
    }
}

/// A message handed to one consumer of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The id to ack or nack.
    pub id: MessageId,
    /// The queue it came from.
    pub queue: QueueName,
    /// The payload.
    pub payload: Payload,
    /// The headers.
    pub headers: Headers,
    /// The caller-chosen id, if one was given.
    pub dedup_id: Option<String>,
    /// When the message was stored.
    pub enqueued_at: Timestamp,
    /// How many times this group has been handed the message, this time included.
    pub delivery_count: u32,
}

/// How a receiver gives a message back without acknowledging it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nack {
    /// Deliver it again to the group after `delay` (counts toward `max_deliveries`).
    Retry {
        /// Time before it may be delivered again.
        delay: Duration,
    },
    /// Move it to the dead-letter queue now, with this reason.
    DeadLetter {
        /// Why the message could not be processed.
        reason: String,
    },
}
