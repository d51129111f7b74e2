//! The PostgreSQL engine for Tidings: queues, consumer groups, dead letters
//! and records in one schema of a database you already run, so they are
//! backed up, replicated and restored with the rest of your data.
//!
//! ```no_run
//! # async fn run() -> tidings_core::Result<()> {
//! use tidings_core::{Broker, QueueConfig, QueueName};
//! let broker =
//!     tidings_postgres::PostgresBroker::open("postgres://postgres@127.0.0.1/app?schema=tidings")
//!         .await?;
//! broker.create_queue(&QueueName::new("orders")?, QueueConfig::default()).await?;
//! # Ok(()) }
//! ```
//!
//! Every operation is one round trip to a function of the schema (a
//! transaction is two: its statements, pipelined, then its COMMIT). A send
//! returns after its COMMIT, so it is as durable as the server's
//! `synchronous_commit` makes it. Consumers take work with
//! `FOR UPDATE SKIP LOCKED`, so any number of them, in any number of
//! processes, share a group without waiting on each other; a blocked
//! receive is woken by a send in this process at once and by one in
//! another process through LISTEN/NOTIFY. `docs/postgres.md` describes the
//! tables, the migrations and what each durability setting keeps.

mod broker;
mod counters;
mod error;
mod migrate;
mod options;
#[cfg(feature = "testing")]
pub mod testing;
mod tls;
mod wakeups;

pub use broker::PostgresBroker;
pub use error::SchemaError;
pub use migrate::{Migrated, SCHEMA_VERSION};
pub use options::{DEFAULT_SCHEMA, PostgresOptions, TlsMode};
