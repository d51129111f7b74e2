//! The Tidings event hub: applications register, define actions (event
//! types with a JSON Schema) and publish events; subscribers receive them as
//! signed webhooks, with retries, dead letters and replay.
//!
//! Everything is stored through a [`tidings_core::Broker`]: the catalog and
//! the event log as records, each subscription's pending deliveries as a
//! queue. So the hub runs on every backend, and a publish is one atomic
//! transaction.
//!
//! - [`hub`]: the [`Hub`] and its operations.
//! - [`delivery`]: the [`Dispatcher`] that posts webhooks.
//! - [`model`]: applications, actions, events, subscriptions, gists.
//! - [`views`]: what the operations answer, as the API shows it.
//! - [`metrics`]: what `/metrics` exposes.
//! - [`sealing`]: secrets encrypted at rest.
//! - [`schema`], [`signature`], [`ids`], [`time`]: the pieces they use.

pub mod delivery;
pub mod destination;
pub mod error;
pub mod hub;
pub mod ids;
mod indexes;
pub mod json;
pub mod metrics;
pub mod model;
pub mod principal;
pub mod schema;
pub mod sealing;
pub mod signature;
mod tables;
pub mod time;
pub mod views;

pub use delivery::{DeliveryConfig, Dispatcher};
pub use destination::DestinationPolicy;
pub use error::{HubError, HubResult};
pub use hub::{Hub, HubConfig, Page};
pub use principal::Principal;
