//! The embedded Tidings engine: durable queues in a local data directory,
//! with no server to run, or the same engine in memory for tests.
//!
//! - [`EmbeddedBroker`] implements [`tidings_core::Broker`].
//! - `broker`: the operations, each one lock section over the index followed by
//!   a wait for the store.
//! - `budget`: how much may wait for the writer; operations wait for their
//!   share before they build their records.
//! - `store`: where records live: fjall on disk (`store::fjall::writer`: one
//!   thread doing group commit), or `BTreeMap`s in memory.
//! - `records`: key layouts and record encodings.
//! - `state`: the in-memory index of queues, groups and messages, rebuilt from
//!   the store on open.
//!
//! Crash safety: a send returns after its records are synced (or, with
//! [`tidings_core::Durability::Buffered`], handed to the OS); acks and nacks
//! return after their records are handed to the OS. The data directory is
//! locked against a second process.

mod broker;
mod budget;
mod records;
mod state;
mod store;

pub use broker::{EmbeddedBroker, EmbeddedOptions};
pub use budget::WriteBudget;
pub use store::StoreStats;
pub use tidings_core::{Clock, ManualClock};
