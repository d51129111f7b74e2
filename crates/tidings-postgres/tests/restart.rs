//! A PostgreSQL crash and restart under load, on a server this test starts
//! itself: every send that returned Ok is delivered, whatever happened to
//! the sends and acks in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, Error, GroupName, OutgoingMessage, QueueConfig, QueueName, ReceiveOptions,
};
use tidings_postgres::PostgresBroker;
use tokio::sync::Notify;

use common::server::OwnServer;

/// What the producers learned of their sends.
#[derive(Default)]
struct Sent {
    ok: Mutex<BTreeSet<i64>>,
    unknown: Mutex<BTreeSet<i64>>,
    count: AtomicUsize,
    progress: Notify,
}

impl Sent {
    /// Waits until at least `n` sends returned Ok.
    async fn until(&self, n: usize) {
        loop {
            let notified = self.progress.notified();
            if self.count.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_and_restart_under_load_loses_nothing_that_returned_ok() {
    let server = match OwnServer::start() {
        Ok(server) => server,
        Err(e) => {
            common::skip_or_fail::<()>(&e);
            return;
        }
    };
    let url = format!("{}&retry_for=60s", server.url("restart"));
    let broker = Arc::new(PostgresBroker::open(&url).await.unwrap());
    let q = QueueName::new("orders").unwrap();
    let config = QueueConfig {
        visibility_timeout: Duration::from_secs(1),
        max_deliveries: 1000,
        ..QueueConfig::default()
    };
    broker.create_queue(&q, config).await.unwrap();
    let sent = Arc::new(Sent::default());
    let stop = Arc::new(AtomicBool::new(false));

    let mut producers = Vec::new();
    for task in 0..4i64 {
        let (broker, q, sent, stop) = (broker.clone(), q.clone(), sent.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let n = task * 1_000_000 + i;
                i += 1;
                match broker
                    .send(&q, OutgoingMessage::json(&json!({ "n": n })).unwrap())
                    .await
                {
                    Ok(_) => {
                        sent.ok.lock().unwrap().insert(n);
                        sent.count.fetch_add(1, Ordering::SeqCst);
                        sent.progress.notify_waiters();
                    }
                    Err(Error::OutcomeUnknown(_)) => {
                        sent.unknown.lock().unwrap().insert(n);
                    }
                    Err(e) => panic!("a send failed with {e}"),
                }
            }
        }));
    }

    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let consumer = {
        let (broker, q, seen, stop) = (broker.clone(), q.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let (g, c) = (
                GroupName::new("g").unwrap(),
                ConsumerName::new("c").unwrap(),
            );
            loop {
                let got = match broker
                    .receive(
                        &q,
                        &g,
                        &c,
                        ReceiveOptions::new(20, Duration::from_millis(200)),
                    )
                    .await
                {
                    Ok(got) => got,
                    Err(Error::OutcomeUnknown(_) | Error::Unavailable(_)) => continue,
                    Err(e) => panic!("a receive failed with {e}"),
                };
                if got.is_empty() && stop.load(Ordering::SeqCst) {
                    let length = broker.queue_info(&q).await.map(|i| i.length);
                    if matches!(length, Ok(0)) {
                        return;
                    }
                    continue;
                }
                for d in &got {
                    let n = d.payload.json::<serde_json::Value>().unwrap()["n"]
                        .as_i64()
                        .unwrap();
                    seen.lock().unwrap().insert(n);
                }
                let ids: Vec<_> = got.iter().map(|d| d.id.clone()).collect();
                match broker.ack(&q, &g, &ids).await {
                    Ok(_) | Err(Error::OutcomeUnknown(_) | Error::Unavailable(_)) => {}
                    Err(e) => panic!("an ack failed with {e}"),
                }
            }
        })
    };

    sent.until(300).await;
    server.crash_and_restart().unwrap();
    let after = sent.count.load(Ordering::SeqCst);
    sent.until(after + 300).await;
    stop.store(true, Ordering::SeqCst);
    for producer in producers {
        producer.await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(120), consumer)
        .await
        .expect("the consumer drained the queue")
        .unwrap();

    let ok = sent.ok.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    let lost: Vec<_> = ok.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "sends that returned Ok were lost: {lost:?}"
    );
    // What was delivered was sent: Ok, or in flight when the server went.
    let unknown = sent.unknown.lock().unwrap().clone();
    assert!(seen.iter().all(|n| ok.contains(n) || unknown.contains(n)));
    eprintln!(
        "{} sends returned Ok, {} had an unknown outcome ({} of those delivered)",
        ok.len(),
        unknown.len(),
        unknown.intersection(&seen).count()
    );
}
