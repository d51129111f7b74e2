//! The queue API over real HTTP: queues, sends, long-poll receives, acks,
//! nacks, dead letters, transactions, bad input, credentials.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Client, TestServer, eventually};
use serde_json::{Value, json};
use tidings_embedded::EmbeddedBroker;

fn memory() -> Arc<dyn tidings_core::Broker> {
    Arc::new(EmbeddedBroker::in_memory())
}

fn ids(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_created_listed_inspected_and_deleted() {
    let server = TestServer::start(memory()).await;
    let c = Client::new(&server.base);
    let settings = json!({"visibility_timeout": 5000, "max_deliveries": 3});
    let made = c
        .post(
            "/v1/queues",
            json!({"name": "orders", "settings": settings}),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["settings"]["max_deliveries"], 3);
    // Again with the same settings: fine; with others: a conflict.
    let again = c
        .post(
            "/v1/queues",
            json!({"name": "orders", "settings": settings}),
        )
        .await;
    assert_eq!(again.status, 200);
    let other = c
        .post(
            "/v1/queues",
            json!({"name": "orders", "settings": {"max_deliveries": 9}}),
        )
        .await;
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(
        c.post("/v1/queues", json!({"name": "audit"})).await.status,
        201
    );
    let list = c.get("/v1/queues").await;
    assert_eq!(list.body, json!({"queues": ["audit", "orders"]}));
    let info = c.get("/v1/queues/orders").await;
    assert_eq!(info.status, 200);
    assert_eq!(info.body["name"], "orders");
    assert_eq!(info.body["length"], 0);
    assert_eq!(info.body["config"]["visibility_timeout"], 5000);
    let gone = c.send("DELETE", "/v1/queues/audit", None, &[]).await;
    assert_eq!(gone.status, 204);
    assert_eq!(c.get("/v1/queues/audit").await.status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_round_send_receive_ack() {
    let server = TestServer::start(memory()).await;
    let c = Client::new(&server.base);
    c.post("/v1/queues", json!({"name": "orders"})).await;
    let one = c
        .post(
            "/v1/queues/orders/messages",
            json!({"payload": {"order": 1}, "headers": {"trace": "t-1"}, "dedup_id": "o-1"}),
        )
        .await;
    assert_eq!(one.status, 201, "{}", one.body);
    assert_eq!(one.body["messages"][0]["duplicate"], false);
    let batch = c
        .post(
            "/v1/queues/orders/messages",
            json!({"messages": [{"payload": {"order": 2}}, {"payload": [3]}, {"payload": {"order": 1}, "dedup_id": "o-1"}]}),
        )
        .await;
    assert_eq!(batch.status, 201, "{}", batch.body);
    let receipts = batch.body["messages"].as_array().unwrap();
    assert_eq!(receipts.len(), 3);
    // The dedup id: the first message's id, marked duplicate.
    assert_eq!(receipts[2]["duplicate"], true);
    assert_eq!(receipts[2]["id"], one.body["messages"][0]["id"]);

    let got = c
        .post(
            "/v1/queues/orders/receive",
            json!({"group": "billing", "consumer": "w1", "max": 10}),
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let messages = &got.body["messages"];
    assert_eq!(messages.as_array().unwrap().len(), 3);
    assert_eq!(messages[0]["payload"], json!({"order": 1}));
    assert_eq!(messages[0]["headers"]["trace"], "t-1");
    assert_eq!(messages[0]["dedup_id"], "o-1");
    assert_eq!(messages[0]["delivery_count"], 1);
    assert_eq!(messages[2]["payload"], json!([3]));
    let acked = c
        .post(
            "/v1/queues/orders/ack",
            json!({"group": "billing", "ids": ids(messages)}),
        )
        .await;
    assert_eq!(acked.body, json!({"acked": 3}));
    let info = c.get("/v1/queues/orders").await;
    assert_eq!(info.body["length"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_returns_when_a_message_arrives() {
    let server = TestServer::start(memory()).await;
    let c = Client::new(&server.base);
    c.post("/v1/queues", json!({"name": "jobs"})).await;
    let waiting = {
        let c = Client::new(&server.base);
        tokio::spawn(async move {
            let started = Instant::now();
            let got = c
                .post(
                    "/v1/queues/jobs/receive",
                    json!({"group": "g", "consumer": "c", "wait": 20000}),
                )
                .await;
            (got, started.elapsed())
        })
    };
    // The receive is waiting once its group exists (made by the receive).
    eventually("the receive to be waiting", || async {
        c.get("/v1/queues/jobs").await.body["groups"]
            .as_array()
            .is_some_and(|g| !g.is_empty())
    })
    .await;
    assert!(!waiting.is_finished());
    c.post("/v1/queues/jobs/messages", json!({"payload": {"job": 1}}))
        .await;
    let (got, took) = waiting.await.unwrap();
    assert_eq!(got.body["messages"][0]["payload"], json!({"job": 1}));
    assert!(
        took < Duration::from_secs(20),
        "woke on the send, not the wait"
    );
    // An empty queue answers after the wait, with no messages.
    let none = c
        .post(
            "/v1/queues/jobs/receive",
            json!({"group": "g", "consumer": "c", "wait": 50}),
        )
        .await;
    assert_eq!(none.body, json!({"messages": []}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacks_and_dead_letters_over_http() {
    let server = TestServer::start(memory()).await;
    let c = Client::new(&server.base);
    c.post("/v1/queues", json!({"name": "mail"})).await;
    c.post(
        "/v1/queues/mail/messages",
        json!({"messages": [{"payload": {"n": 1}}, {"payload": {"n": 2}}]}),
    )
    .await;
    let receive = || {
        c.post(
            "/v1/queues/mail/receive",
            json!({"group": "g", "consumer": "c", "max": 10, "wait": 5000}),
        )
    };
    let got = receive().await.body["messages"].clone();
    let [first, second] = [got[0]["id"].clone(), got[1]["id"].clone()];
    let dead = c
        .post(
            "/v1/queues/mail/nack",
            json!({"group": "g", "id": first, "dead_letter": "bounced"}),
        )
        .await;
    assert_eq!(dead.body, json!({"nacked": true}));
    let retry = c
        .post(
            "/v1/queues/mail/nack",
            json!({"group": "g", "id": second, "retry_after": 0}),
        )
        .await;
    assert_eq!(retry.body, json!({"nacked": true}));
    let none = c
        .post(
            "/v1/queues/mail/nack",
            json!({"group": "g", "ids": ["1-0", "2-0"], "retry_after": 0}),
        )
        .await;
    assert_eq!(
        none.body,
        json!({"nacked": 0}),
        "a batch counts those nacked"
    );
    let again = receive().await.body["messages"].clone();
    assert_eq!(again[0]["payload"], json!({"n": 2}));
    assert_eq!(again[0]["delivery_count"], 2);
    let letters = c.get("/v1/queues/mail/dead-letters").await;
    assert_eq!(letters.status, 200, "{}", letters.body);
    let letter = &letters.body["dead_letters"][0];
    assert_eq!(letter["reason"], "bounced");
    assert_eq!(letter["payload"], json!({"n": 1}));
    assert_eq!(letter["group"], "g");
    // One dead letter, inspected by its id.
    let one = c
        .get(&format!(
            "/v1/queues/mail/dead-letters/{}",
            letter["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(&one.body, letter);
    assert_eq!(c.get("/v1/queues/mail/dead-letters/0-0").await.status, 404);
    let requeued = c
        .post(
            "/v1/queues/mail/dead-letters/requeue",
            json!({"ids": [letter["id"]]}),
        )
        .await;
    assert_eq!(requeued.body, json!({"requeued": 1}));
    assert_eq!(
        receive().await.body["messages"][0]["payload"],
        json!({"n": 1})
    );
    let purged = c
        .post("/v1/queues/mail/dead-letters/purge", json!({"all": true}))
        .await;
    assert_eq!(purged.body, json!({"purged": 0}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_apply_everything_or_nothing() {
    let server = TestServer::start(memory()).await;
    let c = Client::new(&server.base);
    for q in ["orders", "invoices"] {
        c.post("/v1/queues", json!({"name": q})).await;
    }
    c.post("/v1/queues/orders/messages", json!({"payload": {"o": 1}}))
        .await;
    let got = c
        .post(
            "/v1/queues/orders/receive",
            json!({"group": "billing", "consumer": "c"}),
        )
        .await;
    let id = got.body["messages"][0]["id"].clone();
    // An ack of a message not pending: 409, and the send did not happen.
    let refused = c
        .post(
            "/v1/transactions",
            json!({"ops": [
                {"send": {"queue": "invoices", "message": {"payload": {"i": 1}}}},
                {"ack": {"queue": "orders", "group": "billing", "ids": ["999999-0"]}}
            ]}),
        )
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(c.get("/v1/queues/invoices").await.body["length"], 0);
    let done = c
        .post(
            "/v1/transactions",
            json!({"ops": [
                {"ack": {"queue": "orders", "group": "billing", "ids": [id]}},
                {"send": {"queue": "invoices", "message": {"payload": {"i": 1}}}}
            ]}),
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["messages"].as_array().unwrap().len(), 1);
    assert_eq!(c.get("/v1/queues/invoices").await.body["length"], 1);
    assert_eq!(c.get("/v1/queues/orders").await.body["length"], 0);
    let missing = c
        .post(
            "/v1/transactions",
            json!({"ops": [{"send": {"queue": "nowhere", "message": {"payload": 1}}}]}),
        )
        .await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queue_requests_get_clear_4xx() {
    let server = TestServer::start(memory()).await;
    let c = Client::new(&server.base);
    c.post("/v1/queues", json!({"name": "q"})).await;
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        (
            "POST",
            "/v1/queues",
            json!({"name": "bad name"}),
            400,
            "queue name",
        ),
        (
            "POST",
            "/v1/queues",
            json!({"name": "x", "colour": 1}),
            400,
            "colour",
        ),
        (
            "POST",
            "/v1/queues",
            json!({"name": "hub.sub.x"}),
            403,
            "event hub",
        ),
        (
            "POST",
            "/v1/queues/q/messages",
            json!({"payload": 1, "ttl": 0}),
            400,
            "ttl",
        ),
        (
            "POST",
            "/v1/queues/q/messages",
            json!({"messages": []}),
            400,
            "at least one",
        ),
        (
            "POST",
            "/v1/queues/q/messages",
            json!({"body": 1}),
            400,
            "body",
        ),
        (
            "POST",
            "/v1/queues/nope/messages",
            json!({"payload": 1}),
            404,
            "nope",
        ),
        (
            "POST",
            "/v1/queues/q/receive",
            json!({"group": "g", "consumer": "c", "max": 0}),
            400,
            "max",
        ),
        (
            "POST",
            "/v1/queues/q/receive",
            json!({"group": "g", "consumer": "c", "wait": 60000}),
            400,
            "wait",
        ),
        (
            "POST",
            "/v1/queues/q/receive",
            json!({"group": "g:1", "consumer": "c"}),
            400,
            "group",
        ),
        (
            "POST",
            "/v1/queues/q/nack",
            json!({"group": "g", "id": "1-0", "retry_after": 1, "dead_letter": "x"}),
            400,
            "not both",
        ),
        (
            "POST",
            "/v1/queues/q/dead-letters/requeue",
            json!({}),
            400,
            "ids or all",
        ),
        (
            "POST",
            "/v1/transactions",
            json!({"ops": []}),
            400,
            "at least one",
        ),
        (
            "POST",
            "/v1/transactions",
            json!({"ops": [{"drop": {}}]}),
            400,
            "drop",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let bytes = serde_json::to_vec(&body).unwrap();
        let a = c
            .send(
                method,
                path,
                Some(&bytes),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(a.status, status, "{method} {path} {body}: {}", a.body);
        let error = a.body.to_string();
        assert!(
            error.contains(says),
            "{method} {path}: {error} should mention {says}"
        );
    }
    // A key twice in one object of a message: refused, naming it.
    let twice = br#"{"payload": {"order": 1, "order": 2}}"#;
    let a = c
        .send(
            "POST",
            "/v1/queues/q/messages",
            Some(twice),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(a.body.to_string().contains("order"), "{}", a.body);
    let limit = c.get("/v1/queues/q/dead-letters?limit=0").await;
    assert_eq!(limit.status, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_api_needs_credentials() {
    let server = TestServer::start_with(memory(), Some("admin-secret")).await;
    let anonymous = Client::new(&server.base);
    let a = anonymous.post("/v1/queues", json!({"name": "q"})).await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(anonymous.get("/v1/queues").await.status, 401);
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", "admin-secret");
    assert_eq!(
        admin.post("/v1/queues", json!({"name": "q"})).await.status,
        201
    );
    // The hub's own queues are not listed.
    let list = admin.get("/v1/queues").await;
    assert_eq!(list.body, json!({"queues": ["q"]}));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_uses_only_the_queues_it_is_given() {
    let server = TestServer::start_with(memory(), Some("admin-secret")).await;
    let admin = Client::new(&server.base).with_header("x-amebo-admin-key", "admin-secret");
    for q in ["orders", "orders.eu", "billing"] {
        assert_eq!(
            admin.post("/v1/queues", json!({"name": q})).await.status,
            201
        );
    }
    let made = admin
        .post(
            "/v1/applications",
            json!({"application": "shop", "address": "http://127.0.0.1:9", "queues": ["orders*"]}),
        )
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    assert_eq!(made.body["queues"], json!(["orders*"]));
    let key = made.body["apikey"].as_str().unwrap().to_owned();
    let shop = Client::new(&server.base).with_header("authorization", &format!("Bearer {key}"));
    let sent = shop
        .post("/v1/queues/orders.eu/messages", json!({"payload": 1}))
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let refused = shop
        .post("/v1/queues/billing/messages", json!({"payload": 1}))
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body["error"].as_str().unwrap().contains("billing"));
    let tx = shop
        .post(
            "/v1/transactions",
            json!({"ops": [{"send": {"queue": "billing", "message": {"payload": 1}}}]}),
        )
        .await;
    assert_eq!(tx.status, 403, "{}", tx.body);
    assert_eq!(
        shop.get("/v1/queues").await.body,
        json!({"queues": ["orders", "orders.eu"]})
    );
    // Widened by the admin: every queue.
    let widened = admin
        .send(
            "PUT",
            "/v1/applications/shop",
            Some(br#"{"queues": ["*"]}"#),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(widened.status, 202, "{}", widened.body);
    let sent = shop
        .post("/v1/queues/billing/messages", json!({"payload": 1}))
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let bad = admin
        .post(
            "/v1/applications",
            json!({"application": "x", "address": "http://127.0.0.1:9", "queues": ["a b"]}),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    server.stop().await;
}

/// Reads server-sent events from a streaming response: (event, data) pairs.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return (event, serde_json::from_str(&data).unwrap());
            }
            let chunk = tokio::time::timeout(common::PATIENCE, self.response.chunk())
                .await
                .expect("an event in time")
                .unwrap()
                .expect("the stream is open");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_sends_no_more_than_its_credit() {
    let server = TestServer::start(memory()).await;
    let c = Client::new(&server.base);
    c.post("/v1/queues", json!({"name": "feed"})).await;
    let messages: Vec<Value> = (0..5).map(|n| json!({"payload": {"n": n}})).collect();
    c.post("/v1/queues/feed/messages", json!({"messages": messages}))
        .await;
    let response = reqwest::get(format!(
        "{}/v1/queues/feed/stream?group=g&consumer=slow&credit=2",
        server.base
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut events = EventReader {
        response,
        buffer: String::new(),
    };
    let mut got = Vec::new();
    for _ in 0..2 {
        let (event, data) = events.next().await;
        assert_eq!(event, "message");
        got.push(data);
    }
    assert_eq!(got[0]["payload"], json!({"n": 0}));
    // Out of credit: nothing more was taken for it; the rest waits.
    let info = c.get("/v1/queues/feed").await.body;
    assert_eq!(info["groups"][0]["pending"], 2, "{info}");
    assert_eq!(info["groups"][0]["ready"], 3, "{info}");
    // A second stream for the same consumer is refused.
    let twice = c.get("/v1/queues/feed/stream?group=g&consumer=slow").await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    // Acks by HTTP, more credit: the rest comes.
    let ids: Vec<Value> = got.iter().map(|m| m["id"].clone()).collect();
    let acked = c
        .post("/v1/queues/feed/ack", json!({"group": "g", "ids": ids}))
        .await;
    assert_eq!(acked.body, json!({"acked": 2}));
    let more = c
        .post(
            "/v1/queues/feed/stream/credit",
            json!({"group": "g", "consumer": "slow", "credit": 10}),
        )
        .await;
    assert_eq!(more.status, 200, "{}", more.body);
    for n in 2..5 {
        let (_, data) = events.next().await;
        assert_eq!(data["payload"], json!({"n": n}));
    }
    // And a message sent now is pushed as soon as it is there.
    c.post("/v1/queues/feed/messages", json!({"payload": {"n": 5}}))
        .await;
    assert_eq!(events.next().await.1["payload"], json!({"n": 5}));
    let unknown = c
        .post(
            "/v1/queues/feed/stream/credit",
            json!({"group": "g", "consumer": "nobody", "credit": 1}),
        )
        .await;
    assert_eq!(unknown.status, 404);
    // Shutting down ends the open stream instead of waiting for it.
    server.stop().await;
    let end = tokio::time::timeout(common::PATIENCE, async {
        while events.response.chunk().await.ok().flatten().is_some() {}
    })
    .await;
    assert!(end.is_ok(), "the stream ended with the server");
}
