//! Clients of `tidings serve` through `HttpBroker` while the server is killed
//! with SIGKILL and restarted, twice: the clients carry on on new
//! connections, and every message whose send returned Ok is received.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidings::{
    Broker, ConsumerName, Error, GroupName, MessageId, OutgoingMessage, QueueConfig, QueueName,
    ReceiveOptions,
};

use common::{free_port, spawn_server, wait_ready};

const TOTAL: u64 = 600;

/// Retries while the server is away (what a client does across a restart).
async fn retrying<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = tidings::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Ok(v) => return v,
            // Away, or (killed with the request in hand) an unknown outcome:
            // retried, as a client with idempotent operations does (a
            // repeated send is a duplicate the consumer's set absorbs).
            Err(Error::Unavailable(_) | Error::OutcomeUnknown(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_carry_on_across_server_restarts_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut server = spawn_server(dir.path(), port, &[]);
    wait_ready(&http, &base).await;
    let broker: Arc<dyn Broker> = tidings::open(&base).await.unwrap();
    let queue = QueueName::new("jobs").unwrap();
    broker
        .create_queue(&queue, QueueConfig::default())
        .await
        .unwrap();

    let confirmed = Arc::new(Mutex::new(BTreeSet::new()));
    let producer = {
        let (broker, queue, confirmed) = (broker.clone(), queue.clone(), confirmed.clone());
        tokio::spawn(async move {
            for n in 0..TOTAL {
                let message = || OutgoingMessage::json(&serde_json::json!({ "n": n })).unwrap();
                retrying(|| broker.send(&queue, message())).await;
                confirmed.lock().unwrap().insert(n);
            }
        })
    };
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let consumer = {
        let (broker, queue, seen) = (broker.clone(), queue.clone(), seen.clone());
        tokio::spawn(async move {
            let (group, me) = (
                GroupName::new("workers").unwrap(),
                ConsumerName::new("w1").unwrap(),
            );
            while seen.lock().unwrap().len() < TOTAL as usize {
                let got = retrying(|| {
                    broker.receive(
                        &queue,
                        &group,
                        &me,
                        ReceiveOptions::new(50, Duration::from_millis(500)),
                    )
                })
                .await;
                let ids: Vec<MessageId> = got.iter().map(|d| d.id.clone()).collect();
                for d in got {
                    let v: serde_json::Value = d.payload.json().unwrap();
                    seen.lock().unwrap().insert(v["n"].as_u64().unwrap());
                }
                retrying(|| broker.ack(&queue, &group, &ids)).await;
            }
        })
    };

    // Kill the server twice while both are at work, restarting it each time.
    for at in [TOTAL / 4, TOTAL * 3 / 5] {
        while (confirmed.lock().unwrap().len() as u64) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        server.kill().unwrap(); // SIGKILL
        server.wait().unwrap();
        let (sent, received) = (confirmed.lock().unwrap().len(), seen.lock().unwrap().len());
        eprintln!("killed with {sent} sent and {received} received");
        assert!(
            sent < TOTAL as usize,
            "the kill came while the producer was at work"
        );
        server = spawn_server(dir.path(), port, &[]);
        wait_ready(&http, &base).await;
    }
    tokio::time::timeout(Duration::from_secs(120), producer)
        .await
        .expect("the producer finished")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .expect("the consumer received everything")
        .unwrap();
    let (confirmed, seen) = (confirmed.lock().unwrap(), seen.lock().unwrap());
    let lost: Vec<_> = confirmed.difference(&seen).collect();
    assert!(lost.is_empty(), "sent with Ok but never received: {lost:?}");
    server.kill().unwrap();
    server.wait().unwrap();
}
