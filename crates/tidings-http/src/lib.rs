//! A [`Broker`] that talks to `tidings serve` over HTTP (the queue API under
//! `/v1/queues`, `/v1/transactions` and `/v1/tables`), so services in other
//! processes and on other machines use the same queues as in-process code,
//! with the same guarantees: the server's broker does the work.
//!
//! One pooled keep-alive connection set per `HttpBroker` (clones share it).
//! Long receives are the server's long poll (at most 30 s per request; longer
//! waits are several requests). Errors come back typed: the server sends a
//! `code` with every queue or record error.
//!
//! ```no_run
//! # async fn run() -> tidings_core::Result<()> {
//! use tidings_core::{Broker, OutgoingMessage, QueueConfig, QueueName};
//! let broker = tidings_http::HttpBroker::connect("http://127.0.0.1:3310")?
//!     .with_api_key("my-application-key");
//! let orders = QueueName::new("orders")?;
//! broker.create_queue(&orders, QueueConfig::default()).await?;
//! broker.send(&orders, OutgoingMessage::json(&serde_json::json!({"order": 7}))?).await?;
//! # Ok(()) }
//! ```

mod hub;
mod wire;

pub use hub::{EventQuery, GistQuery, HubClient, HubClientError, HubClientResult};

use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};
use tidings_core::{
    Broker, ConsumerName, DeadLetter, DeadLetterSelection, Delivery, Error, GroupName, MessageId,
    Nack, OutgoingMessage, Payload, PendingDelivery, QueueConfig, QueueInfo, QueueName,
    ReceiveOptions, Record, RecordScan, Result, SendReceipt, TableName, Transaction,
};
use tokio::time::Instant;

use wire::{
    Page, SendReceipts, message_json, selection_json, to_dead_letter, to_delivery, tx_op_json,
};

/// The longest one receive request waits (the server's limit).
const MAX_WAIT: Duration = Duration::from_secs(30);
/// The most items one request returns (the server's limit).
const MAX_PAGE: usize = 1000;
/// How long a request keeps trying to connect while the server is away (a
/// restart), by default.
const RECONNECT_FOR: Duration = Duration::from_secs(10);

/// How the client proves who it is.
#[derive(Debug, Clone)]
enum Credentials {
    None,
    ApiKey(String),
    AdminKey(String),
}

/// A broker behind `tidings serve`.
#[derive(Debug, Clone)]
pub struct HttpBroker {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    reconnect_for: Duration,
}

impl HttpBroker {
    /// A client of the server at `url` (`http://host:port`), without
    /// credentials (a server without an admin key accepts loopback callers).
    pub fn connect(url: &str) -> Result<Self> {
        let base = Url::parse(url).map_err(|e| Error::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::InvalidUrl {
                url: url.to_owned(),
                reason: "the server's URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(Self {
            http,
            base,
            credentials: Credentials::None,
            reconnect_for: RECONNECT_FOR,
        })
    }

    /// How long a request keeps trying to connect (with backoff from 50 ms
    /// to 1 s) before it fails with [`Error::Unavailable`]; 10 s by default.
    /// Only connecting is retried: a request that reached the server is not
    /// sent again.
    #[must_use]
    pub fn reconnect_for(mut self, patience: Duration) -> Self {
        self.reconnect_for = patience;
        self
    }

    /// Calls as an application, with one of its API keys.
    #[must_use]
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.credentials = Credentials::ApiKey(key.to_owned());
        self
    }

    /// Calls as the admin.
    #[must_use]
    pub fn with_admin_key(mut self, key: &str) -> Self {
        self.credentials = Credentials::AdminKey(key.to_owned());
        self
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One request; the JSON answer, or the error it stands for.
    async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let (status, value) = self.exchange(method, url, body).await?;
        if status.is_success() {
            Ok((status, value))
        } else {
            Err(wire::error_of(status, &value))
        }
    }

    /// One request; its status and JSON answer, whatever the status.
    pub(crate) async fn exchange(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let writes = method != Method::GET;
        let mut request = self.http.request(method, url);
        request = match &self.credentials {
            Credentials::None => request,
            Credentials::ApiKey(key) => request.bearer_auth(key),
            Credentials::AdminKey(key) => request.header("x-amebo-admin-key", key),
        };
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = self.send(request, writes).await?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::Unavailable(format!("the answer was cut off: {e}")))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).map_err(|e| {
                Error::Unavailable(format!("the server answered {status} with no JSON: {e}"))
            })?
        };
        Ok((status, value))
    }

    /// Sends, trying again while the connection cannot be made (the server
    /// restarting): such a request never reached it, so any may be retried.
    /// A write (`writes`) sent but not answered fails with
    /// [`Error::OutcomeUnknown`]: it may have been applied.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        writes: bool,
    ) -> Result<reqwest::Response> {
        let deadline = Instant::now() + self.reconnect_for;
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = request
                .try_clone()
                .ok_or_else(|| Error::Unavailable("a request that cannot be retried".into()))?;
            match attempt.send().await {
                Ok(response) => return Ok(response),
                Err(e) if e.is_connect() && Instant::now() + backoff < deadline => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) if writes && !e.is_connect() => {
                    return Err(Error::OutcomeUnknown(format!(
                        "tidings serve took the request but did not answer: {e}"
                    )));
                }
                Err(e) => {
                    return Err(Error::Unavailable(format!(
                        "tidings serve did not answer: {e}"
                    )));
                }
            }
        }
    }

    async fn get(&self, url: Url) -> Result<Value> {
        Ok(self.call(Method::GET, url, None).await?.1)
    }

    async fn post(&self, url: Url, body: Value) -> Result<Value> {
        Ok(self.call(Method::POST, url, Some(body)).await?.1)
    }
}

#[async_trait]
impl Broker for HttpBroker {
    async fn create_queue(&self, queue: &QueueName, config: QueueConfig) -> Result<bool> {
        config.validate()?;
        let body = json!({ "name": queue, "settings": config });
        let (status, _) = self
            .call(Method::POST, self.url(&["v1", "queues"]), Some(body))
            .await?;
        Ok(status == StatusCode::CREATED)
    }

    async fn list_queues(&self) -> Result<Vec<QueueName>> {
        let answer = self.get(self.url(&["v1", "queues"])).await?;
        wire::field::<Vec<QueueName>>(&answer, "queues")
    }

    async fn queue_info(&self, queue: &QueueName) -> Result<QueueInfo> {
        let answer = self
            .get(self.url(&["v1", "queues", queue.as_str()]))
            .await?;
        serde_json::from_value(answer).map_err(wire::unreadable)
    }

    async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        self.call(
            Method::DELETE,
            self.url(&["v1", "queues", queue.as_str()]),
            None,
        )
        .await?;
        Ok(())
    }

    async fn purge_queue(&self, queue: &QueueName) -> Result<u64> {
        let url = self.url(&["v1", "queues", queue.as_str(), "purge"]);
        wire::field(&self.post(url, json!({})).await?, "purged")
    }

    async fn send_batch(
        &self,
        queue: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>> {
        OutgoingMessage::validate_all(&messages)?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let body =
            json!({ "messages": messages.iter().map(message_json).collect::<Result<Vec<_>>>()? });
        let url = self.url(&["v1", "queues", queue.as_str(), "messages"]);
        let receipts: SendReceipts =
            serde_json::from_value(self.post(url, body).await?).map_err(wire::unreadable)?;
        Ok(receipts.messages)
    }

    async fn receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        options.validate()?;
        let url = self.url(&["v1", "queues", queue.as_str(), "receive"]);
        let deadline = Instant::now() + options.wait;
        loop {
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(MAX_WAIT);
            let body = json!({
                "group": group,
                "consumer": consumer,
                "max": options.max_messages.min(MAX_PAGE),
                "wait": u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            });
            let answer = self.post(url.clone(), body).await?;
            let got: Page<wire::DeliveryView> =
                serde_json::from_value(answer).map_err(wire::unreadable)?;
            if !got.items.is_empty() || Instant::now() >= deadline {
                return got
                    .items
                    .into_iter()
                    .map(|d| to_delivery(queue, d))
                    .collect();
            }
        }
    }

    async fn ack(&self, queue: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64> {
        if ids.is_empty() {
            // Still says whether the queue exists, as every backend does.
            self.queue_info(queue).await?;
            return Ok(0);
        }
        let url = self.url(&["v1", "queues", queue.as_str(), "ack"]);
        wire::field(
            &self
                .post(url, json!({ "group": group, "ids": ids }))
                .await?,
            "acked",
        )
    }

    async fn nack_many(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        nack: Nack,
    ) -> Result<u64> {
        let body = match nack {
            Nack::Retry { delay } => json!({
                "group": group, "ids": ids,
                "retry_after": u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            }),
            Nack::DeadLetter { reason } => {
                json!({ "group": group, "ids": ids, "dead_letter": reason })
            }
        };
        let url = self.url(&["v1", "queues", queue.as_str(), "nack"]);
        wire::field(&self.post(url, body).await?, "nacked")
    }

    async fn pending(
        &self,
        queue: &QueueName,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut url = self.url(&[
            "v1",
            "queues",
            queue.as_str(),
            "groups",
            group.as_str(),
            "pending",
        ]);
        // The server lists at most 1000 at a time.
        url.query_pairs_mut()
            .append_pair("limit", &limit.clamp(1, 1000).to_string());
        wire::field(&self.get(url).await?, "pending")
    }

    async fn forget_consumer(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        let url = self.url(&[
            "v1",
            "queues",
            queue.as_str(),
            "groups",
            group.as_str(),
            "consumers",
            consumer.as_str(),
        ]);
        let (_, answer) = self.call(Method::DELETE, url, None).await?;
        wire::field(&answer, "forgotten")
    }

    async fn delete_group(&self, queue: &QueueName, group: &GroupName) -> Result<bool> {
        let url = self.url(&["v1", "queues", queue.as_str(), "groups", group.as_str()]);
        let (_, answer) = self.call(Method::DELETE, url, None).await?;
        wire::field(&answer, "deleted")
    }

    async fn dead_letter(&self, queue: &QueueName, id: &MessageId) -> Result<Option<DeadLetter>> {
        let url = self.url(&["v1", "queues", queue.as_str(), "dead-letters", id.as_str()]);
        let (status, answer) = self.exchange(Method::GET, url, None).await?;
        if status == StatusCode::NOT_FOUND && answer["code"] == wire::NO_SUCH_DEAD_LETTER {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(wire::error_of(status, &answer));
        }
        let view = serde_json::from_value(answer).map_err(wire::unreadable)?;
        to_dead_letter(queue, view).map(Some)
    }

    async fn peek(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let mut out: Vec<Delivery> = Vec::new();
        let mut after = after.cloned();
        while out.len() < limit {
            let page = (limit - out.len()).min(MAX_PAGE);
            let mut url = self.url(&["v1", "queues", queue.as_str(), "messages"]);
            url.query_pairs_mut()
                .append_pair("limit", &page.to_string());
            if let Some(after) = &after {
                url.query_pairs_mut().append_pair("after", after.as_str());
            }
            let got: Page<wire::DeliveryView> =
                serde_json::from_value(self.get(url).await?).map_err(wire::unreadable)?;
            let n = got.items.len();
            for d in got.items {
                out.push(to_delivery(queue, d)?);
            }
            after = out.last().map(|d| d.id.clone());
            if n < page {
                break;
            }
        }
        Ok(out)
    }

    async fn dead_letters(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let mut out: Vec<DeadLetter> = Vec::new();
        let mut after = after.cloned();
        while out.len() < limit {
            let page = (limit - out.len()).min(MAX_PAGE);
            let mut url = self.url(&["v1", "queues", queue.as_str(), "dead-letters"]);
            url.query_pairs_mut()
                .append_pair("limit", &page.to_string());
            if let Some(after) = &after {
                url.query_pairs_mut().append_pair("after", after.as_str());
            }
            let got: wire::DeadLetters =
                serde_json::from_value(self.get(url).await?).map_err(wire::unreadable)?;
            let n = got.dead_letters.len();
            for d in got.dead_letters {
                out.push(to_dead_letter(queue, d)?);
            }
            after = out.last().map(|d| d.id.clone());
            if n < page {
                break;
            }
        }
        Ok(out)
    }

    async fn requeue_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        let url = self.url(&["v1", "queues", queue.as_str(), "dead-letters", "requeue"]);
        wire::field(
            &self.post(url, selection_json(&selection)).await?,
            "requeued",
        )
    }

    async fn purge_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        let url = self.url(&["v1", "queues", queue.as_str(), "dead-letters", "purge"]);
        wire::field(&self.post(url, selection_json(&selection)).await?, "purged")
    }

    async fn commit(&self, transaction: Transaction) -> Result<Vec<SendReceipt>> {
        transaction.validate()?;
        if transaction.is_empty() {
            return Ok(Vec::new());
        }
        let ops = transaction
            .ops()
            .iter()
            .map(tx_op_json)
            .collect::<Result<Vec<_>>>()?;
        let answer = self
            .post(self.url(&["v1", "transactions"]), json!({ "ops": ops }))
            .await?;
        let receipts: SendReceipts = serde_json::from_value(answer).map_err(wire::unreadable)?;
        Ok(receipts.messages)
    }

    async fn get_record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        tidings_core::record::validate_key(key)?;
        let mut url = self.url(&["v1", "tables", table.as_str(), "record"]);
        url.query_pairs_mut().append_pair("key", key);
        let answer = self.get(url).await?;
        match answer.get("value") {
            Some(Value::String(text)) => Ok(Some(Payload::from_json_str(text.clone())?)),
            _ => Ok(None),
        }
    }

    async fn scan_records(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>> {
        let mut out: Vec<Record> = Vec::new();
        let (mut from, mut to) = (scan.from.clone(), scan.to.clone());
        while out.len() < scan.limit {
            let page = (scan.limit - out.len()).min(MAX_PAGE);
            let mut url = self.url(&["v1", "tables", table.as_str(), "records"]);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("limit", &page.to_string());
                if !scan.prefix.is_empty() {
                    q.append_pair("prefix", &scan.prefix);
                }
                if let Some(from) = &from {
                    q.append_pair("from", from);
                }
                if let Some(to) = &to {
                    q.append_pair("to", to);
                }
                if scan.reverse {
                    q.append_pair("reverse", "true");
                }
            }
            let got: wire::Records =
                serde_json::from_value(self.get(url).await?).map_err(wire::unreadable)?;
            let n = got.records.len();
            for r in got.records {
                out.push(Record {
                    value: Payload::from_json_str(r.value)?,
                    key: r.key,
                });
            }
            // The next page starts past the last key, in the scan's direction.
            match out.last() {
                Some(last) if scan.reverse => to = Some(last.key.clone()),
                Some(last) => from = Some(format!("{}\0", last.key)),
                None => {}
            }
            if n < page {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_taken() {
        assert!(HttpBroker::connect("http://127.0.0.1:3310").is_ok());
        assert!(matches!(
            HttpBroker::connect("redis://127.0.0.1:6379"),
            Err(Error::InvalidUrl { .. })
        ));
        assert!(matches!(
            HttpBroker::connect("not a url"),
            Err(Error::InvalidUrl { .. })
        ));
    }

    #[test]
    fn names_are_path_segments() {
        let b = HttpBroker::connect("http://127.0.0.1:3310/").unwrap();
        assert_eq!(
            b.url(&["v1", "queues", "héllo.q", "receive"]).as_str(),
            "http://127.0.0.1:3310/v1/queues/h%C3%A9llo.q/receive"
        );
    }
}
