//! [`HubClient`]: the event hub of a `tidings serve`, with the seed's calls
//! (`publish_event`, `events`), typed with the structs the server itself
//! reads and writes (`tidings-hub-api`).

use reqwest::{Method, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use tidings_hub_api::{
    ActionEdited, ActionUpdate, ActionView, ApiKeyIssued, ApplicationActivity, ApplicationUpdate,
    ApplicationView, Backfill, Backfilled, EventView, GistPage, NewAction, NewApplication,
    NewEvent, NewSubscription, RegisteredApplication, Removed, Replayed, Requeued, SecretRotated,
    SecretRotation, SigningKeyRotation, SigningKeyView, Stats, SubscriptionView, Toggle,
    Unsubscribed, Validate, Validation,
};

use crate::HttpBroker;

/// The server's largest page.
const MAX_PAGE: usize = 100;

/// What a hub call failed with.
#[derive(Debug, thiserror::Error)]
pub enum HubClientError {
    /// The server answered with an error: its status, message, `code` (when
    /// it gives one) and, for a schema violation (406), every reason.
    #[error("{status}: {message}{}", reasons(errors))]
    Answer {
        /// The HTTP status: 400 bad request, 401 no valid credentials, 403
        /// not allowed, 404 not found, 406 schema violation, 409 conflict,
        /// 413 too large, 422 unprocessable (e.g. an unknown action), 503
        /// unavailable, 507 disk full.
        status: u16,
        /// The answer's `error`.
        message: String,
        /// The answer's `code`, if any.
        code: Option<String>,
        /// The answer's `errors` (a schema violation's reasons).
        errors: Vec<String>,
    },
    /// The server could not be reached, or did not answer (a request it may
    /// have applied is `tidings_core::Error::OutcomeUnknown`).
    #[error(transparent)]
    Transport(#[from] tidings_core::Error),
    /// The answer was not what the call expects.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

fn reasons(errors: &[String]) -> String {
    if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    }
}

impl HubClientError {
    /// The HTTP status of an error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Answer { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A result of a hub call.
pub type HubClientResult<T> = std::result::Result<T, HubClientError>;

/// Filters of [`HubClient::events`] (times: ISO 8601 or Unix seconds).
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events of this action.
    pub action: Option<String>,
    /// Events of the actions this application owns.
    pub application: Option<String>,
    /// The event with this deduper.
    pub deduper: Option<String>,
    /// Published at or after.
    pub from: Option<String>,
    /// Published before.
    pub to: Option<String>,
}

/// Filters of [`HubClient::gists`] and [`HubClient::requeue`].
#[derive(Debug, Clone, Default)]
pub struct GistQuery {
    /// Deliveries of this event.
    pub event: Option<String>,
    /// Deliveries of this subscription.
    pub subscription: Option<String>,
    /// Deliveries of this action.
    pub action: Option<String>,
    /// `pending`, `retrying`, `delivered` or `failed`.
    pub status: Option<String>,
}

impl GistQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("event", &self.event),
            ("subscription", &self.subscription),
            ("action", &self.action),
            ("status", &self.status),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }
}

/// A client of a `tidings serve` event hub: as an application (its API key)
/// or the admin. Cheap to clone (clones share connections). Connecting is
/// retried while the server restarts (see [`HttpBroker::reconnect_for`]); a
/// request that reached the server is never sent again.
///
/// ```no_run
/// # async fn run() -> tidings_http::HubClientResult<()> {
/// let hub = tidings_http::HubClient::connect("http://127.0.0.1:3310")?.with_api_key("tidings_...");
/// let event = hub
///     .publish_event("user.created", &serde_json::json!({"id": 1}), Some("user-1"))
///     .await?;
/// println!("{} ({} subscriptions)", event.event, event.fanout.unwrap_or(0));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HubClient {
    transport: HttpBroker,
}

impl HubClient {
    /// A client of the hub at `url`, without credentials (a server without
    /// an admin key takes loopback callers as the admin).
    pub fn connect(url: &str) -> HubClientResult<Self> {
        Ok(Self {
            transport: HttpBroker::connect(url)?,
        })
    }

    /// Calls as an application, with one of its API keys.
    #[must_use]
    pub fn with_api_key(self, key: &str) -> Self {
        Self {
            transport: self.transport.with_api_key(key),
        }
    }

    /// Calls as the admin.
    #[must_use]
    pub fn with_admin_key(self, key: &str) -> Self {
        Self {
            transport: self.transport.with_admin_key(key),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<Value>,
    ) -> HubClientResult<T> {
        let (status, value) = self.transport.exchange(method, url, body).await?;
        if !status.is_success() {
            let text = |k: &str| value[k].as_str().map(str::to_owned);
            return Err(HubClientError::Answer {
                status: status.as_u16(),
                message: text("error").unwrap_or_else(|| status.to_string()),
                code: text("code"),
                errors: value["errors"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|e| e.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        serde_json::from_value(value).map_err(|e| HubClientError::Unexpected(e.to_string()))
    }

    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        let mut url = self.transport.url(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn json<T: Serialize>(body: &T) -> HubClientResult<Option<Value>> {
        serde_json::to_value(body)
            .map(Some)
            .map_err(|e| HubClientError::Unexpected(e.to_string()))
    }

    // Events

    /// Publishes an event of `action`; with a `deduper`, a repeat returns
    /// the original event (`duplicate: true`).
    pub async fn publish_event<T: Serialize>(
        &self,
        action: &str,
        payload: &T,
        deduper: Option<&str>,
    ) -> HubClientResult<EventView> {
        let payload = serde_json::to_string(payload)
            .and_then(RawValue::from_string)
            .map_err(|e| HubClientError::Unexpected(e.to_string()))?;
        self.publish(&NewEvent {
            action: action.to_owned(),
            payload,
            metadata: None,
            deduper: deduper.map(str::to_owned),
            sleep_until: None,
            idempotency_key: None,
        })
        .await
    }

    /// Publishes an event given whole (metadata, delay).
    pub async fn publish(&self, event: &NewEvent) -> HubClientResult<EventView> {
        let url = self.url(&["v1", "events"], &[]);
        self.call(Method::POST, url, Self::json(event)?).await
    }

    /// One page of events, newest first (`page` from 1).
    pub async fn events_page(
        &self,
        query: &EventQuery,
        page: usize,
    ) -> HubClientResult<Vec<EventView>> {
        let mut pairs: Vec<(&str, String)> = [
            ("action", &query.action),
            ("application", &query.application),
            ("deduper", &query.deduper),
            ("from", &query.from),
            ("to", &query.to),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
        pairs.push(("page", page.to_string()));
        pairs.push(("pagination", MAX_PAGE.to_string()));
        let url = self.url(&["v1", "events"], &pairs);
        self.call(Method::GET, url, None).await
    }

    /// Every event matching `query`, newest first, read a page at a time;
    /// events published meanwhile are left out, none comes twice.
    pub async fn events(&self, query: &EventQuery) -> HubClientResult<Vec<EventView>> {
        let mut found: Vec<EventView> = Vec::new();
        for page in 1.. {
            let events = self.events_page(query, page).await?;
            let full = events.len() == MAX_PAGE;
            for event in events {
                // Newer events push older ones onto later pages.
                if found.last().is_none_or(|last| event.row_id < last.row_id) {
                    found.push(event);
                }
            }
            if !full {
                break;
            }
        }
        Ok(found)
    }

    /// One event.
    pub async fn event(&self, id: &str) -> HubClientResult<EventView> {
        let url = self.url(&["v1", "events", id], &[]);
        self.call(Method::GET, url, None).await
    }

    // Catalog

    /// Registers an application (admin); the answer holds its secret and
    /// API key, shown only here.
    pub async fn create_application(
        &self,
        application: &NewApplication,
    ) -> HubClientResult<RegisteredApplication> {
        let url = self.url(&["v1", "applications"], &[]);
        self.call(Method::POST, url, Self::json(application)?).await
    }

    /// The applications the caller may see (first 100).
    pub async fn applications(&self) -> HubClientResult<Vec<ApplicationView>> {
        let url = self.url(
            &["v1", "applications"],
            &[("pagination", MAX_PAGE.to_string())],
        );
        self.call(Method::GET, url, None).await
    }

    /// Mints a new API key for an application (the old one stops working).
    pub async fn new_api_key(&self, application: &str) -> HubClientResult<ApiKeyIssued> {
        let url = self.url(&["v1", "applications", application, "apikey"], &[]);
        self.call(Method::POST, url, None).await
    }

    /// Changes an application's address, description or queue allow-list.
    pub async fn update_application(
        &self,
        application: &str,
        update: &ApplicationUpdate,
    ) -> HubClientResult<ApplicationView> {
        let url = self.url(&["v1", "applications", application], &[]);
        self.call(Method::PUT, url, Self::json(update)?).await
    }

    /// Enables or disables an application (admin).
    pub async fn set_application_active(
        &self,
        application: &str,
        active: bool,
    ) -> HubClientResult<ApplicationActivity> {
        let url = self.url(&["v1", "applications", application], &[]);
        let body = Toggle {
            active: Some(active),
        };
        self.call(Method::PATCH, url, Self::json(&body)?).await
    }

    /// Replaces an application's secret (generated when not given).
    pub async fn rotate_secret(
        &self,
        application: &str,
        rotation: &SecretRotation,
    ) -> HubClientResult<SecretRotated> {
        let url = self.url(&["v1", "applications", application, "secret"], &[]);
        self.call(Method::PUT, url, Self::json(rotation)?).await
    }

    /// Removes an application with its actions and subscriptions (admin).
    pub async fn delete_application(&self, application: &str) -> HubClientResult<Removed> {
        let url = self.url(&["v1", "applications", application], &[]);
        self.call(Method::DELETE, url, None).await
    }

    /// Registers an action with its JSON Schema.
    pub async fn register_action(&self, action: &NewAction) -> HubClientResult<ActionView> {
        let url = self.url(&["v1", "actions"], &[]);
        self.call(Method::POST, url, Self::json(action)?).await
    }

    /// The actions the caller may see (first 100), of one action name if given.
    pub async fn actions(&self, action: Option<&str>) -> HubClientResult<Vec<ActionView>> {
        let mut pairs = vec![("pagination", MAX_PAGE.to_string())];
        if let Some(action) = action {
            pairs.push(("action", action.to_owned()));
        }
        let url = self.url(&["v1", "actions"], &pairs);
        self.call(Method::GET, url, None).await
    }

    /// Changes an action's schema, retention or dedup window (`action`: its
    /// name or id).
    pub async fn update_action(
        &self,
        action: &str,
        update: &ActionUpdate,
    ) -> HubClientResult<ActionEdited> {
        let url = self.url(&["v1", "actions", action], &[]);
        self.call(Method::PATCH, url, Self::json(update)?).await
    }

    /// Checks a payload against an action's schema, publishing nothing.
    pub async fn validate(&self, action: &str, payload: &Value) -> HubClientResult<Validation> {
        let url = self.url(&["v1", "actions", action, "validations"], &[]);
        let body = Validate {
            payload: payload.clone(),
        };
        self.call(Method::POST, url, Self::json(&body)?).await
    }

    /// Removes an action.
    pub async fn delete_action(&self, action: &str) -> HubClientResult<Removed> {
        let url = self.url(&["v1", "actions", action], &[]);
        self.call(Method::DELETE, url, None).await
    }

    /// Subscribes an application to an action; the answer holds the
    /// subscription's signing key.
    pub async fn subscribe(
        &self,
        subscription: &NewSubscription,
    ) -> HubClientResult<SubscriptionView> {
        let url = self.url(&["v1", "subscriptions"], &[]);
        self.call(Method::POST, url, Self::json(subscription)?)
            .await
    }

    /// The subscriptions the caller may see (first 100), of one action if given.
    pub async fn subscriptions(
        &self,
        action: Option<&str>,
    ) -> HubClientResult<Vec<SubscriptionView>> {
        let mut pairs = vec![("pagination", MAX_PAGE.to_string())];
        if let Some(action) = action {
            pairs.push(("action", action.to_owned()));
        }
        let url = self.url(&["v1", "subscriptions"], &pairs);
        self.call(Method::GET, url, None).await
    }

    /// Ends a subscription.
    pub async fn unsubscribe(&self, subscription: &str) -> HubClientResult<Unsubscribed> {
        let url = self.url(&["v1", "subscriptions", subscription], &[]);
        self.call(Method::DELETE, url, None).await
    }

    /// A subscription's signing key.
    pub async fn signing_key(&self, subscription: &str) -> HubClientResult<SigningKeyView> {
        let url = self.url(&["v1", "subscriptions", subscription, "signing-key"], &[]);
        self.call(Method::GET, url, None).await
    }

    /// Replaces a subscription's signing key (generated when not given).
    pub async fn rotate_signing_key(
        &self,
        subscription: &str,
        rotation: &SigningKeyRotation,
    ) -> HubClientResult<SigningKeyView> {
        let url = self.url(
            &["v1", "subscriptions", subscription, "signing-key", "rotate"],
            &[],
        );
        self.call(Method::POST, url, Self::json(rotation)?).await
    }

    // Deliveries

    /// One page of deliveries (`page` from 1), newest event first.
    pub async fn gists(&self, query: &GistQuery, page: usize) -> HubClientResult<GistPage> {
        let mut pairs = query.pairs();
        pairs.push(("page", page.to_string()));
        pairs.push(("pagination", MAX_PAGE.to_string()));
        let url = self.url(&["v1", "gists"], &pairs);
        self.call(Method::GET, url, None).await
    }

    /// Sends the failed deliveries matching `query` again (admin).
    pub async fn requeue(&self, query: &GistQuery) -> HubClientResult<Requeued> {
        let url = self.url(&["v1", "requeues"], &query.pairs());
        self.call(Method::POST, url, None).await
    }

    /// Discards the failed deliveries matching `query` (admin): their dead
    /// letters and records go, the events stay. Returns how many.
    pub async fn purge(&self, query: &GistQuery) -> HubClientResult<u64> {
        /// `POST /v1/purges`'s answer.
        #[derive(serde::Deserialize)]
        struct Purged {
            purged: u64,
        }
        let url = self.url(&["v1", "purges"], &query.pairs());
        let answer: Purged = self.call(Method::POST, url, None).await?;
        Ok(answer.purged)
    }

    /// Delivers one delivery again, now, once (admin).
    pub async fn replay(&self, gist: &str) -> HubClientResult<Replayed> {
        let url = self.url(&["v1", "regists", gist], &[]);
        self.call(Method::POST, url, None).await
    }

    /// Delivers the stored events of a date range to a subscription, or
    /// counts them (`dry_run`) (admin).
    pub async fn backfill(&self, backfill: &Backfill) -> HubClientResult<Backfilled> {
        let url = self.url(&["v1", "backfills"], &[]);
        self.call(Method::POST, url, Self::json(backfill)?).await
    }

    /// Totals of events and deliveries.
    pub async fn stats(&self) -> HubClientResult<Stats> {
        let url = self.url(&["v1", "stats"], &[]);
        self.call(Method::GET, url, None).await
    }
}
