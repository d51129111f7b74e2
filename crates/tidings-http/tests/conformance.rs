//! The conformance suite over HTTP: each case against a real `tidings serve`
//! (on a free loopback port, over the in-memory engine), through
//! `HttpBroker`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use tidings_core::Broker;
use tidings_embedded::EmbeddedBroker;
use tidings_http::HttpBroker;
use tidings_hub::{Hub, HubConfig};
use tidings_server::{Server, ServerConfig};
use tokio::sync::watch;

/// A server, and a client of it; the server stops when this is dropped.
struct OverHttp {
    client: HttpBroker,
    _stop: watch::Sender<bool>,
}

impl tidings_core::testing::Fixture for OverHttp {
    fn broker(&self) -> &dyn Broker {
        &self.client
    }
}

async fn setup() -> OverHttp {
    let engine: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let hub = Hub::open(engine, HubConfig::default()).await.unwrap();
    let config = ServerConfig {
        bind: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..ServerConfig::default()
    };
    let server = Server::bind(hub, config).await.unwrap();
    let url = format!("http://{}", server.local_addr().unwrap());
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move { server.run(stopped).await });
    OverHttp {
        client: HttpBroker::connect(&url).unwrap(),
        _stop: stop,
    }
}

tidings_core::conformance_tests!(setup());
