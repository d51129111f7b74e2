//! Behaviour of the webhook-style API, written once against `Arc<dyn Broker>`
//! and run on every backend (this file is included by the tests of
//! tidings-patterns for the embedded engine and of tidings-redis for Redis).

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use tidings_core::{Broker, QueueName};
use tidings_patterns::webhook::{Webhook, WebhookOptions};
use tokio::sync::mpsc;

/// Quick retries, so failure cases take milliseconds.
pub fn fast() -> WebhookOptions {
    WebhookOptions {
        max_attempts: 3,
        first_retry: Duration::from_millis(20),
        max_retry: Duration::from_millis(100),
        handler_timeout: Duration::from_secs(5),
        ..WebhookOptions::default()
    }
}

const PATIENCE: Duration = Duration::from_secs(10);

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("channel closed")
}

/// Waits until the queue of `path` has `n` dead letters, and returns them.
async fn dead_letters(
    broker: &Arc<dyn Broker>,
    queue: &str,
    n: usize,
) -> Vec<tidings_core::DeadLetter> {
    let queue = QueueName::new(queue).unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let letters = broker.dead_letters(&queue, None, 100).await.unwrap();
        if letters.len() >= n || std::time::Instant::now() > deadline {
            assert_eq!(letters.len(), n, "{letters:?}");
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Debug, Deserialize)]
struct Status {
    order_id: String,
    status: String,
}

pub async fn handlers_receive_what_is_sent(broker: Arc<dyn Broker>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut webhook = Webhook::with_options(broker, fast());
    webhook
        .on("/order/status/", move |s: Status| {
            let tx = tx.clone();
            async move {
                tx.send((s.order_id, s.status)).unwrap();
            }
        })
        .unwrap();
    let service = webhook.run_service().await.unwrap();
    for i in 0..20 {
        service
            .webhook()
            .send(
                "order/status",
                &json!({"order_id": format!("ORD-{i}"), "status": "shipped"}),
            )
            .await
            .unwrap();
    }
    let mut got: Vec<String> = Vec::new();
    for _ in 0..20 {
        got.push(next(&mut rx).await.0);
    }
    got.sort();
    let mut want: Vec<String> = (0..20).map(|i| format!("ORD-{i}")).collect();
    want.sort();
    assert_eq!(got, want);
    service.stop().await;
}

pub async fn failures_are_retried_then_dead_lettered(broker: Arc<dyn Broker>) {
    let calls = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut webhook = Webhook::with_options(broker.clone(), fast());
    let seen = calls.clone();
    webhook
        .on("/flaky", move |v: Value| {
            let seen = seen.clone();
            let tx = tx.clone();
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
                if v["always_fail"] == true {
                    return Err(format!("attempt {n} refused"));
                }
                if n < 3 {
                    return Err(format!("attempt {n} refused"));
                }
                tx.send(n).unwrap();
                Ok(())
            }
        })
        .unwrap();
    let service = webhook.run_service().await.unwrap();
    service
        .webhook()
        .send("/flaky", &json!({"x": 1}))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, 3, "succeeded on the third attempt");
    service
        .webhook()
        .send("/flaky", &json!({"always_fail": true}))
        .await
        .unwrap();
    let letters = dead_letters(&broker, "flaky", 1).await;
    assert!(
        letters[0].reason.starts_with("Processing error: attempt"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].attempts, 3);
    service.stop().await;
}

pub async fn a_panic_fails_the_message_not_the_worker(broker: Arc<dyn Broker>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut webhook = Webhook::with_options(broker.clone(), fast());
    webhook
        .on("/fragile", move |v: Value| {
            let tx = tx.clone();
            async move {
                if v["boom"] == true {
                    panic!("boom");
                }
                tx.send(v["n"].as_i64().unwrap()).unwrap();
            }
        })
        .unwrap();
    let service = webhook.run_service().await.unwrap();
    service
        .webhook()
        .send("/fragile", &json!({"boom": true}))
        .await
        .unwrap();
    service
        .webhook()
        .send("/fragile", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(next(&mut rx).await, 1, "the worker survived");
    let letters = dead_letters(&broker, "fragile", 1).await;
    assert!(
        letters[0].reason.contains("panicked: boom"),
        "{}",
        letters[0].reason
    );
    service.stop().await;
}

pub async fn data_of_the_wrong_shape_is_dead_lettered_at_once(broker: Arc<dyn Broker>) {
    let calls = Arc::new(AtomicU32::new(0));
    let seen = calls.clone();
    let mut webhook = Webhook::with_options(broker.clone(), fast());
    webhook
        .on("/typed", move |_s: Status| {
            seen.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    let service = webhook.run_service().await.unwrap();
    service
        .webhook()
        .send("/typed", &json!({"order_id": 5}))
        .await
        .unwrap();
    let letters = dead_letters(&broker, "typed", 1).await;
    assert!(
        letters[0].reason.starts_with("Invalid payload"),
        "{}",
        letters[0].reason
    );
    assert_eq!(letters[0].attempts, 1, "no retry");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    service.stop().await;
}

pub async fn stop_lets_handlers_finish(broker: Arc<dyn Broker>) {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let finished = Arc::new(AtomicU32::new(0));
    let done = finished.clone();
    let mut webhook = Webhook::with_options(broker.clone(), fast());
    webhook
        .on("/slow", move |_v: Value| {
            let started_tx = started_tx.clone();
            let done = done.clone();
            async move {
                started_tx.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    let service = webhook.run_service().await.unwrap();
    for n in 0..3 {
        service
            .webhook()
            .send("/slow", &json!({ "n": n }))
            .await
            .unwrap();
    }
    next(&mut started).await;
    service.stop().await;
    // Whatever had started finished and was acknowledged; the rest waits.
    let handled = u64::from(finished.load(Ordering::SeqCst));
    assert!(handled >= 1);
    let info = broker
        .queue_info(&QueueName::new("slow").unwrap())
        .await
        .unwrap();
    assert_eq!(info.groups[0].pending, 0, "nothing left in flight");
    assert_eq!(
        info.length,
        3 - handled,
        "the unhandled rest is still queued"
    );
}

pub async fn paths_that_would_share_a_queue_are_refused(broker: Arc<dyn Broker>) {
    let mut webhook = Webhook::new(broker);
    webhook.on("/a-b", |_v: Value| async {}).unwrap();
    let err = webhook.on("/a/b", |_v: Value| async {}).err().unwrap();
    assert!(err.to_string().contains("both map to queue"), "{err}");
    assert!(webhook.on("/", |_v: Value| async {}).is_err());
}
