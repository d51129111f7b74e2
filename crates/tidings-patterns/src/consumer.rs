//! A consumer of one group of a queue: a [`Stream`] of messages, each acked
//! or nacked on its own, in the spirit of async-nats' pull consumer. Every
//! receive loop of the patterns (webhook routes, RPC servers and reply
//! listeners, bus subscribers) is this one.
//!
//! The loop takes as many deliveries as there is room for (`max_in_flight`
//! messages handed out and not yet settled), acks what was acked since with
//! the same call ([`Broker::ack_and_receive`]: one round trip on Redis),
//! rides out a failing broker (one log line per incident, then retries
//! backing off from 100 ms to 5 s), and on [`Consumer::stop`] takes no more,
//! waits for what it handed out to be settled, and acks it.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use tidings_core::{Broker, ConsumerName, GroupName, OutgoingMessage, QueueConfig, QueueName};
//! use tidings_patterns::consumer::{ConsumerOptions, Queue};
//!
//! let broker: Arc<dyn Broker> = Arc::new(tidings_embedded::EmbeddedBroker::in_memory());
//! let orders = QueueName::new("orders")?;
//! broker.create_queue(&orders, QueueConfig::default()).await?;
//! broker.send(&orders, OutgoingMessage::json(&7)?).await?;
//!
//! let queue = Queue::new(broker.clone(), orders);
//! let mut consumer = queue.consumer(GroupName::new("billing")?, ConsumerName::new("w-1")?, ConsumerOptions::default());
//! let message = consumer.next().await.expect("one message");
//! assert_eq!(message.payload.json::<i32>()?, 7);
//! message.ack();
//! consumer.stop().await; // acks it, then returns
//! assert_eq!(broker.queue_info(queue.name()).await?.length, 0);
//! # Ok::<_, tidings_core::Error>(())
//! # }).unwrap();
//! ```

use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tidings_core::{
    Broker, ConsumerName, Delivery, Error, GroupName, MessageId, Nack, QueueConfig, QueueName,
    ReceiveOptions, Result,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::trouble::Trouble;

/// A queue of a broker, to consume from.
#[derive(Clone)]
pub struct Queue {
    broker: Arc<dyn Broker>,
    name: QueueName,
}

impl Queue {
    /// The queue `name` of `broker`.
    pub fn new(broker: Arc<dyn Broker>, name: QueueName) -> Self {
        Self { broker, name }
    }

    /// Its name.
    pub fn name(&self) -> &QueueName {
        &self.name
    }

    /// Starts consuming as `consumer` of `group` (created on first use).
    pub fn consumer(
        &self,
        group: GroupName,
        consumer: ConsumerName,
        options: ConsumerOptions,
    ) -> Consumer {
        self.consumer_until(group, consumer, options, CancellationToken::new())
    }

    /// [`Queue::consumer`], stopped by `stop` as well: once it is
    /// cancelled the consumer takes no more, and its stream ends after the
    /// messages already taken (a service's workers drain it, then
    /// [`Consumer::stop`] acks what they acked).
    pub fn consumer_until(
        &self,
        group: GroupName,
        consumer: ConsumerName,
        options: ConsumerOptions,
        stop: CancellationToken,
    ) -> Consumer {
        Consumer::start(self.clone(), group, consumer, options, stop)
    }
}

/// What a consumer does when its queue is missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum MissingQueue {
    /// Tries again (with the backoff of any failure): the queue may come.
    #[default]
    Wait,
    /// Creates it with these settings (after its storage lost it).
    Create(QueueConfig),
    /// Ends the stream.
    End,
}

/// How a consumer takes messages.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Messages handed out and not yet acked, nacked or dropped: the loop
    /// takes no more until some are (at least 1).
    pub max_in_flight: usize,
    /// How long one receive waits for messages: the most a stop waits for
    /// an idle queue.
    pub poll: Duration,
    /// When the queue is missing.
    pub missing_queue: MissingQueue,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 64,
            poll: Duration::from_millis(500),
            missing_queue: MissingQueue::Wait,
        }
    }
}

/// A running consumer: a [`Stream`] of [`Message`]s.
pub struct Consumer {
    messages: mpsc::Receiver<Message>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Consumer {
    fn start(
        queue: Queue,
        group: GroupName,
        consumer: ConsumerName,
        options: ConsumerOptions,
        stop: CancellationToken,
    ) -> Self {
        let room = options.max_in_flight.max(1);
        let (tx, messages) = mpsc::channel(room);
        let (acked_tx, acked_rx) = mpsc::unbounded_channel();
        let run = Run {
            target: Arc::new(Target {
                queue,
                group,
                acked: acked_tx,
            }),
            consumer,
            room: Arc::new(Semaphore::new(room)),
            capacity: room,
            options,
        };
        let task = tokio::spawn(run.serve(tx, acked_rx, stop.clone()));
        Self {
            messages,
            stop,
            task,
        }
    }

    /// The next message, or `None` once the consumer has ended.
    pub async fn next(&mut self) -> Option<Message> {
        self.messages.recv().await
    }

    /// A token that, cancelled, makes the consumer take no more: its
    /// stream ends after the messages already taken.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops taking messages; those taken but not handed out yet are given
    /// back at once (deliverable again, their count kept). Waits until every
    /// message handed out is acked, nacked or dropped, acks what was acked,
    /// and returns.
    pub async fn stop(mut self) {
        self.stop.cancel();
        self.messages.close();
        let mut unread = Vec::new();
        while let Some(message) = self.messages.recv().await {
            unread.push(message);
        }
        if let Some(first) = unread.first() {
            let target = first.target.clone();
            let ids: Vec<MessageId> = unread.iter().map(|m| m.delivery.id.clone()).collect();
            target.give_back(&ids).await;
        }
        drop(unread);
        let _ = self.task.await;
    }
}

impl Stream for Consumer {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.messages.poll_recv(cx)
    }
}

/// Where a message goes back to.
struct Target {
    queue: Queue,
    group: GroupName,
    /// Acks, sent with the loop's next receive.
    acked: mpsc::UnboundedSender<MessageId>,
}

impl Target {
    /// Gives messages taken but never handed out back at once.
    async fn give_back(&self, ids: &[MessageId]) {
        let again = Nack::Retry {
            delay: Duration::ZERO,
        };
        let broker = &self.queue.broker;
        if let Err(e) = broker
            .nack_many(&self.queue.name, &self.group, ids, again)
            .await
        {
            tracing::warn!(queue = %self.queue.name, error = %e, "cannot give back messages taken at stop; they come back after the visibility timeout");
        }
    }
}

/// One delivery handed out by a [`Consumer`]; derefs to the [`Delivery`].
/// Acking queues the ack for the consumer's next receive; dropping it
/// unsettled leaves it to come back after the visibility timeout. Either way
/// it makes room for another.
pub struct Message {
    delivery: Delivery,
    target: Arc<Target>,
    _room: OwnedSemaphorePermit,
}

impl Message {
    /// The delivery.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// Acks it with the consumer's next receive (or when it stops).
    pub fn ack(self) {
        // The loop outlives every message (it waits for them at its end).
        let _ = self.target.acked.send(self.delivery.id.clone());
    }

    /// Acks it now, waiting for the broker. Returns whether it was pending.
    pub async fn ack_now(self) -> Result<bool> {
        let t = &self.target;
        let ids = std::slice::from_ref(&self.delivery.id);
        Ok(t.queue.broker.ack(&t.queue.name, &t.group, ids).await? > 0)
    }

    /// Gives it back: to be retried after a delay, or dead-lettered.
    /// Returns whether it was pending.
    pub async fn nack(self, nack: Nack) -> Result<bool> {
        let t = &self.target;
        t.queue
            .broker
            .nack(&t.queue.name, &t.group, &self.delivery.id, nack)
            .await
    }
}

impl Deref for Message {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

/// The receive loop.
struct Run {
    target: Arc<Target>,
    consumer: ConsumerName,
    room: Arc<Semaphore>,
    capacity: usize,
    options: ConsumerOptions,
}

impl Run {
    async fn serve(
        self,
        out: mpsc::Sender<Message>,
        mut acked: mpsc::UnboundedReceiver<MessageId>,
        stop: CancellationToken,
    ) {
        let Target { queue, group, .. } = &*self.target;
        let mut to_ack: Vec<MessageId> = Vec::new();
        let mut trouble = Trouble::default();
        let place = queue.name.clone();
        'receiving: loop {
            let first = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                permit = self.room.clone().acquire_owned() => permit,
            };
            let Ok(first) = first else { break };
            let mut permits = vec![first];
            while let Ok(p) = self.room.clone().try_acquire_owned() {
                permits.push(p);
            }
            while let Ok(id) = acked.try_recv() {
                to_ack.push(id);
            }
            let options = ReceiveOptions::new(permits.len(), self.options.poll);
            // Not raced against the stop: a receive dropped halfway could
            // leave messages taken but never handed out until the
            // visibility timeout. A stop waits for at most one poll instead.
            let received = queue
                .broker
                .ack_and_receive(&queue.name, group, &self.consumer, &to_ack, options)
                .await;
            let deliveries = match received {
                Ok((_, deliveries)) => {
                    to_ack.clear();
                    trouble.recovered("consumer", &place);
                    deliveries
                }
                Err(Error::QueueNotFound(_)) if self.options.missing_queue == MissingQueue::End => {
                    break;
                }
                Err(e) => {
                    if let (Error::QueueNotFound(_), MissingQueue::Create(config)) =
                        (&e, &self.options.missing_queue)
                    {
                        let _ = queue.broker.create_queue(&queue.name, config.clone()).await;
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = trouble.failed("consumer", &place, &e) => continue,
                    }
                }
            };
            let mut deliveries = deliveries.into_iter().zip(permits);
            while let Some((delivery, room)) = deliveries.next() {
                let message = Message {
                    delivery,
                    target: self.target.clone(),
                    _room: room,
                };
                // The receiver is closed (stopped): what was taken goes back.
                if let Err(unsent) = out.send(message).await {
                    let mut ids = vec![unsent.0.delivery.id.clone()];
                    ids.extend(deliveries.map(|(d, _)| d.id));
                    drop(unsent);
                    self.target.give_back(&ids).await;
                    break 'receiving;
                }
            }
        }
        drop(out);
        // Everything handed out is settled once all the room is back.
        let capacity = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        let _ = self.room.acquire_many(capacity).await;
        while let Ok(id) = acked.try_recv() {
            to_ack.push(id);
        }
        if to_ack.is_empty() {
            return;
        }
        match queue.broker.ack(&queue.name, group, &to_ack).await {
            // Deleted meanwhile: nothing is left to ack.
            Ok(_) | Err(Error::QueueNotFound(_)) => {}
            Err(e) => {
                tracing::warn!(queue = %queue.name, error = %e, "cannot ack handled messages; they will be delivered again")
            }
        }
    }
}
