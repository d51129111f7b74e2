//! Interop with the real Python LeanMQ 0.2.0 on the same Redis: messages,
//! acks, delivery counts and dead letters in both directions.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use serde_json::{Value, json};
use tidings_core::{
    Broker, ConsumerName, DeadLetterSelection, GroupName, Nack, OutgoingMessage, QueueConfig,
    QueueName, ReceiveOptions,
};

use common::python::LeanMq;
use common::{RedisFixture, fixture};

async fn setup() -> Option<(RedisFixture, LeanMq)> {
    let fx = fixture().await?;
    let py = LeanMq::find(&fx.prefix).await?;
    Some((fx, py))
}

fn q(name: &str) -> QueueName {
    QueueName::new(name).unwrap()
}

fn g(name: &str) -> GroupName {
    GroupName::new(name).unwrap()
}

async fn take(b: &dyn Broker, queue: &str, group: &str, n: usize) -> Vec<tidings_core::Delivery> {
    let got = b
        .receive(
            &q(queue),
            &g(group),
            &ConsumerName::new("rust-1").unwrap(),
            ReceiveOptions::new(n, Duration::from_secs(10)),
        )
        .await
        .unwrap();
    assert_eq!(got.len(), n, "{got:?}");
    got
}

#[tokio::test]
async fn python_sends_rust_receives_and_acks() {
    let Some((fx, py)) = setup().await else {
        return;
    };
    let b = &fx.broker;
    let created = py.run(json!({"cmd": "create", "queue": "orders"})).await;
    assert_eq!(created["group"], "orders-group");
    let sent = py
        .run(json!({"cmd": "send", "queue": "orders", "messages": [
            {"data": {"order_id": 1, "text": "héllo ✓"}, "message_id": "py-1"},
            {"data": {"order_id": 2}, "python_extras": true, "ttl": 3600},
        ]}))
        .await;
    // LeanMQ's queue is a Tidings queue too, with default settings.
    assert_eq!(b.list_queues().await.unwrap(), vec![q("orders")]);
    let got = take(b, "orders", "orders-group", 2).await;
    assert_eq!(got[0].id.as_str(), sent["ids"][0]);
    assert_eq!(got[1].id.as_str(), sent["ids"][1]);
    assert_eq!(
        got[0].payload.json::<Value>().unwrap(),
        json!({"order_id": 1, "text": "héllo ✓"})
    );
    assert_eq!(got[0].dedup_id.as_deref(), Some("py-1"));
    assert_eq!(got[0].delivery_count, 1);
    // NaN and Infinity arrive as null; integers of any size as written.
    assert!(
        got[1]
            .payload
            .as_str()
            .contains("\"big\": 1180591620717411303424")
    );
    let second: Value = serde_json::from_str(got[1].payload.as_str()).unwrap();
    assert_eq!(second["nan"], Value::Null);
    assert_eq!(second["inf"], Value::Null);
    let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
    assert_eq!(
        b.ack(&q("orders"), &g("orders-group"), &ids).await.unwrap(),
        2
    );
    // Python sees nothing left for its group.
    let left = py.run(json!({"cmd": "receive", "queue": "orders"})).await;
    assert_eq!(left["messages"], json!([]));
    let info = b.queue_info(&q("orders")).await.unwrap();
    assert_eq!(info.groups[0].pending, 0);
}

#[tokio::test]
async fn rust_sends_python_receives() {
    let Some((fx, py)) = setup().await else {
        return;
    };
    let b = &fx.broker;
    b.create_queue(&q("invoices"), QueueConfig::default())
        .await
        .unwrap();
    // Python's group starts at the end of the stream: it attaches first.
    assert_eq!(
        py.run(json!({"cmd": "attach", "queue": "invoices"})).await,
        json!({"found": true, "dlq": true})
    );
    let receipts = b
        .send_batch(
            &q("invoices"),
            vec![
                OutgoingMessage::json(&json!({"invoice": 1, "lines": [1, 2]})).unwrap(),
                OutgoingMessage::json(&json!({"invoice": 2}))
                    .unwrap()
                    .dedup_id("inv-2")
                    .ttl(Duration::from_secs(60))
                    .header("trace", "t-1"),
                OutgoingMessage::json(&json!("not an object")).unwrap(),
            ],
        )
        .await
        .unwrap();
    let got = py
        .run(json!({"cmd": "receive", "queue": "invoices", "ack": true}))
        .await;
    let messages = got["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 3);
    for (m, r) in messages.iter().zip(&receipts) {
        assert_eq!(m["id"], r.id.as_str());
        assert_eq!(m["delivery_count"], 1);
    }
    // Python strips _metadata; the payload is what Rust sent.
    assert_eq!(messages[0]["data"], json!({"invoice": 1, "lines": [1, 2]}));
    assert_eq!(messages[1]["data"], json!({"invoice": 2}));
    assert_eq!(messages[2]["data"], json!({"_value": "not an object"}));
    // LeanMQ's TTL index has the message, scored in epoch seconds.
    let client = redis::Client::open(common::redis_url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let score: f64 = redis::cmd("ZSCORE")
        .arg(format!("{}invoices:expiry", fx.prefix))
        .arg(receipts[1].id.as_str())
        .query(&mut conn)
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((score - now - 60.0).abs() < 5.0, "{score} vs {now}");
}

#[tokio::test]
async fn python_dead_letters_reach_rust_and_come_back() {
    let Some((fx, py)) = setup().await else {
        return;
    };
    let b = &fx.broker;
    py.run(json!({"cmd": "create", "queue": "payments"})).await;
    py.run(json!({"cmd": "send", "queue": "payments", "messages": [
        {"data": {"payment": 7}, "message_id": "pay-7"}
    ]}))
    .await;
    let moved = py
        .run(json!({"cmd": "dead_letter", "queue": "payments", "reason": "card declined"}))
        .await;
    assert_eq!(moved["moved"], 1);
    let letters = b.dead_letters(&q("payments"), None, 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    let dead = &letters[0];
    assert_eq!(dead.reason, "card declined");
    assert_eq!(dead.original_id.as_str(), "pay-7");
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.payload.json::<Value>().unwrap(), json!({"payment": 7}));
    // Requeued by Tidings: Python receives it with LeanMQ's history keys.
    let before = py.run(json!({"cmd": "attach", "queue": "payments"})).await;
    assert_eq!(before["found"], true);
    assert_eq!(
        b.requeue_dead_letters(&q("payments"), DeadLetterSelection::All)
            .await
            .unwrap(),
        1
    );
    let again = py.run(json!({"cmd": "receive", "queue": "payments"})).await;
    let data = &again["messages"][0]["data"];
    assert_eq!(data["payment"], 7);
    assert_eq!(data["_failures"][0]["reason"], "card declined");
    assert_eq!(
        data["_requeues"][0]["from_dlq"],
        format!("{}payments:dlq", fx.prefix)
    );
    assert_eq!(
        data["_requeues"][0]["to_queue"],
        format!("{}payments", fx.prefix)
    );
    assert!(
        b.dead_letters(&q("payments"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn rust_dead_letters_reach_python() {
    let Some((fx, py)) = setup().await else {
        return;
    };
    let b = &fx.broker;
    b.create_queue(&q("shipments"), QueueConfig::default())
        .await
        .unwrap();
    b.send(
        &q("shipments"),
        OutgoingMessage::json(&json!({"shipment": 3})).unwrap(),
    )
    .await
    .unwrap();
    let got = take(b, "shipments", "shipping", 1).await;
    let reason = "no such address";
    assert!(
        b.nack(
            &q("shipments"),
            &g("shipping"),
            &got[0].id,
            Nack::DeadLetter {
                reason: reason.into()
            }
        )
        .await
        .unwrap()
    );
    let letters = py
        .run(json!({"cmd": "dead_letters", "queue": "shipments"}))
        .await;
    let data = &letters["messages"][0]["data"];
    assert_eq!(data["shipment"], 3);
    assert_eq!(data["_failures"][0]["reason"], reason);
    // Requeued by Python: Tidings receives the payload without LeanMQ's history keys.
    let id = letters["messages"][0]["id"].clone();
    let moved = py
        .run(json!({"cmd": "requeue", "queue": "shipments", "ids": [id]}))
        .await;
    assert_eq!(moved["moved"], 1);
    let back = take(b, "shipments", "shipping", 1).await;
    assert_eq!(
        back[0].payload.json::<Value>().unwrap(),
        json!({"shipment": 3})
    );
    assert_eq!(back[0].delivery_count, 1);
    assert!(
        b.dead_letters(&q("shipments"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn delivery_counts_come_from_the_pending_list() {
    let Some((fx, py)) = setup().await else {
        return;
    };
    let b = &fx.broker;
    py.run(json!({"cmd": "create", "queue": "jobs"})).await;
    // Tidings takes over the queue with its own settings.
    let config = QueueConfig {
        visibility_timeout: Duration::from_millis(200),
        max_deliveries: 2,
        ..QueueConfig::default()
    };
    assert!(b.create_queue(&q("jobs"), config).await.unwrap());
    py.run(json!({"cmd": "send", "queue": "jobs", "messages": [{"data": {"job": 1}}]}))
        .await;
    assert_eq!(take(b, "jobs", "jobs-group", 1).await[0].delivery_count, 1);
    assert_eq!(take(b, "jobs", "jobs-group", 1).await[0].delivery_count, 2);
    // LeanMQ never redelivers; Tidings dead-letters after max_deliveries,
    // and Python sees the dead letter.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while b
        .dead_letters(&q("jobs"), None, 1)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "never dead-lettered");
        b.receive(
            &q("jobs"),
            &g("jobs-group"),
            &ConsumerName::new("rust-1").unwrap(),
            ReceiveOptions::new(1, Duration::from_millis(100)),
        )
        .await
        .unwrap();
    }
    let letters = py
        .run(json!({"cmd": "dead_letters", "queue": "jobs"}))
        .await;
    let reason = letters["messages"][0]["data"]["_failures"][0]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(reason.contains("2 deliveries"), "{reason}");
}

#[tokio::test]
async fn python_transactions_and_webhook_sends_are_read_by_rust() {
    let Some((fx, py)) = setup().await else {
        return;
    };
    let b = &fx.broker;
    py.run(json!({"cmd": "create", "queue": "a"})).await;
    py.run(json!({"cmd": "create", "queue": "b"})).await;
    py.run(json!({"cmd": "transaction", "messages": [
        {"queue": "a", "data": {"n": 1}}, {"queue": "b", "data": {"n": 2}}
    ]}))
    .await;
    assert_eq!(
        take(b, "a", "a-group", 1).await[0].payload.as_str(),
        r#"{"n": 1}"#
    );
    assert_eq!(
        take(b, "b", "b-group", 1).await[0].payload.as_str(),
        r#"{"n": 2}"#
    );

    // LeanMQWebhook uses its own prefix; its path maps to a queue name.
    let hooks = format!("{}webhook:", fx.prefix);
    let hb = tidings_redis::RedisBroker::open(&common::url_with_prefix(&hooks))
        .await
        .unwrap();
    py.run(
        json!({"cmd": "webhook_send", "prefix": hooks, "path": "/order/status/",
        "messages": [{"order_id": "ORD-1", "status": "shipped"}]}),
    )
    .await;
    let got = take(&hb, "order_status", "order_status-group", 1).await;
    let data: Value = got[0].payload.json().unwrap();
    assert_eq!(data["status"], "shipped");
    assert_eq!(data["_leanmq"]["webhook"]["path"], "/order/status");
}
