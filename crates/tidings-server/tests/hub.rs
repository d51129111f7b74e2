//! End to end: the real server on a free port, a real receiver, real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::{Client, Receiver, TestServer, eventually};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use tidings_embedded::EmbeddedBroker;

/// Where a test's hubs keep their data: the embedded engine in memory, or
/// PostgreSQL, each hub in a schema of its own.
enum Backend {
    Memory,
    Postgres(std::sync::Mutex<Vec<tidings_postgres::testing::TestSchema>>),
}

impl Backend {
    /// PostgreSQL, or `None` (skip) when it is not there and this is not CI.
    async fn postgres() -> Option<Self> {
        // Reaching the server once tells whether to skip.
        let fixture = tidings_postgres::testing::fixture().await?;
        Some(Self::Postgres(std::sync::Mutex::new(vec![fixture.schema])))
    }

    /// A broker for one hub.
    async fn broker(&self) -> Arc<dyn tidings_core::Broker> {
        match self {
            Self::Memory => Arc::new(EmbeddedBroker::in_memory()),
            Self::Postgres(schemas) => {
                let schema = tidings_postgres::testing::TestSchema::fresh();
                let broker = tidings_postgres::PostgresBroker::open(&schema.url())
                    .await
                    .unwrap();
                schemas.lock().unwrap().push(schema);
                Arc::new(broker)
            }
        }
    }
}

/// Runs each named test on every backend: `embedded::name` and `postgres::name`.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&super::Backend::Memory).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres().await else {
                        return;
                    };
                    super::$name(&backend).await;
                }
            )*
        }
    };
}

/// HMAC-SHA256 computed here, not with the server's code.
fn hmac_hex(secret: &str, parts: &[&[u8]]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    for p in parts {
        mac.update(p);
    }
    hex::encode(mac.finalize().into_bytes())
}

async fn app(c: &Client, name: &str, address: &str) -> Value {
    let a = c
        .post(
            "/v1/applications",
            json!({"application": name, "address": address}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body
}

async fn action(c: &Client, name: &str, owner: &str, schema: Value) {
    let a = c
        .post(
            "/v1/actions",
            json!({"action": name, "application": owner, "schemata": schema}),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
}

async fn subscribe(c: &Client, body: Value) -> String {
    let a = c.post("/v1/subscriptions", body).await;
    assert_eq!(a.status, 201, "{}", a.body);
    a.body["subscription"].as_str().unwrap().to_owned()
}

/// A publisher `shop` (action `shop.sold`, any object) and a subscriber
/// application whose address is `receiver`.
async fn shop_selling_to(c: &Client, subscriber: &str, receiver: &Receiver) {
    app(c, "shop", "http://shop.invalid/").await;
    app(c, subscriber, &receiver.base).await;
    action(c, "shop.sold", "shop", json!({"type": "object"})).await;
}

/// A server with [`shop_selling_to`] the application `mailer`.
async fn shop_and_mailer(b: &Backend) -> (TestServer, Receiver, Client) {
    let server = TestServer::start(b.broker().await).await;
    let receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    shop_selling_to(&c, "mailer", &receiver).await;
    (server, receiver, c)
}

/// Subscribes the mailer to `shop.sold` at `handler`; returns the id.
async fn mail_sales(c: &Client, handler: &str) -> String {
    subscribe(
        c,
        json!({"application": "mailer", "action": "shop.sold", "handler": handler}),
    )
    .await
}

/// Publishes `shop.sold` with payload `{"n": n}`.
async fn sell(c: &Client, n: u64) -> common::Answer {
    c.post(
        "/v1/events",
        json!({"action": "shop.sold", "payload": {"n": n}}),
    )
    .await
}

async fn gist_status(c: &Client, gist: &str) -> (String, u64) {
    let a = c.get(&format!("/v1/gists?gist={gist}")).await;
    let row = &a.body["data"][0];
    (
        row["status"].as_str().unwrap_or("").to_owned(),
        row["attempts"].as_u64().unwrap_or(0),
    )
}

async fn seed_user_registration_flow_delivers_signed_webhooks(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);

    // The seed's curl flow: no content type (curl -d sends a form type).
    let bare = |body: Value| serde_json::to_vec(&body).unwrap();
    let r = c
        .send(
            "POST",
            "/v1/applications",
            Some(&bare(json!({"application": "user-service", "address": receiver.base, "secret": "user-service-secret"}))),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = c
        .send(
            "POST",
            "/v1/actions",
            Some(&bare(json!({
                "action": "user.created",
                "application": "user-service",
                "schemata": {
                    "type": "object",
                    "properties": {
                        "user_id": {"type": "string"},
                        "email": {"type": "string", "format": "email"},
                        "name": {"type": "string"},
                        "plan": {"type": "string", "enum": ["free", "premium"]}
                    },
                    "required": ["user_id", "email", "name"]
                }
            }))),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The seed subscribes an application it never registered, with a full URL.
    let r = c
        .post(
            "/v1/subscriptions",
            json!({
                "application": "email-service",
                "subscription": "welcome-emails",
                "action": "user.created",
                "handler": format!("{}/webhooks/user-created", receiver.base)
            }),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["registered_application"]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    // The subscription's own Standard Webhooks key, shown once.
    let signing_key = {
        use base64::Engine;
        let key = r.body["signing_key"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(key.strip_prefix("whsec_").unwrap())
            .unwrap()
    };
    assert_eq!(signing_key.len(), 32);

    let published = c
        .send(
            "POST",
            "/v1/events",
            Some(br#"{"action":"user.created","deduper":"u-1","payload":{"user_id":"u-1","email":"ann@example.com","name":"Ann","plan":"free","tiny":1e-7}}"#),
            &[
                ("content-type", "application/json; charset=utf-8"),
                ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            ],
        )
        .await;
    assert_eq!(published.status, 201, "{}", published.body);
    assert_eq!(published.body["fanout"], 1);
    let event = published.body["event"].as_str().unwrap().to_owned();

    let hit = receiver.next().await;
    assert_eq!(hit.path, "/webhooks/user-created");
    let body = hit.json();
    assert_eq!(body["action"], "user.created");
    assert_eq!(body["payload"]["email"], "ann@example.com");
    assert_eq!(body["metadata"], json!({}));
    assert_eq!(body["event"], event.as_str());
    // The payload's bytes are delivered as published (no 1e-7 → 1e-07 drift).
    assert!(
        std::str::from_utf8(&hit.body)
            .unwrap()
            .contains("\"tiny\":1e-7")
    );
    // Signatures over the exact bytes received.
    assert_eq!(
        hit.header("x-amebo-signature"),
        hmac_hex(&secret, &[&hit.body])
    );
    assert_eq!(hit.header("x-amebo-event-id"), event);
    assert_eq!(hit.header("x-amebo-delivery-attempt"), "1");
    let id = hit.header("webhook-id");
    let ts = hit.header("webhook-timestamp");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&signing_key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&hit.body);
    let expected = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    };
    assert_eq!(hit.header("webhook-signature"), format!("v1,{expected}"));
    let tp = hit.header("traceparent");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert_ne!(
        tp,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    // The same deduper again: the original event, 200, nothing delivered.
    let again = c
        .post(
            "/v1/events",
            json!({"action": "user.created", "deduper": "u-1", "payload": {"user_id": "u-1", "email": "x@example.com", "name": "Other"}}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["event"], event.as_str());
    assert!(receiver.quiet_for(Duration::from_millis(300)).await);

    // The delivery is recorded.
    let gist = format!("{event}.welcome-emails");
    eventually("the gist to read delivered", || async {
        gist_status(&c, &gist).await == ("delivered".to_owned(), 1)
    })
    .await;
    let one = c.get(&format!("/v1/events/{event}")).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.body["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    server.stop().await;
}

async fn order_flow_fans_out_to_every_subscription(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    app(&c, "order-service", "http://orders.invalid/").await;
    app(
        &c,
        "analytics-service",
        &format!("{}/analytics/", receiver.base),
    )
    .await;
    app(&c, "email-service", &receiver.base).await;
    action(
        &c,
        "order.placed",
        "order-service",
        json!({"type": "object", "required": ["order_id", "user_id", "items", "total"],
               "properties": {"order_id": {"type": "string"}, "user_id": {"type": "string"},
                              "items": {"type": "array"}, "total": {"type": "number"}}}),
    )
    .await;
    // A path handler is joined to the application's address.
    let s1 = subscribe(&c, json!({"application": "analytics-service", "action": "order.placed", "handler": "/webhooks/events"})).await;
    let s2 = subscribe(
        &c,
        json!({"application": "email-service", "action": "order.placed", "handler": "/orders"}),
    )
    .await;
    assert_ne!(s1, s2);
    let r = c
        .post("/v1/events", json!({"action": "order.placed", "payload": {"order_id": "o-1", "user_id": "u-1", "items": [], "total": 12.5}, "metadata": {"workspace_id": "ws-1"}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["fanout"], 2);
    let mut paths = BTreeSet::new();
    for _ in 0..2 {
        let hit = receiver.next().await;
        assert_eq!(hit.json()["metadata"]["workspace_id"], "ws-1");
        paths.insert(hit.path);
    }
    assert_eq!(
        paths,
        BTreeSet::from([
            "/analytics/webhooks/events".to_owned(),
            "/orders".to_owned()
        ])
    );
    // Subscribing the same handler again reactivates, 200.
    let again = c
        .post(
            "/v1/subscriptions",
            json!({"application": "email-service", "action": "order.placed", "handler": "/orders"}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["reactivated"], true);
    server.stop().await;
}

async fn failing_endpoint_is_retried_until_it_answers(b: &Backend) {
    let (server, mut receiver, c) = shop_and_mailer(b).await;
    let sub = subscribe(&c, json!({"application": "mailer", "action": "shop.sold", "handler": "/flaky", "retry_schedule": [0]})).await;
    receiver.fail("/flaky", 2, 500);
    let r = sell(&c, 1).await;
    let event = r.body["event"].as_str().unwrap().to_owned();
    let mut ids = std::collections::BTreeSet::new();
    for attempt in 1..=3 {
        let hit = receiver.next().await;
        assert_eq!(hit.header("x-amebo-delivery-attempt"), attempt.to_string());
        assert_eq!(hit.header("x-amebo-event-id"), event);
        ids.insert(hit.header("webhook-id").to_owned());
    }
    // The Standard Webhooks id: one per delivery, the same on every retry,
    // with no '.' (the separator of the signed content).
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids.first().cloned().unwrap_or_default();
    assert!(id.starts_with("msg_") && !id.contains('.'), "{id}");
    let gist = format!("{event}.{sub}");
    eventually("delivered after 3 attempts", || async {
        gist_status(&c, &gist).await == ("delivered".to_owned(), 3)
    })
    .await;
    let row = c.get(&format!("/v1/gists?gist={gist}")).await.body["data"][0].clone();
    assert_eq!(row["last_status_code"], 200);
    server.stop().await;
}

async fn last_failed_attempt_dead_letters_and_publishes_a_notice(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    shop_selling_to(&c, "mailer", &receiver).await;
    app(&c, "ops", &receiver.base).await;
    let sub = subscribe(&c, json!({"application": "mailer", "action": "shop.sold", "handler": "/broken", "max_retries": 2, "retry_schedule": [0]})).await;
    subscribe(&c, json!({"application": "ops", "action": "tidings.delivery.dead_lettered", "handler": "/dlq"})).await;
    receiver.fail("/broken", 1000, 500);
    let r = c
        .post(
            "/v1/events",
            json!({"action": "shop.sold", "payload": {"n": 1}, "metadata": {"workspace_id": "w"}}),
        )
        .await;
    let event = r.body["event"].as_str().unwrap().to_owned();
    let mut notice = None;
    let mut broken = 0;
    while notice.is_none() {
        let hit = receiver.next().await;
        match hit.path.as_str() {
            "/broken" => broken += 1,
            "/dlq" => notice = Some(hit.json()),
            other => panic!("unexpected {other}"),
        }
    }
    let notice = notice.unwrap();
    assert_eq!(broken, 2);
    assert_eq!(notice["action"], "tidings.delivery.dead_lettered");
    assert_eq!(notice["payload"]["event"], event.as_str());
    assert_eq!(notice["payload"]["attempts"], 2);
    assert_eq!(notice["payload"]["last_status_code"], 500);
    assert_eq!(notice["metadata"]["workspace_id"], "w");
    let gist = format!("{event}.{sub}");
    assert_eq!(gist_status(&c, &gist).await, ("failed".to_owned(), 2));
    let failed = c.get("/v1/gists?status=failed").await;
    assert_eq!(failed.body["total"], 1);
    let row = &failed.body["data"][0];
    assert_eq!(row["payload"]["n"], 1);
    assert_eq!(row["workspace"], "w");
    assert_eq!(row["publisher"], "admin-key");

    // Requeue: delivered once the endpoint works.
    receiver.fail("/broken", 0, 500);
    let r = c.post("/v1/requeues", json!({})).await;
    assert_eq!(r.body["requeued"], 1, "{}", r.body);
    let hit = receiver.next().await;
    assert_eq!(hit.path, "/broken");
    eventually("requeued delivery to succeed", || async {
        gist_status(&c, &gist).await.0 == "delivered"
    })
    .await;

    // Purge: a dead letter discarded, its record gone, the event kept.
    receiver.fail("/broken", 1000, 500);
    let r = c
        .post(
            "/v1/events",
            json!({"action": "shop.sold", "payload": {"n": 2}}),
        )
        .await;
    let second = r.body["event"].as_str().unwrap().to_owned();
    let dead = format!("{second}.{sub}");
    eventually("the second delivery to die", || async {
        c.get(&format!("/v1/gists?gist={dead}")).await.body["data"][0]["status"] == "failed"
    })
    .await;
    let refused = c.post("/v1/purges?status=delivered", json!({})).await;
    assert_eq!(refused.status, 422, "{}", refused.body);
    let r = c.post("/v1/purges", json!({})).await;
    assert_eq!(r.body["purged"], 1, "{}", r.body);
    assert_eq!(
        c.get(&format!("/v1/gists?gist={dead}")).await.body["total"],
        0
    );
    assert_eq!(c.get("/v1/stats").await.body["failed"], 0);
    assert_eq!(c.get(&format!("/v1/events/{second}")).await.status, 200);
    let r = c.post("/v1/requeues", json!({})).await;
    assert_eq!(r.body["requeued"], 0, "nothing left to requeue: {}", r.body);
    let log = c.get("/v1/audit?action=delivery.purge").await;
    assert_eq!(log.body[0]["actor"], "admin", "{}", log.body);
    server.stop().await;
}

async fn gone_disables_the_subscription(b: &Backend) {
    let (server, mut receiver, c) = shop_and_mailer(b).await;
    let sub = mail_sales(&c, "/gone").await;
    receiver.fail("/gone", 1, 410);
    sell(&c, 1).await;
    assert_eq!(receiver.next().await.path, "/gone");
    eventually("the subscription to be disabled", || async {
        let list = c.get(&format!("/v1/subscriptions?id={sub}")).await;
        list.body[0]["active"] == false
    })
    .await;
    let list = c.get(&format!("/v1/subscriptions?id={sub}")).await;
    assert!(
        list.body[0]["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410")
    );
    // The hub did it: the audit log says so.
    eventually("the audit entry", || async {
        let log = c.get("/v1/audit?action=subscription.disable").await;
        log.body[0]["actor"] == "system"
            && log.body[0]["target"] == sub.as_str()
            && log.body[0]["application"] == "mailer"
    })
    .await;
    let r = sell(&c, 2).await;
    assert_eq!(r.body["fanout"], 0);
    assert!(receiver.quiet_for(Duration::from_millis(300)).await);
    server.stop().await;
}

async fn ordered_subscription_delivers_in_publish_order_despite_failures(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    shop_selling_to(&c, "ledger", &receiver).await;
    subscribe(&c, json!({"application": "ledger", "action": "shop.sold", "handler": "/in-order", "ordered": true, "retry_schedule": [0]})).await;
    receiver.fail("/in-order", 3, 503);
    for n in 0..20 {
        let r = sell(&c, n).await;
        assert_eq!(r.status, 201);
    }
    let mut delivered = Vec::new();
    let mut last_attempted: Option<i64> = None;
    while delivered.len() < 20 {
        let hit = receiver.next().await;
        let n = hit.json()["payload"]["n"].as_i64().unwrap();
        // Nothing later is tried while an earlier one is still failing.
        if let Some(prev) = last_attempted {
            assert!(n == prev || n == prev + 1, "{n} after {prev}");
        }
        last_attempted = Some(n);
        if delivered.last() != Some(&n) && (delivered.len() as i64) == n {
            delivered.push(n);
        }
    }
    assert_eq!(delivered, (0..20).collect::<Vec<_>>());
    server.stop().await;
}

async fn backfill_replays_a_time_window_to_a_late_subscriber(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    shop_selling_to(&c, "late", &receiver).await;
    let mut events = Vec::new();
    for n in 0..5 {
        if n == 2 {
            // Times have millisecond resolution: start the window on a later one.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = sell(&c, n).await;
        events.push(r.body["event"].as_str().unwrap().to_owned());
    }
    let listed = c.get("/v1/events?action=shop.sold&pagination=3").await;
    assert_eq!(listed.body.as_array().unwrap().len(), 3);
    assert_eq!(listed.body[0]["event"], events[4].as_str(), "newest first");
    let from = c.get(&format!("/v1/events/{}", events[2])).await.body["timestamped"].clone();

    let sub = subscribe(
        &c,
        json!({"application": "late", "action": "shop.sold", "handler": "/replay"}),
    )
    .await;
    assert!(
        receiver.quiet_for(Duration::from_millis(200)).await,
        "only new events by default"
    );
    let dry = c
        .post(
            "/v1/backfills",
            json!({"subscription": sub, "since": from, "dry_run": true}),
        )
        .await;
    assert_eq!(dry.body["count"], 3, "{}", dry.body);
    let done = c
        .post("/v1/backfills", json!({"subscription": sub, "since": from}))
        .await;
    assert_eq!(done.body["backfilled"], 3, "{}", done.body);
    let mut got = BTreeSet::new();
    for _ in 0..3 {
        got.insert(
            receiver.next().await.json()["event"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(got, events[2..].iter().cloned().collect());

    // Replay one delivery by its gist id.
    let gist = format!("{}.{sub}", events[3]);
    eventually("the backfilled gist to be delivered", || async {
        gist_status(&c, &gist).await.0 == "delivered"
    })
    .await;
    let replay = c.post(&format!("/v1/regists/{gist}"), json!({})).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["delivered"], true);
    let replayed = receiver.next().await;
    assert_eq!(replayed.header("x-amebo-delivery-attempt"), "2");
    // A replay is a new message to the receiver: a new webhook-id.
    assert_eq!(
        replayed.header(tidings_hub::delivery::webhook::DELIVERY_HEADER),
        gist
    );
    assert_ne!(
        replayed.header("webhook-id"),
        tidings_hub::delivery::webhook::webhook_id(&gist, 1, false)
    );
    assert!(replayed.header("webhook-id").starts_with("msg_"));
    let missing = c.post("/v1/regists/nope", json!({})).await;
    assert_eq!(missing.status, 404);
    server.stop().await;
}

/// A breaker that recovers within the tests' patience.
fn quick_breaker() -> tidings_hub::DeliveryConfig {
    tidings_hub::DeliveryConfig {
        breaker: tidings_patterns::BreakerConfig {
            recovery_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start().await;
    receiver.set_down(true);
    let server = TestServer::start_configured(
        Arc::new(EmbeddedBroker::open(dir.path()).unwrap()),
        None,
        quick_breaker(),
    )
    .await;
    let c = Client::new(&server.base);
    shop_selling_to(&c, "mailer", &receiver).await;
    subscribe(&c, json!({"application": "mailer", "action": "shop.sold", "handler": "/h", "retry_schedule": [1], "max_retries": 1000})).await;
    let mut events = BTreeSet::new();
    for n in 0..200 {
        let r = sell(&c, n).await;
        assert_eq!(r.status, 201);
        events.insert(r.body["event"].as_str().unwrap().to_owned());
    }
    receiver.next().await; // delivery is under way (and failing)
    server.stop().await;

    let server = TestServer::start_configured(
        Arc::new(EmbeddedBroker::open(dir.path()).unwrap()),
        None,
        quick_breaker(),
    )
    .await;
    receiver.set_down(false);
    let mut got = BTreeSet::new();
    while got.len() < events.len() {
        let hit = receiver.next().await;
        if hit.path == "/h" && hit.headers.contains_key("x-amebo-event-id") {
            let body = hit.json();
            if body["action"] == "shop.sold" {
                got.insert(hit.header("x-amebo-event-id").to_owned());
            }
        }
    }
    assert_eq!(got, events);
    server.stop().await;
}

async fn a_dead_endpoint_trips_its_breaker_and_does_not_hold_up_others(b: &Backend) {
    let delivery = tidings_hub::DeliveryConfig {
        per_subscription: 1,
        breaker: tidings_patterns::BreakerConfig {
            failure_threshold: 3,
            recovery_timeout: Duration::from_secs(60),
            success_threshold: 1,
        },
        ..Default::default()
    };
    let server = TestServer::start_configured(b.broker().await, None, delivery).await;
    let mut receiver = Receiver::start().await;
    let c = Client::new(&server.base);
    shop_selling_to(&c, "mailer", &receiver).await;
    let dead = subscribe(&c, json!({"application": "mailer", "action": "shop.sold", "handler": "/dead", "retry_schedule": [0], "max_retries": 100})).await;
    mail_sales(&c, "/ok").await;
    receiver.fail("/dead", 1_000_000, 503);
    for n in 0..20 {
        sell(&c, n).await;
    }
    let (mut ok, mut dead_hits) = (0, 0);
    while ok < 20 {
        match receiver.next().await.path.as_str() {
            "/ok" => ok += 1,
            _ => dead_hits += 1,
        }
    }
    // The breaker opened after 3 failures: nothing more reaches /dead.
    while !receiver.quiet_for(Duration::from_millis(300)).await {
        dead_hits += 1;
    }
    assert_eq!(dead_hits, 3);
    // Deliveries handed back by the open breaker are not counted as attempts.
    let gists = c
        .get(&format!("/v1/gists?subscription={dead}&pagination=100"))
        .await;
    let attempts: u64 = gists.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(attempts, 3);
    server.stop().await;
}

async fn metrics_and_stats_report_publishes_and_deliveries(b: &Backend) {
    let (server, mut receiver, c) = shop_and_mailer(b).await;
    let sub = mail_sales(&c, "/m").await;
    for n in 0..3 {
        sell(&c, n).await;
    }
    for _ in 0..3 {
        receiver.next().await;
    }
    eventually("three delivered gists", || async {
        c.get("/v1/stats").await.body["delivered"] == 3
    })
    .await;
    let stats = c.get("/v1/stats").await.body;
    assert_eq!(stats["events"], 3);
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["attempts"], 3);

    let resp = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .contains("openmetrics")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#"tidings_events_published_total{action="shop.sold"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tidings_delivery_attempts_total{outcome="delivered"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("tidings_delivery_latency_seconds_count 3"),
        "{text}"
    );
    assert!(text.contains(&format!(r#"tidings_subscription_queued{{subscription="{sub}",action="shop.sold",application="mailer"}} 0"#)), "{text}");
    server.stop().await;
}

/// Whether `schema` (resolved through `$ref`, `allOf`, `oneOf`, `anyOf`
/// and array items)
/// describes an object with named properties.
fn has_properties(schema: &Value, schemas: &serde_json::Map<String, Value>) -> bool {
    if let Some(name) = schema["$ref"].as_str() {
        let name = name.trim_start_matches("#/components/schemas/");
        return schemas
            .get(name)
            .is_some_and(|s| has_properties(s, schemas));
    }
    for combined in ["allOf", "oneOf", "anyOf"] {
        if let Some(parts) = schema[combined].as_array() {
            return parts.iter().any(|p| has_properties(p, schemas));
        }
    }
    if schema["type"] == "array" {
        return has_properties(&schema["items"], schemas);
    }
    schema["properties"]
        .as_object()
        .is_some_and(|p| !p.is_empty())
}

/// The document served describes the body of every answer of every route
/// (204 has none; /metrics is OpenMetrics text): a schema with properties, never a bare
/// `Object` or nothing. Which routes it lists is checked against the route
/// table by a unit test of the router.
async fn openapi_describes_every_answer(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let c = Client::new(&server.base);
    let spec = c.get("/openapi.json").await;
    assert_eq!(spec.status, 200);
    assert!(spec.body["openapi"].as_str().unwrap().starts_with("3."));
    let schemas = spec.body["components"]["schemas"].as_object().unwrap();
    let mut answers = 0;
    let mut undescribed = Vec::new();
    for (path, item) in spec.body["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}: no answers");
            for (status, response) in responses {
                answers += 1;
                if status == "204" {
                    continue;
                }
                let content = response["content"].as_object();
                let described = content.is_some_and(|content| {
                    !content.is_empty()
                        && content.iter().all(|(kind, media)| {
                            kind.starts_with("application/openmetrics-text")
                                || has_properties(&media["schema"], schemas)
                        })
                });
                if !described {
                    undescribed.push(format!("{method} {path} {status}"));
                }
            }
        }
        for method in ["post", "put", "patch"] {
            if let Some(body) = item[method].get("requestBody") {
                let schema = &body["content"]["application/json"]["schema"];
                assert!(
                    has_properties(schema, schemas),
                    "{method} {path}: request body"
                );
            }
        }
    }
    assert!(answers > 150, "only {answers} answers documented");
    assert!(
        undescribed.is_empty(),
        "answers without a described body: {undescribed:#?}"
    );
    // The page renders the same document, with nothing loaded from elsewhere.
    let docs = reqwest::get(format!("{}/docs", server.base)).await.unwrap();
    let page = docs.text().await.unwrap();
    assert!(
        page.contains("/openapi.json") && page.contains("POST /v1/events"),
        "{page}"
    );
    assert!(
        page.contains("id=\"schema-EventView\""),
        "schemas are described"
    );
    assert!(
        !page.contains("<script") && !page.contains("https://"),
        "no third party"
    );
    server.stop().await;
}

async fn retry_after_is_honoured_and_concurrency_is_per_subscription(b: &Backend) {
    let (server, mut receiver, c) = shop_and_mailer(b).await;
    let r = c
        .post("/v1/subscriptions", json!({"application": "mailer", "action": "shop.sold", "handler": "/busy", "retry_schedule": [0], "concurrency": 2}))
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["concurrency"], 2);
    let bad = c
        .post("/v1/subscriptions", json!({"application": "mailer", "action": "shop.sold", "handler": "/x", "concurrency": 0}))
        .await;
    assert_eq!(bad.status, 400);
    receiver.fail_with("/busy", 1, 429, Some("2"));
    sell(&c, 1).await;
    let first = receiver.next().await;
    let second = receiver.next().await;
    assert_eq!(second.header("x-amebo-delivery-attempt"), "2");
    let waited = second.at - first.at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, asked for 2 s"
    );

    // Two lanes: with answers held, exactly two requests are in flight.
    receiver.hold(true);
    for n in 0..5 {
        sell(&c, n).await;
    }
    receiver.next().await;
    receiver.next().await;
    assert!(
        receiver.quiet_for(Duration::from_millis(300)).await,
        "a third request was in flight"
    );
    receiver.hold(false);
    for _ in 0..3 {
        receiver.next().await;
    }
    server.stop().await;
}

async fn catalog_changes_take_effect_while_deliveries_run(b: &Backend) {
    let (server, mut receiver, c) = shop_and_mailer(b).await;
    app(&c, "other", &format!("{}/old/", receiver.base)).await;
    mail_sales(&c, "/m").await;
    subscribe(
        &c,
        json!({"application": "other", "action": "shop.sold", "handler": "/o"}),
    )
    .await;
    sell(&c, 1).await;
    let paths = receiver.paths(2).await;
    assert_eq!(
        paths,
        BTreeSet::from(["/m".to_owned(), "/old/o".to_owned()])
    );

    // A new address moves path handlers with it.
    let r = c
        .send(
            "PUT",
            "/v1/applications/other",
            Some(format!(r#"{{"address": "{}/new/"}}"#, receiver.base).as_bytes()),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    sell(&c, 2).await;
    let paths = receiver.paths(2).await;
    assert_eq!(
        paths,
        BTreeSet::from(["/m".to_owned(), "/new/o".to_owned()])
    );

    // Deleting a subscriber stops its deliveries; the others go on.
    let r = c.send("DELETE", "/v1/applications/other", None, &[]).await;
    assert_eq!(r.status, 202);
    let r = sell(&c, 3).await;
    assert_eq!(r.body["fanout"], 1);
    assert_eq!(receiver.next().await.path, "/m");
    assert!(receiver.quiet_for(Duration::from_millis(200)).await);

    // Deleting the action removes its subscriptions and queues; publishing it is refused.
    let r = c.send("DELETE", "/v1/actions/shop.sold", None, &[]).await;
    assert_eq!(r.status, 202);
    let r = sell(&c, 4).await;
    assert_eq!(r.status, 422);
    let subs = c.get("/v1/subscriptions").await;
    assert!(
        subs.body
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["action"] != "shop.sold")
    );
    server.stop().await;
}

/// A hub's webhooks are never a credential: a subscription whose handler is
/// another hub's `/v1/events` (in protected mode, where a loopback caller is
/// admin) does not make every delivery a new publish there. (The hub's own
/// address is refused outright: `the_hub_never_delivers_to_itself`.)
async fn webhooks_are_never_a_credential(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let other = TestServer::start(b.broker().await).await;
    let c = Client::new(&server.base);
    app(&c, "looper", &format!("{}/", other.base)).await;
    action(&c, "loop.tick", "looper", json!({"type": "object"})).await;
    let sub = subscribe(
        &c,
        json!({"application": "looper", "action": "loop.tick", "handler": "/v1/events", "max_retries": 1}),
    )
    .await;
    let r = c
        .post(
            "/v1/events",
            json!({"action": "loop.tick", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    eventually("the delivery to be attempted", || async {
        let gists = c.get(&format!("/v1/gists?subscription={sub}")).await;
        gists.body["data"][0]["attempts"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    let gists = c.get(&format!("/v1/gists?subscription={sub}")).await;
    assert_eq!(
        gists.body["data"][0]["last_status_code"], 401,
        "{}",
        gists.body
    );
    let events = Client::new(&other.base).get("/v1/events").await;
    assert_eq!(
        events.body.as_array().map(Vec::len),
        Some(0),
        "{}",
        events.body
    );
    server.stop().await;
    other.stop().await;
}

/// Listing by action reads the per-action index: newest first across every
/// action whose name contains the filter, paged, within a time window.
async fn events_by_action_are_listed_newest_first_across_matching_actions(b: &Backend) {
    let server = TestServer::start(b.broker().await).await;
    let c = Client::new(&server.base);
    let app = json!({"application": "shop", "address": "http://shop.invalid"});
    assert_eq!(c.post("/v1/applications", app).await.status, 201);
    for action in ["shop.sold", "shop.sold.v2", "other.thing"] {
        let body = json!({"action": action, "application": "shop", "schemata": {"type": "object"}});
        assert_eq!(c.post("/v1/actions", body).await.status, 201);
    }
    let mut matching = Vec::new();
    for n in 0..5 {
        for action in ["shop.sold", "other.thing", "shop.sold.v2"] {
            let r = c
                .post("/v1/events", json!({"action": action, "payload": {"n": n}}))
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            if action.starts_with("shop.sold") {
                matching.push(r.body["event"].as_str().unwrap().to_owned());
            }
        }
    }
    matching.reverse();
    let mut listed = Vec::new();
    for page in 1..=4 {
        let r = c
            .get(&format!(
                "/v1/events?action=shop.sold&pagination=4&page={page}"
            ))
            .await;
        assert_eq!(r.status, 200);
        for e in r.body.as_array().unwrap() {
            listed.push(e["event"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        listed, matching,
        "newest first, both matching actions, nothing else"
    );
    let exact = c.get("/v1/events?action=shop.sold.v2&pagination=100").await;
    assert_eq!(exact.body.as_array().unwrap().len(), 5);
    let future = c.get("/v1/events?action=shop.sold&from=2999-01-01").await;
    assert_eq!(future.body.as_array().unwrap().len(), 0);
    let past = c.get("/v1/events?action=shop.sold&to=2000-01-01").await;
    assert_eq!(past.body.as_array().unwrap().len(), 0);
    server.stop().await;
}

on_every_backend!(
    seed_user_registration_flow_delivers_signed_webhooks,
    order_flow_fans_out_to_every_subscription,
    failing_endpoint_is_retried_until_it_answers,
    last_failed_attempt_dead_letters_and_publishes_a_notice,
    gone_disables_the_subscription,
    ordered_subscription_delivers_in_publish_order_despite_failures,
    backfill_replays_a_time_window_to_a_late_subscriber,
    a_dead_endpoint_trips_its_breaker_and_does_not_hold_up_others,
    metrics_and_stats_report_publishes_and_deliveries,
    openapi_describes_every_answer,
    retry_after_is_honoured_and_concurrency_is_per_subscription,
    catalog_changes_take_effect_while_deliveries_run,
    webhooks_are_never_a_credential,
    events_by_action_are_listed_newest_first_across_matching_actions,
);
