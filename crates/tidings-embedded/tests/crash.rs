//! Crash safety with real processes: a child process sends, receives and acks
//! under load and is killed with SIGKILL; on reopen every send that returned
//! Ok is there unless its ack returned Ok, and unacked deliveries come back
//! (once their visibility timeout has passed, as it survives the restart).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use tidings_core::{
    Broker, ConsumerName, GroupName, MessageId, OutgoingMessage, QueueConfig, QueueName,
    ReceiveOptions,
};
use tidings_embedded::EmbeddedBroker;

/// Set in the child's environment to the data directory it works in.
const CHILD_DIR: &str = "TIDINGS_CRASH_CHILD_DIR";

fn names() -> (QueueName, GroupName) {
    (
        QueueName::new("crash").unwrap(),
        GroupName::new("g").unwrap(),
    )
}

/// The child's work. Does nothing unless started by the parent test.
#[test]
fn crash_child() {
    common::as_child(CHILD_DIR, |dir| async move {
        let broker = EmbeddedBroker::open(&dir).unwrap();
        let (queue, group) = names();
        let config = QueueConfig {
            visibility_timeout: Duration::from_secs(2),
            ..QueueConfig::default()
        };
        broker.create_queue(&queue, config).await.unwrap();
        // The child stops by itself if nobody kills it.
        let stop_at = Instant::now() + Duration::from_secs(60);
        let mut tasks = Vec::new();
        for producer in 0..16 {
            let (broker, queue) = (broker.clone(), queue.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while Instant::now() < stop_at {
                    let batch = if producer % 4 == 0 { 10 } else { 1 };
                    let messages = (0..batch)
                        .map(|k| {
                            OutgoingMessage::json(&json!({"p": producer, "i": i + k})).unwrap()
                        })
                        .collect();
                    for receipt in broker.send_batch(&queue, messages).await.unwrap() {
                        println!("sent {}", receipt.id);
                    }
                    i += batch;
                }
            }));
        }
        let consumer = ConsumerName::new("before").unwrap();
        while Instant::now() < stop_at {
            let options = ReceiveOptions::new(50, Duration::from_millis(100));
            let got = broker
                .receive(&queue, &group, &consumer, options)
                .await
                .unwrap();
            let mut to_ack = Vec::new();
            for (k, d) in got.into_iter().enumerate() {
                println!("delivered {}", d.id);
                if k % 2 == 0 {
                    // Said before the ack: killed during it, the message may or may not come back.
                    println!("acking {}", d.id);
                    to_ack.push(d.id);
                }
            }
            broker.ack(&queue, &group, &to_ack).await.unwrap();
            for id in to_ack {
                println!("acked {id}");
            }
        }
    });
}

#[derive(Default)]
struct Seen {
    sent: BTreeSet<String>,
    delivered: BTreeSet<String>,
    acking: BTreeSet<String>,
    acked: BTreeSet<String>,
}

impl Seen {
    fn record(&mut self, line: &str) {
        let set = match line.split_once(' ') {
            Some(("sent", id)) => (&mut self.sent, id),
            Some(("delivered", id)) => (&mut self.delivered, id),
            Some(("acking", id)) => (&mut self.acking, id),
            Some(("acked", id)) => (&mut self.acked, id),
            _ => return,
        };
        set.0.insert(set.1.to_owned());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_send() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = common::child("crash_child", CHILD_DIR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Seen::default();
    let give_up = Instant::now() + Duration::from_secs(60);
    while seen.sent.len() < 5_000 || seen.acked.len() < 500 {
        let line = lines.next().expect("the child ended early").unwrap();
        seen.record(&line);
        assert!(Instant::now() < give_up, "the child is too slow");
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Lines already written before the kill count too.
    for line in lines {
        seen.record(&line.unwrap());
    }

    let broker = EmbeddedBroker::open(dir.path()).unwrap();
    let (queue, group) = names();
    let consumer = ConsumerName::new("after").unwrap();
    let mut back: BTreeMap<String, u32> = BTreeMap::new();
    loop {
        // Deliveries in flight at the kill come back once their visibility timeout (2 s) passes.
        let options = ReceiveOptions::new(1000, Duration::from_secs(3));
        let got = broker
            .receive(&queue, &group, &consumer, options)
            .await
            .unwrap();
        if got.is_empty() {
            break;
        }
        for d in &got {
            assert!(
                back.insert(d.id.to_string(), d.delivery_count).is_none(),
                "duplicate"
            );
        }
        let ids: Vec<MessageId> = got.into_iter().map(|d| d.id).collect();
        broker.ack(&queue, &group, &ids).await.unwrap();
    }

    let lost: Vec<_> = seen
        .sent
        .iter()
        .filter(|id| !seen.acking.contains(*id) && !back.contains_key(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged sends lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let resurrected: Vec<_> = seen
        .acked
        .iter()
        .filter(|id| back.contains_key(*id))
        .collect();
    assert!(
        resurrected.is_empty(),
        "acked messages came back: {resurrected:?}"
    );
    let unacked: Vec<_> = seen.delivered.difference(&seen.acking).collect();
    assert!(!unacked.is_empty(), "the child had unacked deliveries");
    for id in unacked {
        assert!(
            back.contains_key(id),
            "unacked delivery {id} did not come back"
        );
    }
}
