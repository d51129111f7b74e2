//! What the hub's operations answer: the typed structs of `tidings-hub-api`,
//! where the clients find them too.

pub use tidings_hub_api::views::*;
