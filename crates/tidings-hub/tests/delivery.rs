//! What a delivery's gist says and where its message stands never disagree:
//! the gist of an attempt and the message's next step are one transaction;
//! a delivery whose subscriber was deactivated meanwhile waits instead of
//! staying in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_core::testing::{Call, Hooked};
use tidings_core::{Broker, Error, GroupInfo, QueueName};
use tidings_embedded::EmbeddedBroker;
use tidings_hub::model::GistStatus;
use tidings_hub::{DeliveryConfig, DestinationPolicy, Dispatcher, Hub, HubConfig, Principal};
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(10);

/// A hub with one subscriber of `shop.sold`; returns it with the
/// subscription's queue.
async fn hub_with_subscriber(broker: Arc<dyn Broker>, address: &str) -> (Hub, QueueName, String) {
    let config = HubConfig {
        // Far beyond PATIENCE: a delivery left in flight stays there.
        attempt_timeout: Duration::from_secs(60),
        // The subscriber listens on loopback.
        destinations: DestinationPolicy {
            allow_private: true,
            allowed: Vec::new(),
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(broker, config).await.unwrap();
    let admin = Principal::Admin;
    hub.create_application(
        &admin,
        from(json!({"application": "shop", "address": address})),
    )
    .await
    .unwrap();
    hub.register_action(
        &admin,
        from(json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}})),
    )
    .await
    .unwrap();
    let (view, _) = hub
        .subscribe(
            &admin,
            from(json!({"application": "shop", "action": "shop.sold", "handler": "/bad-hooks"})),
        )
        .await
        .unwrap();
    let id = view.subscription;
    let queue = QueueName::new(format!("hub.sub.{id}")).unwrap();
    (hub, queue, id)
}

async fn publish(hub: &Hub) -> String {
    let event =
        serde_json::from_value(json!({"action": "shop.sold", "payload": {"n": 1}})).unwrap();
    let published = hub.publish(&Principal::Admin, event, None).await.unwrap();
    published.view.event
}

fn start(hub: &Hub) -> CancellationToken {
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::new(hub.clone(), DeliveryConfig::default()).unwrap();
    tokio::spawn(dispatcher.run(stop.clone()));
    stop
}

fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Waits until the delivery group of `queue` satisfies `check`.
async fn group_until(
    broker: &dyn Broker,
    queue: &QueueName,
    what: &str,
    check: impl Fn(&GroupInfo) -> bool,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let info = broker.queue_info(queue).await.unwrap();
        if info.groups.iter().any(&check) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {:?}", info.groups);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_records_its_gist_and_its_retry_together() {
    // Every nack made outside a transaction fails, as a crash right after
    // the gist's write would leave it.
    let engine: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let failing = Arc::new(AtomicBool::new(true));
    let hooked = {
        let failing = failing.clone();
        Hooked::new(engine.clone(), move |call: Call| {
            let fail = call.op == "nack_many" && failing.load(Ordering::SeqCst);
            Box::pin(async move {
                if fail {
                    Err(Error::Unavailable("the process died here".into()))
                } else {
                    Ok(())
                }
            })
        })
    };
    // Every delivery to it fails (its path starts with /bad).
    let address = common::endpoint().await;
    let (hub, queue, sub) = hub_with_subscriber(Arc::new(hooked), &address).await;
    let event = publish(&hub).await;
    let stop = start(&hub);
    group_until(
        &*engine,
        &queue,
        "the retry is scheduled, not left in flight",
        |g| g.delayed == 1 && g.pending == 0,
    )
    .await;
    let gist = hub.gist(&format!("{event}.{sub}")).await.unwrap();
    assert_eq!(gist.status, GistStatus::Retrying);
    assert_eq!(gist.attempts, 1);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_a_subscriber_deactivated_meanwhile_waits_instead_of_staying_in_flight() {
    // The worker's reads of records are held, once armed, until the test
    // has deactivated the subscriber: the delivery is then in the worker's
    // hands, its subscriber inactive.
    let engine: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let (hooked, gate) = Hooked::gated(engine.clone(), "get_record");
    // Every delivery to it fails (its path starts with /bad).
    let address = common::endpoint().await;
    let (hub, queue, _) = hub_with_subscriber(Arc::new(hooked), &address).await;
    gate.arm();
    let stop = start(&hub);
    publish(&hub).await;
    gate.arrived(1).await;
    gate.disarm();
    hub.set_application_active(&Principal::Admin, "shop", Some(false))
        .await
        .unwrap();
    gate.release(1000);
    group_until(&*engine, &queue, "the delivery waits, not in flight", |g| {
        g.delayed == 1 && g.pending == 0
    })
    .await;
    stop.cancel();
}
