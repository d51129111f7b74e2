//! Scrapes of `/metrics` that overlap each see every subscription's gauges.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use tidings_core::testing::{Call, Hooked};
use tidings_embedded::EmbeddedBroker;
use tidings_hub::{Hub, HubConfig, Principal};
use tokio::sync::{Semaphore, watch};

fn queued_series(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("tidings_subscription_queued{"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_scrapes_do_not_clear_each_others_gauges() {
    // Every queue_info waits for a permit the test hands out, in call order.
    let gating = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Semaphore::new(0));
    let (entered, mut calls) = watch::channel(0usize);
    let broker = {
        let (gating, gate) = (gating.clone(), gate.clone());
        Hooked::new(Arc::new(EmbeddedBroker::in_memory()), move |call: Call| {
            let held = call.op == "queue_info" && gating.load(Ordering::SeqCst);
            let (gate, entered) = (gate.clone(), entered.clone());
            Box::pin(async move {
                if held {
                    entered.send_modify(|n| *n += 1);
                    gate.acquire().await.unwrap().forget();
                }
                Ok(())
            })
        })
    };
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

    gating.store(true, Ordering::SeqCst);
    let first = tokio::spawn({
        let hub = hub.clone();
        async move { hub.metrics_text().await.unwrap() }
    });
    calls.wait_for(|n| *n == 1).await.unwrap();
    gate.add_permits(1);
    // The first scrape has read one subscription and waits for the second.
    calls.wait_for(|n| *n == 2).await.unwrap();
    let second = tokio::spawn({
        let hub = hub.clone();
        async move { hub.metrics_text().await.unwrap() }
    });
    calls.wait_for(|n| *n == 3).await.unwrap();
    // The second has started; the first goes on and ends before it.
    gate.add_permits(1);
    let first = first.await.unwrap();
    gate.add_permits(2);
    let second = second.await.unwrap();
    assert_eq!(queued_series(&first), 2, "{first}");
    assert_eq!(queued_series(&second), 2, "{second}");
}
