//! Answering requests: a receive loop that runs each request's handler in a
//! task of its own, up to a limit, and acks what was answered with its next
//! receive.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tidings_core::{
    Broker, ConsumerName, Delivery, Error, GroupName, MessageId, OutgoingMessage, QueueName,
    ReceiveOptions,
};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::trouble::Trouble;

use super::{
    CORRELATION_HEADER, DEADLINE_HEADER, REPLY_TO_HEADER, Rpc, RpcError, STATUS_HEADER,
    request_queue,
};

/// Requests one server handles at a time.
const CONCURRENCY: usize = 64;
/// How long one receive waits before the loop looks at `stopping` again.
const POLL: Duration = Duration::from_millis(500);

type BoxedHandler = Arc<
    dyn Fn(Delivery) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// A running server of one endpoint; [`stop`](Self::stop) lets requests in
/// progress finish and acks them.
pub struct RpcServer {
    stopping: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl RpcServer {
    /// Stops taking requests, waits for those in progress, acks them.
    pub async fn stop(self) {
        self.stopping.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

impl Rpc {
    /// Answers requests to `service`'s `endpoint` with `handler`. A request
    /// that does not deserialize into `Req` is answered with an error; so is
    /// a handler that fails or panics (the caller gets
    /// [`RpcError::Remote`]). Requests whose caller has given up are
    /// skipped.
    pub async fn serve<Req, Resp, E, F, Fut>(
        &self,
        service: &str,
        endpoint: &str,
        handler: F,
    ) -> Result<RpcServer, RpcError>
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + Send + 'static,
        E: Display + Send + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, E>> + Send + 'static,
    {
        let queue = request_queue(service, endpoint)?;
        self.ensure_queue(&queue).await?;
        let handler = Arc::new(handler);
        let boxed: BoxedHandler = Arc::new(move |request: Delivery| {
            let handler = handler.clone();
            Box::pin(async move {
                let req: Req = request
                    .payload
                    .json()
                    .map_err(|e| format!("invalid request: {e}"))?;
                let resp = handler(req).await.map_err(|e| e.to_string())?;
                serde_json::to_string(&resp).map_err(|e| format!("cannot encode the reply: {e}"))
            })
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let consumer = ConsumerName::new(crate::ids::process_unique("server"))?;
        let task = tokio::spawn(serve_loop(
            self.inner.broker.clone(),
            queue,
            consumer,
            boxed,
            stopping.clone(),
        ));
        Ok(RpcServer { stopping, task })
    }
}

async fn serve_loop(
    broker: Arc<dyn Broker>,
    queue: QueueName,
    consumer: ConsumerName,
    handler: BoxedHandler,
    stopping: Arc<AtomicBool>,
) {
    let Ok(group) = GroupName::new("servers") else {
        return;
    };
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<MessageId>();
    let mut handled: Vec<MessageId> = Vec::new();
    let mut trouble = Trouble::default();
    while !stopping.load(Ordering::Relaxed) {
        // Take as many requests as there are free slots (at least one).
        let Ok(first) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut permits = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        while let Ok(id) = done_rx.try_recv() {
            handled.push(id);
        }
        let options = ReceiveOptions::new(permits.len(), POLL);
        // Not raced against the stop signal: a receive dropped halfway could
        // leave requests taken but unanswered until the visibility timeout.
        let received = broker
            .ack_and_receive(&queue, &group, &consumer, &handled, options)
            .await;
        let requests = match received {
            Ok((_, requests)) => {
                handled.clear();
                trouble.recovered("rpc server", &queue);
                requests
            }
            Err(e) => {
                trouble.failed("rpc server", &queue, &e).await;
                continue;
            }
        };
        for (request, permit) in requests.into_iter().zip(permits) {
            let (broker, handler, done) = (broker.clone(), handler.clone(), done_tx.clone());
            tokio::spawn(async move {
                let id = request.id.clone();
                // Unanswered (the reply could not be sent): not acked, so
                // it comes back after the visibility timeout.
                if answer(&*broker, &handler, request).await {
                    let _ = done.send(id);
                }
                drop(permit);
            });
        }
    }
    // Wait for the requests in progress, then ack everything answered.
    let _ = slots
        .acquire_many(u32::try_from(CONCURRENCY).unwrap_or(u32::MAX))
        .await;
    drop(done_tx);
    while let Some(id) = done_rx.recv().await {
        handled.push(id);
    }
    if !handled.is_empty()
        && let Err(e) = broker.ack(&queue, &group, &handled).await
    {
        tracing::warn!(queue = %queue, error = %e, "cannot ack answered requests; they will be answered again");
    }
}

/// Runs the handler and sends the reply (unless the caller gave up).
/// Returns whether the request is settled.
async fn answer(broker: &dyn Broker, handler: &BoxedHandler, request: Delivery) -> bool {
    let header = |name: &str| request.headers.get(name).cloned();
    let (Some(id), Some(reply_to)) = (header(CORRELATION_HEADER), header(REPLY_TO_HEADER)) else {
        tracing::warn!(queue = %request.queue, "a request without correlation id or reply address; dropped");
        return true;
    };
    let deadline = header(DEADLINE_HEADER).and_then(|d| d.parse::<u64>().ok());
    if deadline.is_some_and(|d| d <= tidings_core::Timestamp::now().as_millis()) {
        return true;
    }
    let queue = request.queue.clone();
    let outcome = match tokio::spawn((handler)(request)).await {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => Err("the handler panicked".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let (status, body) = match outcome {
        Ok(body) => ("ok", body),
        Err(message) => ("error", serde_json::json!({ "error": message }).to_string()),
    };
    let reply = tidings_core::Payload::from_json_str(body).map(|p| {
        OutgoingMessage::new(p)
            .header(CORRELATION_HEADER, id)
            .header(STATUS_HEADER, status)
    });
    let sent = match (QueueName::new(reply_to), reply) {
        (Ok(to), Ok(reply)) => broker.send(&to, reply).await.map(|_| ()),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match sent {
        // The caller closed: nobody to answer.
        Ok(()) | Err(Error::QueueNotFound(_)) => true,
        Err(e) => {
            tracing::warn!(queue = %queue, error = %e, "cannot send a reply; the request will be answered again");
            false
        }
    }
}
