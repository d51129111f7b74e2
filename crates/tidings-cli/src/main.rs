//! The `tidings` command.

mod cli;
mod commands;
mod output;
mod serve;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// The engine allocates and frees many small buffers per message (keys,
/// values, memtable entries); mimalloc does that far faster than the system
/// allocator here. See docs/decisions/0005-mimalloc.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDINGS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use anyhow::Context;
    let command = cli.command;
    let broker = tidings::open(&cli.broker)
        .await
        .with_context(|| format!("cannot open the broker {:?}", cli.broker))?;
    match command {
        Command::Queue(c) => commands::queue(broker, cli.json, c).await,
        Command::Dlq(c) => commands::dlq(broker, cli.json, c).await,
        Command::Serve(args) => serve::run(broker, args).await,
    }
}
