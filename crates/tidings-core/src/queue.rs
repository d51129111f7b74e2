//! Per-queue settings, and what a queue reports about itself.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{GroupName, MessageId, QueueName, Result, Timestamp, error::Error};

/// When a send returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// After the message is synced to disk (fsync). Concurrent sends share one
    /// sync (group commit). Survives a crash of the process and of the machine.
    #[default]
    Sync,
    /// After the message is handed to the operating system. Survives a crash of
    /// the process, not a power loss.
    Buffered,
}

/// What happens to a message whose time to live has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExpiryAction {
    /// Delete it (counted in `expired_total`).
    #[default]
    Drop,
    /// Move it to the dead-letter queue with reason "expired".
    DeadLetter,
}

/// How long messages acknowledged by every group are kept. With neither
/// limit set they are deleted at once. Unacknowledged messages are never trimmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Retention {
    /// Keep at most this many acknowledged messages.
    pub max_len: Option<u64>,
    /// Keep acknowledged messages at most this long after they were stored.
    #[serde(with = "opt_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Whether acknowledged messages are kept at all.
    pub fn keeps_anything(&self) -> bool {
        self.max_len.is_some_and(|n| n > 0) || self.max_age.is_some_and(|d| !d.is_zero())
    }
}

/// Settings of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct QueueConfig {
    /// A delivered message not acked within this time is delivered again.
    #[serde(with = "millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub visibility_timeout: Duration,
    /// After this many deliveries without an ack the message is dead-lettered.
    pub max_deliveries: u32,
    /// Time to live of messages sent without one.
    #[serde(with = "opt_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub default_ttl: Option<Duration>,
    /// What happens to expired messages.
    pub on_expiry: ExpiryAction,
    /// How long a dedup id is remembered.
    #[serde(with = "millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub dedup_window: Duration,
    /// Retention of acknowledged messages.
    pub retention: Retention,
    /// Durability of sends; `None` uses the broker's default.
    pub durability: Option<Durability>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            default_ttl: None,
            on_expiry: ExpiryAction::Drop,
            dedup_window: Duration::from_secs(120),
            retention: Retention::default(),
            durability: None,
        }
    }
}

impl QueueConfig {
    /// Checks that the settings make sense.
    pub fn validate(&self) -> Result<()> {
        if self.visibility_timeout.is_zero() {
            return Err(Error::InvalidArgument(
                "visibility_timeout must be greater than zero".into(),
            ));
        }
        if self.max_deliveries == 0 {
            return Err(Error::InvalidArgument(
                "max_deliveries must be at least 1".into(),
            ));
        }
        if self.default_ttl.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidArgument(
                "default_ttl must be greater than zero".into(),
            ));
        }
        Ok(())
    }
}

/// One consumer of a group, as last seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsumerInfo {
    /// Its name.
    pub name: String,
    /// Messages delivered to it and not yet acked.
    pub pending: u64,
    /// When it last received.
    pub last_seen: Timestamp,
}

/// A delivery of a group handed to a consumer and neither acked nor given
/// back yet (what [`GroupInfo::pending`] counts), as
/// [`Broker::pending`](crate::Broker::pending) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingDelivery {
    /// The message's id (what `ack` takes).
    pub id: MessageId,
    /// The consumer holding it.
    pub consumer: String,
    /// How many times the group has been handed the message, this time included.
    pub delivery_count: u32,
    /// How long until its visibility timeout ends, by the store's clock
    /// when it was listed (zero: it has ended). From then on the next
    /// receive of the group takes it back, unless it is acked first. A
    /// span rather than a time, so that it holds whatever the clocks of
    /// the store and of the caller say (milliseconds on the wire).
    #[serde(with = "millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = u64))]
    pub visible_in: Duration,
}

/// State of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GroupInfo {
    /// The group.
    pub name: GroupName,
    /// Messages ready to be delivered to it now.
    pub ready: u64,
    /// Messages waiting for a delay (or a retry delay) to pass.
    pub delayed: u64,
    /// Messages delivered and not yet acked.
    pub pending: u64,
    /// Consumers seen since the broker was opened.
    pub consumers: Vec<ConsumerInfo>,
}

/// What a queue reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueInfo {
    /// The queue.
    pub name: QueueName,
    /// Its settings.
    pub config: QueueConfig,
    /// When it was created.
    pub created_at: Timestamp,
    /// Messages stored, acknowledged ones kept by retention included.
    pub length: u64,
    /// Of those, messages acknowledged by every group and kept by retention.
    pub retained: u64,
    /// Age of the oldest stored message.
    #[serde(with = "opt_millis")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<u64>))]
    pub oldest_message_age: Option<Duration>,
    /// Its consumer groups.
    pub groups: Vec<GroupInfo>,
    /// Messages in its dead-letter queue.
    pub dead_letters: u64,
    /// Messages that expired, since the queue was created.
    pub expired_total: u64,
    /// Messages dead-lettered, since the queue was created.
    pub dead_lettered_total: u64,
}

pub(crate) mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

pub(crate) mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}
