//! What the examples share: the broker they run on.
//!
//! By default a fresh embedded data directory (removed at the end); with
//! `--redis redis://127.0.0.1:6379` a Redis, under a key prefix of the run's
//! own, so runs never see each other's data.

#![allow(dead_code)]

use std::sync::Arc;

use anyhow::Context;
use tidings::{Broker, QueueName};

/// The broker of one run.
pub struct Setup {
    pub broker: Arc<dyn Broker>,
    pub on: String,
    /// Keeps the embedded data directory until the run ends.
    _dir: Option<tempfile::TempDir>,
}

/// `--redis URL` from the command line, or the embedded engine.
pub async fn broker(example: &str) -> anyhow::Result<Setup> {
    let args: Vec<String> = std::env::args().collect();
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
            let mut suffix = [0u8; 4];
            getrandom::fill(&mut suffix).ok();
            let prefix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
            let sep = if url.contains('?') { '&' } else { '?' };
            let url = format!("{url}{sep}prefix=example-{example}-{prefix}:");
            let broker = tidings::open(&url)
                .await
                .with_context(|| format!("cannot reach Redis at {url}"))?;
            Ok(Setup {
                broker,
                on: format!("Redis ({url})"),
                _dir: None,
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
                _dir: Some(dir),
            })
        }
    }
}

impl Setup {
    /// Deletes every queue of the run (records are removed by each example).
    pub async fn clean_up(&self) -> anyhow::Result<()> {
        let queues: Vec<QueueName> = self.broker.list_queues().await?;
        for queue in queues {
            self.broker.delete_queue(&queue).await?;
        }
        Ok(())
    }
}
