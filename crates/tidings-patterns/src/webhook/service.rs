//! The workers of a webhook service: tasks per route (one by default), each
//! waiting on its own queue, so an idle route never delays a busy one (LeanMQ polls its
//! routes one after another).

use std::time::Duration;

use tidings_core::{ConsumerName, Nack};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Outcome, Route, Webhook, WebhookOptions};
use crate::consumer::{ConsumerOptions, Message, MissingQueue, Queue};
use crate::resilience::RetryPolicy;

/// How long a worker waits for messages before it looks at the stop token:
/// the most a stop waits for an idle route.
const POLL: Duration = Duration::from_millis(250);

/// A running webhook service.
pub struct WebhookService {
    webhook: Webhook,
    stop: CancellationToken,
    workers: JoinSet<()>,
}

impl WebhookService {
    pub(super) fn start(webhook: Webhook) -> Self {
        let stop = CancellationToken::new();
        let mut workers = JoinSet::new();
        for route in webhook.routes.values() {
            for _ in 0..webhook.options.workers.max(1) {
                workers.spawn(run_route(
                    webhook.clone(),
                    route.clone(),
                    consumer_name(),
                    stop.clone(),
                ));
            }
        }
        Self {
            webhook,
            stop,
            workers,
        }
    }

    /// The webhook, to send with.
    pub fn webhook(&self) -> &Webhook {
        &self.webhook
    }

    /// Stops taking messages, lets the handlers in flight finish and their
    /// messages be acknowledged (or retried), then returns.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.workers.join_next().await.is_some() {}
    }

    /// Waits until the service stops (workers end only when stopped).
    pub async fn join(mut self) {
        while self.workers.join_next().await.is_some() {}
    }
}

/// `pid-random`: unique per process, so Redis tracks each worker's pending
/// messages apart (LeanMQ shares one `default-consumer`).
fn consumer_name() -> ConsumerName {
    ConsumerName::new(crate::ids::process_unique("tidings"))
        .unwrap_or_else(|_| ConsumerName::new("tidings").unwrap_or_else(|_| unreachable!()))
}

/// One worker of a route: each message's handler in a task of its own, up
/// to `concurrency` at once.
async fn run_route(
    webhook: Webhook,
    route: Route,
    consumer: ConsumerName,
    stop: CancellationToken,
) {
    let options = ConsumerOptions {
        max_in_flight: webhook.options.concurrency.max(1),
        poll: POLL,
        // Its storage lost it (a Redis flush): made again, as at start.
        missing_queue: MissingQueue::Create(webhook.options.queue_config()),
    };
    let queue = Queue::new(webhook.broker.clone(), route.queue.clone());
    let mut messages = queue.consumer_until(route.group.clone(), consumer, options, stop);
    let mut handlers = JoinSet::new();
    while let Some(message) = messages.next().await {
        handlers.spawn(handle(route.clone(), webhook.options.clone(), message));
        while handlers.try_join_next().is_some() {}
    }
    while handlers.join_next().await.is_some() {}
    messages.stop().await;
}

/// Runs a message's handler (a panic fails the message, not the worker),
/// then acks it, or retries or dead-letters it.
async fn handle(route: Route, options: WebhookOptions, message: Message) {
    let outcome = match tokio::spawn((route.handler)(message.payload.clone())).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => {
            Outcome::Failed(format!("the handler panicked: {}", panic_text(e)))
        }
        Err(e) => Outcome::Failed(e.to_string()),
    };
    let attempt = message.delivery_count;
    let nack = match outcome {
        Outcome::Done => return message.ack(),
        Outcome::Invalid(why) => Nack::DeadLetter { reason: why },
        Outcome::Failed(why) if attempt >= options.max_attempts => Nack::DeadLetter {
            reason: format!("Processing error: {why}"),
        },
        Outcome::Failed(why) => {
            tracing::debug!(path = %route.path, attempt, error = %why, "webhook handler failed; will retry");
            Nack::Retry {
                delay: retry_delay(&options, attempt),
            }
        }
    };
    if let Err(e) = message.nack(nack).await {
        // Not lost: the message comes back after the visibility timeout.
        tracing::warn!(path = %route.path, error = %e, "cannot give a failed message back");
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// The delay before attempt `attempt + 1`: exponential with jitter.
fn retry_delay(options: &WebhookOptions, attempt: u32) -> Duration {
    RetryPolicy::new(attempt.max(1).saturating_add(1))
        .first_delay(options.first_retry)
        .max_delay(options.max_retry)
        .delays()
        .last()
        .unwrap_or(options.max_retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_within_bounds() {
        let options = WebhookOptions {
            first_retry: Duration::from_millis(100),
            max_retry: Duration::from_secs(1),
            ..WebhookOptions::default()
        };
        let first = retry_delay(&options, 1);
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        let third = retry_delay(&options, 3);
        assert!(third >= Duration::from_millis(400), "{third:?}");
        let late = retry_delay(&options, 30);
        assert!(late <= Duration::from_secs(2), "{late:?}");
    }
}
