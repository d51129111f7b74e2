//! `tidings serve`: the event hub over HTTP, compatible with Amebo 0.9.6
//! clients (see docs/amebo-compatibility.md).
//!
//! A thin adapter: handlers parse and authenticate, then call the
//! [`Hub`]; the [`Dispatcher`] delivers webhooks in the background.

pub mod answer;
pub mod audit;
pub mod auth;
pub mod connections;
pub mod console;
pub mod error;
mod middleware;
pub mod request;
mod routes;
pub mod state;
pub mod throttle;
pub mod tls;
pub mod views;

use std::net::SocketAddr;

use tidings_hub::{DeliveryConfig, Dispatcher, Hub};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use auth::AuthConfig;
pub use connections::ConnectionLimits;
pub use routes::router;
pub use state::{AppState, ServerState};

/// Default port (Amebo's).
pub const DEFAULT_PORT: u16 = 3310;

/// Failed logins an application name may have per minute, from all
/// addresses together; then 429 until the minute has passed.
pub const LOGIN_FAILURES_PER_MINUTE: usize = 10;

/// Default largest request body: 512 KiB.
pub const DEFAULT_BODY_LIMIT: usize = 512 * 1024;

/// Settings of the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub bind: SocketAddr,
    /// Authentication.
    pub auth: AuthConfig,
    /// Largest request body, bytes.
    pub body_limit: usize,
    /// Webhook delivery.
    pub delivery: DeliveryConfig,
    /// Timeouts and caps of the connections it takes.
    pub connections: ConnectionLimits,
    /// TLS (`None`: plain HTTP).
    pub tls: Option<std::sync::Arc<tls::Tls>>,
    /// How often the console reads the hub's activity for its charts.
    pub console_every: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            auth: AuthConfig::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            delivery: DeliveryConfig::default(),
            connections: ConnectionLimits::default(),
            tls: None,
            console_every: console::trend::DEFAULT_EVERY,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Protected mode: no admin key, and not on loopback.
    #[error(
        "refusing to listen on {0} without an admin key: anyone who can reach it could manage the hub. \
         Set TIDINGS_ADMIN_KEY (or --admin-key), or listen on 127.0.0.1"
    )]
    Unprotected(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The delivery client could not be built.
    #[error("{0}")]
    Hub(#[from] tidings_hub::HubError),
}

/// A server bound to its address, ready to run.
pub struct Server {
    listener: TcpListener,
    state: AppState,
    dispatcher: Dispatcher,
    gate: std::sync::Arc<connections::Gate>,
    max_connections: usize,
    header_timeout: std::time::Duration,
    tls: Option<std::sync::Arc<tls::Tls>>,
    console_every: std::time::Duration,
}

impl Server {
    /// Binds the address (checking protected mode) and prepares delivery.
    pub async fn bind(hub: Hub, config: ServerConfig) -> Result<Self, StartError> {
        if config.auth.admin_key.is_none() && !config.bind.ip().is_loopback() {
            return Err(StartError::Unprotected(config.bind));
        }
        let listener = TcpListener::bind(config.bind)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.bind,
                source,
            })?;
        let destinations = hub.destinations();
        if let Ok(addr) = listener.local_addr() {
            destinations.add_own_address(addr);
        }
        if config.auth.admin_key.is_none() && !destinations.policy().allow_private {
            // Only loopback callers can subscribe: the README's local flow
            // delivers to localhost.
            destinations.allow_private();
            tracing::info!(
                "protected mode: webhooks may go to loopback and private addresses (with an admin key only public ones may, unless allowed)"
            );
        }
        let max_connections = config
            .connections
            .resolved_max(connections::file_limit(), config.delivery.global);
        let gate = connections::Gate::new(
            max_connections,
            config.connections.per_client,
            config.auth.trusted_proxies.clone(),
        );
        let dispatcher = Dispatcher::new(hub.clone(), config.delivery)?;
        let console = console::Console::new(config.auth.admin_key.as_deref());
        let state = std::sync::Arc::new(state::ServerState {
            hub,
            replayer: dispatcher.replayer(),
            auth: config.auth,
            body_limit: config.body_limit,
            body_timeout: config.connections.body_timeout,
            login_attempts: throttle::Throttle::new(5, std::time::Duration::from_secs(60)),
            login_failures: throttle::Throttle::new(
                LOGIN_FAILURES_PER_MINUTE,
                std::time::Duration::from_secs(60),
            ),
            streams: state::Streams::default(),
            signatures: auth::seen_signatures(),
            refusals: audit::RefusalLog::default(),
            tls: config.tls.is_some(),
            console,
        });
        Ok(Self {
            listener,
            state,
            dispatcher,
            gate,
            max_connections,
            header_timeout: config.connections.header_timeout,
            tls: config.tls,
            console_every: config.console_every,
        })
    }

    /// The address it listens on (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Its TLS, to reload the certificate (on SIGHUP), if it serves TLS.
    pub fn tls(&self) -> Option<std::sync::Arc<tls::Tls>> {
        self.tls.clone()
    }

    /// The cap on open connections in force.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Serves until `shutdown` is cancelled, then stops taking requests,
    /// lets in-flight requests and delivery attempts finish, and returns.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let streams = self.state.streams.clone();
        let hub = self.state.hub.clone();
        let sampled = self.state.clone();
        let sampling = shutdown.clone();
        let every = self.console_every;
        tokio::spawn(async move {
            sampled
                .console
                .trend
                .run(sampled.hub.clone(), every, sampling)
                .await;
        });
        let app = router(self.state).layer(axum::middleware::from_fn(middleware::common_headers));
        let delivery = tokio::spawn(self.dispatcher.run(shutdown.clone()));
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            stopping.cancelled().await;
            // Streams never end on their own: end them, or shutdown would wait forever.
            streams.close_all();
        });
        let tls = self.tls.as_ref().map(|t| t.acceptor());
        connections::serve(
            self.listener,
            app,
            self.gate,
            self.header_timeout,
            tls,
            shutdown,
        )
        .await;
        let _ = delivery.await;
        // Stopped gracefully: the others need not list it as missing.
        if let Err(e) = hub.leave().await {
            tracing::warn!(error = %e, "could not remove this process from hub.processes; it shows as not live");
        }
        Ok(())
    }
}
