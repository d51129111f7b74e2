//! The conformance suite over HTTP: each case against a real `tidings serve`
//! (on a free loopback port, over the in-memory engine), through
//! `HttpBroker`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use tidings_core::Broker;
use tidings_http::HttpBroker;

/// A server, and a client of it; the server stops when this is dropped.
struct OverHttp {
    client: HttpBroker,
    _server: common::TestServer,
}

impl tidings_core::testing::Fixture for OverHttp {
    fn broker(&self) -> &dyn Broker {
        &self.client
    }
}

async fn setup() -> OverHttp {
    let server = common::TestServer::start().await;
    OverHttp {
        client: HttpBroker::connect(&server.url).unwrap(),
        _server: server,
    }
}

tidings_core::conformance_tests!(setup());
