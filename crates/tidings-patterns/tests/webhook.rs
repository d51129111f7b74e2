//! The webhook-style API on the embedded engine (in memory and on disk).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod webhook_cases;

use std::sync::Arc;

use tidings_core::Broker;
use tidings_embedded::EmbeddedBroker;

macro_rules! on_backends {
    ($($case:ident),*) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
                    webhook_cases::$case(broker).await;
                }
            )*
        }
        mod disk {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::open(dir.path()).unwrap());
                    webhook_cases::$case(broker).await;
                }
            )*
        }
    };
}

on_backends!(
    handlers_receive_what_is_sent,
    failures_are_retried_then_dead_lettered,
    a_panic_fails_the_message_not_the_worker,
    data_of_the_wrong_shape_is_dead_lettered_at_once,
    stop_lets_handlers_finish,
    paths_that_would_share_a_queue_are_refused
);
