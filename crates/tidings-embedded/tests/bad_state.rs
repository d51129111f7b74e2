//! A data directory that cannot be used gives a typed error, never a panic.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tidings_core::{Broker, Error, QueueConfig, QueueName};
use tidings_embedded::EmbeddedBroker;

#[test]
fn a_second_opener_is_told_the_directory_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedBroker::open(dir.path()).unwrap();
    match EmbeddedBroker::open(dir.path()) {
        Err(Error::Locked { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected Locked, got {:?}", other.err()),
    }
}

#[test]
fn a_file_in_place_of_the_directory_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"hello").unwrap();
    assert!(matches!(
        EmbeddedBroker::open(&file),
        Err(Error::Storage(_))
    ));
}

#[test]
fn a_damaged_version_marker_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    drop(EmbeddedBroker::open(dir.path()).unwrap());
    std::fs::write(dir.path().join("version"), b"garbage!").unwrap();
    let err = EmbeddedBroker::open(dir.path()).err().expect("refused");
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[tokio::test]
async fn an_undecodable_record_is_reported_with_its_location() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = EmbeddedBroker::open(dir.path()).unwrap();
        let q = QueueName::new("fine").unwrap();
        broker
            .create_queue(&q, QueueConfig::default())
            .await
            .unwrap();
        broker.close();
    }
    {
        // Damage a queue record behind the engine's back.
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let queues = db
            .keyspace("queues", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        queues.insert("fine", [0xFFu8, 0xFF, 0xFF]).unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = EmbeddedBroker::open(dir.path()).err().expect("refused");
    match err {
        Error::Corrupt { location, .. } => assert_eq!(location, "queue record"),
        other => panic!("expected Corrupt, got {other:?}"),
    }
}
