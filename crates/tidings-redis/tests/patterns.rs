//! The event bus, RPC, the gateway and sagas on Redis: the cases every
//! backend runs, each under a fresh key prefix, with a new connection for
//! every handle a case opens (as separate processes would have).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../tidings-patterns/tests/pattern_cases.rs"]
#[macro_use]
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

every_pattern_case!(on_redis);
