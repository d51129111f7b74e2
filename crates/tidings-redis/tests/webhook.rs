//! The webhook-style API on Redis (the cases every backend runs), and with
//! the real Python `LeanMQWebhook` on the other end, in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../../tidings-patterns/tests/webhook_cases.rs"]
mod webhook_cases;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tidings_core::{Broker, QueueName};
use tidings_patterns::webhook::{Webhook, queue_for};
use tidings_redis::RedisBroker;
use tokio::sync::mpsc;

use common::python::LeanMq;

/// A broker under a fresh prefix ending in `webhook:`, like LeanMQWebhook's.
async fn hooks() -> Option<(common::RedisFixture, Arc<dyn Broker>)> {
    let fx = common::fixture().await?;
    let broker: Arc<dyn Broker> = Arc::new(
        RedisBroker::open(&common::url_with_prefix(&format!("{}webhook:", fx.prefix)))
            .await
            .unwrap(),
    );
    Some((fx, broker))
}

macro_rules! on_redis {
    ($($case:ident),*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let Some((_fx, broker)) = hooks().await else { return };
            webhook_cases::$case(broker).await;
        }
    )*};
}

on_redis!(
    handlers_receive_what_is_sent,
    failures_are_retried_then_dead_lettered,
    a_panic_fails_the_message_not_the_worker,
    data_of_the_wrong_shape_is_dead_lettered_at_once,
    stop_lets_handlers_finish,
    paths_that_would_share_a_queue_are_refused
);

async fn with_python() -> Option<(common::RedisFixture, Arc<dyn Broker>, LeanMq)> {
    let (fx, broker) = hooks().await?;
    let py = LeanMq::find(&format!("{}webhook:", fx.prefix)).await?;
    Some((fx, broker, py))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_map_to_the_queues_python_uses() {
    let Some((_fx, _broker, py)) = with_python().await else {
        return;
    };
    let paths = [
        "/order/status/",
        "order/status",
        "/a-b",
        "/a.b",
        "/a/b",
        "a b",
        "//x//",
        "/v1/users/{id}",
        "/Ünï/çødé",
        "/नमस्ते/दुनिया",
        "/x²/½",
        "/Order/Fail-Path",
    ];
    let answer = py.run(json!({"cmd": "queue_name", "paths": paths})).await;
    for row in answer["names"].as_array().unwrap() {
        let path = row[0].as_str().unwrap();
        assert_eq!(
            tidings_patterns::webhook::normalize(path),
            row[1].as_str().unwrap(),
            "normalised {path}"
        );
        assert_eq!(
            queue_for(path).unwrap().as_str(),
            row[2].as_str().unwrap(),
            "queue of {path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_handler_receives_what_python_sends() {
    let Some((_fx, broker, py)) = with_python().await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut webhook = Webhook::with_options(broker, webhook_cases::fast());
    webhook
        .on("/order/status/", move |v: Value| {
            let tx = tx.clone();
            async move { tx.send(v).unwrap() }
        })
        .unwrap();
    let service = webhook.run_service().await.unwrap();
    py.run(json!({"cmd": "webhook_send", "path": "/order/status/",
        "messages": [{"order_id": "ORD-1", "status": "shipped"}]}))
        .await;
    let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, json!({"order_id": "ORD-1", "status": "shipped"}));
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_handler_receives_what_rust_sends() {
    let Some((_fx, broker, py)) = with_python().await else {
        return;
    };
    let serving = py
        .start(json!({"cmd": "webhook_serve", "paths": ["/order/status/", "/fails"], "count": 2}))
        .await;
    let webhook = Webhook::new(broker.clone());
    webhook
        .send(
            "/order/status",
            &json!({"order_id": "ORD-2", "status": "packed"}),
        )
        .await
        .unwrap();
    webhook
        .send("/fails", &json!({"fail": true}))
        .await
        .unwrap();
    let seen = serving.finish().await;
    let seen = seen["seen"].as_array().unwrap();
    let status = seen.iter().find(|s| s["path"] == "/order/status/").unwrap();
    assert_eq!(status["data"]["order_id"], "ORD-2");
    assert_eq!(
        status["data"]["_leanmq"]["webhook"]["path"],
        "/order/status"
    );
    // Python dead-lettered the failure; Tidings reads its reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let queue = QueueName::new("fails").unwrap();
    loop {
        let letters = broker.dead_letters(&queue, None, 10).await.unwrap();
        if let Some(dead) = letters.first() {
            assert_eq!(dead.reason, "Processing error: handler refused");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_and_rust_workers_share_a_path() {
    let Some((_fx, broker, py)) = with_python().await else {
        return;
    };
    let serving = py
        .start(json!({"cmd": "webhook_serve", "paths": ["/jobs"], "count": 1000, "seconds": 3}))
        .await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut webhook = Webhook::new(broker);
    webhook
        .on("/jobs", move |v: Value| {
            let tx = tx.clone();
            async move { tx.send(v["n"].as_i64().unwrap()).unwrap() }
        })
        .unwrap();
    let service = webhook.run_service().await.unwrap();
    for n in 0..40 {
        service
            .webhook()
            .send("/jobs", &json!({ "n": n }))
            .await
            .unwrap();
    }
    let python_seen = serving.finish().await;
    service.stop().await;
    let mut all: Vec<i64> = python_seen["seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["data"]["n"].as_i64().unwrap())
        .collect();
    while let Ok(n) = rx.try_recv() {
        all.push(n);
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (0..40).collect::<Vec<_>>(),
        "each message handled once, by one side"
    );
}
