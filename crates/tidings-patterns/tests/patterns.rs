//! The event bus, RPC, the gateway and sagas on the embedded engine (in
//! memory, and on disk where each case reopens the data directory).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[macro_use]
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

every_pattern_case!(on_backends);
