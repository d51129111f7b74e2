//! Two hubs on one store, as two processes would be. Here on one in-memory
//! engine, which has no change feed (it is exclusive to one process), so
//! the second hub never hears of the first's changes: what it must do with
//! a catalog that is out of date (tests/serve_shared.rs in tidings-cli runs
//! real processes on Redis and PostgreSQL, with the feed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::{Value, json};
use tidings_core::Broker;
use tidings_embedded::EmbeddedBroker;
use tidings_hub::{Hub, HubError, Principal};

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// A publish through a hub that has not heard that the action was removed
/// (with its subscription and that subscription's queue) finds the queue
/// gone, reads the action again, and is refused as on the hub that removed
/// it, never failing with a storage error.
#[tokio::test]
async fn a_publish_of_an_action_removed_elsewhere_is_refused_not_failed() {
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let first = Hub::open(broker.clone(), Default::default()).await.unwrap();
    let admin = Principal::Admin;
    for app in ["shop", "mailer"] {
        first
            .create_application(
                &admin,
                from(json!({"application": app, "address": "http://example.com"})),
            )
            .await
            .unwrap();
    }
    first
        .register_action(
            &admin,
            from(json!({"action": "sold", "application": "shop", "schemata": {"type": "object"}})),
        )
        .await
        .unwrap();
    first
        .subscribe(
            &admin,
            from(json!({"application": "mailer", "action": "sold", "handler": "/sold"})),
        )
        .await
        .unwrap();
    let second = Hub::open(broker.clone(), Default::default()).await.unwrap();
    let shop = Principal::Application("shop".into());
    let event = || from(json!({"action": "sold", "payload": {}}));
    let published = second.publish(&shop, event(), None).await.unwrap();
    assert_eq!(published.view.fanout, Some(1));

    first.delete_action(&admin, "sold").await.unwrap();
    let refused = second.publish(&shop, event(), None).await.unwrap_err();
    assert!(
        matches!(refused, HubError::Unprocessable { .. }),
        "{refused:?}"
    );
}
