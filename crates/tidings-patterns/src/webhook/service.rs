//! The workers of a webhook service: tasks per route (one by default), each
//! waiting on its own queue, so an idle route never delays a busy one (LeanMQ polls its
//! routes one after another).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tidings_core::{ConsumerName, Delivery, Error, MessageId, Nack, ReceiveOptions};
use tokio::task::JoinSet;

use super::{Outcome, Route, Webhook, WebhookOptions};
use crate::resilience::RetryPolicy;
use crate::trouble::Trouble;

/// How long a worker waits for messages before it looks at the stop flag:
/// the most a stop waits for an idle route.
const POLL: Duration = Duration::from_millis(250);

/// A running webhook service.
pub struct WebhookService {
    webhook: Webhook,
    stopping: Arc<AtomicBool>,
    workers: JoinSet<()>,
}

impl WebhookService {
    pub(super) fn start(webhook: Webhook) -> Self {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut workers = JoinSet::new();
        for route in webhook.routes.values() {
            for _ in 0..webhook.options.workers.max(1) {
                workers.spawn(run_route(
                    webhook.clone(),
                    route.clone(),
                    consumer_name(),
                    stopping.clone(),
                ));
            }
        }
        Self {
            webhook,
            stopping,
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
        self.stopping.store(true, Ordering::Relaxed);
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

async fn run_route(
    webhook: Webhook,
    route: Route,
    consumer: ConsumerName,
    stopping: Arc<AtomicBool>,
) {
    let broker = webhook.broker.clone();
    let options = webhook.options.clone();
    let mut trouble = Trouble::default();
    // Handled messages are acked with the next receive (one round trip on
    // Redis), or at the end.
    let mut handled: Vec<MessageId> = Vec::new();
    while !stopping.load(Ordering::Relaxed) {
        let receive = ReceiveOptions::new(options.concurrency.max(1), POLL);
        let deliveries = match broker
            .ack_and_receive(&route.queue, &route.group, &consumer, &handled, receive)
            .await
        {
            Ok((_, d)) => {
                handled.clear();
                d
            }
            Err(e) => {
                if matches!(e, Error::QueueNotFound(_)) {
                    let _ = webhook.ensure_queue(&route.queue).await;
                }
                trouble.failed("webhook worker", &route.path, &e).await;
                continue;
            }
        };
        trouble.recovered("webhook worker", &route.path);
        if deliveries.is_empty() {
            continue;
        }
        handled = handle_batch(&webhook, &route, &options, deliveries).await;
    }
    if !handled.is_empty()
        && let Err(e) = broker.ack(&route.queue, &route.group, &handled).await
    {
        tracing::warn!(path = %route.path, error = %e, "cannot acknowledge handled messages; they will be redelivered");
    }
}

/// Runs the handlers of a batch concurrently, then retries or dead-letters
/// each failed message. Returns the ids of those handled, to be acked.
async fn handle_batch(
    webhook: &Webhook,
    route: &Route,
    options: &WebhookOptions,
    deliveries: Vec<Delivery>,
) -> Vec<MessageId> {
    // Each handler in a task of its own: they run concurrently, and a
    // panicking handler fails its message, not the worker.
    let running: Vec<_> = deliveries
        .iter()
        .map(|d| tokio::spawn((route.handler)(d.payload.clone())))
        .collect();
    let mut outcomes = Vec::with_capacity(running.len());
    for task in running {
        outcomes.push(match task.await {
            Ok(outcome) => outcome,
            Err(e) if e.is_panic() => {
                Outcome::Failed(format!("the handler panicked: {}", panic_text(e)))
            }
            Err(e) => Outcome::Failed(e.to_string()),
        });
    }
    let broker = &webhook.broker;
    let mut done: Vec<MessageId> = Vec::new();
    for (delivery, outcome) in deliveries.into_iter().zip(outcomes) {
        let nack = match outcome {
            Outcome::Done => {
                done.push(delivery.id);
                continue;
            }
            Outcome::Invalid(why) => Nack::DeadLetter { reason: why },
            Outcome::Failed(why) if delivery.delivery_count >= options.max_attempts => {
                Nack::DeadLetter {
                    reason: format!("Processing error: {why}"),
                }
            }
            Outcome::Failed(why) => {
                tracing::debug!(path = %route.path, attempt = delivery.delivery_count, error = %why, "webhook handler failed; will retry");
                Nack::Retry {
                    delay: retry_delay(options, delivery.delivery_count),
                }
            }
        };
        if let Err(e) = broker
            .nack(&route.queue, &route.group, &delivery.id, nack)
            .await
        {
            // Not lost: the message comes back after the visibility timeout.
            tracing::warn!(path = %route.path, error = %e, "cannot give a failed message back");
        }
    }
    done
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
