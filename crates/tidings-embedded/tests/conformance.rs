//! The conformance suite, on disk and in memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod on_disk {
    use tidings_embedded::EmbeddedBroker;

    /// A broker in its own temporary data directory.
    struct Disk {
        broker: EmbeddedBroker,
        _dir: tempfile::TempDir,
    }

    impl tidings_core::testing::Fixture for Disk {
        fn broker(&self) -> &dyn tidings_core::Broker {
            &self.broker
        }
    }

    async fn setup() -> Disk {
        let dir = tempfile::tempdir().expect("temporary directory");
        let broker = EmbeddedBroker::open(dir.path()).expect("open the data directory");
        Disk { broker, _dir: dir }
    }

    tidings_core::conformance_tests!(setup());
}

mod in_memory {
    use tidings_embedded::EmbeddedBroker;

    async fn setup() -> EmbeddedBroker {
        EmbeddedBroker::in_memory()
    }

    tidings_core::conformance_tests!(setup());
}
