//! The hub's records, as stored (JSON, one record per key) and as shown.

pub mod action;
pub mod application;
pub mod audit;
pub mod event;
pub mod gist;
pub mod period;
pub mod secret;
pub mod subscription;

pub use action::Action;
pub use application::Application;
pub use event::Event;
pub use gist::{Gist, GistStatus};
pub use subscription::Subscription;
