//! Retention on a clock the test moves (no real waiting), on the embedded
//! engine, on Redis and on PostgreSQL: dedupers, delivered gists, failed gists with their
//! dead letters, and events go exactly when the rules say, never while a
//! delivery is pending, and an action's own retention wins.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidings_core::{Broker, ManualClock, QueueName, Timestamp};
use tidings_embedded::EmbeddedBroker;
use tidings_hub::hub::{RetentionPolicy, Swept};
use tidings_hub::model::GistStatus;
use tidings_hub::{
    DeliveryConfig, DestinationPolicy, Dispatcher, Hub, HubConfig, HubError, Principal,
};
use tokio_util::sync::CancellationToken;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

async fn publish(hub: &Hub, action: &str, deduper: Option<&str>) -> (String, bool) {
    let mut event = json!({"action": action, "payload": {"name": "ann"}});
    if let Some(d) = deduper {
        event["deduper"] = json!(d);
    }
    let published = hub
        .publish(&Principal::Admin, from(event), None)
        .await
        .unwrap();
    (published.view.event, published.duplicate)
}

/// Waits until the gist `key` has `status`.
async fn settled(hub: &Hub, key: &str, status: GistStatus) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if hub.gist(key).await.is_ok_and(|g| g.status == status) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never became {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn exists(hub: &Hub, event: &str) -> bool {
    match hub.event(event).await {
        Ok(_) => true,
        Err(HubError::NotFound(_)) => false,
        Err(e) => panic!("{e}"),
    }
}

/// A hub's configuration on `clock`, with `retention`, sending to local
/// endpoints.
fn on_clock(clock: &ManualClock, retention: RetentionPolicy) -> HubConfig {
    HubConfig {
        clock: tidings_core::Clock::Manual(clock.clone()),
        destinations: DestinationPolicy {
            allow_private: true,
            allowed: Vec::new(),
        },
        retention,
        ..HubConfig::default()
    }
}

async fn retention_follows_its_rules(broker: Arc<dyn Broker>) {
    let clock = ManualClock::new(Timestamp::now());
    let config = on_clock(
        &clock,
        RetentionPolicy {
            events: Some(DAY * 10),
            delivered: Some(DAY),
            failed: Some(DAY * 3),
            dedup_window: HOUR,
            audit: Some(DAY * 30),
            // Small batches: every sweep crosses batch boundaries.
            batch: 2,
            ..RetentionPolicy::default()
        },
    );
    let hub = Hub::open(broker.clone(), config).await.unwrap();
    let admin = Principal::Admin;
    let address = common::endpoint().await;
    hub.create_application(
        &admin,
        from(json!({"application": "shop", "address": address})),
    )
    .await
    .unwrap();
    for action in [
        json!({"action": "shop.sold", "application": "shop", "schemata": {"type": "object"}}),
        json!({"action": "shop.audited", "application": "shop", "schemata": {"type": "object"}, "retention": "40d"}),
    ] {
        hub.register_action(&admin, from(action)).await.unwrap();
    }
    let mut subs = Vec::new();
    for handler in ["/ok", "/bad"] {
        let sub = json!({"application": "shop", "action": "shop.sold", "handler": handler, "max_retries": 1});
        subs.push(
            hub.subscribe(&admin, from(sub))
                .await
                .unwrap()
                .0
                .subscription,
        );
    }
    let stop = CancellationToken::new();
    let dispatcher = Dispatcher::new(hub.clone(), DeliveryConfig::default()).unwrap();
    let delivering = tokio::spawn(dispatcher.run(stop.clone()));

    // e1: delivered to /ok, dead-lettered by /bad; e2: its action keeps 40 days.
    let (e1, _) = publish(&hub, "shop.sold", Some("order-1")).await;
    let delivered = format!("{e1}.{}", subs[0]);
    let failed = format!("{e1}.{}", subs[1]);
    settled(&hub, &delivered, GistStatus::Delivered).await;
    settled(&hub, &failed, GistStatus::Failed).await;
    let bad_queue = QueueName::new(format!("hub.sub.{}", subs[1])).unwrap();
    assert_eq!(broker.queue_info(&bad_queue).await.unwrap().dead_letters, 1);
    let (e2, _) = publish(&hub, "shop.audited", None).await;
    // e3: its deliveries stay pending (no dispatcher any more).
    stop.cancel();
    delivering.await.unwrap();
    let (e3, _) = publish(&hub, "shop.sold", None).await;

    // Within the dedup window: a repeat is the original; nothing is due.
    clock.advance(HOUR / 2);
    assert_eq!(hub.sweep().await.unwrap(), Swept::default());
    assert_eq!(
        publish(&hub, "shop.sold", Some("order-1")).await,
        (e1.clone(), true)
    );

    // Past it: the deduper is forgotten (and so is that of the hub's
    // dead-letter notice about e1), a repeat is a new event.
    clock.advance(HOUR);
    let swept = hub.sweep().await.unwrap();
    assert_eq!(
        swept,
        Swept {
            dedupers: 2,
            ..Swept::default()
        }
    );
    let (e4, duplicate) = publish(&hub, "shop.sold", Some("order-1")).await;
    assert!(!duplicate && e4 != e1);

    // A day after the delivery: the delivered gist goes; the failed one
    // stays. (And e4's deduper, an hour old, is forgotten.)
    clock.advance(DAY);
    let swept = hub.sweep().await.unwrap();
    assert_eq!(
        swept,
        Swept {
            gists: 1,
            dedupers: 1,
            ..Swept::default()
        },
        "{swept:?}"
    );
    assert!(hub.gist(&delivered).await.is_err());
    assert!(hub.gist(&failed).await.is_ok());

    // Three days after it died: the failed gist goes with its dead letter.
    clock.advance(DAY * 2);
    let swept = hub.sweep().await.unwrap();
    assert_eq!(
        swept,
        Swept {
            gists: 1,
            dead_letters: 1,
            ..Swept::default()
        },
        "{swept:?}"
    );
    assert_eq!(broker.queue_info(&bad_queue).await.unwrap().dead_letters, 0);

    // Ten days: e1 goes, and the dead-letter notice about it; e3 and e4
    // stay (their deliveries are pending); e2 stays (its action keeps 40
    // days).
    clock.advance(DAY * 7);
    let swept = hub.sweep().await.unwrap();
    assert_eq!(swept.events, 2, "{swept:?}");
    assert!(!exists(&hub, &e1).await);
    match hub.event(&e1).await {
        Err(HubError::NotFound(m)) => assert!(m.contains("removed by retention"), "{m}"),
        other => panic!("{other:?}"),
    }
    for kept in [&e2, &e3, &e4] {
        assert!(exists(&hub, kept).await, "{kept}");
    }
    // A backfill reaching back past the retention says what is gone.
    let backfill = hub.backfill(&admin, &subs[0], 0, None, true).await.unwrap();
    assert_eq!(backfill.count, Some(2), "e3 and e4 are left of shop.sold");
    assert!(backfill.removed_before.is_some(), "{backfill:?}");
    // Forty days: e2 goes too.
    clock.advance(DAY * 30);
    assert_eq!(hub.sweep().await.unwrap().events, 1);
    assert!(!exists(&hub, &e2).await);
    assert!(exists(&hub, &e3).await && exists(&hub, &e4).await);
    // A sweep with nothing due removes nothing.
    assert_eq!(hub.sweep().await.unwrap(), Swept::default());
    // The audit log: the system's entries too, after its own retention.
    hub.record_audit(tidings_hub::model::audit::AuditRecord {
        action: "test.entry".to_owned(),
        actor: "system".to_owned(),
        ..Default::default()
    })
    .await
    .unwrap();
    clock.advance(DAY * 29);
    assert_eq!(hub.sweep().await.unwrap(), Swept::default());
    clock.advance(DAY * 2);
    let swept = hub.sweep().await.unwrap();
    assert_eq!(swept.audit, 1, "{swept:?}");
}

/// Held events: a sweep resumes past them, and looks at them again every
/// `HELD_RECHECK`; events older than every unsettled delivery go at once.
async fn held_events_are_looked_at_again(broker: Arc<dyn Broker>) {
    let clock = ManualClock::new(Timestamp::now());
    let config = on_clock(
        &clock,
        RetentionPolicy {
            events: Some(DAY * 10),
            failed: Some(DAY * 100),
            batch: 2,
            ..RetentionPolicy::default()
        },
    );
    let hub = Hub::open(broker, config).await.unwrap();
    let admin = Principal::Admin;
    hub.create_application(
        &admin,
        from(json!({"application": "shop", "address": "http://127.0.0.1:9"})),
    )
    .await
    .unwrap();
    for action in ["shop.sold", "shop.kept"] {
        let registered =
            json!({"action": action, "application": "shop", "schemata": {"type": "object"}});
        hub.register_action(&admin, from(registered)).await.unwrap();
        let sub = json!({"application": "shop", "action": action, "handler": "/in"});
        hub.subscribe(&admin, from(sub)).await.unwrap();
    }
    // No dispatcher: every delivery stays pending.
    let (sold, _) = publish(&hub, "shop.sold", None).await;
    let (kept, _) = publish(&hub, "shop.kept", None).await;
    clock.advance(DAY * 11);
    assert_eq!(hub.sweep().await.unwrap().events, 0, "both are held");

    // `kept` is released (its subscription goes with its action), but an
    // older event is still held: `kept` waits for the next look.
    hub.delete_action(&admin, "shop.kept").await.unwrap();
    assert_eq!(hub.sweep().await.unwrap().events, 0);
    assert!(exists(&hub, &kept).await);
    clock.advance(tidings_hub::hub::HELD_RECHECK);
    assert_eq!(hub.sweep().await.unwrap().events, 1);
    assert!(!exists(&hub, &kept).await && exists(&hub, &sold).await);

    // Nothing unsettled is left: `sold` goes at the next sweep, without
    // waiting for a look at held events.
    hub.delete_action(&admin, "shop.sold").await.unwrap();
    assert_eq!(hub.sweep().await.unwrap().events, 1);
    assert!(!exists(&hub, &sold).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_on_the_embedded_engine() {
    held_events_are_looked_at_again(Arc::new(EmbeddedBroker::in_memory())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_on_redis() {
    common::on_redis("held", held_events_are_looked_at_again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_events_on_postgres() {
    common::on_postgres(held_events_are_looked_at_again).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_the_embedded_engine() {
    retention_follows_its_rules(Arc::new(EmbeddedBroker::in_memory())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_redis() {
    common::on_redis("retention", retention_follows_its_rules).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_postgres() {
    common::on_postgres(retention_follows_its_rules).await;
}
