//! `tidings-bench engine`: throughput and latency of the embedded engine on this
//! machine, against the targets of docs/benchmarks.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};

use tidings::{
    Broker, ConsumerName, Durability, EmbeddedBroker, EmbeddedOptions, GroupName, MessageId,
    OutgoingMessage, Payload, QueueConfig, QueueName, ReceiveOptions, TableName, Transaction,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// One producer, one message per send (one fsync each).
    SendOne,
    /// One producer, batches of 100.
    SendBatch,
    /// Four producers, batches of 100.
    SendBatch4,
    /// 64 producers, one message per send (group commit).
    SendConcurrent,
    /// One consumer, receive 100 then ack them.
    ReceiveAck,
    /// Four consumers of one group, each receiving 100 then acking them.
    ReceiveAck4,
    /// Send at a fixed rate, measure send-to-receive latency.
    Latency,
    /// The latency harness over an in-process channel instead of a broker:
    /// the floor this machine and runtime set.
    LatencyFloor,
    /// Sends at 1,000/s to one queue while 100,000 dead letters of another
    /// are requeued: the sends' latency, beside the same sends alone.
    RequeueBeside,
    /// Stores `--messages` records of `--size` bytes under time-ordered keys
    /// (as the hub stores events), then reads random ones for
    /// `--latency-for` from four tasks: point reads per second on a store
    /// larger than its caches.
    PointReads,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Scratch data directory (emptied before and removed after).
    #[arg(long, default_value = "./tidings-bench-data")]
    dir: PathBuf,
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// Messages per throughput scenario.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Payload size in bytes (JSON).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Send rate of the latency scenario, messages per second.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Sends return once the OS has them instead of after fsync.
    #[arg(long)]
    buffered: bool,
    /// Run the engine in memory (no storage at all), to see its own overhead.
    #[arg(long, conflicts_with = "buffered")]
    memory: bool,
    /// Length of the latency scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    latency_for: Duration,
    /// The queues' max_deliveries (default: the queue default, 5). With the
    /// maximum (4294967295) deliveries are written only if still in flight
    /// 100 ms later, as before crash-safe counts (docs/queues.md).
    #[arg(long)]
    max_deliveries: Option<u32>,
}

struct Row {
    name: &'static str,
    result: String,
    target: &'static str,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let scenarios = crate::chosen(&args.scenarios);
    let payload = payload(args.size)?;
    println!(
        "tidings-bench engine: {} messages of {} bytes per throughput run, {} sends, data in {}",
        args.messages,
        payload.len(),
        if args.memory {
            "in-memory"
        } else if args.buffered {
            "buffered (no fsync)"
        } else {
            "durable (fsync)"
        },
        args.dir.display()
    );
    let mut rows = Vec::new();
    for scenario in scenarios {
        let _ = std::fs::remove_dir_all(&args.dir);
        let options = EmbeddedOptions {
            durability: if args.buffered {
                Durability::Buffered
            } else {
                Durability::Sync
            },
            ..EmbeddedOptions::default()
        };
        let broker = Arc::new(if args.memory {
            EmbeddedBroker::in_memory_with(options)
        } else {
            EmbeddedBroker::open_with(&args.dir, options)
                .with_context(|| format!("cannot open {}", args.dir.display()))?
        });
        let queue = QueueName::new("bench")?;
        let config = QueueConfig {
            max_deliveries: args
                .max_deliveries
                .unwrap_or(QueueConfig::default().max_deliveries),
            ..QueueConfig::default()
        };
        broker.create_queue(&queue, config).await?;
        let before = broker.store_stats();
        let mut row = match scenario {
            Scenario::SendOne => {
                let n = (args.messages / 40).max(1000);
                let rate = send(&broker, &queue, &payload, n, 1, 1).await?;
                Row {
                    name: "send, 1 producer, 1 message per send",
                    result: per_sec(rate),
                    target: "(peer bar: Redis appendfsync always 1,663/s)",
                }
            }
            Scenario::SendBatch => {
                let rate = send(&broker, &queue, &payload, args.messages, 1, 100).await?;
                Row {
                    name: "send, 1 producer, batches of 100",
                    result: per_sec(rate),
                    target: ">= 100,000/s",
                }
            }
            Scenario::SendBatch4 => {
                let rate = send(&broker, &queue, &payload, args.messages, 4, 100).await?;
                Row {
                    name: "send, 4 producers, batches of 100",
                    result: per_sec(rate),
                    target: ">= 100,000/s",
                }
            }
            Scenario::SendConcurrent => {
                let n = args.messages / 2;
                let rate = send(&broker, &queue, &payload, n, 64, 1).await?;
                Row {
                    name: "send, 64 producers, 1 message per send",
                    result: per_sec(rate),
                    target: ">= 50,000/s",
                }
            }
            Scenario::ReceiveAck | Scenario::ReceiveAck4 => {
                let consumers = if scenario == Scenario::ReceiveAck {
                    1
                } else {
                    4
                };
                fill(&broker, &queue, &payload, args.messages).await?;
                let rate = receive_ack(&broker, &queue, args.messages, consumers, 100).await?;
                let name = if consumers == 1 {
                    "receive + ack, 1 consumer, batches of 100"
                } else {
                    "receive + ack, 4 consumers, batches of 100"
                };
                Row {
                    name,
                    result: per_sec(rate),
                    target: ">= 150,000/s",
                }
            }
            Scenario::LatencyFloor => {
                let (p50, p99, max, n) = latency_floor(args.rate, args.latency_for).await?;
                Row {
                    name: "latency floor: same harness, tokio channel, no broker",
                    result: format!(
                        "{} msg/s x {n}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
                        args.rate
                    ),
                    target: "(what the machine allows)",
                }
            }
            Scenario::RequeueBeside => {
                let (alone, beside, took) = requeue_beside(&broker, &payload, 100_000).await?;
                Row {
                    name: "send at 1,000/s beside a requeue of 100,000 dead letters",
                    result: format!(
                        "p50 / p99 / max {:.2} / {:.2} / {:.2} ms (alone: {:.2} / {:.2} / {:.2} ms); requeue took {:.1} s",
                        beside.0,
                        beside.1,
                        beside.2,
                        alone.0,
                        alone.1,
                        alone.2,
                        took.as_secs_f64()
                    ),
                    target: "p99 < 5 ms",
                }
            }
            Scenario::PointReads => {
                let (stored_in, rate) =
                    point_reads(&broker, &payload, args.messages, args.latency_for).await?;
                Row {
                    name: "point reads of records, 4 readers, random keys",
                    result: format!(
                        "{} records stored in {stored_in:.0} s; {rate:.0} reads/s",
                        args.messages
                    ),
                    target: "(hub reads per event: a few)",
                }
            }
            Scenario::Latency => {
                let (p50, p99, max, n) =
                    latency(&broker, &queue, &payload, args.rate, args.latency_for).await?;
                Row {
                    name: "send -> receive latency at fixed rate",
                    result: format!(
                        "{} msg/s x {n}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
                        args.rate
                    ),
                    target: "p99 < 5 ms",
                }
            }
        };
        let after = broker.store_stats();
        let syncs = after.syncs - before.syncs;
        if syncs > 0 && row.name.starts_with("send,") {
            let per_sync = (after.batches - before.batches) as f64 / syncs as f64;
            row.result = format!("{}, {per_sync:.1} sends per fsync", row.result);
        }
        println!("  {:<50} {:<50} {}", row.name, row.result, row.target);
        rows.push(row);
        broker.close();
        drop(broker);
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    println!("\n| scenario | measured | target |\n|---|---|---|");
    for r in rows {
        println!("| {} | {} | {} |", r.name, r.result, r.target);
    }
    Ok(())
}

pub(crate) fn per_sec(rate: f64) -> String {
    format!(
        "{:.0} msg/s ({:.1} MB/s of payload)",
        rate,
        rate * 1024.0 / 1e6
    )
}

/// A JSON object of about `size` bytes whose text does not compress much
/// (pseudo-random letters and digits), like ids and tokens in real payloads.
pub(crate) fn payload(size: usize) -> anyhow::Result<Payload> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let pad: String = (0..size.saturating_sub(24))
        .map(|_| {
            // xorshift64: cheap, deterministic, enough to defeat compression.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = usize::try_from(state % ALPHABET.len() as u64).unwrap_or(0);
            char::from(ALPHABET.get(i).copied().unwrap_or(b'x'))
        })
        .collect();
    Ok(Payload::from_value(
        &serde_json::json!({ "i": 0, "pad": pad }),
    )?)
}

/// Stores `total` records of `payload` in transactions of 1,000, then reads
/// random ones from four tasks for `length`; returns the seconds the storing
/// took and the reads per second.
async fn point_reads(
    broker: &Arc<EmbeddedBroker>,
    payload: &Payload,
    total: usize,
    length: Duration,
) -> anyhow::Result<(f64, f64)> {
    let table = TableName::new("bench.records")?;
    // Beside each record, as the hub writes a delivery record and an index
    // entry beside each event: tables whose keys interleave in the store.
    let beside = TableName::new("bench.beside")?;
    let index = TableName::new("bench.index")?;
    let small = Payload::from_value(&serde_json::json!({"status": "pending", "attempts": 0}))?;
    let key = |i: usize| format!("{i:016x}{:016x}", i.wrapping_mul(0x9E37_79B9));
    let started = Instant::now();
    for start in (0..total).step_by(1000) {
        let mut tx = Transaction::new();
        for i in start..(start + 1000).min(total) {
            tx.put(table.clone(), key(i), payload.clone());
            tx.put(beside.clone(), format!("{}.sub", key(i)), small.clone());
            tx.put(
                index.clone(),
                format!("sub\npending\n{}", key(i)),
                small.clone(),
            );
        }
        broker.commit(tx).await?;
    }
    let stored_in = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for reader in 0..4u64 {
        let (broker, table) = (broker.clone(), table.clone());
        tasks.push(tokio::spawn(async move {
            let mut state = 0x9E37_79B9_7F4A_7C15 ^ (reader + 1);
            let mut reads = 0u64;
            while started.elapsed() < length {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let i = usize::try_from(state % total.max(1) as u64).unwrap_or(0);
                anyhow::ensure!(
                    broker.get_record(&table, &key(i)).await?.is_some(),
                    "record {i} is missing"
                );
                reads += 1;
                tokio::task::yield_now().await;
            }
            anyhow::Ok(reads)
        }));
    }
    let mut reads = 0;
    for t in tasks {
        reads += t.await??;
    }
    Ok((stored_in, reads as f64 / started.elapsed().as_secs_f64()))
}

/// `producers` tasks send `total` messages in sends of `batch`; returns msg/s.
pub(crate) async fn send<B: Broker + ?Sized + 'static>(
    broker: &Arc<B>,
    queue: &QueueName,
    payload: &Payload,
    total: usize,
    producers: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let (broker, queue, payload) = (broker.clone(), queue.clone(), payload.clone());
    spread(producers, total, batch, move |n| {
        let (broker, queue) = (broker.clone(), queue.clone());
        let messages = vec![OutgoingMessage::new(payload.clone()); n];
        async move {
            broker.send_batch(&queue, messages).await?;
            Ok(())
        }
    })
    .await
}

/// `tasks` tasks share `total` items, each calling `step(n)` with up to
/// `batch` of them at a time until its share is done; items per second.
pub(crate) async fn spread<F, Fut>(
    tasks: usize,
    total: usize,
    batch: usize,
    step: F,
) -> anyhow::Result<f64>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let per_task = total / tasks;
    let started = Instant::now();
    let mut running = Vec::new();
    for _ in 0..tasks {
        let step = step.clone();
        running.push(tokio::spawn(async move {
            let mut done = 0;
            while done < per_task {
                let n = batch.min(per_task - done);
                step(n).await?;
                done += n;
            }
            anyhow::Ok(done)
        }));
    }
    let mut done = 0;
    for task in running {
        done += task.await??;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

pub(crate) async fn fill<B: Broker + ?Sized + 'static>(
    broker: &Arc<B>,
    queue: &QueueName,
    payload: &Payload,
    total: usize,
) -> anyhow::Result<()> {
    for start in (0..total).step_by(1000) {
        let n = 1000.min(total - start);
        let messages = vec![OutgoingMessage::new(payload.clone()); n];
        broker.send_batch(queue, messages).await?;
    }
    Ok(())
}

/// `consumers` consumers of one group take `total` messages, `batch` at a time,
/// acking each batch before taking the next; returns msg/s.
pub(crate) async fn receive_ack<B: Broker + ?Sized + 'static>(
    broker: &Arc<B>,
    queue: &QueueName,
    total: usize,
    consumers: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let group = GroupName::new("bench")?;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..consumers {
        let (broker, queue, group, done) =
            (broker.clone(), queue.clone(), group.clone(), done.clone());
        let consumer = ConsumerName::new(format!("c{c}"))?;
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while done.load(Ordering::Relaxed) < total {
                let options = ReceiveOptions::new(batch, Duration::from_millis(20));
                let got = broker.receive(&queue, &group, &consumer, options).await?;
                let ids: Vec<MessageId> = got.into_iter().map(|d| d.id).collect();
                let acked = broker.ack(&queue, &group, &ids).await?;
                done.fetch_add(usize::try_from(acked)?, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let done = done.load(std::sync::atomic::Ordering::Relaxed);
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Sends at `rate`/s for `length` while one consumer receives; returns
/// p50, p99 and max latency in ms, and the number of messages.
pub(crate) async fn latency<B: Broker + ?Sized + 'static>(
    broker: &Arc<B>,
    queue: &QueueName,
    payload: &Payload,
    rate: u64,
    length: Duration,
) -> anyhow::Result<(f64, f64, f64, usize)> {
    let origin = Instant::now();
    let total = usize::try_from(rate.saturating_mul(length.as_secs().max(1)))?;
    let group = GroupName::new("bench")?;
    let consumer = ConsumerName::new("c1")?;
    // Create the group before sending, so every message is measured from its send.
    broker
        .receive(queue, &group, &consumer, ReceiveOptions::default())
        .await?;
    let receiver = {
        let (broker, queue, group) = (broker.clone(), queue.clone(), group.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total);
            while latencies.len() < total {
                let got = broker
                    .receive(
                        &queue,
                        &group,
                        &consumer,
                        ReceiveOptions::new(100, Duration::from_secs(5)),
                    )
                    .await?;
                anyhow::ensure!(!got.is_empty(), "no message for 5 s");
                let now = origin.elapsed().as_micros() as f64;
                let mut ids = Vec::with_capacity(got.len());
                for d in got {
                    let sent: f64 = d
                        .headers
                        .get("sent_us")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(now);
                    latencies.push((now - sent) / 1000.0);
                    ids.push(d.id);
                }
                // The ack goes on in the background, so that the next receive
                // does not wait for it (a consumer that acks in line adds the
                // ack's round trip to the latency of what arrives meanwhile).
                let (broker, queue, group) = (broker.clone(), queue.clone(), group.clone());
                tokio::spawn(async move { broker.ack(&queue, &group, &ids).await });
            }
            anyhow::Ok(latencies)
        })
    };
    // Each send is its own task, as independent clients would be; the pacer,
    // itself a task on the runtime, only decides when each one starts.
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let pacer = {
        let (broker, queue, payload) = (broker.clone(), queue.clone(), payload.clone());
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut sends = Vec::with_capacity(total);
            for i in 0..total {
                let due = start + interval * u32::try_from(i)?;
                tokio::time::sleep_until(due).await;
                let (broker, queue) = (broker.clone(), queue.clone());
                let message = OutgoingMessage::new(payload.clone())
                    .header("sent_us", origin.elapsed().as_micros().to_string());
                sends.push(tokio::spawn(
                    async move { broker.send(&queue, message).await },
                ));
            }
            for s in sends {
                s.await??;
            }
            anyhow::Ok(())
        })
    };
    pacer.await??;
    let latencies = receiver.await??;
    let n = latencies.len();
    Ok(crate::patterns::percentiles(latencies, n))
}

/// The latency scenario's shape (a pacer spawning one task per message, one
/// consumer) over a tokio channel: what any broker measured this way adds to.
async fn latency_floor(rate: u64, length: Duration) -> anyhow::Result<(f64, f64, f64, usize)> {
    let origin = Instant::now();
    let total = usize::try_from(rate.saturating_mul(length.as_secs().max(1)))?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<f64>();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(total);
        while let Some(sent) = rx.recv().await {
            latencies.push((origin.elapsed().as_micros() as f64 - sent) / 1000.0);
        }
        latencies
    });
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let pacer = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(start + interval * u32::try_from(i)?).await;
            let (tx, sent) = (tx.clone(), origin.elapsed().as_micros() as f64);
            tokio::spawn(async move { tx.send(sent) });
        }
        anyhow::Ok(())
    });
    pacer.await??;
    let latencies = receiver.await?;
    let n = latencies.len();
    Ok(crate::patterns::percentiles(latencies, n))
}

/// Dead-letters `letters` messages of one queue, then measures sends paced at
/// 1,000/s to another queue: alone (2 s), then while the first queue's dead
/// letters are all requeued. Returns (p50, p99, max) in ms of each, and how
/// long the requeue took.
async fn requeue_beside(
    broker: &Arc<EmbeddedBroker>,
    payload: &Payload,
    letters: usize,
) -> anyhow::Result<((f64, f64, f64), (f64, f64, f64), Duration)> {
    let dead = QueueName::new("bench-dead")?;
    let beside = QueueName::new("bench-beside")?;
    broker.create_queue(&dead, QueueConfig::default()).await?;
    broker.create_queue(&beside, QueueConfig::default()).await?;
    fill(broker, &dead, payload, letters).await?;
    let (group, consumer) = (GroupName::new("bench")?, ConsumerName::new("c1")?);
    loop {
        let options = ReceiveOptions::new(1000, Duration::ZERO);
        let got = broker.receive(&dead, &group, &consumer, options).await?;
        if got.is_empty() {
            break;
        }
        let ids: Vec<MessageId> = got.into_iter().map(|d| d.id).collect();
        let nack = tidings::Nack::DeadLetter {
            reason: "bench".into(),
        };
        broker.nack_many(&dead, &group, &ids, nack).await?;
    }
    anyhow::ensure!(
        broker.queue_info(&dead).await?.dead_letters == letters as u64,
        "the dead letters were not all made"
    );
    let alone = paced_sends::<()>(broker, &beside, payload, Duration::from_secs(2), None).await?;
    let started = Instant::now();
    let requeue = {
        let (broker, dead) = (broker.clone(), dead.clone());
        tokio::spawn(async move {
            let moved = broker
                .requeue_dead_letters(&dead, tidings::DeadLetterSelection::All)
                .await?;
            anyhow::Ok((moved, started.elapsed()))
        })
    };
    let during = paced_sends(broker, &beside, payload, Duration::ZERO, Some(&requeue)).await?;
    let (moved, took) = requeue.await??;
    anyhow::ensure!(moved == letters as u64, "requeued {moved} of {letters}");
    Ok((alone, during, took))
}

/// Sends paced at 1,000/s, each its own task, for `length` or, with
/// `until`, until that task has finished; returns p50, p99 and max send
/// latency in ms.
async fn paced_sends<T>(
    broker: &Arc<EmbeddedBroker>,
    queue: &QueueName,
    payload: &Payload,
    length: Duration,
    until: Option<&tokio::task::JoinHandle<T>>,
) -> anyhow::Result<(f64, f64, f64)> {
    let interval = Duration::from_millis(1);
    let start = tokio::time::Instant::now();
    let mut sends = Vec::new();
    for i in 0u32.. {
        let done = match until {
            Some(task) => task.is_finished(),
            None => start.elapsed() >= length,
        };
        if done {
            break;
        }
        tokio::time::sleep_until(start + interval * i).await;
        let (broker, queue, message) = (
            broker.clone(),
            queue.clone(),
            OutgoingMessage::new(payload.clone()),
        );
        sends.push(tokio::spawn(async move {
            let sent = Instant::now();
            broker.send(&queue, message).await?;
            anyhow::Ok(sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::with_capacity(sends.len());
    for s in sends {
        latencies.push(s.await??);
    }
    anyhow::ensure!(!latencies.is_empty(), "no send was made");
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    Ok((at(0.50), at(0.99), at(1.0)))
}
