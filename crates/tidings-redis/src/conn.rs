//! Connections: one shared, self-reconnecting connection for commands, and
//! connections of their own for blocking reads (a blocked connection cannot
//! serve anyone else) — to one Redis, or to a Redis Cluster.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Value};
use tidings_core::{Error, Result};

use crate::RedisOptions;

/// Blocking connections kept for reuse when idle.
const IDLE_BLOCKING: usize = 64;

/// A connection to one Redis or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Managed(ConnectionManager),
    Plain(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Managed(c) => c.req_packed_command(cmd),
            Self::Plain(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Plain(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Managed(c) => c.get_db(),
            Self::Plain(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

enum Clients {
    Single(Client),
    /// The cluster client for blocking reads (no response timeout).
    Cluster(Box<ClusterClient>),
}

pub(crate) struct Connections {
    clients: Clients,
    main: Conn,
    idle: Mutex<Vec<Conn>>,
}

impl Connections {
    pub(crate) async fn open(options: &RedisOptions) -> Result<Self> {
        let invalid = |e: redis::RedisError| Error::InvalidUrl {
            url: options.url.clone(),
            reason: e.to_string(),
        };
        let unreachable = |e: String| Error::Unavailable(format!("Redis at {}: {e}", options.url));
        let (clients, first) = if options.cluster {
            let build = |response: Duration| {
                ClusterClient::builder(vec![options.url.as_str()])
                    .connection_timeout(options.timeout)
                    .response_timeout(response)
                    .build()
                    .map_err(invalid)
            };
            let main = build(options.timeout)?;
            let blocking = build(Duration::from_secs(24 * 3600))?;
            let conn = async move { main.get_async_connection().await.map(Conn::Cluster) };
            (Clients::Cluster(Box::new(blocking)), futures_box(conn))
        } else {
            let client = Client::open(options.url.as_str()).map_err(invalid)?;
            // Reconnects in the background with bounded backoff (0.1 s doubling
            // to 2 s); while Redis is down, commands fail after `timeout`.
            let config = ConnectionManagerConfig::new()
                .set_min_delay(Duration::from_millis(100))
                .set_max_delay(Duration::from_secs(2))
                .set_number_of_retries(usize::MAX)
                .set_response_timeout(Some(options.timeout))
                .set_connection_timeout(Some(options.timeout));
            let manager = client.clone();
            let conn = async move {
                manager
                    .get_connection_manager_with_config(config)
                    .await
                    .map(Conn::Managed)
            };
            (Clients::Single(client), futures_box(conn))
        };
        // The first connection must succeed within the timeout: a broker
        // that cannot reach Redis at start says so instead of waiting.
        let main = match tokio::time::timeout(options.timeout, first).await {
            Ok(Ok(main)) => main,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no answer within {:?}",
                    options.timeout
                )));
            }
        };
        Ok(Self {
            clients,
            main,
            idle: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.clients, Clients::Cluster(_))
    }

    /// `INFO server` of the server that holds `key`: in a cluster, the
    /// primary of its slot.
    pub(crate) async fn info_server(&self, key: &str) -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg("server");
        match &self.main {
            Conn::Cluster(c) => {
                let route = Route::with_key(key, SlotAddr::Master);
                c.clone()
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
            other => cmd.query_async(&mut other.clone()).await,
        }
    }

    /// The shared connection (cheap to clone).
    pub(crate) fn main(&self) -> Conn {
        self.main.clone()
    }

    /// A connection of its own, for one blocking command.
    pub(crate) async fn blocking(&self) -> Result<Conn> {
        let reused = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        if let Some(conn) = reused {
            return Ok(conn);
        }
        match &self.clients {
            Clients::Single(client) => {
                let config = AsyncConnectionConfig::new().set_response_timeout(None);
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(Conn::Plain)
            }
            Clients::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
        .map_err(|e| Error::Unavailable(format!("Redis: {e}")))
    }

    /// Returns a blocking connection after a command that succeeded.
    pub(crate) fn give_back(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_BLOCKING
        {
            idle.push(conn);
        }
    }
}

type ConnFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = redis::RedisResult<Conn>> + Send>>;

fn futures_box(
    f: impl std::future::Future<Output = redis::RedisResult<Conn>> + Send + 'static,
) -> ConnFuture {
    Box::pin(f)
}
