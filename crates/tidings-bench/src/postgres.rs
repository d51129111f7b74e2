//! `tidings-bench postgres`: the queue rows of issue 17 on PostgreSQL,
//! beside the embedded engine and Redis in the same run, beside the least
//! PostgreSQL work each row needs (the floor, src/postgres_floor.rs) and
//! beside pgmq when its SQL is given. Rounds alternate the targets, so that
//! each comparison is made within minutes on this noisy machine.
//!
//! Every measurement prints `row <scenario> <target> <value> <unit>`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tidings::{Broker, Payload, QueueConfig, QueueName};

use crate::engine::{fill, payload, per_sec, receive_ack, send};
use crate::postgres_floor::{Floor, Pgmq};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// One producer, one message per send.
    SendOne,
    /// 64 producers, one message per send.
    SendConcurrent,
    /// One producer, batches of 100.
    SendBatch,
    /// One consumer: receive 100, then ack them.
    ReceiveAck,
    /// Sends at `--rate`/s, one consumer: send → receive latency.
    Latency,
    /// The two connection pools (deadpool-postgres, bb8) under 64 tasks:
    /// a checkout and one INSERT each (the floor's send-concurrent).
    Pools,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Target {
    /// Tidings on PostgreSQL.
    Tidings,
    /// The least PostgreSQL work of the row, with the same client and commits.
    Floor,
    /// pgmq (its SQL installed by `--pgmq-sql`).
    Pgmq,
    /// The embedded engine, in a scratch directory.
    Embedded,
    /// Tidings on Redis.
    Redis,
}

#[derive(Debug, Clone, Args)]
pub struct PostgresBenchArgs {
    /// The PostgreSQL to measure (benchmarks use schemas of their own, dropped after).
    #[arg(
        long,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    )]
    url: String,
    /// The Redis for the `redis` target.
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    redis: String,
    /// Scratch directory of the `embedded` target (emptied, removed after).
    #[arg(long, default_value = "./tidings-bench-data")]
    dir: PathBuf,
    /// pgmq's SQL-only install script (`pgmq.sql`, e.g. from the pgmq
    /// package on PyPI); without it the pgmq target is left out.
    #[arg(long)]
    pgmq_sql: Option<PathBuf>,
    /// Scenarios to run (default: all).
    #[arg(long = "scenario", value_enum)]
    scenarios: Vec<Scenario>,
    /// Targets to run (default: all available).
    #[arg(long = "target", value_enum)]
    targets: Vec<Target>,
    /// Messages per throughput scenario.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Payload size in bytes (JSON).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Rate of the latency scenario, messages per second.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Length of the latency scenario.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    latency_for: Duration,
    /// Rounds: each runs every target once per scenario, in turn.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// One measured value of a row.
struct Measure {
    value: f64,
    unit: &'static str,
    shown: String,
}

impl Measure {
    fn rate(value: f64) -> Self {
        Self {
            value,
            unit: "msg/s",
            shown: per_sec(value),
        }
    }

    fn latency((p50, p99, max, n): (f64, f64, f64, usize)) -> Self {
        Self {
            value: p99,
            unit: "ms-p99",
            shown: format!("p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms ({n} messages)"),
        }
    }
}

pub async fn run(args: PostgresBenchArgs) -> anyhow::Result<()> {
    let payload = payload(args.size)?;
    let mut targets = crate::chosen(&args.targets);
    if args.pgmq_sql.is_none() {
        targets.retain(|t| *t != Target::Pgmq);
    }
    println!(
        "tidings-bench postgres: {} messages of {} bytes per throughput run, {} rounds, on {}",
        args.messages,
        payload.len(),
        args.rounds,
        args.url
    );
    for scenario in crate::chosen(&args.scenarios) {
        if scenario == Scenario::Pools {
            for round in 1..=args.rounds {
                for (name, rate) in crate::postgres_floor::pools(&args.url, args.messages).await? {
                    println!("  pools round {round}: {name:<16} {rate:.0} inserts/s");
                    println!("row pools {name} {rate:.2} msg/s");
                }
            }
            continue;
        }
        let mut results: Vec<(Target, Vec<f64>)> =
            targets.iter().map(|t| (*t, Vec::new())).collect();
        for round in 1..=args.rounds {
            for (target, values) in &mut results {
                let measure = measure(scenario, *target, &args, &payload)
                    .await
                    .with_context(|| format!("{scenario:?} on {target:?}"))?;
                let name = scenario_name(scenario);
                let target_name = target_name(*target);
                println!(
                    "  {name:<16} round {round}: {target_name:<9} {}",
                    measure.shown
                );
                println!(
                    "row {name} {target_name} {:.2} {}",
                    measure.value, measure.unit
                );
                values.push(measure.value);
            }
        }
        summarize(scenario, &results);
    }
    Ok(())
}

/// Prints each target's median, and Tidings' share of the floor's.
fn summarize(scenario: Scenario, results: &[(Target, Vec<f64>)]) {
    let median = |values: &[f64]| {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let of = |target| {
        results
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, v)| median(v))
    };
    let name = scenario_name(scenario);
    for (target, values) in results {
        println!(
            "median {name} {}: {:.2}",
            target_name(*target),
            median(values)
        );
    }
    if let (Some(tidings), Some(floor)) = (of(Target::Tidings), of(Target::Floor)) {
        // For a latency, the floor's is the lower: the share is floor ÷ Tidings.
        let share = if scenario == Scenario::Latency {
            floor / tidings
        } else {
            tidings / floor
        };
        println!(
            "share {name}: Tidings at {:.0} % of the floor",
            share * 100.0
        );
    }
}

fn scenario_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::SendOne => "send-one",
        Scenario::SendConcurrent => "send-concurrent",
        Scenario::SendBatch => "send-batch",
        Scenario::ReceiveAck => "receive-ack-100",
        Scenario::Latency => "latency",
        Scenario::Pools => "pools",
    }
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Tidings => "tidings",
        Target::Floor => "floor",
        Target::Pgmq => "pgmq",
        Target::Embedded => "embedded",
        Target::Redis => "redis",
    }
}

/// A schema of this benchmark's own.
fn bench_schema(what: &str) -> String {
    format!("tidings_bench_{what}_{}", std::process::id())
}

async fn measure(
    scenario: Scenario,
    target: Target,
    args: &PostgresBenchArgs,
    payload: &Payload,
) -> anyhow::Result<Measure> {
    match target {
        Target::Tidings => {
            let schema = bench_schema("tidings");
            let url = format!(
                "{}{}schema={schema}",
                args.url,
                if args.url.contains('?') { '&' } else { '?' }
            );
            let broker: Arc<dyn Broker> = Arc::new(tidings::PostgresBroker::open(&url).await?);
            let result = on_broker(scenario, &broker, args, payload).await;
            drop(broker);
            crate::postgres_floor::drop_schema(&args.url, &schema).await?;
            result
        }
        Target::Embedded => {
            let _ = std::fs::remove_dir_all(&args.dir);
            let broker: Arc<dyn Broker> = Arc::new(tidings::EmbeddedBroker::open(&args.dir)?);
            let result = on_broker(scenario, &broker, args, payload).await;
            drop(broker);
            let _ = std::fs::remove_dir_all(&args.dir);
            result
        }
        Target::Redis => {
            let prefix = format!("tidings-bench-pg:{}:", std::process::id());
            let sep = if args.redis.contains('?') { '&' } else { '?' };
            let url = format!("{}{sep}prefix={prefix}&timeout=30s", args.redis);
            let broker: Arc<dyn Broker> = Arc::new(tidings::RedisBroker::open(&url).await?);
            let result = on_broker(scenario, &broker, args, payload).await;
            drop(broker);
            crate::redis_floor::delete_prefix(&args.redis, &prefix).await?;
            result
        }
        Target::Floor => {
            let floor = Floor::create(&args.url, &bench_schema("floor")).await?;
            let result = on_floor(scenario, &floor, args, payload).await;
            floor.drop_schema().await?;
            result
        }
        Target::Pgmq => {
            let sql = args.pgmq_sql.as_deref().context("no --pgmq-sql")?;
            let pgmq = Pgmq::install(&args.url, sql).await?;
            let result = on_pgmq(scenario, &pgmq, args, payload).await;
            pgmq.uninstall().await?;
            result
        }
    }
}

async fn on_broker(
    scenario: Scenario,
    broker: &Arc<dyn Broker>,
    args: &PostgresBenchArgs,
    payload: &Payload,
) -> anyhow::Result<Measure> {
    let queue = QueueName::new("bench")?;
    broker.create_queue(&queue, QueueConfig::default()).await?;
    let n = args.messages;
    Ok(match scenario {
        Scenario::SendOne => Measure::rate(send(broker, &queue, payload, n / 4, 1, 1).await?),
        Scenario::SendConcurrent => Measure::rate(send(broker, &queue, payload, n, 64, 1).await?),
        Scenario::SendBatch => Measure::rate(send(broker, &queue, payload, n, 1, 100).await?),
        Scenario::ReceiveAck => {
            fill(broker, &queue, payload, n).await?;
            Measure::rate(receive_ack(broker, &queue, n, 1, 100).await?)
        }
        Scenario::Latency => Measure::latency(
            crate::engine::latency(broker, &queue, payload, args.rate, args.latency_for).await?,
        ),
        Scenario::Pools => anyhow::bail!("pools is not a broker row"),
    })
}

async fn on_floor(
    scenario: Scenario,
    floor: &Floor,
    args: &PostgresBenchArgs,
    payload: &Payload,
) -> anyhow::Result<Measure> {
    let n = args.messages;
    Ok(match scenario {
        Scenario::SendOne => Measure::rate(floor.send(payload, n / 4, 1, 1).await?),
        Scenario::SendConcurrent => Measure::rate(floor.send(payload, n, 64, 1).await?),
        Scenario::SendBatch => Measure::rate(floor.send(payload, n, 1, 100).await?),
        Scenario::ReceiveAck => {
            floor.send(payload, n, 1, 1000).await?;
            Measure::rate(floor.receive_ack(n, 100).await?)
        }
        Scenario::Latency => {
            Measure::latency(floor.latency(payload, args.rate, args.latency_for).await?)
        }
        Scenario::Pools => anyhow::bail!("pools is not a floor row"),
    })
}

async fn on_pgmq(
    scenario: Scenario,
    pgmq: &Pgmq,
    args: &PostgresBenchArgs,
    payload: &Payload,
) -> anyhow::Result<Measure> {
    let n = args.messages;
    Ok(match scenario {
        Scenario::SendOne => Measure::rate(pgmq.send(payload, n / 4, 1, 1).await?),
        Scenario::SendConcurrent => Measure::rate(pgmq.send(payload, n, 64, 1).await?),
        Scenario::SendBatch => Measure::rate(pgmq.send(payload, n, 1, 100).await?),
        Scenario::ReceiveAck => {
            pgmq.send(payload, n, 1, 1000).await?;
            Measure::rate(pgmq.receive_ack(n, 100).await?)
        }
        Scenario::Latency => {
            Measure::latency(pgmq.latency(payload, args.rate, args.latency_for).await?)
        }
        Scenario::Pools => anyhow::bail!("pools is not a pgmq row"),
    })
}
