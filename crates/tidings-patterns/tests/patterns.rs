//! The event bus, RPC, the gateway and sagas on the embedded engine (in
//! memory, and on disk where each case reopens the data directory).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pattern_cases;

use std::sync::Arc;

use pattern_cases::Backend;
use tidings_core::Broker;
use tidings_embedded::EmbeddedBroker;

/// One in-memory broker: every handle is the same.
struct Memory(Arc<dyn Broker>);

impl Backend for Memory {
    fn open(&self) -> Arc<dyn Broker> {
        self.0.clone()
    }
}

/// A data directory, opened anew for each handle.
struct Disk(tempfile::TempDir);

impl Backend for Disk {
    fn open(&self) -> Arc<dyn Broker> {
        Arc::new(EmbeddedBroker::open(self.0.path()).unwrap())
    }
}

macro_rules! on_backends {
    ($($case:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    pattern_cases::$case(&Memory(Arc::new(EmbeddedBroker::in_memory()))).await;
                }
            )*
        }
        mod disk {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    pattern_cases::$case(&Disk(tempfile::tempdir().unwrap())).await;
                }
            )*
        }
    };
}

on_backends!(
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
