//! The service patterns (webhook-style API, event bus, RPC, gateway, sagas)
//! through `HttpBroker`: the cases every backend runs, each against a real
//! `tidings serve`, every handle a client of its own, as separate processes
//! would be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../tidings-patterns/tests/pattern_cases.rs"]
#[macro_use]
mod pattern_cases;
#[path = "../../tidings-patterns/tests/webhook_cases.rs"]
mod webhook_cases;

use std::sync::Arc;

use pattern_cases::Backend;
use tidings_core::Broker;
use tidings_http::HttpBroker;

/// One server; clients of it.
struct OverHttp(common::TestServer);

impl OverHttp {
    async fn start() -> Self {
        Self(common::TestServer::start().await)
    }
}

impl Backend for OverHttp {
    fn open(&self) -> Arc<dyn Broker> {
        Arc::new(HttpBroker::connect(&self.0.url).unwrap())
    }

    fn beside(&self, _first: &Arc<dyn Broker>) -> Arc<dyn Broker> {
        self.open()
    }
}

macro_rules! patterns {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            pattern_cases::$case(&OverHttp::start().await).await;
        }
    )*};
}

macro_rules! webhooks {
    ($($case:ident),* $(,)?) => {
        mod webhook {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let server = OverHttp::start().await;
                    webhook_cases::$case(server.open()).await;
                }
            )*
        }
    };
}

every_pattern_case!(patterns);

webhooks!(
    handlers_receive_what_is_sent,
    failures_are_retried_then_dead_lettered,
    a_panic_fails_the_message_not_the_worker,
    data_of_the_wrong_shape_is_dead_lettered_at_once,
    stop_lets_handlers_finish,
    paths_that_would_share_a_queue_are_refused,
);
