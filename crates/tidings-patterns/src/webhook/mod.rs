//! The webhook-style API: handlers registered by path, messages sent to a
//! path, workers that run the handlers. The LeanMQWebhook experience, on any
//! [`Broker`], and on Redis in LeanMQ's own layout: a Python `LeanMQWebhook`
//! and a Rust [`Webhook`] serve and send to each other's paths (open Redis
//! with `?prefix=webhook:`, LeanMQWebhook's prefix).
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use tidings_patterns::webhook::Webhook;
//! # let broker: Arc<dyn tidings_core::Broker> = Arc::new(tidings_embedded::EmbeddedBroker::in_memory());
//! #[derive(serde::Deserialize)]
//! struct Status { order_id: String, status: String }
//!
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let mut webhook = Webhook::new(broker);
//! webhook.on("/order/status/", move |s: Status| {
//!     let tx = tx.clone();
//!     async move { tx.send(format!("{} is {}", s.order_id, s.status)).ok(); }
//! })?;
//! let service = webhook.run_service().await?;
//! service.webhook().send("/order/status/", &serde_json::json!({"order_id": "ORD-1", "status": "shipped"})).await?;
//! assert_eq!(rx.recv().await.unwrap(), "ORD-1 is shipped");
//! service.stop().await;
//! # Ok::<_, tidings_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! A handler that fails (returns `Err` or panics) is retried with
//! exponential backoff and jitter; after [`WebhookOptions::max_attempts`]
//! the message goes to the dead-letter queue with the reason
//! `Processing error: <error>` (LeanMQ's words). Data that does not
//! deserialize into the handler's type is dead-lettered at once.

mod path;
mod service;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tidings_core::{
    Broker, Durability, Error, GroupName, OutgoingMessage, Payload, QueueConfig, QueueName, Result,
    SendReceipt,
};

pub use crate::handler::{HandlerResult, Outcome};
pub use path::{normalize, queue_for};
pub use service::WebhookService;

/// Settings of a webhook service.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Attempts per message before it is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time, with jitter.
    pub first_retry: Duration,
    /// The longest delay between retries.
    pub max_retry: Duration,
    /// Messages one worker handles at a time.
    pub concurrency: usize,
    /// Workers per route, each receiving on its own (as separate processes
    /// would): more handlers at once, and receives that overlap.
    pub workers: usize,
    /// How long a handler may run before its message is given to another
    /// worker (the queues' visibility timeout).
    pub handler_timeout: Duration,
    /// When a send returns, for the queues the service creates (`None`: the
    /// engine's default, `Sync` on the embedded engine).
    pub durability: Option<Durability>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
            concurrency: 16,
            workers: 1,
            handler_timeout: Duration::from_secs(30),
            durability: None,
        }
    }
}

impl WebhookOptions {
    /// The settings of the queues the service creates.
    pub fn queue_config(&self) -> QueueConfig {
        QueueConfig {
            visibility_timeout: self.handler_timeout,
            max_deliveries: self.max_attempts.max(1),
            durability: self.durability,
            ..QueueConfig::default()
        }
    }
}

type BoxedHandler =
    Arc<dyn Fn(Payload) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// One registered path.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) path: String,
    pub(crate) queue: QueueName,
    pub(crate) group: GroupName,
    pub(crate) handler: BoxedHandler,
}

/// Handlers by path, and sending to paths.
#[derive(Clone)]
pub struct Webhook {
    broker: Arc<dyn Broker>,
    options: WebhookOptions,
    routes: BTreeMap<QueueName, Route>,
}

impl Webhook {
    /// A webhook on `broker` with the default options.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self::with_options(broker, WebhookOptions::default())
    }

    /// A webhook on `broker`.
    pub fn with_options(broker: Arc<dyn Broker>, options: WebhookOptions) -> Self {
        Self {
            broker,
            options,
            routes: BTreeMap::new(),
        }
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Registers the handler of a path. The handler takes any type the
    /// data deserializes into (LeanMQ's `_leanmq` key removed first) and
    /// returns `()` or `Result<(), E>`.
    ///
    /// Fails if the path has no queue name, or if another registered path
    /// maps to the same queue (LeanMQ would merge the two routes).
    pub fn on<T, F, Fut>(&mut self, path: &str, handler: F) -> Result<&mut Self>
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult,
    {
        let normalized = normalize(path);
        let queue = queue_for(&normalized)?;
        if let Some(existing) = self.routes.get(&queue) {
            return Err(Error::InvalidArgument(format!(
                "the paths {:?} and {normalized:?} both map to queue {queue:?}; \
                 LeanMQ would merge them, so rename one",
                existing.path
            )));
        }
        let handler = Arc::new(handler);
        let boxed: BoxedHandler = Arc::new(move |payload: Payload| match data_of::<T>(&payload) {
            Ok(data) => {
                let handler = handler.clone();
                Box::pin(async move { handler(data).await.outcome() })
            }
            Err(why) => Box::pin(std::future::ready(Outcome::Invalid(why))),
        });
        // LeanMQ's group: Python workers of the same path share the work.
        let group = GroupName::new(format!("{queue}-group"))?;
        self.routes.insert(
            queue.clone(),
            Route {
                path: normalized,
                queue,
                group,
                handler: boxed,
            },
        );
        Ok(self)
    }

    /// Sends `data` (a JSON object) to the handlers of `path`, creating the
    /// path's queue if nobody has yet. The data carries LeanMQ's
    /// `_leanmq.webhook` stamp, as Python's `LeanMQWebhook.send` writes it.
    pub async fn send<T: Serialize + ?Sized>(&self, path: &str, data: &T) -> Result<SendReceipt> {
        let normalized = normalize(path);
        let queue = queue_for(&normalized)?;
        let message = OutgoingMessage::new(stamped(data, &normalized)?);
        match self.broker.send(&queue, message.clone()).await {
            Err(Error::QueueNotFound(_)) => {
                self.ensure_queue(&queue).await?;
                self.broker.send(&queue, message).await
            }
            other => other,
        }
    }

    /// Starts the workers: one per route, each handling up to
    /// [`WebhookOptions::concurrency`] messages at a time. Several processes
    /// running the same routes share the messages.
    pub async fn run_service(self) -> Result<WebhookService> {
        for route in self.routes.values() {
            self.ensure_queue(&route.queue).await?;
        }
        Ok(WebhookService::start(self))
    }

    /// Creates a queue unless it exists (with whatever settings it has).
    async fn ensure_queue(&self, queue: &QueueName) -> Result<()> {
        match self
            .broker
            .create_queue(queue, self.options.queue_config())
            .await
        {
            Ok(_) | Err(Error::QueueConfigConflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `data` with `_leanmq: {"webhook": {"path", "timestamp"}}` added after its keys.
fn stamped<T: Serialize + ?Sized>(data: &T, path: &str) -> Result<Payload> {
    let text = serde_json::to_string(data).map_err(|e| Error::InvalidPayload(e.to_string()))?;
    let Some(head) = text.strip_suffix('}').filter(|_| text.starts_with('{')) else {
        return Err(Error::InvalidPayload(
            "webhook data must be a JSON object (as LeanMQWebhook requires)".into(),
        ));
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let path = serde_json::Value::from(path);
    let sep = if head == "{" { "" } else { ", " };
    Payload::from_json_str(format!(
        "{head}{sep}\"_leanmq\": {{\"webhook\": {{\"path\": {path}, \"timestamp\": {now}}}}}}}"
    ))
}

/// The handler's view of a payload: LeanMQ's `_leanmq` key removed.
fn data_of<T: DeserializeOwned>(payload: &Payload) -> std::result::Result<T, String> {
    let mut value: serde_json::Value = payload.json().map_err(|e| e.to_string())?;
    if let Some(map) = value.as_object_mut() {
        map.remove("_leanmq");
    }
    serde_json::from_value(value).map_err(|e| format!("Invalid payload: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_carry_the_leanmq_stamp() {
        let p = stamped(&serde_json::json!({"a": 1}), "/x").unwrap();
        let v: serde_json::Value = p.json().unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(v["_leanmq"]["webhook"]["path"], "/x");
        assert!(v["_leanmq"]["webhook"]["timestamp"].as_f64().unwrap() > 1e9);
        let empty: serde_json::Value = stamped(&serde_json::json!({}), "/x")
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(empty.as_object().unwrap().len(), 1);
        assert!(stamped(&[1, 2], "/x").is_err());
    }

    #[test]
    fn handlers_do_not_see_the_stamp() {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Strict {
            a: i32,
        }
        let p = stamped(&serde_json::json!({"a": 1}), "/x").unwrap();
        assert_eq!(data_of::<Strict>(&p).unwrap().a, 1);
        assert!(data_of::<Strict>(&Payload::from_json_str(r#"{"b":1}"#).unwrap()).is_err());
    }
}
