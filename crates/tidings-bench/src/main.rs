//! `tidings-bench`: the benchmarks of docs/benchmarks.md, apart from the
//! `tidings` command. `hub` and `http` start `tidings serve` as a child
//! process: the `tidings` binary beside this one (build both:
//! `cargo build --release --bin tidings --bin tidings-bench`), or the one
//! `TIDINGS_BIN` names.

mod cluster;
mod engine;
mod http;
mod hub;
mod patterns;
mod postgres;
mod postgres_floor;
mod redis;
mod redis_floor;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The same allocator as `tidings` (docs/decisions/0005-mimalloc.md), so
/// the engine is measured as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Benchmarks of Tidings (see docs/benchmarks.md).
#[derive(Debug, Parser)]
#[command(name = "tidings-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The embedded engine.
    Engine(engine::BenchArgs),
    /// The event hub over HTTP (`tidings serve` as a child process, or any
    /// Amebo-compatible server).
    Hub(hub::HubBenchArgs),
    /// The Redis engine on a Redis server.
    Redis(redis::RedisBenchArgs),
    /// The PostgreSQL engine beside the embedded engine, Redis, the plain-SQL
    /// floor and pgmq.
    Postgres(postgres::PostgresBenchArgs),
    /// The queue API of `tidings serve` over HTTP.
    Http(http::HttpBenchArgs),
    /// The service patterns (webhook-style API, RPC) on the embedded engine.
    Patterns(patterns::PatternsBenchArgs),
    /// Several `tidings serve` processes on one Redis or PostgreSQL store:
    /// delivery rate of 1, 2, 3 processes, catalog propagation, failover.
    Cluster(cluster::ClusterBenchArgs),
}

/// The values asked for, or every one when none was.
pub(crate) fn chosen<T: clap::ValueEnum + Clone>(asked: &[T]) -> Vec<T> {
    if asked.is_empty() {
        T::value_variants().to_vec()
    } else {
        asked.to_vec()
    }
}

/// Bytes of the files under `path` (0 if it cannot be read).
pub(crate) fn dir_bytes(path: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&entry.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The `tidings` binary to start `tidings serve` from.
pub(crate) fn server_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TIDINGS_BIN") {
        return Ok(PathBuf::from(path));
    }
    let beside =
        std::env::current_exe()?.with_file_name(format!("tidings{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        beside.exists(),
        "no tidings binary at {}: build it with `cargo build --release --bin tidings`, or name one in TIDINGS_BIN",
        beside.display()
    );
    Ok(beside)
}

#[tokio::main]
async fn main() -> ExitCode {
    let log = tracing_subscriber::EnvFilter::try_from_env("TIDINGS_LOG");
    let log = log.unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(log)
        .with_writer(std::io::stderr)
        .init();
    let done = match Cli::parse().command {
        Command::Engine(args) => engine::run(args).await,
        Command::Hub(args) => hub::run(args).await,
        Command::Redis(args) => redis::run(args).await,
        Command::Postgres(args) => postgres::run(args).await,
        Command::Http(args) => http::run(args).await,
        Command::Patterns(args) => patterns::run(args).await,
        Command::Cluster(args) => cluster::run(args).await,
    };
    if let Err(e) = done {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
