//! Naming a broker by URL.

use std::path::PathBuf;
use std::sync::Arc;

use tidings_core::{Broker, Durability, Error, Result};
use tidings_embedded::{EmbeddedBroker, EmbeddedOptions};
use tidings_http::HttpBroker;
use tidings_postgres::{PostgresBroker, PostgresOptions};
use tidings_redis::{RedisBroker, RedisOptions};

/// The broker used when none is named: the embedded engine in `./tidings-data`.
pub const DEFAULT_BROKER_URL: &str = "./tidings-data";

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerUrl {
    /// The embedded engine in a data directory.
    Embedded {
        /// The data directory.
        path: PathBuf,
        /// Default durability of sends.
        durability: Durability,
    },
    /// The embedded engine in memory.
    Memory,
    /// Redis (`redis://` or `rediss://`), in LeanMQ's data layout.
    Redis(RedisOptions),
    /// PostgreSQL (`postgres://` or `postgresql://`), in one schema
    /// (`?schema=`, `tidings` by default).
    Postgres(PostgresOptions),
    /// A `tidings serve` (`http://` or `https://`), through its queue API.
    /// Credentials come from `TIDINGS_API_KEY` (an application's API key) or
    /// `TIDINGS_ADMIN_KEY`, never from the URL.
    Http(String),
}

impl BrokerUrl {
    /// Parses a broker URL (see the crate docs for the forms).
    ///
    /// ```
    /// use tidings::{BrokerUrl, Durability};
    /// assert_eq!(BrokerUrl::parse("memory:")?, BrokerUrl::Memory);
    /// assert_eq!(
    ///     BrokerUrl::parse("file:/tmp/q?durability=buffered")?,
    ///     BrokerUrl::Embedded { path: "/tmp/q".into(), durability: Durability::Buffered },
    /// );
    /// assert!(BrokerUrl::parse("ftp://x").is_err());
    /// # Ok::<_, tidings::Error>(())
    /// ```
    pub fn parse(url: &str) -> Result<Self> {
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(Self::Redis(RedisOptions::from_url(url)?));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Self::Postgres(PostgresOptions::from_url(url)?));
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            HttpBroker::connect(url)?;
            return Ok(Self::Http(url.to_owned()));
        }
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut durability = Durability::Sync;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("durability", "sync")) => durability = Durability::Sync,
                Some(("durability", "buffered")) => durability = Durability::Buffered,
                _ => {
                    return Err(invalid(&format!(
                        "unknown option {pair:?} (known: durability=sync|buffered)"
                    )));
                }
            }
        }
        if base == "memory:" || base == "memory://" {
            return Ok(Self::Memory);
        }
        let path = if let Some(rest) = base.strip_prefix("file://") {
            rest
        } else if let Some(rest) = base.strip_prefix("file:") {
            rest
        } else if let Some((scheme, _)) = base.split_once("://") {
            return Err(invalid(&format!(
                "the {scheme:?} backend is not available in this build (available: a path, file:, memory:, redis://, postgres://, http://)"
            )));
        } else {
            base
        };
        if path.is_empty() {
            return Err(invalid("the data directory path is empty"));
        }
        Ok(Self::Embedded {
            path: PathBuf::from(path),
            durability,
        })
    }

    /// Opens the broker this URL names (connecting, for Redis).
    pub async fn open(&self) -> Result<Arc<dyn Broker>> {
        Ok(match self {
            Self::Embedded { path, durability } => Arc::new(EmbeddedBroker::open_with(
                path,
                EmbeddedOptions {
                    durability: *durability,
                    ..EmbeddedOptions::default()
                },
            )?),
            Self::Memory => Arc::new(EmbeddedBroker::in_memory()),
            Self::Redis(options) => Arc::new(RedisBroker::open_with(options.clone()).await?),
            Self::Postgres(options) => Arc::new(PostgresBroker::open_with(options.clone()).await?),
            Self::Http(url) => {
                let mut client = HttpBroker::connect(url)?;
                if let Ok(key) = std::env::var("TIDINGS_API_KEY") {
                    client = client.with_api_key(&key);
                } else if let Ok(key) = std::env::var("TIDINGS_ADMIN_KEY") {
                    client = client.with_admin_key(&key);
                }
                Arc::new(client)
            }
        })
    }
}

/// Opens the broker named by `url`.
pub async fn open(url: &str) -> Result<Arc<dyn Broker>> {
    BrokerUrl::parse(url)?.open().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_name_a_server() {
        assert_eq!(
            BrokerUrl::parse("http://127.0.0.1:3310").ok(),
            Some(BrokerUrl::Http("http://127.0.0.1:3310".into()))
        );
        assert!(BrokerUrl::parse("https://hub.example:443/").is_ok());
        assert!(matches!(
            BrokerUrl::parse("http://"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn plain_paths_and_file_urls_name_the_embedded_engine() {
        for (url, path) in [
            ("./tidings-data", "./tidings-data"),
            ("file:./data", "./data"),
            ("file:///var/lib/tidings", "/var/lib/tidings"),
            ("relative/dir", "relative/dir"),
        ] {
            assert_eq!(
                BrokerUrl::parse(url).ok(),
                Some(BrokerUrl::Embedded {
                    path: path.into(),
                    durability: Durability::Sync
                }),
                "{url}"
            );
        }
    }

    #[test]
    fn postgres_urls_name_a_schema() {
        let parsed = BrokerUrl::parse("postgres://postgres@127.0.0.1/app?schema=hub").ok();
        assert!(
            matches!(&parsed, Some(BrokerUrl::Postgres(o)) if o.schema == "hub"),
            "{parsed:?}"
        );
        assert!(matches!(
            BrokerUrl::parse("postgresql://h/db?schema=no-dashes"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("nats://127.0.0.1", "not available"),
            ("redis://127.0.0.1?timeout=x", "timeout"),
            ("file:", "empty"),
            ("memory:?fast=yes", "unknown option"),
        ] {
            let err = BrokerUrl::parse(url).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(why)),
                "{url}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_locked_data_directory_is_a_typed_error() {
        let dir = tempfile::tempdir().map_err(Error::storage);
        let Ok(dir) = dir else {
            panic!("no temporary directory")
        };
        let url = dir.path().display().to_string();
        let _first = open(&url).await.map_err(|e| e.to_string());
        assert!(matches!(open(&url).await, Err(Error::Locked { .. })));
    }
}
