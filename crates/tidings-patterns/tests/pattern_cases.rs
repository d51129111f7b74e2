//! Behaviour of the event bus, RPC, the gateway and sagas, written once and
//! run on every backend (included by the tests of tidings-patterns for the
//! embedded engine and of tidings-redis for Redis).
//!
//! Each case takes a [`Backend`]: it hands out broker handles on the same
//! data, one at a time where the engine allows only one (an embedded data
//! directory), side by side where it allows several (Redis).

#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tidings_core::Broker;
use tidings_patterns::breaker::{BreakerConfig, CircuitBreaker};
use tidings_patterns::bus::{BusOptions, Event, EventBus, UnknownEvents, subscription_queue};
use tidings_patterns::resilience::{CallPolicy, PolicyError};
use tidings_patterns::rpc::{Gateway, Rpc, RpcError};
use tidings_patterns::saga::{Saga, SagaOrchestrator, SagaStatus};
use tokio::sync::mpsc;

/// Calls `$runner!(case, ...)` with every case of this file, so each backend's
/// test file names the list once.
#[allow(unused_macros)] // unused when this file is built alone
macro_rules! every_pattern_case {
    ($runner:ident) => {
        $runner!(
            publish_fans_out_to_matching_subscriptions,
            subscriptions_outlive_their_subscribers,
            unknown_event_types_are_acknowledged_or_dead_lettered,
            failing_bus_handlers_retry_then_dead_letter,
            a_panicking_bus_handler_is_retried_and_isolated,
            events_of_one_key_keep_their_order_under_4_workers,
            a_standby_subscriber_takes_over_in_order,
            a_dead_subscribers_events_are_not_overtaken,
            stopping_a_subscriber_loses_nothing,
            calls_get_their_own_replies,
            a_call_times_out_and_its_late_reply_is_dropped,
            server_errors_reach_the_caller,
            the_gateway_returns_partial_results,
            a_breaker_stops_calls_to_a_failing_service,
            a_saga_runs_every_step,
            a_failed_step_is_compensated_in_reverse_order,
            a_saga_resumes_after_its_orchestrator_is_gone,
        );
    };
}

/// Broker handles on one set of data.
pub trait Backend: Send + Sync {
    /// A handle. Where only one may be open, the caller has dropped the
    /// previous one.
    fn open(&self) -> Arc<dyn Broker>;

    /// A second handle while `first` is open, as another process would have
    /// (`first` itself where the engine allows one handle at a time).
    fn beside(&self, first: &Arc<dyn Broker>) -> Arc<dyn Broker> {
        first.clone()
    }
}

const PATIENCE: Duration = Duration::from_secs(10);

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("channel closed")
}

/// Waits until `check` holds (a state that has no event to await).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn fast_bus() -> BusOptions {
    BusOptions {
        max_attempts: 3,
        first_retry: Duration::from_millis(10),
        max_retry: Duration::from_millis(50),
        ..BusOptions::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OrderCreated {
    order_id: String,
    total: f64,
}

impl Event for OrderCreated {
    const TYPE: &'static str = "OrderCreatedEvent";
    fn ordering_key(&self) -> Option<String> {
        Some(self.order_id.clone())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PaymentProcessed {
    order_id: String,
    payment_id: String,
}

impl Event for PaymentProcessed {
    const TYPE: &'static str = "PaymentProcessedEvent";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Mystery {
    what: String,
}

impl Event for Mystery {
    const TYPE: &'static str = "MysteryEvent";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Step {
    key: String,
    seq: u32,
}

impl Event for Step {
    const TYPE: &'static str = "StepEvent";
    fn ordering_key(&self) -> Option<String> {
        Some(self.key.clone())
    }
}

fn order(id: &str) -> OrderCreated {
    OrderCreated {
        order_id: id.into(),
        total: 10.5,
    }
}

// ---- event bus ----

pub async fn publish_fans_out_to_matching_subscriptions(backend: &dyn Backend) {
    let bus = EventBus::new(backend.open());
    bus.subscribe("payments", &["OrderCreatedEvent"])
        .await
        .unwrap();
    bus.subscribe("audit", &["*"]).await.unwrap();
    bus.subscribe("shipping", &["PaymentProcessedEvent"])
        .await
        .unwrap();
    assert_eq!(bus.publish(&order("o-1")).await.unwrap().subscribers, 2);
    let paid = PaymentProcessed {
        order_id: "o-1".into(),
        payment_id: "p-1".into(),
    };
    assert_eq!(bus.publish(&paid).await.unwrap().subscribers, 2);
    let subs = bus.subscriptions().await.unwrap();
    assert_eq!(
        subs.iter()
            .map(|s| s.subscriber.as_str())
            .collect::<Vec<_>>(),
        ["audit", "payments", "shipping"]
    );
    let length = |name: &str| {
        let broker = bus.broker().clone();
        let q = subscription_queue(name).unwrap();
        async move { broker.queue_info(&q).await.unwrap().length }
    };
    assert_eq!(length("payments").await, 1);
    assert_eq!(length("audit").await, 2);
    assert_eq!(length("shipping").await, 1);

    // Handlers by type; each subscriber sees what it subscribed to.
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut audit = bus.subscriber("audit");
    let t = tx.clone();
    audit.on(move |e: OrderCreated| {
        let t = t.clone();
        async move {
            t.send(format!("audit saw order {}", e.order_id)).ok();
        }
    });
    let t = tx.clone();
    audit.on(move |e: PaymentProcessed| {
        let t = t.clone();
        async move {
            t.send(format!("audit saw payment {}", e.payment_id)).ok();
        }
    });
    let mut payments = bus.subscriber("payments");
    let t = tx.clone();
    payments.on(move |e: OrderCreated| {
        let t = t.clone();
        async move {
            t.send(format!("payments saw order {}", e.order_id)).ok();
        }
    });
    // `run` subscribes to what the subscriber handles (audit's "*" becomes
    // its two types).
    let (a, p) = (audit.run().await.unwrap(), payments.run().await.unwrap());
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut rx).await);
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "audit saw order o-1",
            "audit saw payment p-1",
            "payments saw order o-1"
        ]
    );
    a.stop().await;
    p.stop().await;
    assert_eq!(length("audit").await, 0);
    assert_eq!(length("payments").await, 0);
    bus.unsubscribe("shipping").await.unwrap();
    assert_eq!(bus.publish(&paid).await.unwrap().subscribers, 1);
}

pub async fn subscriptions_outlive_their_subscribers(backend: &dyn Backend) {
    // A subscription made, then its process gone.
    {
        let bus = EventBus::new(backend.open());
        bus.subscribe("payment-service", &["OrderCreatedEvent"])
            .await
            .unwrap();
    }
    // Another process publishes while nobody runs the subscriber.
    {
        let bus = EventBus::new(backend.open());
        for i in 0..3 {
            let published = bus.publish(&order(&format!("o-{i}"))).await.unwrap();
            assert_eq!(published.subscribers, 1);
        }
    }
    // The subscriber comes back on a handle of its own and gets all three.
    let bus = EventBus::new(backend.open());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sub = bus.subscriber("payment-service");
    sub.on(move |e: OrderCreated| {
        let tx = tx.clone();
        async move {
            tx.send(e.order_id).ok();
        }
    });
    let service = sub.run().await.unwrap();
    let mut got = vec![
        next(&mut rx).await,
        next(&mut rx).await,
        next(&mut rx).await,
    ];
    got.sort();
    assert_eq!(got, ["o-0", "o-1", "o-2"]);
    service.stop().await;
}

pub async fn unknown_event_types_are_acknowledged_or_dead_lettered(backend: &dyn Backend) {
    let broker = backend.open();
    let bus = EventBus::new(broker.clone());
    for (name, unknown) in [
        ("lenient", UnknownEvents::Acknowledge),
        ("strict", UnknownEvents::DeadLetter),
    ] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut sub = bus.subscriber_with(
            name,
            BusOptions {
                unknown,
                ..fast_bus()
            },
        );
        sub.on(move |e: OrderCreated| {
            let tx = tx.clone();
            async move {
                tx.send(e.order_id).ok();
            }
        });
        sub.also_subscribe("MysteryEvent");
        let service = sub.run().await.unwrap();
        bus.publish(&Mystery { what: "?".into() }).await.unwrap();
        bus.publish(&order("after")).await.unwrap();
        // The known event after it is handled either way.
        assert_eq!(next(&mut rx).await, "after");
        service.stop().await;
        let queue = subscription_queue(name).unwrap();
        let info = broker.queue_info(&queue).await.unwrap();
        assert_eq!(info.length, 0, "{name}: nothing left in the queue");
        let dead = broker.dead_letters(&queue, None, 10).await.unwrap();
        match unknown {
            UnknownEvents::Acknowledge => assert!(dead.is_empty()),
            UnknownEvents::DeadLetter => {
                assert_eq!(dead.len(), 1);
                assert_eq!(dead[0].reason, "unknown event type \"MysteryEvent\"");
                assert_eq!(
                    dead[0].payload.json::<Value>().unwrap(),
                    json!({"what": "?"})
                );
            }
        }
    }
}

pub async fn failing_bus_handlers_retry_then_dead_letter(backend: &dyn Backend) {
    let broker = backend.open();
    let bus = EventBus::new(broker.clone());
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let mut sub = bus.subscriber_with("flaky", fast_bus());
    sub.on(move |_: OrderCreated| {
        let a = a.clone();
        async move {
            a.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>("card service down")
        }
    });
    let service = sub.run().await.unwrap();
    bus.publish(&order("o-9")).await.unwrap();
    let queue = subscription_queue("flaky").unwrap();
    let b = broker.clone();
    eventually("the event is dead-lettered", async || {
        !b.dead_letters(&queue, None, 10).await.unwrap().is_empty()
    })
    .await;
    service.stop().await;
    let dead = broker.dead_letters(&queue, None, 10).await.unwrap();
    assert_eq!(dead[0].reason, "Processing error: card service down");
    assert_eq!(attempts.load(Ordering::Relaxed), 3);
}

pub async fn a_panicking_bus_handler_is_retried_and_isolated(backend: &dyn Backend) {
    let broker = backend.open();
    let bus = EventBus::new(broker.clone());
    let attempts = Arc::new(AtomicU32::new(0));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = attempts.clone();
    let mut sub = bus.subscriber_with("panicky", fast_bus());
    sub.on(move |e: OrderCreated| {
        let (a, tx) = (a.clone(), tx.clone());
        async move {
            let n = a.fetch_add(1, Ordering::Relaxed);
            // The first event panics once, the second every time.
            if e.order_id == "always" || n == 0 {
                panic!("boom on {}", e.order_id);
            }
            tx.send(e.order_id).ok();
        }
    });
    let service = sub.run().await.unwrap();
    bus.publish(&order("once")).await.unwrap();
    assert_eq!(next(&mut rx).await, "once");
    bus.publish(&order("always")).await.unwrap();
    bus.publish(&order("after")).await.unwrap();
    // The worker survived both panics and went on.
    assert_eq!(next(&mut rx).await, "after");
    service.stop().await;
    let dead = broker
        .dead_letters(&subscription_queue("panicky").unwrap(), None, 10)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].reason, "Processing error: the handler panicked");
}

pub async fn events_of_one_key_keep_their_order_under_4_workers(backend: &dyn Backend) {
    let bus = EventBus::new(backend.open());
    let seen: Arc<Mutex<BTreeMap<String, Vec<u32>>>> = Arc::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut sub = bus.subscriber_with(
        "ordered",
        BusOptions {
            workers: 4,
            ..fast_bus()
        },
    );
    let s = seen.clone();
    sub.on(move |e: Step| {
        let (s, tx) = (s.clone(), tx.clone());
        async move {
            // Uneven handling times, so a lane-less dispatcher would reorder.
            if e.seq.is_multiple_of(3) {
                tokio::time::sleep(Duration::from_millis(u64::from(e.seq % 5))).await;
            }
            s.lock().unwrap().entry(e.key).or_default().push(e.seq);
            tx.send(()).ok();
        }
    });
    let service = sub.run().await.unwrap();
    let keys = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let total = 200u32;
    for seq in 0..total {
        let key = keys[(seq as usize * 7 + seq as usize / 3) % keys.len()];
        bus.publish(&Step {
            key: key.into(),
            seq,
        })
        .await
        .unwrap();
    }
    for _ in 0..total {
        next(&mut rx).await;
    }
    service.stop().await;
    let seen = seen.lock().unwrap();
    let mut count = 0;
    for (key, seqs) in seen.iter() {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, &sorted, "events of key {key} out of order");
        count += seqs.len();
    }
    assert_eq!(count, total as usize);
}

type Handled = Arc<Mutex<Vec<(usize, String, u32)>>>;

/// A subscriber that records (which instance, key, seq) of every `Step`.
async fn step_recorder(
    bus: &EventBus,
    name: &str,
    instance: usize,
    options: BusOptions,
    handled: &Handled,
    tx: &mpsc::UnboundedSender<usize>,
) -> tidings_patterns::bus::BusService {
    let (h, tx) = (handled.clone(), tx.clone());
    let mut sub = bus.subscriber_with(name, options);
    sub.on(move |e: Step| {
        let (h, tx) = (h.clone(), tx.clone());
        async move {
            if e.seq.is_multiple_of(4) {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            h.lock().unwrap().push((instance, e.key, e.seq));
            tx.send(instance).ok();
        }
    });
    sub.run().await.unwrap()
}

async fn publish_steps(bus: &EventBus, seqs: std::ops::Range<u32>) {
    let keys = ["a", "b", "c", "d", "e"];
    for seq in seqs {
        let key = keys[seq as usize % keys.len()].to_owned();
        bus.publish(&Step { key, seq }).await.unwrap();
    }
}

/// Per key, the seqs an instance handled, in handling order, are increasing.
fn assert_in_order(handled: &[(usize, String, u32)]) {
    let mut last: BTreeMap<(usize, &str), u32> = BTreeMap::new();
    for (instance, key, seq) in handled {
        if let Some(before) = last.insert((*instance, key.as_str()), *seq) {
            assert!(
                before < *seq,
                "instance {instance}, key {key}: {seq} after {before}"
            );
        }
    }
}

pub async fn a_standby_subscriber_takes_over_in_order(backend: &dyn Backend) {
    let first = backend.open();
    let second = backend.beside(&first);
    let (bus_a, bus_b) = (EventBus::new(first), EventBus::new(second));
    let options = BusOptions {
        workers: 4,
        ..fast_bus()
    };
    let handled = Handled::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = step_recorder(&bus_a, "twice", 0, options.clone(), &handled, &tx).await;
    let b = step_recorder(&bus_b, "twice", 1, options, &handled, &tx).await;
    publish_steps(&bus_a, 0..100).await;
    let mut by = [0usize; 2];
    for _ in 0..100 {
        by[next(&mut rx).await] += 1;
    }
    // One process at a time consumes the subscription.
    assert!(by[0] == 100 || by[1] == 100, "{by:?}");
    let active = usize::from(by[1] == 100);
    // The active one stops; the standby takes over and goes on, in order.
    let (stopped, standby) = if active == 0 { (a, b) } else { (b, a) };
    stopped.stop().await;
    publish_steps(&bus_b, 100..200).await;
    for _ in 0..100 {
        assert_eq!(next(&mut rx).await, 1 - active);
    }
    standby.stop().await;
    let handled = handled.lock().unwrap();
    assert_eq!(handled.len(), 200);
    assert_in_order(&handled);
}

pub async fn a_dead_subscribers_events_are_not_overtaken(backend: &dyn Backend) {
    let first = backend.open();
    let second = backend.beside(&first);
    let (bus_a, bus_b) = (EventBus::new(first), EventBus::new(second));
    let options = BusOptions {
        workers: 4,
        lease_ttl: Duration::from_millis(300),
        visibility_timeout: Duration::from_millis(800),
        ..fast_bus()
    };
    let handled = Handled::default();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let a = step_recorder(&bus_a, "crashy", 0, options.clone(), &handled, &tx).await;
    publish_steps(&bus_a, 0..50).await;
    for _ in 0..10 {
        next(&mut rx).await;
    }
    // The consumer dies with events in flight; a standby starts.
    a.abort().await;
    let b = step_recorder(&bus_b, "crashy", 1, options, &handled, &tx).await;
    publish_steps(&bus_b, 50..60).await;
    eventually(
        "every event handled by the standby or before the crash",
        async || {
            let h = handled.lock().unwrap();
            (0..60).all(|seq| h.iter().any(|(_, _, s)| *s == seq))
        },
    )
    .await;
    b.stop().await;
    let handled = handled.lock().unwrap();
    // At least once (what the dead one handled but did not ack comes again),
    // and the standby never handled a key's events out of order.
    assert_in_order(&handled);
    assert!(handled.iter().any(|(i, _, _)| *i == 1));
}

pub async fn stopping_a_subscriber_loses_nothing(backend: &dyn Backend) {
    let broker = backend.open();
    let bus = EventBus::new(broker.clone());
    bus.subscribe("slow", &["OrderCreatedEvent"]).await.unwrap();
    for i in 0..20 {
        bus.publish(&order(&format!("o-{i}"))).await.unwrap();
    }
    let handled = Arc::new(AtomicU32::new(0));
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let h = handled.clone();
    let mut sub = bus.subscriber("slow");
    sub.on(move |_: OrderCreated| {
        let (h, started_tx) = (h.clone(), started_tx.clone());
        async move {
            started_tx.send(()).ok();
            tokio::time::sleep(Duration::from_millis(20)).await;
            h.fetch_add(1, Ordering::Relaxed);
        }
    });
    let service = sub.run().await.unwrap();
    next(&mut started).await;
    service.stop().await;
    // What was taken was handled and acked; the rest waits in the queue.
    let queue = subscription_queue("slow").unwrap();
    let info = broker.queue_info(&queue).await.unwrap();
    let done = u64::from(handled.load(Ordering::Relaxed));
    assert!(done >= 1);
    assert_eq!(info.length + done, 20, "{info:?}");
    assert_eq!(info.groups[0].pending, 0);
}

// ---- request/response ----

#[derive(Debug, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

pub async fn calls_get_their_own_replies(backend: &dyn Backend) {
    let rpc = Rpc::new(backend.open());
    let server = rpc
        .serve(
            "calc",
            "add",
            |r: Add| async move { Ok::<_, String>(r.a + r.b) },
        )
        .await
        .unwrap();
    let calls = (0..100i64).map(|i| {
        let rpc = rpc.clone();
        tokio::spawn(async move {
            let sum: i64 = rpc
                .call("calc", "add", &json!({"a": i, "b": 1000}), PATIENCE)
                .await
                .unwrap();
            (i, sum)
        })
    });
    for call in calls.collect::<Vec<_>>() {
        let (i, sum) = call.await.unwrap();
        assert_eq!(sum, i + 1000);
    }
    server.stop().await;
    rpc.close().await;
}

pub async fn a_call_times_out_and_its_late_reply_is_dropped(backend: &dyn Backend) {
    let rpc = Rpc::new(backend.open());
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let server = rpc
        .serve("slow", "echo", move |v: Value| {
            let mut release = release_rx.clone();
            async move {
                if v["wait"] == true {
                    release.wait_for(|r| *r).await.map_err(|e| e.to_string())?;
                }
                Ok::<_, String>(v)
            }
        })
        .await
        .unwrap();
    let err = rpc
        .call::<_, Value>(
            "slow",
            "echo",
            &json!({"wait": true}),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err}");
    assert_eq!(err.to_string(), "no reply from slow.echo within 200ms");
    // The server answers after the caller gave up: the reply is dropped.
    release_tx.send(true).unwrap();
    eventually("the late reply is counted", async || {
        rpc.late_replies() == 1
    })
    .await;
    // The caller works on.
    let v: Value = rpc
        .call("slow", "echo", &json!({"wait": false, "n": 2}), PATIENCE)
        .await
        .unwrap();
    assert_eq!(v["n"], 2);
    server.stop().await;
    rpc.close().await;
}

pub async fn server_errors_reach_the_caller(backend: &dyn Backend) {
    let rpc = Rpc::new(backend.open());
    let server = rpc
        .serve("calc", "div", |r: Add| async move {
            if r.b == 0 {
                Err("division by zero".to_owned())
            } else {
                Ok(r.a / r.b)
            }
        })
        .await
        .unwrap();
    let err = rpc
        .call::<_, i64>("calc", "div", &json!({"a": 1, "b": 0}), PATIENCE)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "calc.div failed: division by zero");
    let err = rpc
        .call::<_, i64>("calc", "div", &json!({"a": "one"}), PATIENCE)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote { message, .. } if message.starts_with("invalid request:")),
        "{err}"
    );
    let ok: i64 = rpc
        .call("calc", "div", &json!({"a": 9, "b": 3}), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ok, 3);
    // A panicking handler answers with an error; the server goes on.
    let panicky = rpc
        .serve("calc", "boom", |_: Value| async move {
            if true {
                panic!("boom");
            }
            Ok::<i64, String>(0)
        })
        .await
        .unwrap();
    let err = rpc
        .call::<_, i64>("calc", "boom", &json!({}), PATIENCE)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "calc.boom failed: the handler panicked");
    let ok: i64 = rpc
        .call("calc", "div", &json!({"a": 8, "b": 2}), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ok, 4);
    panicky.stop().await;
    server.stop().await;
    rpc.close().await;
}

pub async fn the_gateway_returns_partial_results(backend: &dyn Backend) {
    let rpc = Rpc::new(backend.open());
    let orders = rpc
        .serve("orders", "get", |r: Value| async move {
            Ok::<_, String>(json!({"order_id": r["id"], "status": "created"}))
        })
        .await
        .unwrap();
    let payments = rpc
        .serve("payments", "get", |_: Value| async {
            Err::<Value, _>("ledger unavailable")
        })
        .await
        .unwrap();
    let gateway = Gateway::new(
        rpc.clone(),
        CallPolicy::new().timeout(Duration::from_millis(300)),
    );
    let got = gateway
        .gather([
            ("order", "orders", "get", json!({"id": "o-1"})),
            ("payment", "payments", "get", json!({"id": "o-1"})),
            ("inventory", "inventory", "get", json!({"id": "o-1"})),
        ])
        .await;
    assert_eq!(
        got["order"].as_ref().unwrap(),
        &json!({"order_id": "o-1", "status": "created"})
    );
    assert!(
        matches!(&got["payment"], Err(PolicyError::Failed(RpcError::Remote { message, .. })) if message == "ledger unavailable"),
        "{:?}",
        got["payment"]
    );
    // Nobody serves inventory: the call ends with its timeout.
    assert!(
        matches!(
            &got["inventory"],
            Err(PolicyError::Failed(RpcError::Timeout { .. }) | PolicyError::TimedOut(_))
        ),
        "{:?}",
        got["inventory"]
    );
    orders.stop().await;
    payments.stop().await;
    rpc.close().await;
}

pub async fn a_breaker_stops_calls_to_a_failing_service(backend: &dyn Backend) {
    let rpc = Rpc::new(backend.open());
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let server = rpc
        .serve("payments", "charge", move |_: Value| {
            c.fetch_add(1, Ordering::Relaxed);
            async { Err::<Value, _>("declined by the bank's outage") }
        })
        .await
        .unwrap();
    let breaker = Arc::new(CircuitBreaker::new(BreakerConfig {
        failure_threshold: 3,
        recovery_timeout: Duration::from_secs(60),
        success_threshold: 1,
    }));
    let gateway = Gateway::new(rpc.clone(), CallPolicy::new()).with_policy(
        "payments",
        CallPolicy::new().timeout(PATIENCE).breaker(breaker.clone()),
    );
    for _ in 0..3 {
        let r = gateway
            .call::<_, Value>("payments", "charge", &json!({}))
            .await;
        assert!(matches!(
            r,
            Err(PolicyError::Failed(RpcError::Remote { .. }))
        ));
    }
    let r = gateway
        .call::<_, Value>("payments", "charge", &json!({}))
        .await;
    assert!(matches!(r, Err(PolicyError::Rejected(_))), "{r:?}");
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "the open breaker did not call"
    );
    server.stop().await;
    rpc.close().await;
}

// ---- sagas ----

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Fulfilment {
    order_id: String,
    reservation: Option<String>,
    payment: Option<String>,
}

type Log = Arc<Mutex<Vec<String>>>;

fn fulfilment(log: &Log, pay_fails: bool) -> Saga<Fulfilment> {
    let (l1, l2, l3, l4, l5, l6) = (
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
        log.clone(),
    );
    Saga::new("fulfilment")
        .step(
            "create_order",
            move |c: Fulfilment| {
                l1.lock().unwrap().push("create_order".into());
                async move { Ok::<_, String>(c) }
            },
            move |_c: Fulfilment| {
                l2.lock().unwrap().push("cancel_order".into());
                async { Ok::<_, String>(()) }
            },
        )
        .step(
            "reserve_inventory",
            move |mut c: Fulfilment| {
                l3.lock().unwrap().push("reserve_inventory".into());
                c.reservation = Some(format!("res-{}", c.order_id));
                async move { Ok::<_, String>(c) }
            },
            move |c: Fulfilment| {
                l4.lock()
                    .unwrap()
                    .push(format!("release {}", c.reservation.unwrap_or_default()));
                async { Ok::<_, String>(()) }
            },
        )
        .step(
            "process_payment",
            move |mut c: Fulfilment| {
                l5.lock().unwrap().push("process_payment".into());
                c.payment = Some("pay-1".into());
                async move {
                    if pay_fails {
                        Err("card declined".to_owned())
                    } else {
                        Ok(c)
                    }
                }
            },
            move |_c: Fulfilment| {
                l6.lock().unwrap().push("refund".into());
                async { Ok::<_, String>(()) }
            },
        )
}

pub async fn a_saga_runs_every_step(backend: &dyn Backend) {
    let log = Log::default();
    let orchestrator = SagaOrchestrator::new(backend.open(), fulfilment(&log, false)).unwrap();
    let start = Fulfilment {
        order_id: "o-1".into(),
        ..Fulfilment::default()
    };
    let end = orchestrator.run("o-1", start.clone()).await.unwrap();
    assert_eq!(end.status, SagaStatus::Completed);
    assert_eq!(
        end.done,
        ["create_order", "reserve_inventory", "process_payment"]
    );
    let context: Fulfilment = end.context().unwrap();
    assert_eq!(context.reservation.as_deref(), Some("res-o-1"));
    assert_eq!(context.payment.as_deref(), Some("pay-1"));
    assert_eq!(orchestrator.status("o-1").await.unwrap(), Some(end));
    assert_eq!(orchestrator.status("o-2").await.unwrap(), None);
    // An id runs once.
    let again = orchestrator.run("o-1", start).await;
    assert!(
        matches!(again, Err(tidings_core::Error::RecordExists { .. })),
        "{again:?}"
    );
}

pub async fn a_failed_step_is_compensated_in_reverse_order(backend: &dyn Backend) {
    let log = Log::default();
    let orchestrator = SagaOrchestrator::new(backend.open(), fulfilment(&log, true)).unwrap();
    let end = orchestrator
        .run(
            "o-7",
            Fulfilment {
                order_id: "o-7".into(),
                ..Fulfilment::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(end.status, SagaStatus::Failed);
    assert_eq!(end.failed_step.as_deref(), Some("process_payment"));
    assert_eq!(end.error.as_deref(), Some("card declined"));
    assert_eq!(end.compensated, ["reserve_inventory", "create_order"]);
    assert!(end.done.is_empty());
    assert_eq!(
        *log.lock().unwrap(),
        [
            "create_order",
            "reserve_inventory",
            "process_payment",
            "release res-o-7",
            "cancel_order"
        ]
    );
    assert_eq!(orchestrator.status("o-7").await.unwrap(), Some(end));
}

pub async fn a_saga_resumes_after_its_orchestrator_is_gone(backend: &dyn Backend) {
    let log = Log::default();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    // A first orchestrator whose payment step never returns: it is dropped
    // mid-saga, as a crashed process would leave it.
    {
        let (l1, l2) = (log.clone(), log.clone());
        let saga = Saga::new("fulfilment")
            .step(
                "create_order",
                move |c: Fulfilment| {
                    l1.lock().unwrap().push("create_order".into());
                    async move { Ok::<_, String>(c) }
                },
                |_c: Fulfilment| async { Ok::<_, String>(()) },
            )
            .step(
                "reserve_inventory",
                move |mut c: Fulfilment| {
                    l2.lock().unwrap().push("reserve_inventory".into());
                    c.reservation = Some("res-9".into());
                    async move { Ok::<_, String>(c) }
                },
                |_c: Fulfilment| async { Ok::<_, String>(()) },
            )
            .step(
                "process_payment",
                move |c: Fulfilment| {
                    entered_tx.send(()).ok();
                    async move {
                        std::future::pending::<()>().await;
                        Ok::<_, String>(c)
                    }
                },
                |_c: Fulfilment| async { Ok::<_, String>(()) },
            );
        let orchestrator = SagaOrchestrator::new(backend.open(), saga).unwrap();
        let running = tokio::spawn(async move {
            orchestrator
                .run(
                    "o-9",
                    Fulfilment {
                        order_id: "o-9".into(),
                        ..Fulfilment::default()
                    },
                )
                .await
        });
        next(&mut entered).await;
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
    }
    // The next orchestrator finds it pending after the first two steps.
    let orchestrator = SagaOrchestrator::new(backend.open(), fulfilment(&log, false)).unwrap();
    let before = orchestrator.status("o-9").await.unwrap().unwrap();
    assert_eq!(before.status, SagaStatus::Pending);
    assert_eq!(before.done, ["create_order", "reserve_inventory"]);
    let resumed = orchestrator.resume().await.unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].status, SagaStatus::Completed);
    // The step that was running ran again; the steps done did not.
    let context: Fulfilment = resumed[0].context().unwrap();
    assert_eq!(context.reservation.as_deref(), Some("res-9"));
    assert_eq!(context.payment.as_deref(), Some("pay-1"));
    assert_eq!(
        *log.lock().unwrap(),
        ["create_order", "reserve_inventory", "process_payment"]
    );
    assert!(orchestrator.resume().await.unwrap().is_empty());
}
