//! `tidings-bench http`: the queue API of `tidings serve` (a child process on
//! a scratch data directory, durable) measured through `HttpBroker` and the
//! streaming receive, next to the same shapes on the embedded engine in this
//! process, in one run, as ratios.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tidings::{Broker, EmbeddedBroker, HttpBroker, OutgoingMessage, QueueConfig, QueueName};

use crate::engine::{fill, payload, receive_ack, send};

#[derive(Debug, Args)]
pub struct HttpBenchArgs {
    /// Scratch data directory of the server (emptied before, removed after).
    #[arg(long, default_value = "./tidings-http-bench-data")]
    dir: PathBuf,
    /// Messages per throughput scenario.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Payload size in bytes (JSON).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Send rate of the latency scenario, messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    latency_for: Duration,
}

/// `tidings serve` as a child process, killed when dropped.
struct ServerProcess {
    base: String,
    child: Child,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_server(dir: &PathBuf) -> anyhow::Result<ServerProcess> {
    let _ = std::fs::remove_dir_all(dir);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new(crate::server_binary()?)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .env("TIDINGS_BROKER", dir)
        .env("TIDINGS_LOG", "warn")
        .env_remove("TIDINGS_ADMIN_KEY")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start tidings serve")?;
    let server = ServerProcess {
        base: format!("http://127.0.0.1:{port}"),
        child,
    };
    let http = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = http.get(format!("{}/readyz", server.base)).send().await
            && r.status().is_success()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("tidings serve did not start")
}

pub async fn run(args: HttpBenchArgs) -> anyhow::Result<()> {
    let server = start_server(&args.dir).await?;
    let remote: Arc<HttpBroker> = Arc::new(HttpBroker::connect(&server.base)?);
    let local_dir = args.dir.with_extension("local");
    let _ = std::fs::remove_dir_all(&local_dir);
    let local = Arc::new(EmbeddedBroker::open(&local_dir)?);
    let payload = payload(args.size)?;
    println!(
        "tidings-bench http: {} messages of {} bytes, server {} (durable), beside the embedded engine in-process",
        args.messages,
        payload.len(),
        server.base
    );
    let mut n = 0;
    let mut fresh = |b: &str| {
        n += 1;
        QueueName::new(format!("{b}{n}"))
    };

    // Latency first, on a fresh server: after the bulk rows below the store
    // is still flushing and compacting what they wrote (docs/benchmarks.md).
    // Sends at a fixed rate, one per request; a streaming consumer.
    let q = fresh("latency")?;
    remote.create_queue(&q, QueueConfig::default()).await?;
    let (p50, p99, max, count) = stream_latency(&server.base, &remote, &q, &args).await?;
    println!(
        "  send → streamed receive at {}/s x {count}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (target p99 < 5 ms)",
        args.rate
    );
    println!("row http-latency-p50 {p50:.3} ms");
    println!("row http-latency-p99 {p99:.3} ms");
    // Batched sends: 4 producers, batches of 100.
    let (q_remote, q_local) = (fresh("send")?, fresh("send")?);
    remote
        .create_queue(&q_remote, QueueConfig::default())
        .await?;
    local.create_queue(&q_local, QueueConfig::default()).await?;
    let over_http = send(&remote, &q_remote, &payload, args.messages, 4, 100).await?;
    let in_process = send(&local, &q_local, &payload, args.messages, 4, 100).await?;
    row(
        "send, 4 producers, batches of 100",
        over_http,
        in_process,
        "≥ 50,000/s",
    );

    // Receive + ack: a streaming consumer (credit 1,000, acks by HTTP in
    // batches of 100) against one consumer receiving and acking 100 at a time.
    let (q_remote, q_local) = (fresh("recv")?, fresh("recv")?);
    remote
        .create_queue(&q_remote, QueueConfig::default())
        .await?;
    local.create_queue(&q_local, QueueConfig::default()).await?;
    // In batches the server's body limit takes.
    send(&remote, &q_remote, &payload, args.messages, 4, 100).await?;
    fill(&local, &q_local, &payload, args.messages).await?;
    let streamed = stream_consume(&server.base, &q_remote, args.messages).await?;
    let in_process = receive_ack(&local, &q_local, args.messages, 1, 100).await?;
    row(
        "receive + ack, streaming, 1 consumer",
        streamed,
        in_process,
        "≥ 30,000/s",
    );

    drop(server);
    let _ = std::fs::remove_dir_all(&args.dir);
    drop(local);
    let _ = std::fs::remove_dir_all(&local_dir);
    Ok(())
}

fn row(name: &str, over_http: f64, in_process: f64, target: &str) {
    println!(
        "  {name:<40} over HTTP {over_http:>9.0} msg/s   in-process {in_process:>9.0} msg/s   ratio {:.2}   (target {target})",
        over_http / in_process
    );
    let key = name.split(',').next().unwrap_or(name).replace(' ', "-");
    println!("row http-{key} {over_http:.2} msg/s");
}

/// A server-sent events reader over a streaming response.
struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    async fn open(
        base: &str,
        queue: &QueueName,
        consumer: &str,
        credit: usize,
    ) -> anyhow::Result<Self> {
        let response = reqwest::get(format!(
            "{base}/v1/queues/{queue}/stream?group=bench&consumer={consumer}&credit={credit}"
        ))
        .await?;
        if !response.status().is_success() {
            bail!("the stream was refused: {}", response.status());
        }
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next `message` event's data.
    async fn next(&mut self) -> anyhow::Result<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut data = String::new();
                let mut event = "message";
                for line in block.lines() {
                    if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    } else if line.starts_with("event: error") || line.starts_with("event:error") {
                        event = "error";
                    }
                }
                if data.is_empty() {
                    continue;
                }
                if event == "error" {
                    bail!("the stream failed: {data}");
                }
                return Ok(serde_json::from_str(&data)?);
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk())
                .await
                .context("no event for 30 s")??
                .context("the stream ended")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

/// Streams `total` messages, acking (and giving credit back) 100 at a time.
async fn stream_consume(base: &str, queue: &QueueName, total: usize) -> anyhow::Result<f64> {
    let http = reqwest::Client::new();
    let mut events = EventStream::open(base, queue, "c0", 1000).await?;
    let started = Instant::now();
    let mut ids = Vec::with_capacity(100);
    let mut acks = Vec::new();
    for received in 1..=total {
        let message = events.next().await?;
        ids.push(message["id"].clone());
        if ids.len() == 100 || received == total {
            let batch = std::mem::take(&mut ids);
            let (http, base, queue) = (http.clone(), base.to_owned(), queue.clone());
            // Acks and credit travel while the stream goes on.
            acks.push(tokio::spawn(async move {
                let n = batch.len();
                post(
                    &http,
                    &format!("{base}/v1/queues/{queue}/ack"),
                    json!({"group": "bench", "ids": batch}),
                )
                .await?;
                post(
                    &http,
                    &format!("{base}/v1/queues/{queue}/stream/credit"),
                    json!({"group": "bench", "consumer": "c0", "credit": n}),
                )
                .await
            }));
        }
    }
    for a in acks {
        a.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<()> {
    let r = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    if !r.status().is_success() {
        bail!("{url}: {}", r.status());
    }
    Ok(())
}

/// Sends at `rate`/s (each send its own request) and takes them off a
/// stream; returns p50, p99, max in ms and the count.
async fn stream_latency(
    base: &str,
    remote: &Arc<HttpBroker>,
    queue: &QueueName,
    args: &HttpBenchArgs,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let origin = Instant::now();
    let total = usize::try_from(args.rate.saturating_mul(args.latency_for.as_secs().max(1)))?;
    let mut events = EventStream::open(base, queue, "lat", 100_000).await?;
    let pad = "x".repeat(args.size.saturating_sub(40));
    let pacer = {
        let (remote, queue) = (remote.clone(), queue.clone());
        let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut sends = Vec::with_capacity(total);
            for i in 0..total {
                tokio::time::sleep_until(start + interval * u32::try_from(i)?).await;
                let sent = origin.elapsed().as_micros() as f64;
                let message = OutgoingMessage::json(&json!({ "sent_us": sent, "pad": pad }))?;
                let (remote, queue) = (remote.clone(), queue.clone());
                sends.push(tokio::spawn(
                    async move { remote.send(&queue, message).await },
                ));
            }
            for s in sends {
                s.await??;
            }
            anyhow::Ok(())
        })
    };
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        let m = events.next().await?;
        let sent = m["payload"]["sent_us"].as_f64().unwrap_or_default();
        latencies.push((origin.elapsed().as_micros() as f64 - sent) / 1000.0);
    }
    pacer.await??;
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Ok((at(0.5), at(0.99), at(1.0), total))
}
