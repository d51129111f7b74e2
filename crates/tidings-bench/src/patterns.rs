//! `tidings-bench patterns`: the service patterns on the embedded engine (on
//! disk and in memory): webhook-style send → handler throughput and latency,
//! and RPC round trips. The webhook latency harness is shared with
//! `bench-redis`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use tidings::{Broker, Durability, EmbeddedBroker};
use tidings_patterns::rpc::Rpc;
use tidings_patterns::webhook::{Webhook, WebhookOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Webhook-style sends from concurrent producers, handled by the workers
    /// of one route, as fast as they go.
    WebhookThroughput,
    /// Webhook-style send → handler latency at a fixed rate.
    WebhookLatency,
    /// RPC calls one after another: round-trip latency.
    RpcLatency,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    /// The embedded engine on disk (durable: fsync before a send returns).
    Disk,
    /// The embedded engine in memory.
    Memory,
}

#[derive(Debug, Args)]
pub struct PatternsBenchArgs {
    /// Scratch data directory for the disk engine (emptied before, removed after).
    #[arg(long, default_value = "./tidings-patterns-bench-data")]
    dir: PathBuf,
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// Engines to run them on (default: both).
    #[arg(long = "engine", value_enum)]
    engines: Vec<Engine>,
    /// Messages in the throughput scenario.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Concurrent producers in the throughput scenario.
    #[arg(long, default_value_t = 64)]
    producers: usize,
    /// Workers of the route in the throughput and latency scenarios.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Payload size in bytes (JSON).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Send rate of the latency scenario, messages per second.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Length of the latency scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    latency_for: Duration,
    /// Webhook queues whose sends return once the OS has them (no fsync).
    #[arg(long)]
    buffered: bool,
    /// Calls in the RPC scenario.
    #[arg(long, default_value_t = 20_000)]
    calls: usize,
}

pub async fn run(args: PatternsBenchArgs) -> anyhow::Result<()> {
    let scenarios = crate::chosen(&args.scenarios);
    let engines = crate::chosen(&args.engines);
    println!(
        "tidings-bench patterns: payloads of {} bytes, {} workers per route, webhook sends {}",
        args.size,
        args.workers,
        if args.buffered {
            "buffered"
        } else {
            "durable (fsync)"
        }
    );
    for engine in engines {
        for &scenario in &scenarios {
            let _ = std::fs::remove_dir_all(&args.dir);
            let broker: Arc<dyn Broker> = match engine {
                Engine::Disk => Arc::new(
                    EmbeddedBroker::open(&args.dir)
                        .with_context(|| format!("cannot open {}", args.dir.display()))?,
                ),
                Engine::Memory => Arc::new(EmbeddedBroker::in_memory()),
            };
            let on = format!("{engine:?}").to_lowercase();
            match scenario {
                Scenario::WebhookThroughput => {
                    let rate = webhook_throughput(broker, &args).await?;
                    println!(
                        "  {on:<6} webhook-throughput  {rate:.0} msg/s ({} producers, {} workers)",
                        args.producers, args.workers
                    );
                    println!("row {on}-webhook-throughput {rate:.2} msg/s");
                }
                Scenario::WebhookLatency => {
                    let shape = WebhookLoad {
                        rate: args.rate,
                        idle_routes: 0,
                        size: args.size,
                        length: args.latency_for,
                    };
                    let workers = args.workers;
                    let (p50, p99, max, n) =
                        webhook_latency_with(broker, &shape, workers, durability(&args)).await?;
                    println!(
                        "  {on:<6} webhook-latency     {} msg/s x {n}: p50 {p50:.3} ms, p99 {p99:.3} ms, max {max:.2} ms",
                        args.rate
                    );
                    println!("row {on}-webhook-p50 {p50:.4} ms");
                    println!("row {on}-webhook-p99 {p99:.4} ms");
                }
                Scenario::RpcLatency => {
                    let (p50, p99, max, rate) = rpc_latency(broker, &args).await?;
                    println!(
                        "  {on:<6} rpc-latency         {} calls one at a time: p50 {:.0} µs, p99 {:.0} µs, max {max:.2} ms ({rate:.0} calls/s)",
                        args.calls,
                        p50 * 1000.0,
                        p99 * 1000.0
                    );
                    println!("row {on}-rpc-p50 {:.1} us", p50 * 1000.0);
                    println!("row {on}-rpc-p99 {:.1} us", p99 * 1000.0);
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}

/// The shape of a webhook latency run.
pub(crate) struct WebhookLoad {
    /// Sends per second.
    pub rate: u64,
    /// Routes beside the measured one, served by the same service.
    pub idle_routes: usize,
    /// Payload size in bytes.
    pub size: usize,
    /// How long to send for.
    pub length: Duration,
}

/// Webhook `send` → handler latency at `rate`, with idle routes served by
/// the same service (one worker per route). The handler reads the send time
/// from the payload. Returns p50, p99 and max in ms, and the count.
pub(crate) async fn webhook_latency(
    broker: Arc<dyn Broker>,
    load: &WebhookLoad,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    webhook_latency_with(broker, load, 1, None).await
}

fn durability(args: &PatternsBenchArgs) -> Option<Durability> {
    args.buffered.then_some(Durability::Buffered)
}

async fn webhook_latency_with(
    broker: Arc<dyn Broker>,
    load: &WebhookLoad,
    workers: usize,
    durability: Option<Durability>,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let origin = Instant::now();
    let total = usize::try_from(load.rate.saturating_mul(load.length.as_secs().max(1)))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let options = WebhookOptions {
        workers,
        durability,
        ..WebhookOptions::default()
    };
    let mut webhook = Webhook::with_options(broker, options);
    for i in 0..load.idle_routes {
        webhook.on(&format!("/idle/{i}"), |_v: serde_json::Value| async {})?;
    }
    webhook.on("/measured", move |v: serde_json::Value| {
        let tx = tx.clone();
        async move {
            let sent = v["sent_us"].as_f64().unwrap_or_default();
            let _ = tx.send((origin.elapsed().as_micros() as f64 - sent) / 1000.0);
        }
    })?;
    let service = webhook.run_service().await?;
    let pad = "x".repeat(load.size.saturating_sub(40));
    let interval = Duration::from_secs_f64(1.0 / load.rate as f64);
    let start = tokio::time::Instant::now();
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        tokio::time::sleep_until(start + interval * u32::try_from(i)?).await;
        let hook = service.webhook().clone();
        let data =
            serde_json::json!({ "sent_us": origin.elapsed().as_micros() as f64, "pad": pad });
        sends.push(tokio::spawn(
            async move { hook.send("/measured", &data).await },
        ));
    }
    for s in sends {
        s.await??;
    }
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("a webhook message was not handled within 10 s")?;
        latencies.extend(got);
    }
    service.stop().await;
    Ok(percentiles(latencies, total))
}

/// p50, p99, max of `values`, and how many.
pub(crate) fn percentiles(mut values: Vec<f64>, n: usize) -> (f64, f64, f64, usize) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() as f64 - 1.0) * q) as usize];
    (at(0.50), at(0.99), at(1.0), n)
}

/// `producers` tasks send `messages` webhook messages as fast as they go;
/// `workers` workers of the route handle them. Returns msg/s from the first
/// send to the last message handled.
async fn webhook_throughput(
    broker: Arc<dyn Broker>,
    args: &PatternsBenchArgs,
) -> anyhow::Result<f64> {
    let total = args.messages;
    let handled = Arc::new(AtomicUsize::new(0));
    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<()>();
    let options = WebhookOptions {
        workers: args.workers,
        durability: durability(args),
        ..WebhookOptions::default()
    };
    let mut webhook = Webhook::with_options(broker, options);
    let h = handled.clone();
    webhook.on("/bench", move |_v: serde_json::Value| {
        let (h, done_tx) = (h.clone(), done_tx.clone());
        async move {
            if h.fetch_add(1, Ordering::Relaxed) + 1 == total {
                let _ = done_tx.send(());
            }
        }
    })?;
    let service = webhook.run_service().await?;
    let data = serde_json::json!({ "pad": "x".repeat(args.size.saturating_sub(60)) });
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut producers = Vec::new();
    for _ in 0..args.producers.max(1) {
        let (hook, data, next) = (service.webhook().clone(), data.clone(), next.clone());
        producers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                hook.send("/bench", &data).await?;
            }
            anyhow::Ok(())
        }));
    }
    for p in producers {
        p.await??;
    }
    tokio::time::timeout(Duration::from_secs(60), done.recv())
        .await
        .context("the workers did not handle every message within 60 s of the last send")?;
    let rate = total as f64 / started.elapsed().as_secs_f64();
    service.stop().await;
    Ok(rate)
}

/// One caller, calls one after another to an echo server; returns p50, p99
/// and max round trip in ms, and calls/s.
async fn rpc_latency(
    broker: Arc<dyn Broker>,
    args: &PatternsBenchArgs,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let rpc = Rpc::new(broker);
    let server = rpc
        .serve("bench", "echo", |v: serde_json::Value| async move {
            Ok::<_, String>(v)
        })
        .await?;
    let request = serde_json::json!({ "pad": "x".repeat(args.size.saturating_sub(20)) });
    // Warm up: the reply queue, the listener, the server's first receive.
    for _ in 0..100 {
        let _: serde_json::Value = rpc
            .call("bench", "echo", &request, Duration::from_secs(5))
            .await?;
    }
    let mut latencies = Vec::with_capacity(args.calls);
    let started = Instant::now();
    for _ in 0..args.calls {
        let t = Instant::now();
        let _: serde_json::Value = rpc
            .call("bench", "echo", &request, Duration::from_secs(5))
            .await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let rate = args.calls as f64 / started.elapsed().as_secs_f64();
    server.stop().await;
    rpc.close().await;
    let (p50, p99, max, _) = percentiles(latencies, args.calls);
    Ok((p50, p99, max, rate))
}
