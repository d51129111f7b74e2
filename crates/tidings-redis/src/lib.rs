//! The Redis engine for Tidings: queues on Redis Streams, in the data layout
//! of the Python library LeanMQ 0.2.0, so Python services and Tidings share
//! queues in both directions.
//!
//! ```no_run
//! # async fn run() -> tidings_core::Result<()> {
//! use tidings_core::{Broker, QueueConfig, QueueName};
//! let broker = tidings_redis::RedisBroker::open("redis://127.0.0.1:6379/0?prefix=mq:").await?;
//! broker.create_queue(&QueueName::new("orders")?, QueueConfig::default()).await?;
//! # Ok(()) }
//! ```
//!
//! `docs/redis.md` describes the layout, what LeanMQ sees of Tidings'
//! additions, and the Redis Cluster rules.

mod broker;
mod conn;
pub mod keys;
mod options;
mod scripts;
mod value;
pub mod wire;

pub use broker::RedisBroker;
pub use options::{DEFAULT_PREFIX, RedisOptions};
