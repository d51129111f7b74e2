//! Tidings: reliable messaging between services.
//!
//! This facade re-exports the domain ([`tidings_core`]) and opens a broker
//! from a URL, so the same code runs on every backend:
//!
//! | URL | backend |
//! |---|---|
//! | `./tidings-data`, `file:./tidings-data`, `file:///var/lib/tidings` | embedded engine, durable, in that directory (the default) |
//! | `memory:` | embedded engine in memory, for tests and examples |
//! | `redis://host:port/db?prefix=mq:` | Redis, in LeanMQ's layout (shared with Python LeanMQ); options `prefix`, `hash_tags`, `timeout` |
//! | `postgres://user@host:5432/db?schema=tidings` | PostgreSQL, in one schema (created and migrated at open); options `schema`, `pool_size`, `retry_for`, `migrate`, `durability` |
//! | `http://host:3310` | a `tidings serve`, through its queue API (credentials from `TIDINGS_API_KEY` or `TIDINGS_ADMIN_KEY`) |
//!
//! A `?durability=buffered` query makes sends return once handed to the OS
//! instead of after fsync (embedded engine), or commit with
//! `synchronous_commit` off (PostgreSQL).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! use tidings::{Broker, OutgoingMessage, QueueConfig, QueueName};
//! let broker = tidings::open("memory:").await?;
//! let queue = QueueName::new("orders")?;
//! broker.create_queue(&queue, QueueConfig::default()).await?;
//! broker.send(&queue, OutgoingMessage::json(&"hello")?).await?;
//! # Ok::<_, tidings::Error>(())
//! # }).unwrap();
//! ```

mod url;

pub use tidings_core::*;
pub use tidings_embedded::{EmbeddedBroker, EmbeddedOptions};
pub use tidings_http::HttpBroker;
pub use tidings_postgres::{PostgresBroker, PostgresOptions};
pub use tidings_redis::{RedisBroker, RedisOptions};
pub use url::{BrokerUrl, DEFAULT_BROKER_URL, open};
