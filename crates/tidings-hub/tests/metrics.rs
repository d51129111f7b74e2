//! Scrapes of `/metrics` that overlap each see every subscription's gauges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::json;
use tidings_core::testing::Hooked;
use tidings_embedded::EmbeddedBroker;
use tidings_hub::{Hub, HubConfig, Principal};

fn queued_series(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("tidings_subscription_queued{"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_scrapes_do_not_clear_each_others_gauges() {
    // Once armed, every queue_info waits for the test to let it go, in call order.
    let (broker, gate) = Hooked::gated(Arc::new(EmbeddedBroker::in_memory()), "queue_info");
    let hub = Hub::open(Arc::new(broker), HubConfig::default())
        .await
        .unwrap();
    let admin = Principal::Admin;
    hub.create_application(
        &admin,
        serde_json::from_value(json!({"application": "shop", "address": "http://shop.invalid"}))
            .unwrap(),
    )
    .await
    .unwrap();
    for action in ["shop.sold", "shop.refunded"] {
        hub.register_action(
            &admin,
            serde_json::from_value(
                json!({"action": action, "application": "shop", "schemata": {"type": "object"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
        hub.subscribe(
            &admin,
            serde_json::from_value(
                json!({"application": "shop", "action": action, "handler": "/hooks"}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    }
    assert_eq!(queued_series(&hub.metrics_text().await.unwrap()), 2);

    gate.arm();
    let first = tokio::spawn({
        let hub = hub.clone();
        async move { hub.metrics_text().await.unwrap() }
    });
    gate.arrived(1).await;
    gate.release(1);
    // The first scrape has read one subscription and waits for the second.
    gate.arrived(2).await;
    let second = tokio::spawn({
        let hub = hub.clone();
        async move { hub.metrics_text().await.unwrap() }
    });
    gate.arrived(3).await;
    // The second has started; the first goes on and ends before it.
    gate.release(1);
    let first = first.await.unwrap();
    gate.release(2);
    let second = second.await.unwrap();
    assert_eq!(queued_series(&first), 2, "{first}");
    assert_eq!(queued_series(&second), 2, "{second}");
}
