//! A typed event bus with durable subscriptions.
//!
//! Events are Rust types with a stable name ([`Event::TYPE`]). A subscription
//! is a record in the broker (table `bus.subscriptions`) and a queue
//! (`bus.<subscriber>`), not a map in some process's memory: a publisher in
//! one process reaches subscribers in others, and a subscriber that is down
//! finds what was published meanwhile when it comes back. A publish sends the
//! event to every matching subscription in one transaction: all of them get
//! it, or the publish fails and none does.
//!
//! Subscribers run handlers by type ([`Subscriber::on`]). One process at a
//! time consumes a subscription: the holder of its lease (a record renewed
//! with compare-and-set); other processes running the same subscriber stand
//! by and take over when it stops or dies. Events with the same
//! [`ordering key`](Event::ordering_key) are handled one after another in
//! publish order, whatever the number of workers; failures are retried in
//! place (so a later event of the key does not overtake), then
//! dead-lettered with the error as reason. An event of a type the subscriber
//! has no handler for is acknowledged and logged, or dead-lettered
//! ([`UnknownEvents`]).
//!
//! ```
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use serde::{Deserialize, Serialize};
//! use tidings_patterns::bus::{Event, EventBus};
//! # let broker: Arc<dyn tidings_core::Broker> = Arc::new(tidings_embedded::EmbeddedBroker::in_memory());
//! #[derive(Serialize, Deserialize)]
//! struct OrderCreated { order_id: String, total: f64 }
//! impl Event for OrderCreated {
//!     const TYPE: &'static str = "OrderCreatedEvent";
//!     fn ordering_key(&self) -> Option<String> { Some(self.order_id.clone()) }
//! }
//!
//! let bus = EventBus::new(broker);
//! let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
//! let mut payments = bus.subscriber("payment-service");
//! payments.on(move |e: OrderCreated| {
//!     let tx = tx.clone();
//!     async move { tx.send(e.order_id).ok(); }
//! });
//! let service = payments.run().await?;
//! let published = bus.publish(&OrderCreated { order_id: "o-1".into(), total: 9.5 }).await?;
//! assert_eq!(published.subscribers, 1);
//! assert_eq!(rx.recv().await.as_deref(), Some("o-1"));
//! service.stop().await;
//! # Ok::<_, tidings_core::Error>(())
//! # }).unwrap();
//! ```

mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tidings_core::{
    Broker, Error, OutgoingMessage, Payload, QueueConfig, QueueName, RecordScan, Result, TableName,
    Transaction,
};

pub use subscriber::{BusService, Subscriber};

/// Header with the event's type name.
pub const TYPE_HEADER: &str = "event-type";
/// Header with the event's id.
pub const ID_HEADER: &str = "event-id";
/// Header with the event's ordering key, if it has one.
pub const KEY_HEADER: &str = "ordering-key";
/// Header with the publish time, in milliseconds since the epoch.
pub const PUBLISHED_HEADER: &str = "published-at";

/// Subscribes to every type.
pub const ALL_TYPES: &str = "*";

/// An event: a serializable type with a stable name.
pub trait Event: Serialize + DeserializeOwned + Send + 'static {
    /// The name subscribers ask for (keep it when the Rust type is renamed).
    const TYPE: &'static str;

    /// Events with the same key are handled in publish order (an order id,
    /// an account id); `None` (the default) lets them be handled in any order.
    fn ordering_key(&self) -> Option<String> {
        None
    }
}

/// What a subscriber does with an event it has no handler for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownEvents {
    /// Acknowledge it and log a warning.
    #[default]
    Acknowledge,
    /// Move it to the subscription's dead letters.
    DeadLetter,
}

/// Settings of a subscriber.
#[derive(Debug, Clone)]
pub struct BusOptions {
    /// Handlers running at once (events of one ordering key never run at once).
    pub workers: usize,
    /// Attempts per event before it is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time, with jitter.
    pub first_retry: Duration,
    /// The longest delay between retries.
    pub max_retry: Duration,
    /// What happens to events of types without a handler.
    pub unknown: UnknownEvents,
    /// How long an event may stay unacknowledged before the broker gives it
    /// to another consumer (handling plus retries must fit in it). A process
    /// taking over from one that died waits this long before receiving.
    pub visibility_timeout: Duration,
    /// How long the process consuming a subscription may go without
    /// renewing its lease before a standby process takes over.
    pub lease_ttl: Duration,
}

impl Default for BusOptions {
    fn default() -> Self {
        Self {
            workers: 4,
            max_attempts: 5,
            first_retry: Duration::from_millis(200),
            max_retry: Duration::from_secs(10),
            unknown: UnknownEvents::Acknowledge,
            visibility_timeout: Duration::from_secs(60),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// A durable subscription, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The subscriber's name.
    pub subscriber: String,
    /// The event types it receives (`*`: all).
    pub types: Vec<String>,
}

impl Subscription {
    fn wants(&self, event_type: &str) -> bool {
        self.types.iter().any(|t| t == event_type || t == ALL_TYPES)
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The id the event carries (header `event-id`).
    pub event_id: String,
    /// How many subscriptions received it.
    pub subscribers: usize,
}

/// Publishes events and manages subscriptions; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    broker: Arc<dyn Broker>,
}

/// The table of subscriptions.
fn table() -> Result<TableName> {
    TableName::new("bus.subscriptions")
}

/// The queue of a subscription.
pub fn subscription_queue(subscriber: &str) -> Result<QueueName> {
    QueueName::new(format!("bus.{subscriber}"))
}

impl EventBus {
    /// A bus on `broker`.
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self { broker }
    }

    /// The broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Creates or replaces `subscriber`'s durable subscription to `types`
    /// (`"*"` for all). Every event published after this returns reaches the
    /// subscription's queue, whether or not a subscriber is running.
    pub async fn subscribe(&self, subscriber: &str, types: &[&str]) -> Result<Subscription> {
        self.subscribe_with(subscriber, types, &BusOptions::default())
            .await
    }

    pub(crate) async fn subscribe_with(
        &self,
        subscriber: &str,
        types: &[&str],
        options: &BusOptions,
    ) -> Result<Subscription> {
        if types.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "subscription {subscriber:?} names no event type"
            )));
        }
        let queue = subscription_queue(subscriber)?;
        let config = QueueConfig {
            visibility_timeout: options.visibility_timeout,
            max_deliveries: 10,
            ..QueueConfig::default()
        };
        // The queue first: a publish that sees the record has somewhere to send.
        match self.broker.create_queue(&queue, config).await {
            Ok(_) | Err(Error::QueueConfigConflict(_)) => {}
            Err(e) => return Err(e),
        }
        let mut types: Vec<String> = types.iter().map(|t| (*t).to_owned()).collect();
        types.sort();
        types.dedup();
        let subscription = Subscription {
            subscriber: subscriber.to_owned(),
            types,
        };
        let mut tx = Transaction::new();
        tx.put(table()?, subscriber, Payload::from_value(&subscription)?);
        self.broker.commit(tx).await?;
        Ok(subscription)
    }

    /// Ends a subscription: no more events reach its queue (what is queued
    /// stays until the queue is deleted).
    pub async fn unsubscribe(&self, subscriber: &str) -> Result<()> {
        let mut tx = Transaction::new();
        tx.delete(table()?, subscriber);
        self.broker.commit(tx).await?;
        Ok(())
    }

    /// Every subscription, by subscriber name.
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>> {
        let records = self
            .broker
            .scan_records(&table()?, RecordScan::all())
            .await?;
        records
            .iter()
            .map(|r| r.value.json::<Subscription>())
            .collect()
    }

    /// Publishes `event` to every subscription of its type, atomically.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<Published> {
        let event_id = crate::ids::random_hex(16);
        let mut message = OutgoingMessage::json(event)?
            .header(TYPE_HEADER, E::TYPE)
            .header(ID_HEADER, event_id.clone())
            .header(
                PUBLISHED_HEADER,
                tidings_core::Timestamp::now().as_millis().to_string(),
            );
        if let Some(key) = event.ordering_key() {
            message = message.header(KEY_HEADER, key);
        }
        let targets: Vec<QueueName> = self
            .subscriptions()
            .await?
            .iter()
            .filter(|s| s.wants(E::TYPE))
            .map(|s| subscription_queue(&s.subscriber))
            .collect::<Result<_>>()?;
        match targets.as_slice() {
            [] => {}
            [one] => {
                self.broker.send(one, message).await?;
            }
            many => {
                let mut tx = Transaction::new();
                for queue in many {
                    tx.send(queue.clone(), message.clone());
                }
                self.broker.commit(tx).await?;
            }
        }
        Ok(Published {
            event_id,
            subscribers: targets.len(),
        })
    }

    /// A subscriber named `name` with the default options; add handlers
    /// with [`Subscriber::on`], then [`Subscriber::run`].
    pub fn subscriber(&self, name: &str) -> Subscriber {
        Subscriber::new(self.clone(), name, BusOptions::default())
    }

    /// A subscriber with `options`.
    pub fn subscriber_with(&self, name: &str, options: BusOptions) -> Subscriber {
        Subscriber::new(self.clone(), name, options)
    }
}
