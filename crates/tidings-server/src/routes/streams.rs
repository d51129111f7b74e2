//! Streaming receive: `GET /v1/queues/{name}/stream` pushes a consumer's
//! messages as server-sent events, as many as it has credit for; the
//! consumer adds credit with `POST /v1/queues/{name}/stream/credit` and acks
//! with `POST /v1/queues/{name}/ack`. A slow consumer is never sent more than
//! it asked for: what it has not taken stays in the queue for the group's
//! other consumers.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tidings_core::{Broker, ConsumerName, GroupName, QueueName, ReceiveOptions};
use tokio::sync::{Semaphore, mpsc};

use super::queues::{MAX_RECEIVE, queue_name};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::request::{Call, Path};
use crate::views::{Credit, DeliveryView, StreamEvent};

/// How long one receive inside a stream waits before it looks whether the
/// consumer is still there.
const STREAM_POLL: Duration = Duration::from_secs(1);

fn parse_credit(call: &Call, name: &str) -> ApiResult<usize> {
    call.param(name)
        .map_or(Ok(0), |v| v.parse::<usize>())
        .ok()
        .filter(|n| *n <= Semaphore::MAX_PERMITS)
        .ok_or_else(|| ApiError::bad_request(format!("{name} - must be a count of messages")))
}

#[utoipa::path(get, path = "/v1/queues/{name}/stream", tag = "queues",
    params(("name" = String, Path), ("group" = String, Query), ("consumer" = String, Query), ("credit" = Option<usize>, Query, description = "Messages it may be sent before it asks for more (default 0)")),
    responses((status = 200, description = "One `message` event per delivery (its data: a `DeliveryView`); an `error` event (its data: an `ErrorBody`) if the broker fails or the queue is deleted, and the stream ends", content_type = "text/event-stream", body = StreamEvent), (status = 409, description = "This consumer already has a stream open", body = ErrorBody), (status = 404, description = "No such queue", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn stream(
    Path(name): Path<String>,
    call: Call,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let queue = queue_name(&call, &name)?;
    let group = GroupName::new(call.param("group").unwrap_or_default())?;
    let consumer = ConsumerName::new(call.param("consumer").unwrap_or_default())?;
    let credit = parse_credit(&call, "credit")?;
    // Fails now, not inside the stream, if the queue is not there.
    call.state.hub.broker().queue_info(&queue).await?;
    let key = (queue.clone(), group.clone(), consumer.clone());
    let semaphore = Arc::new(Semaphore::new(credit));
    {
        let mut open = call.state.streams.lock();
        if open.contains_key(&key) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!("consumer {consumer} of group {group} already has a stream open"),
            ));
        }
        open.insert(key.clone(), semaphore.clone());
    }
    let (tx, rx) = mpsc::channel::<Event>(16);
    let broker = call.state.hub.broker().clone();
    let streams = call.state.streams.clone();
    tokio::spawn(async move {
        push(&*broker, &queue, &group, &consumer, &semaphore, &tx).await;
        streams.lock().remove(&key);
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|event| (Ok(event), rx))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Receives as much as there is credit for and sends it on, until the
/// consumer goes away.
async fn push(
    broker: &dyn Broker,
    queue: &QueueName,
    group: &GroupName,
    consumer: &ConsumerName,
    credit: &Semaphore,
    tx: &mpsc::Sender<Event>,
) {
    loop {
        // At least one credit, or the consumer left.
        let first = tokio::select! {
            p = credit.acquire() => p,
            () = tx.closed() => return,
        };
        let Ok(first) = first else { return };
        first.forget();
        let mut taken = 1;
        while taken < MAX_RECEIVE
            && let Ok(p) = credit.try_acquire()
        {
            p.forget();
            taken += 1;
        }
        if tx.is_closed() {
            return;
        }
        let got = broker
            .receive(
                queue,
                group,
                consumer,
                ReceiveOptions::new(taken, STREAM_POLL),
            )
            .await;
        let deliveries = match got {
            Ok(d) => d,
            Err(e) => {
                let body = ApiError::from(e).into_logged_body();
                let _ = tx
                    .send(Event::default().event("error").data(body.to_string()))
                    .await;
                return;
            }
        };
        // Credit not used by this receive goes back.
        credit.add_permits(taken - deliveries.len());
        for d in deliveries {
            let Ok(view) = DeliveryView::of(d) else {
                continue;
            };
            let data = serde_json::to_string(&view).unwrap_or_default();
            // A consumer gone now leaves what it was sent in flight: it comes
            // back to the group after the visibility timeout.
            if tx
                .send(Event::default().event("message").data(data))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// `POST /v1/queues/{name}/stream/credit`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoreCredit {
    /// The group of the stream.
    group: String,
    /// The consumer whose stream it is.
    consumer: String,
    /// How many more messages it may be sent.
    credit: usize,
}

#[utoipa::path(post, path = "/v1/queues/{name}/stream/credit", tag = "queues", params(("name" = String, Path)), request_body = MoreCredit,
    responses((status = 200, description = "What the stream may still send", body = Credit), (status = 404, description = "No such stream open", body = ErrorBody), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "No valid credentials", body = ErrorBody)))]
pub async fn credit(Path(name): Path<String>, call: Call) -> ApiResult<Json<Credit>> {
    let queue = queue_name(&call, &name)?;
    let c: MoreCredit = call.json()?;
    let key = (
        queue,
        GroupName::new(c.group)?,
        ConsumerName::new(c.consumer)?,
    );
    let semaphore = call
        .state
        .streams
        .lock()
        .get(&key)
        .cloned()
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "no stream is open for this consumer",
            )
        })?;
    if c.credit > Semaphore::MAX_PERMITS - semaphore.available_permits() {
        return Err(ApiError::bad_request("credit - too large"));
    }
    semaphore.add_permits(c.credit);
    Ok(Json(Credit {
        credit: semaphore.available_permits(),
    }))
}
