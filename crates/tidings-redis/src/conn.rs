//! Connections: one multiplexed, self-reconnecting connection for commands,
//! and a pool of dedicated ones for blocking reads (a blocked connection
//! cannot serve anyone else).

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client};
use tidings_core::{Error, Result};

use crate::RedisOptions;

/// Blocking connections kept for reuse when idle.
const IDLE_BLOCKING: usize = 64;

pub(crate) struct Connections {
    client: Client,
    main: ConnectionManager,
    idle: Mutex<Vec<MultiplexedConnection>>,
}

impl Connections {
    pub(crate) async fn open(options: &RedisOptions) -> Result<Self> {
        let invalid = |e: redis::RedisError| Error::InvalidUrl {
            url: options.url.clone(),
            reason: e.to_string(),
        };
        let client = Client::open(options.url.as_str()).map_err(invalid)?;
        // Reconnects in the background with bounded backoff (0.1 s doubling
        // to 2 s); while Redis is down, commands fail after `timeout`.
        let config = ConnectionManagerConfig::new()
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(usize::MAX)
            .set_response_timeout(Some(options.timeout))
            .set_connection_timeout(Some(options.timeout));
        // The first connection must succeed within the timeout: a broker
        // that cannot reach Redis at start says so instead of waiting.
        let first = client.get_connection_manager_with_config(config);
        let main = match tokio::time::timeout(options.timeout, first).await {
            Ok(Ok(main)) => main,
            Ok(Err(e)) => return Err(Error::Unavailable(format!("Redis at {}: {e}", options.url))),
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "Redis at {} did not answer within {:?}",
                    options.url, options.timeout
                )));
            }
        };
        Ok(Self {
            client,
            main,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// The shared connection (cheap to clone).
    pub(crate) fn main(&self) -> ConnectionManager {
        self.main.clone()
    }

    /// A connection of its own, for one blocking command.
    pub(crate) async fn blocking(&self) -> Result<MultiplexedConnection> {
        let reused = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        if let Some(conn) = reused {
            return Ok(conn);
        }
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        self.client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(Error::storage)
    }

    /// Returns a blocking connection after a command that succeeded.
    pub(crate) fn give_back(&self, conn: MultiplexedConnection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_BLOCKING
        {
            idle.push(conn);
        }
    }
}
