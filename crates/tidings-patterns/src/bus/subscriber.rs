//! Running a subscriber: one process at a time consumes a subscription (the
//! holder of its lease; others stand by and take over when it stops or
//! dies). One task receives the events in order and hands each to a lane
//! chosen by its ordering key; each lane handles its events one at a time,
//! so events of one key keep their order. What was handled is acked with
//! the next receive.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tidings_core::{
    Broker, ConsumerName, Delivery, GroupName, Nack, Payload, QueueName, Result, TableName,
};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{
    BusOptions, Event, EventBus, KEY_HEADER, TYPE_HEADER, UnknownEvents, subscription_queue,
};
use crate::consumer::{ConsumerOptions, Message, MissingQueue, Queue};
use crate::handler::{HandlerResult, Outcome};
use crate::lease::{Lease, Taken};
use crate::resilience::RetryPolicy;

/// How long one receive waits before the loop looks at the stop token again.
const POLL: Duration = Duration::from_millis(500);
/// The table of the subscriptions' leases.
const LEASES: &str = "bus.leases";
/// Events received ahead of the handlers, per worker.
const AHEAD_PER_WORKER: usize = 32;

type BoxedHandler =
    Arc<dyn Fn(Payload) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// Handlers by event type, for one subscriber name.
pub struct Subscriber {
    bus: EventBus,
    name: String,
    options: BusOptions,
    handlers: HashMap<&'static str, BoxedHandler>,
    extra_types: Vec<String>,
}

impl Subscriber {
    pub(super) fn new(bus: EventBus, name: &str, options: BusOptions) -> Self {
        Self {
            bus,
            name: name.to_owned(),
            options,
            handlers: HashMap::new(),
            extra_types: Vec::new(),
        }
    }

    /// Handles events of type `E` with `handler` (returning `()` or
    /// `Result<(), impl Display>`). Replaces an earlier handler of `E`.
    pub fn on<E, F, Fut>(&mut self, handler: F) -> &mut Self
    where
        E: Event,
        F: Fn(E) -> Fut + Send + Sync + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HandlerResult,
    {
        let handler = Arc::new(handler);
        let boxed: BoxedHandler = Arc::new(move |payload: Payload| match payload.json::<E>() {
            Ok(event) => {
                let handler = handler.clone();
                Box::pin(async move { handler(event).await.outcome() })
            }
            Err(e) => Box::pin(std::future::ready(Outcome::Invalid(format!(
                "Invalid payload: {e}"
            )))),
        });
        self.handlers.insert(E::TYPE, boxed);
        self
    }

    /// Also subscribes to `event_type` without a handler: such events are
    /// acknowledged or dead-lettered as [`BusOptions::unknown`] says.
    pub fn also_subscribe(&mut self, event_type: &str) -> &mut Self {
        self.extra_types.push(event_type.to_owned());
        self
    }

    /// Makes the durable subscription (the handled types, and any added by
    /// [`also_subscribe`](Self::also_subscribe)) and starts handling.
    pub async fn run(self) -> Result<BusService> {
        let mut types: Vec<&str> = self.handlers.keys().copied().collect();
        types.extend(self.extra_types.iter().map(String::as_str));
        self.bus
            .subscribe_with(&self.name, &types, &self.options)
            .await?;
        let queue = subscription_queue(&self.name)?;
        let group = GroupName::new("subscriber")?;
        let consumer = ConsumerName::new(crate::ids::process_unique(&self.name))?;
        let stop = CancellationToken::new();
        let run = Run {
            broker: self.bus.broker.clone(),
            queue,
            group,
            consumer,
            options: self.options,
            handlers: Arc::new(self.handlers),
        };
        let task = tokio::spawn(run.serve(stop.clone()));
        Ok(BusService { stop, task })
    }
}

/// A running subscriber.
pub struct BusService {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl BusService {
    /// Stops receiving, lets the handlers finish what was received, acks it,
    /// and lets the subscription's lease go (a standby takes over at once).
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Stops at once, as if the process died: nothing more is acked, the
    /// lease is not released. Events in flight come back after the
    /// visibility timeout; a standby takes over once the lease expires.
    pub async fn abort(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

struct Run {
    broker: Arc<dyn Broker>,
    queue: QueueName,
    group: GroupName,
    consumer: ConsumerName,
    options: BusOptions,
    handlers: Arc<HashMap<&'static str, BoxedHandler>>,
}

impl Run {
    /// Consumes while this process holds the subscription's lease; stands by
    /// while another one does.
    async fn serve(self, stop: CancellationToken) {
        let run = Arc::new(self);
        let lease = match TableName::new(LEASES) {
            Ok(table) => Lease::new(
                run.broker.clone(),
                table,
                run.queue.as_str(),
                run.consumer.as_str(),
                run.options.lease_ttl,
            ),
            Err(e) => {
                tracing::error!(queue = %run.queue, error = %e, "cannot name the subscription's lease");
                return;
            }
        };
        lease
            .run_while_held(&stop, |taken, holding| {
                let run = run.clone();
                async move {
                    if taken == Taken::TakenOver {
                        // The last holder stopped renewing, maybe with events
                        // in flight: they come back at their place once their
                        // visibility timeout has passed. Receiving before would
                        // overtake them. The store tells how long that is;
                        // if it cannot, the whole timeout.
                        let wait = crate::lease::in_flight_wait(&*run.broker, &run.queue, &run.group)
                            .await
                            .unwrap_or(run.options.visibility_timeout);
                        tracing::info!(queue = %run.queue, ?wait, "took over the subscription; waiting for what its last holder had in flight");
                        tokio::select! {
                            () = holding.cancelled() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                    }
                    run.dispatch(holding).await;
                }
            })
            .await;
    }

    /// Receives and handles until `holding` is cancelled: each event to the
    /// lane of its key, handled there in order.
    async fn dispatch(self: Arc<Self>, holding: CancellationToken) {
        let run = self;
        let workers = run.options.workers.max(1);
        let options = ConsumerOptions {
            max_in_flight: workers * AHEAD_PER_WORKER,
            poll: POLL,
            missing_queue: MissingQueue::Wait,
        };
        let queue = Queue::new(run.broker.clone(), run.queue.clone());
        let mut events =
            queue.consumer_until(run.group.clone(), run.consumer.clone(), options, holding);
        let mut lanes = Vec::with_capacity(workers);
        let mut lane_tasks = JoinSet::new();
        for _ in 0..workers {
            let (tx, rx) = mpsc::unbounded_channel::<Message>();
            lanes.push(tx);
            lane_tasks.spawn(run.clone().lane(rx));
        }
        let mut next_lane = 0usize;
        while let Some(event) = events.next().await {
            let lane = match event.headers.get(KEY_HEADER) {
                Some(key) => lane_of(key, workers),
                None => {
                    next_lane = (next_lane + 1) % workers;
                    next_lane
                }
            };
            // A lane ends only when its sender is dropped, below.
            let _ = lanes[lane].send(event);
        }
        // Let the lanes finish what they were given, then ack it.
        drop(lanes);
        while lane_tasks.join_next().await.is_some() {}
        events.stop().await;
    }

    /// Handles one lane's events in order.
    async fn lane(self: Arc<Self>, mut events: mpsc::UnboundedReceiver<Message>) {
        while let Some(event) = events.recv().await {
            match self.handle(event.delivery()).await {
                None => event.ack(),
                Some(reason) => {
                    let nack = Nack::DeadLetter { reason };
                    if let Err(e) = event.nack(nack).await {
                        tracing::warn!(queue = %self.queue, error = %e, "cannot dead-letter an event; it will be delivered again");
                    }
                }
            }
        }
    }

    /// Runs the event's handler, retrying failures in place. Returns the
    /// reason to dead-letter it, or `None` if it is done with.
    async fn handle(&self, event: &Delivery) -> Option<String> {
        let event_type = event.headers.get(TYPE_HEADER).cloned().unwrap_or_default();
        let Some(handler) = self.handlers.get(event_type.as_str()) else {
            return match self.options.unknown {
                UnknownEvents::Acknowledge => {
                    tracing::warn!(queue = %self.queue, event_type, "no handler for this event type; acknowledged");
                    None
                }
                UnknownEvents::DeadLetter => Some(format!("unknown event type {event_type:?}")),
            };
        };
        let mut delays = RetryPolicy::new(self.options.max_attempts)
            .first_delay(self.options.first_retry)
            .max_delay(self.options.max_retry)
            .delays();
        loop {
            let outcome = match tokio::spawn(handler(event.payload.clone())).await {
                Ok(outcome) => outcome,
                Err(e) if e.is_panic() => Outcome::Failed("the handler panicked".into()),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            match outcome {
                Outcome::Done => return None,
                Outcome::Invalid(why) => return Some(why),
                Outcome::Failed(why) => match delays.next() {
                    Some(delay) => {
                        tracing::debug!(queue = %self.queue, error = %why, "bus handler failed; retrying");
                        tokio::time::sleep(delay).await;
                    }
                    None => return Some(format!("Processing error: {why}")),
                },
            }
        }
    }
}

/// The lane of an ordering key.
fn lane_of(key: &str, lanes: usize) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    usize::try_from(h.finish() % (lanes as u64)).unwrap_or(0)
}
