//! The counters and indexes behind `/v1/stats` and `/v1/gists` agree with
//! the records they describe, checked against a full scan of those records
//! after every kind of change: publishes, deliveries and dead letters,
//! replays, requeues, retention, and a store written before the counters
//! existed (counted once at open). On the embedded engine, on Redis and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidings_core::{Broker, ManualClock, RecordScan, TableName, Timestamp, Transaction};
use tidings_embedded::EmbeddedBroker;
use tidings_hub::hub::{GistFilter, Page, RetentionPolicy};
use tidings_hub::model::{Gist, GistStatus};
use tidings_hub::{DeliveryConfig, DestinationPolicy, Dispatcher, Hub, HubConfig, Principal};
use tokio_util::sync::CancellationToken;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

fn table(name: &str) -> TableName {
    TableName::new(name).unwrap()
}

/// Every record of a table, read in full (what the counters spare requests).
async fn all<T: serde::de::DeserializeOwned>(broker: &dyn Broker, name: &str) -> Vec<(String, T)> {
    broker
        .scan_records(&table(name), RecordScan::all())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.key, serde_json::from_str(r.value.as_str()).unwrap()))
        .collect()
}

/// The stats and listings agree with a full scan of the gists and events.
async fn agree(hub: &Hub, broker: &dyn Broker, subs: &[String]) {
    let gists: Vec<(String, Gist)> = all(broker, "hub.gists").await;
    let events: Vec<(String, Value)> = all(broker, "hub.events").await;
    let stats = hub.stats().await.unwrap();
    let of = |s: GistStatus| gists.iter().filter(|(_, g)| g.status == s).count() as u64;
    assert_eq!(stats.events, events.len(), "{stats:?}");
    assert_eq!(stats.total, gists.len(), "{stats:?}");
    assert_eq!(stats.pending, of(GistStatus::Pending), "{stats:?}");
    assert_eq!(stats.retrying, of(GistStatus::Retrying), "{stats:?}");
    assert_eq!(stats.delivered, of(GistStatus::Delivered), "{stats:?}");
    assert_eq!(stats.failed, of(GistStatus::Failed), "{stats:?}");
    let attempts: u64 = gists.iter().map(|(_, g)| u64::from(g.attempts)).sum();
    assert_eq!(stats.attempts, attempts, "{stats:?}");

    let mut filters = vec![
        (Principal::Admin, GistFilter::default()),
        (Principal::Application("crm".into()), GistFilter::default()),
        (
            Principal::Admin,
            GistFilter {
                completed: Some(false),
                ..Default::default()
            },
        ),
        (
            Principal::Admin,
            GistFilter {
                action: Some("sold".into()),
                subscriber: Some("sho".into()),
                ..Default::default()
            },
        ),
    ];
    for status in ["pending", "retrying", "delivered", "failed"] {
        filters.push((
            Principal::Admin,
            GistFilter {
                status: GistStatus::parse(status),
                ..Default::default()
            },
        ));
    }
    for sub in subs {
        filters.push((
            Principal::Admin,
            GistFilter {
                subscription: Some(sub.clone()),
                status: Some(GistStatus::Delivered),
                ..Default::default()
            },
        ));
    }
    for (who, filter) in filters {
        let mut expected: Vec<&Gist> = gists
            .iter()
            .map(|(_, g)| g)
            .filter(|g| {
                who.may_act_as(&g.subscriber)
                    && filter
                        .subscription
                        .as_deref()
                        .is_none_or(|s| g.subscription == s)
                    && filter
                        .action
                        .as_deref()
                        .is_none_or(|a| g.action.contains(a))
                    && filter
                        .subscriber
                        .as_deref()
                        .is_none_or(|s| g.subscriber.contains(s))
                    && filter.status.is_none_or(|s| g.status == s)
                    && filter
                        .completed
                        .is_none_or(|c| c == (g.status == GistStatus::Delivered))
            })
            .collect();
        expected.sort_by_key(|g| std::cmp::Reverse(g.key()));
        let expected: Vec<String> = expected.iter().map(|g| g.key()).collect();
        let mut listed = Vec::new();
        for page in 1.. {
            let got = hub
                .list_gists(&who, &filter, Page::new(Some(page), Some(7)))
                .await
                .unwrap();
            assert_eq!(got.total, expected.len(), "{filter:?} as {who:?}");
            assert!(got.total_exact);
            if got.data.is_empty() {
                break;
            }
            listed.extend(got.data.into_iter().map(|g| g.id));
        }
        assert_eq!(listed, expected, "{filter:?} as {who:?}");
    }
}

/// Waits until no delivery is pending or retrying.
async fn all_settled(hub: &Hub) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = hub.stats().await.unwrap();
        if stats.pending + stats.retrying == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "never settled: {stats:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn counts_agree_with_the_records(broker: Arc<dyn Broker>) {
    let clock = ManualClock::new(Timestamp::now());
    let config = || HubConfig {
        clock: tidings_core::Clock::Manual(clock.clone()),
        destinations: DestinationPolicy {
            allow_private: true,
            allowed: Vec::new(),
        },
        retention: RetentionPolicy {
            events: Some(DAY * 10),
            delivered: Some(DAY),
            failed: Some(DAY * 3),
            batch: 5,
            ..RetentionPolicy::default()
        },
        ..HubConfig::default()
    };
    let hub = Hub::open(broker.clone(), config()).await.unwrap();
    let admin = Principal::Admin;
    let address = common::endpoint().await;
    for app in ["shop", "crm"] {
        hub.create_application(
            &admin,
            from(json!({"application": app, "address": address})),
        )
        .await
        .unwrap();
    }
    for action in ["shop.sold", "shop.refunded"] {
        let action =
            json!({"action": action, "application": "shop", "schemata": {"type": "object"}});
        hub.register_action(&admin, from(action)).await.unwrap();
    }
    let mut subs = Vec::new();
    for (app, action, handler) in [
        ("shop", "shop.sold", "/ok"),
        ("shop", "shop.sold", "/bad"),
        ("crm", "shop.sold", "/ok"),
        ("crm", "shop.refunded", "/bad"),
    ] {
        let sub =
            json!({"application": app, "action": action, "handler": handler, "max_retries": 1});
        subs.push(
            hub.subscribe(&admin, from(sub))
                .await
                .unwrap()
                .0
                .subscription,
        );
    }
    agree(&hub, &*broker, &subs).await;

    // Publishes, then deliveries and dead letters.
    let stop = CancellationToken::new();
    // No breaker in the way: every failing delivery fails at once.
    let delivery = DeliveryConfig {
        breaker: tidings_patterns::BreakerConfig {
            failure_threshold: u32::MAX,
            ..Default::default()
        },
        ..DeliveryConfig::default()
    };
    let dispatcher = Dispatcher::new(hub.clone(), delivery).unwrap();
    let replayer = dispatcher.replayer();
    let delivering = tokio::spawn(dispatcher.run(stop.clone()));
    for n in 0..12 {
        let action = if n % 3 == 0 {
            "shop.refunded"
        } else {
            "shop.sold"
        };
        let event = json!({"action": action, "payload": {"n": n}});
        hub.publish(&admin, from(event), None).await.unwrap();
    }
    all_settled(&hub).await;
    agree(&hub, &*broker, &subs).await;

    // A replay of a failed delivery (failing again) and of a delivered one.
    let failed = hub
        .list_gists(
            &admin,
            &GistFilter {
                status: Some(GistStatus::Failed),
                ..Default::default()
            },
            Page::new(None, None),
        )
        .await
        .unwrap();
    replayer.replay(&failed.data[0].id).await.unwrap();
    let delivered = hub
        .list_gists(
            &admin,
            &GistFilter {
                status: Some(GistStatus::Delivered),
                ..Default::default()
            },
            Page::new(None, None),
        )
        .await
        .unwrap();
    replayer.replay(&delivered.data[0].id).await.unwrap();
    agree(&hub, &*broker, &subs).await;

    // A requeue of one subscription's failed deliveries: pending again
    // (with nothing delivering them now).
    stop.cancel();
    delivering.await.unwrap();
    let requeued = hub
        .requeue(
            &admin,
            &GistFilter {
                subscription: Some(subs[3].clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(requeued.requeued, 4, "{requeued:?}");
    agree(&hub, &*broker, &subs).await;

    // Retention: delivered gists after a day, failed ones after three,
    // events after ten, but for the 4 whose deliveries are pending.
    for days in [1, 2, 8] {
        clock.advance(DAY * days);
        hub.sweep().await.unwrap();
        agree(&hub, &*broker, &subs).await;
    }
    let stats = hub.stats().await.unwrap();
    assert_eq!((stats.events, stats.total, stats.pending), (4, 4, 4));

    // A store written before the counters existed: they are counted once
    // at open (and not again at the next).
    for n in 0..4 {
        let event = json!({"action": "shop.sold", "payload": {"n": n}});
        hub.publish(&admin, from(event), None).await.unwrap();
    }
    drop(hub);
    let mut tx = Transaction::new();
    for name in [
        "hub.counts",
        "hub.gists_by_subscription",
        "hub.gists_by_status",
    ] {
        for record in broker
            .scan_records(&table(name), RecordScan::all())
            .await
            .unwrap()
        {
            tx.delete(table(name), record.key);
        }
    }
    tx.delete(table("hub.meta"), "counts");
    broker.commit(tx).await.unwrap();
    // Three processes opening the store at once count each batch once.
    let (a, b, c) = tokio::join!(
        Hub::open(broker.clone(), config()),
        Hub::open(broker.clone(), config()),
        Hub::open(broker.clone(), config()),
    );
    for hub in [a.unwrap(), b.unwrap(), c.unwrap()] {
        agree(&hub, &*broker, &subs).await;
        assert_eq!(hub.stats().await.unwrap().pending, 16);
    }
    let hub = Hub::open(broker.clone(), config()).await.unwrap();
    agree(&hub, &*broker, &subs).await;
    assert_eq!(hub.stats().await.unwrap().pending, 16);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_on_the_embedded_engine() {
    counts_agree_with_the_records(Arc::new(EmbeddedBroker::in_memory())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_on_redis() {
    common::on_redis("counts", counts_agree_with_the_records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_on_postgres() {
    common::on_postgres(counts_agree_with_the_records).await;
}
