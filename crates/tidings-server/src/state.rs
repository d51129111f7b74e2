//! What handlers share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tidings_core::{ConsumerName, GroupName, QueueName};
use tidings_hub::Hub;
use tidings_hub::delivery::Replayer;

use tokio::sync::Semaphore;

use crate::auth::AuthConfig;

/// What the HTTP server's handlers share, behind one reference count: each
/// request's copy costs one increment, not a copy of every part (the
/// credentials' strings included).
pub type AppState = Arc<ServerState>;

/// The state of the HTTP server.
pub struct ServerState {
    /// The hub.
    pub hub: Hub,
    /// Replays deliveries on request.
    pub replayer: Replayer,
    /// How callers authenticate.
    pub auth: AuthConfig,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Time a caller has to send a whole body.
    pub body_timeout: std::time::Duration,
    /// Throttles `POST /v1/tokens` per client address.
    pub login_attempts: crate::throttle::Throttle<std::net::IpAddr>,
    /// Throttles failed logins per application name, whatever the address.
    pub login_failures: crate::throttle::Throttle<String>,
    /// Open streaming receives and their credit.
    pub streams: Streams,
    /// Request signatures seen lately (each is accepted once).
    pub signatures: crate::auth::SeenSignatures,
    /// Bounds the audit entries of refused admin keys.
    pub refusals: crate::audit::RefusalLog,
    /// Whether it serves TLS (session cookies are then `Secure`).
    pub tls: bool,
    /// The console's key and its last hour of readings.
    pub console: crate::console::Console,
}

/// Whose stream: queue, group and consumer.
pub(crate) type StreamKey = (QueueName, GroupName, ConsumerName);

/// The credit of each open stream.
#[derive(Clone, Default)]
pub struct Streams {
    open: Arc<Mutex<HashMap<StreamKey, Arc<Semaphore>>>>,
}

impl Streams {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, Arc<Semaphore>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends every open stream (at shutdown): each finishes what it was
    /// sending, then closes.
    pub fn close_all(&self) {
        for credit in self.lock().values() {
            credit.close();
        }
    }
}
