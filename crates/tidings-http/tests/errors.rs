//! The client turns the server's error answers back into the errors the
//! engine raised: one code table (`tidings_core::Error::code`) on both sides.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use tidings_core::testing::{Call, Hooked};
use tidings_core::{Broker, Error, OutgoingMessage, QueueName};
use tidings_embedded::EmbeddedBroker;
use tidings_http::HttpBroker;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_failures_come_back_as_their_variants() {
    let engine = Hooked::new(Arc::new(EmbeddedBroker::in_memory()), |call: Call| {
        Box::pin(async move {
            match call.queue.as_ref().map(QueueName::as_str) {
                Some("broken") => Err(Error::storage(std::io::Error::other(
                    "/var/lib/secret-data: Poisoned",
                ))),
                Some("refused") => Err(Error::Denied("not this queue".into())),
                // As the Redis engine refuses LeanMQ's own key.
                Some("registry") => Err(Error::InvalidName {
                    kind: "queue".into(),
                    name: "registry".into(),
                    reason: "is LeanMQ's registry key on Redis".into(),
                }),
                _ => Ok(()),
            }
        })
    });
    let server = common::TestServer::start_over(Arc::new(engine), 0).await;
    let client = HttpBroker::connect(&server.url).unwrap();
    let message = OutgoingMessage::json(&serde_json::json!({"n": 1})).unwrap();

    let err = client
        .send(&QueueName::new("broken").unwrap(), message.clone())
        .await
        .unwrap_err();
    match err {
        Error::Unavailable(m) => {
            assert!(m.contains("request id"), "{m}");
            assert!(!m.contains("secret-data"), "{m}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let err = client
        .send(&QueueName::new("refused").unwrap(), message.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Denied(ref m) if m == "not this queue"),
        "{err:?}"
    );

    let err = client
        .send(&QueueName::new("registry").unwrap(), message.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidName { ref kind, ref name, .. } if kind == "queue" && name == "registry"),
        "{err:?}"
    );
    let err = client
        .send(&QueueName::new("no-such-queue").unwrap(), message)
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::QueueNotFound(ref q) if q == "no-such-queue"),
        "{err:?}"
    );
}
