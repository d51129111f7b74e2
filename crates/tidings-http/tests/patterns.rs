//! The service patterns (webhook-style API, event bus, RPC, gateway, sagas)
//! through `HttpBroker`: the cases every backend runs, each against a real
//! `tidings serve`, every handle a client of its own, as separate processes
//! would be.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../tidings-patterns/tests/pattern_cases.rs"]
mod pattern_cases;
#[path = "../../tidings-patterns/tests/webhook_cases.rs"]
mod webhook_cases;

use std::net::SocketAddr;
use std::sync::Arc;

use pattern_cases::Backend;
use tidings_core::Broker;
use tidings_embedded::EmbeddedBroker;
use tidings_http::HttpBroker;
use tidings_hub::{Hub, HubConfig};
use tidings_server::{Server, ServerConfig};
use tokio::sync::watch;

/// One server; clients of it.
struct OverHttp {
    url: String,
    _stop: watch::Sender<bool>,
}

impl OverHttp {
    async fn start() -> Self {
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
        Self { url, _stop: stop }
    }
}

impl Backend for OverHttp {
    fn open(&self) -> Arc<dyn Broker> {
        Arc::new(HttpBroker::connect(&self.url).unwrap())
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

patterns!(
    publish_fans_out_to_matching_subscriptions,
    subscriptions_outlive_their_subscribers,
    unknown_event_types_are_acknowledged_or_dead_lettered,
    failing_bus_handlers_retry_then_dead_letter,
    a_panicking_bus_handler_is_retried_and_isolated,
    events_of_one_key_keep_their_order_under_4_workers,
    a_standby_subscriber_takes_over_in_order,
    a_dead_subscribers_events_are_not_overtaken,
    stopping_a_subscriber_loses_nothing,
    calls_get_their_own_replies,
    a_call_times_out_and_its_late_reply_is_dropped,
    server_errors_reach_the_caller,
    the_gateway_returns_partial_results,
    a_breaker_stops_calls_to_a_failing_service,
    a_saga_runs_every_step,
    a_failed_step_is_compensated_in_reverse_order,
    a_saga_resumes_after_its_orchestrator_is_gone,
);

webhooks!(
    handlers_receive_what_is_sent,
    failures_are_retried_then_dead_lettered,
    a_panic_fails_the_message_not_the_worker,
    data_of_the_wrong_shape_is_dead_lettered_at_once,
    stop_lets_handlers_finish,
    paths_that_would_share_a_queue_are_refused,
);
