//! The domain core of Tidings: what a queue, a message, a consumer group and a
//! dead letter are, and the [`Broker`] trait every storage backend implements.
//!
//! This crate knows nothing about storage or HTTP. Its modules:
//!
//! - [`name`]: validated names of queues, consumer groups and consumers.
//! - [`payload`]: [`Payload`] (a JSON value kept as text) and [`Headers`].
//! - [`message`]: what is sent ([`OutgoingMessage`]) and what is received ([`Delivery`]).
//! - [`queue`]: per-queue settings ([`QueueConfig`]) and what [`QueueInfo`] reports.
//! - [`dead_letter`]: messages that could not be processed, with the reason.
//! - [`record`]: JSON records kept by key in tables, written in transactions.
//! - [`transaction`]: several sends, acks and record writes applied all or nothing.
//! - [`broker`]: the [`Broker`] trait.
//! - [`error`]: the one [`Error`] enum of the domain.
//! - `testing` (feature `testing`): the conformance suite every backend runs.
//!
//! ```
//! use tidings_core::{OutgoingMessage, QueueName};
//!
//! let queue = QueueName::new("orders")?;
//! let message = OutgoingMessage::json(&serde_json::json!({"order_id": 7}))?
//!     .header("trace", "abc")
//!     .dedup_id("order-7");
//! assert_eq!(queue.as_str(), "orders");
//! assert_eq!(message.payload.as_str(), r#"{"order_id":7}"#);
//! # Ok::<_, tidings_core::Error>(())
//! ```

pub mod broker;
pub mod clock;
pub mod dead_letter;
pub mod error;
pub mod message;
pub mod name;
pub mod payload;
pub mod queue;
pub mod record;
pub mod time;
pub mod transaction;

#[cfg(feature = "testing")]
pub mod testing;

pub use broker::{Broker, StorageUsage};
pub use clock::{Clock, ManualClock};
pub use dead_letter::{DeadLetter, DeadLetterSelection};
pub use error::{Error, Result};
pub use message::{Delivery, MessageId, Nack, OutgoingMessage, ReceiveOptions, SendReceipt};
pub use name::{ConsumerName, GroupName, QueueName, TableName};
pub use payload::{Headers, MAX_HEADERS_BYTES, MAX_PAYLOAD_BYTES, Payload};
pub use queue::{
    ConsumerInfo, Durability, ExpiryAction, GroupInfo, PendingDelivery, QueueConfig, QueueInfo,
    Retention,
};
pub use record::{MAX_RECORD_KEY_BYTES, Record, RecordScan};
pub use time::Timestamp;
pub use transaction::{Transaction, TxOp};
