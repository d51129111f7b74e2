//! Answering requests: a receive loop that runs each request's handler in a
//! task of its own, up to a limit, and acks what was answered with its next
//! receive.

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tidings_core::{Broker, ConsumerName, Delivery, Error, GroupName, OutgoingMessage, QueueName};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::consumer::{Consumer, ConsumerOptions, MissingQueue, Queue};

use super::{
    CORRELATION_HEADER, DEADLINE_HEADER, REPLY_TO_HEADER, Rpc, RpcError, STATUS_HEADER,
    request_queue,
};

/// Requests one server handles at a time.
const CONCURRENCY: usize = 64;
/// How long one receive waits before the loop looks at the stop token again.
const POLL: Duration = Duration::from_millis(500);

type BoxedHandler = Arc<
    dyn Fn(Delivery) -> std::pin::Pin<Box<dyn Future<Output = Result<String, String>> + Send>>
        + Send
        + Sync,
>;

/// A running server of one endpoint; [`stop`](Self::stop) lets requests in
/// progress finish and acks them.
pub struct RpcServer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl RpcServer {
    /// Stops taking requests, waits for those in progress, acks them.
    pub async fn stop(self) {
        self.stop.cancel();
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
        let stop = CancellationToken::new();
        let consumer = ConsumerName::new(crate::ids::process_unique("server"))?;
        let options = ConsumerOptions {
            max_in_flight: CONCURRENCY,
            poll: POLL,
            missing_queue: MissingQueue::Wait,
        };
        let requests = Queue::new(self.inner.broker.clone(), queue).consumer_until(
            GroupName::new("servers")?,
            consumer,
            options,
            stop.clone(),
        );
        let task = tokio::spawn(serve_loop(self.inner.broker.clone(), requests, boxed));
        Ok(RpcServer { stop, task })
    }
}

/// Each request in a task of its own (up to [`CONCURRENCY`]); one answered
/// is acked with the next receive.
async fn serve_loop(broker: Arc<dyn Broker>, mut requests: Consumer, handler: BoxedHandler) {
    let mut answering = JoinSet::new();
    while let Some(request) = requests.next().await {
        let (broker, handler) = (broker.clone(), handler.clone());
        answering.spawn(async move {
            // Unanswered (the reply could not be sent): not acked, so it
            // comes back after the visibility timeout.
            if answer(&*broker, &handler, request.delivery().clone()).await {
                request.ack();
            }
        });
        while answering.try_join_next().is_some() {}
    }
    while answering.join_next().await.is_some() {}
    requests.stop().await;
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
