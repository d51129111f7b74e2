//! What the examples share: the broker they run on.
//!
//! By default a fresh embedded data directory (removed at the end); with
//! `--redis redis://127.0.0.1:6379` a Redis, under a key prefix of the run's
//! own, so runs never see each other's data; with
//! `--postgres postgres://postgres@127.0.0.1/postgres` a PostgreSQL, in a
//! schema of the run's own (dropped at the end); with `--http URL` a
//! running `tidings serve`.

#![allow(dead_code)]

use std::sync::Arc;

use anyhow::Context;
use tidings::{Broker, QueueName};

/// The broker of one run.
pub struct Setup {
    pub broker: Arc<dyn Broker>,
    pub on: String,
    /// How another process reaches the same broker (empty: it cannot).
    args: Vec<String>,
    /// Keeps the embedded data directory until the run ends.
    _dir: Option<tempfile::TempDir>,
    /// The PostgreSQL URL and schema this run created (dropped by `clean_up`).
    schema: Option<(String, String)>,
}

/// `--http URL`, `--redis URL` or `--postgres URL` from the command line,
/// or the embedded engine.
pub async fn broker(example: &str) -> anyhow::Result<Setup> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--http") {
        let url = args
            .get(i + 1)
            .context(
                "--http needs the URL of a running tidings serve, such as http://127.0.0.1:3310",
            )?
            .clone();
        let broker = tidings::open(&url)
            .await
            .with_context(|| format!("cannot use tidings serve at {url}"))?;
        return Ok(Setup {
            broker,
            on: format!("tidings serve at {url}"),
            args: vec!["--http".into(), url],
            _dir: None,
            schema: None,
        });
    }
    if let Some(i) = args.iter().position(|a| a == "--postgres") {
        let url = args
            .get(i + 1)
            .context("--postgres needs a URL, such as postgres://postgres@127.0.0.1/postgres")?
            .clone();
        // A schema given (a service started by the example itself) is kept.
        let (url, schema) = if url.contains("schema=") {
            (url, None)
        } else {
            let schema = format!("example_{}_{}", example.replace('-', "_"), random_hex());
            let sep = if url.contains('?') { '&' } else { '?' };
            (format!("{url}{sep}schema={schema}"), Some((url, schema)))
        };
        let broker = tidings::open(&url)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {url}"))?;
        return Ok(Setup {
            broker,
            on: format!("PostgreSQL ({url})"),
            args: vec!["--postgres".into(), url],
            _dir: None,
            schema,
        });
    }
    let redis = match args.iter().position(|a| a == "--redis") {
        Some(i) => Some(
            args.get(i + 1)
                .context("--redis needs a URL, such as redis://127.0.0.1:6379")?
                .clone(),
        ),
        None => None,
    };
    match redis {
        Some(url) => {
            let prefix = random_hex();
            let sep = if url.contains('?') { '&' } else { '?' };
            // A prefix given (a service started by the example itself) is kept.
            let url = if url.contains("prefix=") {
                url
            } else {
                format!("{url}{sep}prefix=example-{example}-{prefix}:")
            };
            let broker = tidings::open(&url)
                .await
                .with_context(|| format!("cannot reach Redis at {url}"))?;
            Ok(Setup {
                broker,
                on: format!("Redis ({url})"),
                args: vec!["--redis".into(), url],
                _dir: None,
                schema: None,
            })
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix(&format!("tidings-example-{example}-"))
                .tempdir()?;
            let broker = tidings::open(&dir.path().display().to_string()).await?;
            Ok(Setup {
                broker,
                on: format!("the embedded engine ({})", dir.path().display()),
                args: Vec::new(),
                _dir: Some(dir),
                schema: None,
            })
        }
    }
}

impl Setup {
    /// Whether only this process can use the broker (the embedded engine).
    pub fn single_process(&self) -> bool {
        self.args.is_empty()
    }

    /// Command-line arguments that open the same broker in another process.
    pub fn broker_args(&self) -> &[String] {
        &self.args
    }

    /// Deletes every queue of the run (records are removed by each example).
    pub async fn clean_up(&self) -> anyhow::Result<()> {
        let queues: Vec<QueueName> = self.broker.list_queues().await?;
        for queue in queues {
            self.broker.delete_queue(&queue).await?;
        }
        if let Some((url, schema)) = &self.schema {
            let url = url.split('?').next().unwrap_or(url);
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .context("cannot reach PostgreSQL to drop the run's schema")?;
            let driver = tokio::spawn(connection);
            client
                .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
                .await?;
            drop(client);
            driver.await??;
        }
        Ok(())
    }
}

/// Eight random hex digits.
fn random_hex() -> String {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).ok();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `prefix-` and eight random hex digits: ids for orders, payments, users.
pub fn short_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_hex())
}
