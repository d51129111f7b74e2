//! A real `tidings serve` (in this process, over the in-memory engine) for
//! the client's tests; it stops when dropped.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use tidings_core::Broker;
use tidings_embedded::EmbeddedBroker;
use tidings_hub::{Hub, HubConfig};
use tidings_server::{Server, ServerConfig};
use tokio_util::sync::{CancellationToken, DropGuard};

pub struct TestServer {
    pub url: String,
    _stop: DropGuard,
}

impl TestServer {
    /// On a free loopback port.
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    /// On `port` (0: any free one).
    pub async fn start_on(port: u16) -> Self {
        Self::start_over(Arc::new(EmbeddedBroker::in_memory()), port).await
    }

    /// Over `engine`, on `port` (0: any free one).
    pub async fn start_over(engine: Arc<dyn Broker>, port: u16) -> Self {
        let hub = Hub::open(engine, HubConfig::default()).await.unwrap();
        let config = ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], port)),
            ..ServerConfig::default()
        };
        let server = Server::bind(hub, config).await.unwrap();
        let url = format!("http://{}", server.local_addr().unwrap());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move { server.run(stopped).await });
        Self {
            url,
            _stop: stop.drop_guard(),
        }
    }
}
