//! Two hubs on one store, as two processes would be. Here on one in-memory
//! engine, which has no change feed (it is exclusive to one process), so
//! the second hub never hears of the first's changes: what it must do with
//! a catalog that is out of date (tests/serve_shared.rs in tidings-cli runs
//! real processes on Redis and PostgreSQL, with the feed).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use serde_json::{Value, json};
use tidings_core::Broker;
use tidings_embedded::EmbeddedBroker;
use tidings_hub::{Hub, HubError, Principal};

fn from<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Three hubs on `broker` on one clock moved by hand, whose heartbeats run
/// only when the test calls them (the interval is ten minutes of real time).
async fn three_hubs_on_a_manual_clock(
    broker: &Arc<dyn Broker>,
) -> (tidings_core::ManualClock, [Hub; 3]) {
    use tidings_core::{Clock, ManualClock, Timestamp};
    let clock = ManualClock::new(Timestamp::now());
    let config = || tidings_hub::HubConfig {
        clock: Clock::Manual(clock.clone()),
        heartbeat: HEARTBEAT,
        ..tidings_hub::HubConfig::default()
    };
    let first = Hub::open(broker.clone(), config()).await.unwrap();
    let second = Hub::open(broker.clone(), config()).await.unwrap();
    let third = Hub::open(broker.clone(), config()).await.unwrap();
    (clock, [first, second, third])
}

/// The heartbeat interval of [`three_hubs_on_a_manual_clock`].
const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(600);

/// Creates application `name` through `hub`, as the admin.
async fn application(hub: &Hub, name: &str) {
    let new = from(json!({"application": name, "address": "http://example.com"}));
    hub.create_application(&Principal::Admin, new)
        .await
        .unwrap();
}

/// Registers action `name` of application `app` with `schema`, as the admin.
async fn action(hub: &Hub, app: &str, name: &str, schema: Value) {
    let new = from(json!({"action": name, "application": app, "schemata": schema}));
    hub.register_action(&Principal::Admin, new).await.unwrap();
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
        application(&first, app).await;
    }
    action(&first, "shop", "sold", json!({"type": "object"})).await;
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

/// Each hub reports itself; one that stops beating is shown as not live
/// after three intervals and forgotten after an hour; one that leaves
/// (a graceful stop) is gone at once. On a clock moved by hand, with
/// heartbeats only when the test calls them.
#[tokio::test]
async fn processes_report_themselves_and_are_forgotten_when_silent() {
    use std::time::Duration;
    use tidings_hub::hub::cluster::FORGET_AFTER;

    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let (clock, [first, second, third]) = three_hubs_on_a_manual_clock(&broker).await;
    let live = |hub: &Hub| {
        let hub = hub.clone();
        async move {
            let view = hub.cluster().await.unwrap();
            let mut ids: Vec<(String, bool, bool)> = view
                .processes
                .into_iter()
                .map(|p| (p.id, p.live, p.this))
                .collect();
            ids.sort();
            ids
        }
    };
    let mut all = vec![
        (first.process_id().to_owned(), true, true),
        (second.process_id().to_owned(), true, false),
        (third.process_id().to_owned(), true, false),
    ];
    all.sort();
    assert_eq!(live(&first).await, all);

    // The third stops gracefully: gone at once, and its heartbeat (were it
    // to run again) does not bring it back.
    third.leave().await.unwrap();
    third.beat().await.unwrap();
    let listed = live(&first).await;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|(id, _, _)| id != third.process_id()));

    // Three intervals pass; only the first beats: the second is listed,
    // not live.
    let interval = HEARTBEAT;
    clock.advance(interval * 3 + Duration::from_millis(1));
    first.beat().await.unwrap();
    let listed = live(&first).await;
    let second_seen = listed
        .iter()
        .find(|(id, _, _)| id == second.process_id())
        .unwrap();
    assert!(!second_seen.1, "{listed:?}");
    assert!(
        listed
            .iter()
            .any(|(id, live, _)| id == first.process_id() && *live)
    );
    // Silent for longer than FORGET_AFTER: the first's next beat removes
    // its record.
    clock.advance(FORGET_AFTER - interval * 3);
    first.beat().await.unwrap();
    let listed = live(&first).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    // Once it beats again, it is back.
    second.beat().await.unwrap();
    assert_eq!(live(&first).await.len(), 2);
}

/// Two hubs that have not heard of each other's actions still give them
/// different ids (the ids come from a counter moved by compare-and-set).
#[tokio::test]
async fn actions_registered_through_two_hubs_get_different_ids() {
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let first = Hub::open(broker.clone(), Default::default()).await.unwrap();
    let second = Hub::open(broker.clone(), Default::default()).await.unwrap();
    let admin = Principal::Admin;
    application(&first, "shop").await;
    application(&second, "store").await;
    let mut ids = Vec::new();
    for (hub, app) in [
        (&first, "shop"),
        (&second, "store"),
        (&first, "shop"),
        (&second, "store"),
    ] {
        let n = ids.len();
        let (view, created) = hub
            .register_action(
                &admin,
                from(json!({"action": format!("{app}.a{n}"), "application": app, "schemata": {"type": "object"}})),
            )
            .await
            .unwrap();
        assert!(created);
        ids.push(view.id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "ids handed out twice: {ids:?}");
}

/// An action registered through one hub can be published through another
/// at once, before that one hears of it (a miss reads the store).
#[tokio::test]
async fn an_action_made_elsewhere_is_publishable_at_once() {
    let broker: Arc<dyn Broker> = Arc::new(EmbeddedBroker::in_memory());
    let first = Hub::open(broker.clone(), Default::default()).await.unwrap();
    let second = Hub::open(broker.clone(), Default::default()).await.unwrap();
    application(&first, "shop").await;
    action(
        &first,
        "shop",
        "sold",
        json!({"type": "object", "required": ["n"]}),
    )
    .await;
    let shop = Principal::Application("shop".into());
    let published = second
        .publish(
            &shop,
            from(json!({"action": "sold", "payload": {"n": 1}})),
            None,
        )
        .await
        .unwrap();
    assert_eq!(published.view.fanout, Some(0));
    // Its schema came along.
    let refused = second
        .publish(&shop, from(json!({"action": "sold", "payload": {}})), None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, HubError::SchemaViolation { .. }),
        "{refused:?}"
    );
    // An action that exists nowhere is still refused.
    let refused = second
        .publish(
            &shop,
            from(json!({"action": "nothing", "payload": {}})),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refused, HubError::Unprocessable { .. }),
        "{refused:?}"
    );
}

/// A catalog record changed in the store by someone this hub has not heard
/// from yet (here: written behind its back, as another process's change
/// still on its way through the feed) is not overwritten by an update made
/// from the old copy: the update fails with a conflict, the record is read
/// again, and the same update then applies on top of the other change.
async fn an_update_from_a_stale_copy_is_refused_not_lost(broker: Arc<dyn Broker>) {
    let hub = Hub::open(broker.clone(), Default::default()).await.unwrap();
    let admin = Principal::Admin;
    application(&hub, "shop").await;
    let table = tidings_core::TableName::new("hub.applications").unwrap();
    let stored = broker.get_record(&table, "shop").await.unwrap().unwrap();
    let mut record: Value = serde_json::from_str(stored.as_str()).unwrap();
    record["description"] = json!("changed elsewhere");
    let mut tx = tidings_core::Transaction::new();
    tx.put(
        table.clone(),
        "shop",
        tidings_core::Payload::from_value(&record).unwrap(),
    );
    broker.commit(tx).await.unwrap();

    let update = || from(json!({"address": "http://moved.example.com"}));
    let refused = hub
        .update_application(&admin, "shop", update())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            HubError::Storage(tidings_core::Error::RecordChanged { .. })
        ),
        "{refused:?}"
    );
    // Read again in the background; then the update applies on top.
    let mut applied = None;
    for _ in 0..200 {
        match hub.update_application(&admin, "shop", update()).await {
            Ok(view) => {
                applied = Some(view);
                break;
            }
            Err(HubError::Storage(tidings_core::Error::RecordChanged { .. })) => {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    let view = applied.expect("the update never applied after the record was read again");
    assert_eq!(view.address, "http://moved.example.com/");
    assert_eq!(view.description.as_deref(), Some("changed elsewhere"));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_from_a_stale_copy_is_refused_not_lost_on_redis() {
    common::on_redis("stale", an_update_from_a_stale_copy_is_refused_not_lost).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_from_a_stale_copy_is_refused_not_lost_on_postgresql() {
    common::on_postgres(an_update_from_a_stale_copy_is_refused_not_lost).await;
}

/// A process that is gone leaves nothing behind in the store: one that
/// stops gracefully deletes its group of the catalog's feed and its name
/// among a subscription's consumers as it leaves; those of one that went
/// silent are deleted by the process that forgets it (after FORGET_AFTER,
/// on a clock moved by hand).
async fn processes_that_are_gone_leave_no_group_or_consumer(broker: Arc<dyn Broker>) {
    use std::time::Duration;
    use tidings_core::{ConsumerName, GroupName, QueueName, ReceiveOptions};
    use tidings_hub::hub::cluster::FORGET_AFTER;

    let (clock, [first, second, third]) = three_hubs_on_a_manual_clock(&broker).await;
    let admin = Principal::Admin;
    application(&first, "shop").await;
    action(&first, "shop", "shop.sold", json!({"type": "object"})).await;
    let sub = first
        .subscribe(
            &admin,
            from(json!({"application": "shop", "action": "shop.sold", "handler": "/"})),
        )
        .await
        .unwrap()
        .0
        .subscription;
    let queue = QueueName::new(format!("hub.sub.{sub}")).unwrap();
    let webhooks = GroupName::new("webhooks").unwrap();
    // The subscription reaches the other processes through the catalog's
    // feed: each publishes once it has heard of it (else its event would
    // have no delivery to take).
    for hub in [&second, &third] {
        let mut changes = hub.changes();
        tokio::time::timeout(Duration::from_secs(20), async {
            while hub.subscription(&sub).is_err() {
                changes.changed().await.unwrap();
            }
        })
        .await
        .expect("the subscription reaches every process");
    }
    // Each process takes a delivery of the subscription under its own
    // name (as its delivery would), and settles it.
    for hub in [&first, &second, &third] {
        let event = from(json!({"action": "shop.sold", "payload": {}}));
        hub.publish(&admin, event, None).await.unwrap();
        let me = ConsumerName::new(format!("process-{}", hub.process_id())).unwrap();
        let options = ReceiveOptions::new(1, Duration::from_secs(10));
        let got = broker
            .receive(&queue, &webhooks, &me, options)
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        let acked = broker.ack(&queue, &webhooks, &[got[0].id.clone()]).await;
        assert_eq!(acked.unwrap(), 1);
    }
    let feed = QueueName::new("hub.catalog").unwrap();
    let names = |hubs: &[&Hub]| {
        let mut names: Vec<String> = hubs
            .iter()
            .map(|h| format!("process-{}", h.process_id()))
            .collect();
        names.sort();
        names
    };
    let groups_and_consumers = || async {
        let mut groups: Vec<String> = broker
            .queue_info(&feed)
            .await
            .unwrap()
            .groups
            .into_iter()
            .map(|g| g.name.to_string())
            .collect();
        groups.sort();
        let mut consumers: Vec<String> = broker.queue_info(&queue).await.unwrap().groups[0]
            .consumers
            .iter()
            .map(|c| c.name.clone())
            .collect();
        consumers.sort();
        (groups, consumers)
    };
    let all = names(&[&first, &second, &third]);
    assert_eq!(groups_and_consumers().await, (all.clone(), all));

    third.leave().await.unwrap();
    let left = names(&[&first, &second]);
    assert_eq!(groups_and_consumers().await, (left.clone(), left));

    // The second dies; once it has been silent for FORGET_AFTER, the
    // first's heartbeat forgets it and what it left.
    drop(second);
    clock.advance(FORGET_AFTER + Duration::from_secs(1));
    first.beat().await.unwrap();
    let only = names(&[&first]);
    assert_eq!(groups_and_consumers().await, (only.clone(), only));
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_that_are_gone_leave_no_group_or_consumer_on_redis() {
    common::on_redis("gone", processes_that_are_gone_leave_no_group_or_consumer).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn processes_that_are_gone_leave_no_group_or_consumer_on_postgresql() {
    common::on_postgres(processes_that_are_gone_leave_no_group_or_consumer).await;
}
