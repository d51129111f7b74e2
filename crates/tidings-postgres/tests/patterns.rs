//! The event bus, RPC, the gateway, sagas and the webhook-style API on
//! PostgreSQL: the cases every backend runs, each in a schema of its own,
//! with a new broker for every handle a case opens (as separate processes
//! would have).

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
use tidings_postgres::PostgresBroker;

struct Postgres(common::PostgresFixture);

impl Backend for Postgres {
    fn beside(&self, _first: &Arc<dyn Broker>) -> Arc<dyn Broker> {
        self.open()
    }

    fn open(&self) -> Arc<dyn Broker> {
        let url = self.0.schema.url();
        // The cases run on a multi-threaded runtime.
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                Arc::new(PostgresBroker::open(&url).await.unwrap()) as Arc<dyn Broker>
            })
        })
    }
}

macro_rules! on_postgres {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some(fx) = common::fixture().await else { return };
            pattern_cases::$case(&Postgres(fx)).await;
        }
    )*};
}

every_pattern_case!(on_postgres);

macro_rules! webhooks_on_postgres {
    ($($case:ident),* $(,)?) => {
        mod webhook {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(fx) = common::fixture().await else { return };
                    let broker = Postgres(fx);
                    webhook_cases::$case(broker.open()).await;
                }
            )*
        }
    };
}

webhooks_on_postgres!(
    handlers_receive_what_is_sent,
    failures_are_retried_then_dead_lettered,
    a_panic_fails_the_message_not_the_worker,
    data_of_the_wrong_shape_is_dead_lettered_at_once,
    stop_lets_handlers_finish,
    paths_that_would_share_a_queue_are_refused,
);
