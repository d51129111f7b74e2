//! `tidings-bench redis`: the Redis engine on a Redis server, in the shapes
//! LeanMQ's own figures were measured in (reference leanmq.md §5), so that
//! bench/peers/leanmq-side-by-side.sh can put the two side by side.
//!
//! Every row prints `row <name> <value> <unit>` as its last line, for scripts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tidings::{Broker, Payload, QueueConfig, QueueName, RedisBroker};

use crate::engine::{fill, payload, per_sec, receive_ack, send};
use crate::patterns::{WebhookLoad, webhook_latency};
use crate::redis_floor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// One producer, one message per send (LeanMQ's `send_message` loop).
    SendOne,
    /// 64 producers, one message per send, over one connection.
    SendConcurrent,
    /// One producer, batches of 100 (one script run each).
    SendBatch,
    /// Four producers, batches of 100 (against `redis-benchmark -P 16`).
    SendBatch4,
    /// One consumer, receive 10 then ack them.
    ReceiveAck10,
    /// One consumer, receive 100 then ack them.
    ReceiveAck100,
    /// One consumer, receive 10 and ack them with the next receive
    /// (`Broker::ack_and_receive`: one round trip per batch).
    ReceiveAck10Combined,
    /// The same with batches of 100.
    ReceiveAck100Combined,
    /// Webhook-style send → handler at a fixed rate, with idle routes beside.
    Webhook,
    /// The floor of `send-one`: one plain `XADD` per awaited call (src/redis_floor.rs).
    SendOneFloor,
    /// The floor of `receive-ack10-combined`: `XACK`, `XDEL` and `XREADGROUP` in one pipeline.
    ReceiveAck10Floor,
}

#[derive(Debug, Clone, Args)]
pub struct RedisBenchArgs {
    /// The Redis to measure (a fresh key prefix is added and removed after).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    url: String,
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// Messages per throughput scenario.
    #[arg(long, default_value_t = 50_000)]
    messages: usize,
    /// Payload size in bytes (JSON).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Send rate of the webhook scenario, messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Idle routes beside the measured one in the webhook scenario.
    #[arg(long, default_value_t = 8)]
    idle_routes: usize,
    /// Length of the webhook scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    latency_for: Duration,
    /// Run each scenario on a single-threaded (current-thread) tokio runtime
    /// of its own, as a service with one consumer per thread would; the
    /// default is the multi-thread runtime.
    #[arg(long)]
    current_thread: bool,
}

pub async fn run(args: RedisBenchArgs) -> anyhow::Result<()> {
    let scenarios = crate::chosen(&args.scenarios);
    let payload = payload(args.size)?;
    println!(
        "tidings-bench redis: {} messages of {} bytes per throughput run on {}",
        args.messages,
        payload.len(),
        args.url
    );
    for scenario in scenarios {
        if args.current_thread {
            let (args, payload) = (args.clone(), payload.clone());
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(scenario_on_fresh_queue(scenario, &args, &payload))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the benchmark thread panicked"))??;
        } else {
            scenario_on_fresh_queue(scenario, &args, &payload).await?;
        }
    }
    Ok(())
}

/// The key prefix of this process' benchmark data.
fn key_prefix() -> String {
    format!("tidings-bench:{}:", std::process::id())
}

/// Runs one scenario on a queue under a fresh key prefix, removed after.
async fn scenario_on_fresh_queue(
    scenario: Scenario,
    args: &RedisBenchArgs,
    payload: &Payload,
) -> anyhow::Result<()> {
    let prefix = key_prefix();
    let sep = if args.url.contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}prefix={prefix}&timeout=30s", args.url);
    let broker: Arc<dyn Broker> = Arc::new(
        RedisBroker::open(&url)
            .await
            .with_context(|| format!("cannot reach Redis at {}", args.url))?,
    );
    let queue = QueueName::new("bench")?;
    broker.create_queue(&queue, QueueConfig::default()).await?;
    let outcome = run_one(scenario, args, &broker, &queue, payload).await;
    // Every key under the prefix goes: queues, and what any deletion leaves.
    redis_floor::delete_prefix(&args.url, &prefix).await?;
    let (rows, shown) = outcome?;
    println!("  {:<20} {shown}", rows[0].0);
    for (name, value, unit) in rows {
        println!("row {name} {value:.2} {unit}");
    }
    Ok(())
}

async fn run_one(
    scenario: Scenario,
    args: &RedisBenchArgs,
    broker: &Arc<dyn Broker>,
    queue: &QueueName,
    payload: &Payload,
) -> anyhow::Result<(Vec<(&'static str, f64, &'static str)>, String)> {
    let rate = |name, r: f64| Ok((vec![(name, r, "msg/s")], per_sec(r)));
    match scenario {
        Scenario::SendOne => {
            let n = (args.messages / 5).max(1000);
            rate("send-one", send(broker, queue, payload, n, 1, 1).await?)
        }
        Scenario::SendConcurrent => rate(
            "send-concurrent",
            send(broker, queue, payload, args.messages, 64, 1).await?,
        ),
        Scenario::SendBatch => rate(
            "send-batch",
            send(broker, queue, payload, args.messages, 1, 100).await?,
        ),
        Scenario::SendBatch4 => rate(
            "send-batch4",
            send(broker, queue, payload, args.messages, 4, 100).await?,
        ),
        Scenario::ReceiveAck10 | Scenario::ReceiveAck100 => {
            let (name, batch) = if scenario == Scenario::ReceiveAck10 {
                ("receive-ack-10", 10)
            } else {
                ("receive-ack-100", 100)
            };
            fill(broker, queue, payload, args.messages).await?;
            rate(
                name,
                receive_ack(broker, queue, args.messages, 1, batch).await?,
            )
        }
        Scenario::ReceiveAck10Combined | Scenario::ReceiveAck100Combined => {
            let (name, batch) = if scenario == Scenario::ReceiveAck10Combined {
                ("receive-ack-10-combined", 10)
            } else {
                ("receive-ack-100-combined", 100)
            };
            fill(broker, queue, payload, args.messages).await?;
            rate(
                name,
                receive_ack_combined(broker, queue, args.messages, batch).await?,
            )
        }
        Scenario::SendOneFloor => {
            let n = (args.messages / 5).max(1000);
            let key = format!("{}floor", key_prefix());
            rate(
                "send-one-floor",
                redis_floor::send_one(&args.url, &key, payload, n).await?,
            )
        }
        Scenario::ReceiveAck10Floor => {
            let key = format!("{}floor", key_prefix());
            rate(
                "receive-ack-10-floor",
                redis_floor::receive_ack(&args.url, &key, payload, args.messages, 10).await?,
            )
        }
        Scenario::Webhook => {
            let shape = WebhookLoad {
                rate: args.rate,
                idle_routes: args.idle_routes,
                size: args.size,
                length: args.latency_for,
            };
            let (p50, p99, max, n) = webhook_latency(broker.clone(), &shape).await?;
            Ok((
                vec![("webhook-p50", p50, "ms"), ("webhook-p99", p99, "ms")],
                format!(
                    "{} msg/s x {n}, {} idle routes: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
                    args.rate, args.idle_routes
                ),
            ))
        }
    }
}

/// One consumer takes `total` messages, `batch` at a time, each batch acked
/// with the next receive; returns msg/s once the last ack is answered.
async fn receive_ack_combined(
    broker: &Arc<dyn Broker>,
    queue: &QueueName,
    total: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let group = tidings::GroupName::new("bench")?;
    let consumer = tidings::ConsumerName::new("c0")?;
    let started = Instant::now();
    let (mut acked, mut received) = (0, 0);
    let mut handled: Vec<tidings::MessageId> = Vec::new();
    while acked < total {
        // The last call only acks: it does not wait for more.
        let wait = if received < total { 20 } else { 0 };
        let options = tidings::ReceiveOptions::new(batch, Duration::from_millis(wait));
        let (n, got) = broker
            .ack_and_receive(queue, &group, &consumer, &handled, options)
            .await?;
        acked += usize::try_from(n)?;
        received += got.len();
        handled = got.into_iter().map(|d| d.id).collect();
    }
    Ok(acked as f64 / started.elapsed().as_secs_f64())
}
