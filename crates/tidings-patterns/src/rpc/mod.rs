//! Request/response through queues (the seeds' API gateway, without its
//! 100 ms polling loop).
//!
//! [`Rpc::call`] sends a request to queue `rpc.<service>.<endpoint>` with a
//! correlation id, a reply address (this caller's reply queue) and a
//! deadline, then awaits the reply: one listener per caller receives every
//! reply with a blocking receive and hands each to its waiting call.
//! [`Rpc::serve`] answers requests; several servers of one endpoint share the
//! work (one consumer group).
//!
//! A call that times out returns [`RpcError::Timeout`]; a reply arriving
//! after that is acknowledged and dropped (counted by
//! [`Rpc::late_replies`]). A request also expires with its deadline, so a
//! server that comes up late does not work on calls nobody waits for.
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tidings_patterns::rpc::Rpc;
//! # let broker: Arc<dyn tidings_core::Broker> = Arc::new(tidings_embedded::EmbeddedBroker::in_memory());
//! #[derive(serde::Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! let rpc = Rpc::new(broker);
//! let server = rpc
//!     .serve("calc", "add", |r: Add| async move { Ok::<_, String>(r.a + r.b) })
//!     .await?;
//! let sum: i64 = rpc
//!     .call("calc", "add", &serde_json::json!({"a": 2, "b": 3}), Duration::from_secs(5))
//!     .await?;
//! assert_eq!(sum, 5);
//! server.stop().await;
//! rpc.close().await;
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod gateway;
mod server;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tidings_core::{
    Broker, ConsumerName, Durability, Error, GroupName, OutgoingMessage, Payload, QueueConfig,
    QueueName,
};
use tokio::sync::{OnceCell, oneshot};
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumerOptions, MissingQueue, Queue};

pub use gateway::{Gateway, Gathered};
pub use server::RpcServer;

/// Header carrying the correlation id (requests and replies).
pub const CORRELATION_HEADER: &str = "rpc-id";
/// Header carrying the queue a reply goes to.
pub const REPLY_TO_HEADER: &str = "rpc-reply-to";
/// Header carrying the caller's deadline, in milliseconds since the epoch.
pub const DEADLINE_HEADER: &str = "rpc-deadline";
/// Header of a reply: `ok` or `error`.
pub const STATUS_HEADER: &str = "rpc-status";

/// How long the reply listener waits in one receive.
const LISTEN_WAIT: Duration = Duration::from_secs(5);
/// Replies kept at most this long if nobody takes them (a caller that died).
const REPLY_TTL: Duration = Duration::from_secs(600);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// No reply within the timeout (a late reply will be dropped).
    #[error("no reply from {service}.{endpoint} within {timeout:?}")]
    Timeout {
        /// The service called.
        service: String,
        /// Its endpoint.
        endpoint: String,
        /// How long the call waited.
        timeout: Duration,
    },
    /// The server answered with an error.
    #[error("{service}.{endpoint} failed: {message}")]
    Remote {
        /// The service called.
        service: String,
        /// Its endpoint.
        endpoint: String,
        /// The server's error message.
        message: String,
    },
    /// The request could not be encoded, or the reply not decoded.
    #[error("{0}")]
    Codec(String),
    /// The broker failed (or a name was invalid).
    #[error(transparent)]
    Broker(#[from] Error),
}

/// The queue serving `service`'s `endpoint`.
pub fn request_queue(service: &str, endpoint: &str) -> Result<QueueName, Error> {
    QueueName::new(format!("rpc.{service}.{endpoint}"))
}

/// The settings of request and reply queues. Requests carry their own
/// deadline as TTL. Sends return once the OS has them (they survive a crash
/// of the process, not of the machine): the caller waits in memory, so a
/// call outlives neither, and skipping the fsync takes a round trip from
/// about 540 µs to under 100 µs on the embedded engine (docs/decisions/0011).
fn rpc_queue_config() -> QueueConfig {
    QueueConfig {
        durability: Some(Durability::Buffered),
        ..QueueConfig::default()
    }
}

/// A reply as the listener hands it over.
struct Reply {
    ok: bool,
    payload: Payload,
}

type Pending = Mutex<HashMap<String, oneshot::Sender<Reply>>>;

/// A caller and server of requests; cheap to clone (clones share the reply
/// queue and its listener).
#[derive(Clone)]
pub struct Rpc {
    inner: Arc<Inner>,
}

struct Inner {
    broker: Arc<dyn Broker>,
    /// This caller's name: its reply queue is `rpc.reply.<name>`.
    name: String,
    next_id: AtomicU64,
    pending: Arc<Pending>,
    late: Arc<AtomicU64>,
    listener: OnceCell<QueueName>,
    /// Stops the reply listener.
    stop: CancellationToken,
    created: Mutex<HashSet<QueueName>>,
}

impl Rpc {
    /// A caller and server over `broker`. The reply queue is made on the
    /// first call.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                name: crate::ids::process_unique("caller"),
                next_id: AtomicU64::new(0),
                pending: Arc::default(),
                late: Arc::default(),
                listener: OnceCell::new(),
                stop: CancellationToken::new(),
                created: Mutex::default(),
            }),
        }
    }

    /// The broker calls go through.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Replies that arrived after their call had given up.
    pub fn late_replies(&self) -> u64 {
        self.inner.late.load(Ordering::Relaxed)
    }

    /// Calls `service`'s `endpoint` with `request` and waits up to `timeout`
    /// for the reply.
    pub async fn call<Req, Resp>(
        &self,
        service: &str,
        endpoint: &str,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let started = Instant::now();
        let queue = request_queue(service, endpoint)?;
        let reply_to = self.listening().await?;
        self.ensure_queue(&queue).await?;
        let id = format!(
            "{}-{}",
            self.inner.name,
            self.inner.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting::new(&self.inner.pending, id.clone(), tx);
        let message = OutgoingMessage::json(request)
            .map_err(|e| RpcError::Codec(format!("cannot encode the request: {e}")))?
            .header(CORRELATION_HEADER, id)
            .header(REPLY_TO_HEADER, reply_to.as_str())
            .header(
                DEADLINE_HEADER,
                (tidings_core::Timestamp::now().as_millis()
                    + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
                .to_string(),
            )
            .ttl(timeout.max(Duration::from_millis(1)));
        self.inner.broker.send(&queue, message).await?;
        let left = timeout.saturating_sub(started.elapsed());
        let reply = match tokio::time::timeout(left, rx).await {
            Ok(Ok(reply)) => reply,
            // The listener stopped (the caller was closed) or time ran out.
            Ok(Err(_)) | Err(_) => {
                drop(waiting);
                return Err(RpcError::Timeout {
                    service: service.to_owned(),
                    endpoint: endpoint.to_owned(),
                    timeout,
                });
            }
        };
        if reply.ok {
            reply
                .payload
                .json()
                .map_err(|e| RpcError::Codec(format!("cannot decode the reply: {e}")))
        } else {
            let message = reply
                .payload
                .json::<serde_json::Value>()
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "unknown error".into());
            Err(RpcError::Remote {
                service: service.to_owned(),
                endpoint: endpoint.to_owned(),
                message,
            })
        }
    }

    /// Stops the reply listener and deletes the reply queue. Calls still
    /// waiting end with [`RpcError::Timeout`].
    pub async fn close(&self) {
        self.inner.stop.cancel();
        if let Some(queue) = self.inner.listener.get()
            && let Err(e) = self.inner.broker.delete_queue(queue).await
        {
            tracing::warn!(queue = %queue, error = %e, "cannot delete the reply queue");
        }
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    async fn ensure_queue(&self, queue: &QueueName) -> Result<(), Error> {
        if self
            .inner
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(queue)
        {
            return Ok(());
        }
        match self
            .inner
            .broker
            .create_queue(queue, rpc_queue_config())
            .await
        {
            // Made by a server with other settings: use it as it is.
            Ok(_) | Err(Error::QueueConfigConflict(_)) => {}
            Err(e) => return Err(e),
        }
        self.inner
            .created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.clone());
        Ok(())
    }

    /// The reply queue, with its listener running.
    async fn listening(&self) -> Result<QueueName, Error> {
        let inner = &self.inner;
        inner
            .listener
            .get_or_try_init(|| async {
                let queue = QueueName::new(format!("rpc.reply.{}", inner.name))?;
                let config = QueueConfig {
                    default_ttl: Some(REPLY_TTL),
                    ..rpc_queue_config()
                };
                inner.broker.create_queue(&queue, config).await?;
                tokio::spawn(listen(
                    inner.broker.clone(),
                    queue.clone(),
                    inner.pending.clone(),
                    inner.late.clone(),
                    inner.stop.clone(),
                ));
                Ok(queue)
            })
            .await
            .cloned()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The listener holds no reference to `Inner`: tell it to end.
        self.stop.cancel();
    }
}

/// A call's slot among the pending ones, removed when the call ends.
struct Waiting<'a> {
    pending: &'a Pending,
    id: String,
}

impl<'a> Waiting<'a> {
    fn new(pending: &'a Pending, id: String, tx: oneshot::Sender<Reply>) -> Self {
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        Self { pending, id }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Receives replies and hands each to its waiting call, until `stop` (or
/// the reply queue is deleted).
async fn listen(
    broker: Arc<dyn Broker>,
    queue: QueueName,
    pending: Arc<Pending>,
    late: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let (Ok(group), Ok(consumer)) = (GroupName::new("replies"), ConsumerName::new("listener"))
    else {
        return;
    };
    let options = ConsumerOptions {
        max_in_flight: 64,
        poll: LISTEN_WAIT,
        missing_queue: MissingQueue::End,
    };
    let mut replies =
        Queue::new(broker, queue.clone()).consumer_until(group, consumer, options, stop);
    while let Some(reply) = replies.next().await {
        let waiter = reply.headers.get(CORRELATION_HEADER).and_then(|id| {
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id)
        });
        let ok = reply.headers.get(STATUS_HEADER).map(String::as_str) == Some("ok");
        let delivered = waiter.is_some_and(|tx| {
            tx.send(Reply {
                ok,
                payload: reply.payload.clone(),
            })
            .is_ok()
        });
        if !delivered {
            late.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(queue = %queue, "a reply came after its call gave up; dropped");
        }
        reply.ack();
    }
    replies.stop().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_queues_are_named_after_service_and_endpoint() {
        assert_eq!(
            request_queue("orders", "create")
                .map(|q| q.to_string())
                .ok(),
            Some("rpc.orders.create".to_owned())
        );
        assert!(request_queue("orders", "a/b").is_err());
    }
}
