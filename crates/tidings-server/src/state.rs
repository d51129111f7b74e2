//! What handlers share.

use tidings_hub::Hub;
use tidings_hub::delivery::Replayer;

use crate::auth::AuthConfig;

/// The state of the HTTP server.
#[derive(Clone)]
pub struct AppState {
    /// The hub.
    pub hub: Hub,
    /// Replays deliveries on request.
    pub replayer: Replayer,
    /// How callers authenticate.
    pub auth: AuthConfig,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Throttles `POST /v1/tokens` per caller address.
    pub login_attempts: crate::throttle::Throttle,
    /// Open streaming receives and their credit.
    pub streams: crate::routes::Streams,
}
