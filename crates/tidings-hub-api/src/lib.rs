//! The event hub's API as typed structs: what its operations take
//! ([`requests`]) and what they answer ([`views`]). The hub reads and
//! builds them, its server sends them as they are, clients (the Rust
//! `HubClient`) write and read the same structs, and (with the `openapi`
//! feature) the server's OpenAPI document describes them: one definition
//! for all.

pub mod requests;
pub mod views;

pub use requests::*;
pub use views::*;
