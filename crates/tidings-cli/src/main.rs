//! The `tidings` command.

mod cli;
mod commands;
mod hub_commands;
mod output;
mod serve;
mod verify_receiver;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command};

/// The engine allocates and frees many small buffers per message (keys,
/// values, memtable entries); mimalloc does that far faster than the system
/// allocator here. See docs/decisions/0005-mimalloc.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let given = Given::of(&matches);
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
    match runtime.block_on(run(cli, given)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain of causes, each once (a cause whose text its
            // wrapper already shows is not repeated).
            eprintln!("error: {}", tidings::error::with_causes(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Which options were given as flags or environment variables (not left
/// to their defaults): they override a config file.
struct Given {
    broker: bool,
    serve: Vec<String>,
}

impl Given {
    fn of(matches: &clap::ArgMatches) -> Self {
        let explicit = |m: &clap::ArgMatches, id: &str| {
            matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            )
        };
        let serve = matches
            .subcommand_matches("serve")
            .map(|m| {
                m.ids()
                    .map(|id| id.as_str().to_owned())
                    .filter(|id| explicit(m, id))
                    .collect()
            })
            .unwrap_or_default();
        let broker = explicit(matches, "broker")
            || matches
                .subcommand_matches("serve")
                .is_some_and(|m| explicit(m, "broker"));
        Self { broker, serve }
    }
}

async fn run(cli: Cli, given: Given) -> anyhow::Result<()> {
    use anyhow::Context;
    let (command, url) = match cli.command {
        Command::Serve(args) => {
            let (args, url) = serve::settle(*args, &given.serve, cli.broker, given.broker)?;
            (Command::Serve(Box::new(args)), url)
        }
        Command::Migrate { check } => return migrate(&cli.broker, check, cli.json).await,
        Command::VerifyReceiver(args) => return verify_receiver::run(args, cli.json).await,
        Command::Hub(args) => return hub_commands::run(args, cli.json).await,
        other => (other, cli.broker),
    };
    let broker = tidings::open(&url)
        .await
        .with_context(|| format!("cannot open the broker {url:?}"))?;
    match command {
        Command::Queue(c) => commands::queue(broker, cli.json, c).await,
        Command::Dlq(c) => commands::dlq(broker, cli.json, c).await,
        Command::Serve(args) => serve::run(broker, *args).await,
        Command::Migrate { .. } | Command::VerifyReceiver(_) | Command::Hub(_) => Ok(()),
    }
}

/// `tidings migrate`: brings a PostgreSQL schema to this build's version
/// (or, with `check`, only reports it).
async fn migrate(url: &str, check: bool, json: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    let tidings::BrokerUrl::Postgres(options) = tidings::BrokerUrl::parse(url)? else {
        println!("{url}: nothing to migrate (only a postgres:// broker has a schema)");
        return Ok(());
    };
    let schema = options.schema.clone();
    let broker = tidings::PostgresBroker::connect(options)
        .await
        .with_context(|| format!("cannot reach the broker {url:?}"))?;
    let done = broker.migrate(!check).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"schema": schema, "from": done.from, "to": done.to})
        );
    } else if done.from == done.to {
        println!("schema {schema:?} is at version {} (current)", done.to);
    } else {
        println!(
            "schema {schema:?} migrated from version {} to {}",
            done.from, done.to
        );
    }
    Ok(())
}
