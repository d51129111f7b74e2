//! `HubClient` against a real `tidings serve`: the seed's flows (a user
//! registered and delivered, an order placed twice with one deduper, a
//! date range replayed to a new subscriber) and its errors.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use common::TestServer;
use serde_json::{Value, json};
use tidings_http::{EventQuery, GistQuery, HubClient};
use tidings_hub_api::{Backfill, NewAction, NewApplication, NewSubscription};

/// A receiver that keeps each body it is sent.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = got.clone();
    let app = Router::new().route(
        "/hook",
        post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap());
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

/// The admin (protected mode: loopback callers), `users` with its action
/// `user.created`, and a client acting as `users`.
async fn users(server: &TestServer) -> (HubClient, HubClient) {
    let admin = HubClient::connect(&server.url).unwrap();
    let app = admin
        .create_application(&NewApplication::new("users", "http://users.invalid"))
        .await
        .unwrap();
    admin
        .register_action(&NewAction {
            action: "user.created".to_owned(),
            application: "users".to_owned(),
            schemata: json!({"type": "object", "required": ["id", "email"],
                "properties": {"id": {"type": "integer"}, "email": {"type": "string"}}}),
            retention: None,
            dedup_window: None,
        })
        .await
        .unwrap();
    let users = HubClient::connect(&server.url)
        .unwrap()
        .with_api_key(&app.apikey);
    (admin, users)
}

#[tokio::test]
async fn a_registered_user_is_delivered_and_read_back() {
    let server = TestServer::start().await;
    let (admin, users) = users(&server).await;
    let (hook, got) = receiver().await;
    admin
        .create_application(&NewApplication::new("mailer", &hook))
        .await
        .unwrap();
    let sub = admin
        .subscribe(&NewSubscription::new("mailer", "user.created", &hook))
        .await
        .unwrap();
    assert!(sub.signing_key.is_some_and(|k| k.starts_with("whsec_")));

    let event = users
        .publish_event(
            "user.created",
            &json!({"id": 1, "email": "ada@example.com"}),
            Some("user-1"),
        )
        .await
        .unwrap();
    assert_eq!(event.fanout, Some(1));
    until("the receiver gets the event", || {
        got.lock().unwrap().len() == 1
    })
    .await;
    assert_eq!(got.lock().unwrap()[0]["event"], event.event.as_str());

    let again = users.event(&event.event).await.unwrap();
    // The payload comes back as the bytes the client sent.
    let sent = serde_json::to_string(&json!({"id": 1, "email": "ada@example.com"})).unwrap();
    assert_eq!(again.payload.get(), sent);
    let gists = admin
        .gists(
            &GistQuery {
                event: Some(event.event.clone()),
                ..GistQuery::default()
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(gists.data.len(), 1);
    assert!(admin.stats().await.unwrap().events >= 1);
}

#[tokio::test]
async fn an_order_placed_twice_is_one_event_and_a_range_is_replayed() {
    let server = TestServer::start().await;
    let (admin, users) = users(&server).await;
    let payload = json!({"id": 7, "email": "o@example.com"});
    let first = users
        .publish_event("user.created", &payload, Some("order-7"))
        .await
        .unwrap();
    let again = users
        .publish_event("user.created", &payload, Some("order-7"))
        .await
        .unwrap();
    assert_eq!(again.event, first.event);
    assert!(again.duplicate);
    for i in 0..3 {
        users
            .publish_event(
                "user.created",
                &json!({"id": i, "email": "x@example.com"}),
                None,
            )
            .await
            .unwrap();
    }
    let query = EventQuery {
        action: Some("user.created".to_owned()),
        ..EventQuery::default()
    };
    let events = users.events(&query).await.unwrap();
    assert_eq!(events.len(), 4);
    assert!(
        events.windows(2).all(|w| w[0].row_id > w[1].row_id),
        "newest first"
    );

    let (hook, got) = receiver().await;
    admin
        .create_application(&NewApplication::new("late", &hook))
        .await
        .unwrap();
    let sub = admin
        .subscribe(&NewSubscription::new("late", "user.created", &hook))
        .await
        .unwrap();
    let backfill = Backfill {
        subscription: sub.subscription.clone(),
        since: Some("today".to_owned()),
        ..Backfill::default()
    };
    let done = admin.backfill(&backfill).await.unwrap();
    assert_eq!(done.backfilled, Some(4));
    until("the range arrives", || got.lock().unwrap().len() == 4).await;
}

#[tokio::test]
async fn errors_carry_their_status_and_reasons() {
    let server = TestServer::start().await;
    let (_admin, users) = users(&server).await;
    let violation = users
        .publish_event("user.created", &json!({"id": "one"}), None)
        .await
        .unwrap_err();
    assert_eq!(violation.status(), Some(406));
    let tidings_http::HubClientError::Answer { errors, .. } = &violation else {
        panic!("{violation:?}")
    };
    assert!(errors.iter().any(|e| e.contains("$.id")), "{errors:?}");
    let unknown = users
        .publish_event("nobody.registered", &json!({}), None)
        .await;
    assert_eq!(unknown.unwrap_err().status(), Some(422));
    let missing = users.event(&"0".repeat(32)).await;
    assert_eq!(missing.unwrap_err().status(), Some(404));
    let stranger = HubClient::connect(&server.url)
        .unwrap()
        .with_api_key(&format!("tidings_{}", "0".repeat(64)));
    assert_eq!(stranger.stats().await.unwrap_err().status(), Some(401));
}

#[tokio::test]
async fn the_catalog_is_changed_through_the_client() {
    let server = TestServer::start().await;
    let (admin, users) = users(&server).await;
    let moved = admin
        .update_application(
            "users",
            &tidings_hub_api::ApplicationUpdate {
                address: Some("http://users2.invalid".to_owned()),
                description: None,
                queues: None,
            },
        )
        .await
        .unwrap();
    assert!(moved.address.starts_with("http://users2.invalid"));
    let rotated = admin
        .rotate_secret("users", &tidings_hub_api::SecretRotation::default())
        .await
        .unwrap();
    assert!(rotated.secret.is_some());

    let check = users
        .validate("user.created", &json!({"id": "one"}))
        .await
        .unwrap();
    assert!(!check.valid && !check.errors.is_empty());
    admin
        .update_action(
            "user.created",
            &tidings_hub_api::ActionUpdate {
                schemata: Some(json!({"type": "object"})),
                retention: None,
                dedup_window: None,
            },
        )
        .await
        .unwrap();
    assert!(
        users
            .validate("user.created", &json!({"id": "one"}))
            .await
            .unwrap()
            .valid
    );

    let (hook, _got) = receiver().await;
    let sub = admin
        .subscribe(&NewSubscription::new("users", "user.created", &hook))
        .await
        .unwrap();
    let old_key = admin
        .signing_key(&sub.subscription)
        .await
        .unwrap()
        .signing_key;
    let new_key = admin
        .rotate_signing_key(
            &sub.subscription,
            &tidings_hub_api::SigningKeyRotation::default(),
        )
        .await
        .unwrap()
        .signing_key;
    assert!(new_key.is_some() && new_key != old_key);
    assert!(!admin.unsubscribe(&sub.subscription).await.unwrap().active);

    let off = admin.set_application_active("users", false).await.unwrap();
    assert!(!off.active);
    let refused = users.publish_event("user.created", &json!({}), None).await;
    assert!(refused.is_err());
    admin.set_application_active("users", true).await.unwrap();
    admin.delete_action("user.created").await.unwrap();
    admin.delete_application("users").await.unwrap();
    assert!(
        admin
            .applications()
            .await
            .unwrap()
            .iter()
            .all(|a| a.application != "users")
    );
}

#[tokio::test]
async fn dead_deliveries_are_requeued_or_purged() {
    let server = TestServer::start().await;
    let (admin, users) = users(&server).await;
    // A port nobody listens on: every attempt fails at once.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_end = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    admin
        .create_application(&NewApplication::new("audit", &dead_end))
        .await
        .unwrap();
    let sub = admin
        .subscribe(&NewSubscription {
            max_retries: Some(1),
            ..NewSubscription::new("audit", "user.created", &dead_end)
        })
        .await
        .unwrap();
    users
        .publish_event(
            "user.created",
            &json!({"id": 2, "email": "b@example.com"}),
            None,
        )
        .await
        .unwrap();
    let failed = GistQuery {
        subscription: Some(sub.subscription.clone()),
        status: Some("failed".to_owned()),
        ..GistQuery::default()
    };
    for _ in 0..500 {
        if admin.gists(&failed, 1).await.unwrap().total == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(admin.gists(&failed, 1).await.unwrap().total, 1);
    assert_eq!(admin.purge(&failed).await.unwrap(), 1);
    assert_eq!(admin.gists(&failed, 1).await.unwrap().total, 0);
    assert_eq!(admin.requeue(&failed).await.unwrap().requeued, 0);
}
