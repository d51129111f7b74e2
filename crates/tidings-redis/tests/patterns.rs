//! The event bus, RPC, the gateway and sagas on Redis: the cases every
//! backend runs, each under a fresh key prefix, with a new connection for
//! every handle a case opens (as separate processes would have).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../tidings-patterns/tests/pattern_cases.rs"]
mod pattern_cases;

use std::sync::Arc;

use pattern_cases::Backend;
use tidings_core::Broker;
use tidings_redis::RedisBroker;

struct Redis(common::RedisFixture);

impl Backend for Redis {
    fn beside(&self, _first: &Arc<dyn Broker>) -> Arc<dyn Broker> {
        self.open()
    }

    fn open(&self) -> Arc<dyn Broker> {
        let url = common::url_with_prefix(&self.0.prefix);
        // The cases run on a multi-threaded runtime.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                Arc::new(RedisBroker::open(&url).await.unwrap()) as Arc<dyn Broker>
            })
        })
    }
}

macro_rules! on_redis {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some(fx) = common::fixture().await else { return };
            pattern_cases::$case(&Redis(fx)).await;
        }
    )*};
}

on_redis!(
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
