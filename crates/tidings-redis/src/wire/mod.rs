//! What Redis stores: entry encoding compatible with LeanMQ 0.2.0.

pub mod entry;
pub mod lenient;
