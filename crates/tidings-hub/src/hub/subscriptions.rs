//! Subscribing applications to actions.

use std::time::Duration;

use serde::Deserialize;
use tidings_core::QueueConfig;

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::ids::random_id;
use crate::model::Subscription;
use crate::model::subscription::{MAX_CONCURRENCY, MAX_RETRIES_LIMIT, resolve_endpoint};
use crate::principal::Principal;
use crate::tables::subscription_queue;
use crate::time::now_ms;
use crate::views::{RegisteredApplication, SubscriptionView, Unsubscribed};

/// `POST /v1/subscriptions`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewSubscription {
    /// The subscribing application.
    pub application: String,
    /// The action.
    pub action: String,
    /// A path joined to the application's address, or a full URL.
    pub handler: String,
    /// Attempts per event.
    pub max_retries: Option<u32>,
    /// Seconds between attempts (the last value repeats).
    pub retry_schedule: Option<Vec<u64>>,
    /// One delivery at a time, in publish order.
    #[serde(default)]
    pub ordered: bool,
    /// Deliveries in flight at once (1 to 256; default: the server's setting).
    pub concurrency: Option<u32>,
    /// Free text.
    pub description: Option<String>,
    /// An id of the caller's choosing.
    pub subscription: Option<String>,
}

/// Longest delay in a retry schedule: a day.
pub const MAX_RETRY_DELAY_SECS: u64 = 24 * 3600;

/// The queue settings of a subscription's deliveries: attempts are counted
/// by the dispatcher, so the queue itself never gives up on a message; one
/// left in flight by a crash comes back once its attempt must have ended.
pub(crate) fn delivery_queue_config(attempt_timeout: Duration) -> QueueConfig {
    QueueConfig {
        visibility_timeout: attempt_timeout + Duration::from_secs(5),
        max_deliveries: u32::MAX,
        ..QueueConfig::default()
    }
}

fn check_id(id: &str) -> HubResult<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HubError::BadRequest(
            "subscription - must be 1 to 64 letters, digits, '_', '-' or '.'".to_owned(),
        ))
    }
}

impl Hub {
    /// Refuses (422, naming the setting) a URL the address policy would not
    /// deliver to.
    async fn check_destination(&self, endpoint: &str) -> HubResult<()> {
        let url = reqwest::Url::parse(endpoint)
            .map_err(|e| HubError::BadRequest(format!("handler - not a URL: {e}")))?;
        self.destinations()
            .check_url(&url)
            .await
            .map_err(|refusal| HubError::unprocessable(format!("handler - {refusal}")))
    }

    /// Subscribes an application to an action. Returns the view and whether it
    /// was created (`false`: an existing one was reactivated).
    pub async fn subscribe(
        &self,
        who: &Principal,
        new: NewSubscription,
    ) -> HubResult<(SubscriptionView, bool)> {
        if !who.may_act_as(&new.application) {
            return Err(HubError::Forbidden(format!(
                "Only {} itself or a superadmin can subscribe it",
                new.application
            )));
        }
        let max_retries = new
            .max_retries
            .unwrap_or(self.inner.config.default_max_retries);
        if !(1..=MAX_RETRIES_LIMIT).contains(&max_retries) {
            return Err(HubError::BadRequest(format!(
                "max_retries - must be from 1 to {MAX_RETRIES_LIMIT}"
            )));
        }
        if let Some(schedule) = &new.retry_schedule
            && (schedule.is_empty() || schedule.iter().any(|s| *s > MAX_RETRY_DELAY_SECS))
        {
            return Err(HubError::BadRequest(format!(
                "retry_schedule - must list 1 or more delays of at most {MAX_RETRY_DELAY_SECS} seconds"
            )));
        }
        if let Some(id) = &new.subscription {
            check_id(id)?;
        }
        if new
            .concurrency
            .is_some_and(|n| !(1..=MAX_CONCURRENCY).contains(&n))
        {
            return Err(HubError::BadRequest(format!(
                "concurrency - must be from 1 to {MAX_CONCURRENCY}"
            )));
        }
        // Checked before anything changes, and outside the catalog lock (it
        // may wait for DNS); were the address to change meanwhile, each
        // delivery is checked again anyway. A full URL needs no address.
        let address = self
            .catalog()
            .applications
            .get(&new.application)
            .map_or_else(String::new, |a| a.address.clone());
        if let Ok(endpoint) = resolve_endpoint(&address, &new.handler) {
            self.check_destination(&endpoint).await?;
        }
        let registered = self.register_implicitly(who, &new).await?;
        let _guard = self.inner.changes.lock().await;
        let (endpoint, existing) = {
            let catalog = self.catalog();
            let app = catalog
                .applications
                .get(&new.application)
                .filter(|a| a.active)
                .ok_or_else(|| {
                    HubError::UnknownSubscriber("Subscription request rejected".to_owned())
                })?;
            if !catalog.actions.contains_key(&new.action) {
                return Err(HubError::NotFound(format!(
                    "Action {} does not exist",
                    new.action
                )));
            }
            let endpoint = resolve_endpoint(&app.address, &new.handler)?;
            let existing = catalog
                .subscriptions
                .values()
                .find(|s| {
                    s.application == new.application
                        && s.action == new.action
                        && s.endpoint == endpoint
                })
                .cloned();
            if existing.is_none()
                && let Some(id) = &new.subscription
                && catalog.subscriptions.contains_key(id)
            {
                return Err(HubError::conflict(format!(
                    "Subscription {id} already exists"
                )));
            }
            (endpoint, existing)
        };
        let created = existing.is_none();
        let sub = match existing {
            Some(mut sub) => {
                sub.active = true;
                sub.disabled_reason = None;
                sub.max_retries = max_retries;
                sub.retry_schedule = new.retry_schedule.or(sub.retry_schedule);
                sub.ordered = new.ordered;
                sub.concurrency = new.concurrency;
                if new.description.is_some() {
                    sub.description = new.description;
                }
                sub
            }
            None => Subscription {
                id: new.subscription.unwrap_or_else(random_id),
                application: new.application,
                action: new.action,
                handler: new.handler.trim().to_owned(),
                endpoint,
                max_retries,
                retry_schedule: new.retry_schedule,
                ordered: new.ordered,
                concurrency: new.concurrency,
                description: new.description,
                active: true,
                disabled_reason: None,
                created_at: now_ms(),
            },
        };
        let queue = subscription_queue(&sub.id)?;
        let config = delivery_queue_config(self.inner.config.attempt_timeout);
        match self.inner.broker.create_queue(&queue, config).await {
            // Made with an older attempt timeout: it keeps its settings.
            Ok(_) | Err(tidings_core::Error::QueueConfigConflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        self.write_record(&self.inner.tables.subscriptions, &sub.id, &sub)
            .await?;
        let view = SubscriptionView {
            reactivated: !created,
            registered_application: registered,
            ..sub.view()
        };
        self.catalog_mut().put_subscription(sub);
        self.changed();
        Ok((view, created))
    }

    /// The seed's flow subscribes applications it never registered, with
    /// full-URL handlers. When the admin does that, the application is
    /// registered on the spot (address: the handler's origin) and its new
    /// secret and API key are returned once, with the subscription. Anyone
    /// else, or a path handler, gets 417 for an unknown application.
    async fn register_implicitly(
        &self,
        who: &Principal,
        new: &NewSubscription,
    ) -> HubResult<Option<RegisteredApplication>> {
        let known = self.catalog().applications.contains_key(&new.application);
        let handler = new.handler.trim();
        if known
            || !who.is_admin()
            || !(handler.starts_with("http://") || handler.starts_with("https://"))
        {
            return Ok(None);
        }
        let Ok(url) = reqwest::Url::parse(handler) else {
            return Ok(None);
        };
        let origin = url.origin().ascii_serialization();
        let created = self
            .create_application(
                who,
                super::NewApplication {
                    application: new.application.clone(),
                    address: origin,
                    secret: None,
                    description: Some("registered by its first subscription".to_owned()),
                    queues: None,
                },
            )
            .await;
        match created {
            Ok(view) => Ok(Some(view)),
            Err(HubError::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists the subscriptions `who` may read (an application: its own),
    /// filtered.
    pub fn list_subscriptions(
        &self,
        who: &Principal,
        id: Option<&str>,
        application: Option<&str>,
        action: Option<&str>,
        active: Option<bool>,
        page: Page,
    ) -> Vec<SubscriptionView> {
        let catalog = self.catalog();
        let mut all: Vec<&Subscription> = catalog
            .subscriptions
            .values()
            .filter(|s| who.may_act_as(&s.application))
            .filter(|s| id.is_none_or(|id| s.id == id))
            .filter(|s| application.is_none_or(|a| s.application.contains(a)))
            .filter(|s| action.is_none_or(|a| s.action.contains(a)))
            .filter(|s| active.is_none_or(|a| s.active == a))
            .collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        page.slice(&all)
            .into_iter()
            .map(Subscription::view)
            .collect()
    }

    /// A subscription by id.
    pub fn subscription(&self, id: &str) -> HubResult<Subscription> {
        self.catalog()
            .subscriptions
            .get(id)
            .cloned()
            .ok_or_else(|| HubError::NotFound(format!("Subscription {id} does not exist")))
    }

    /// Deactivates a subscription: nothing new is queued for it and what is
    /// queued waits (a later subscribe of the same handler resumes it).
    pub async fn unsubscribe(&self, who: &Principal, id: &str) -> HubResult<Unsubscribed> {
        let _guard = self.inner.changes.lock().await;
        let sub = self.subscription(id)?;
        if !who.may_act_as(&sub.application) {
            return Err(HubError::Forbidden(format!(
                "Only {} itself or a superadmin can unsubscribe it",
                sub.application
            )));
        }
        self.deactivate(sub, None).await?;
        Ok(Unsubscribed {
            unsubscribed: id.to_owned(),
            active: false,
        })
    }

    /// Marks a subscription inactive, with why (`None`: unsubscribed).
    pub(crate) async fn deactivate(
        &self,
        mut sub: Subscription,
        reason: Option<String>,
    ) -> HubResult<()> {
        sub.active = false;
        sub.disabled_reason = reason;
        self.write_record(&self.inner.tables.subscriptions, &sub.id, &sub)
            .await?;
        self.catalog_mut().put_subscription(sub);
        self.changed();
        Ok(())
    }

    /// Disables a subscription whose endpoint answered 410 Gone.
    pub async fn disable_gone(&self, id: &str, reason: String) -> HubResult<()> {
        let _guard = self.inner.changes.lock().await;
        let sub = self.subscription(id)?;
        if sub.active {
            self.deactivate(sub, Some(reason)).await?;
        }
        Ok(())
    }
}
