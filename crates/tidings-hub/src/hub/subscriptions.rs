//! Subscribing applications to actions.

use std::time::Duration;
pub use tidings_hub_api::{NewSubscription, SigningKeyRotation};

use tidings_core::QueueConfig;

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::ids::random_id;
use crate::model::Subscription;
use crate::model::secret::{SigningKeys, grace_period, new_signing_key, signing_key_bytes};
use crate::model::subscription::{MAX_CONCURRENCY, MAX_RETRIES_LIMIT, resolve_endpoint};
use crate::principal::Principal;
use crate::tables::subscription_queue;
use crate::time::iso;
use crate::views::{RegisteredApplication, SigningKeyView, SubscriptionView, Unsubscribed};

/// The HMAC key of a stored signing key. A replaced key may be an
/// application secret (a subscription from before per-subscription keys):
/// its bytes are the key, as they were.
fn standard_key(key: &str) -> Vec<u8> {
    signing_key_bytes(key).unwrap_or_else(|_| key.as_bytes().to_vec())
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
        if let Some(key) = &new.signing_key {
            signing_key_bytes(key)?;
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
            if let (Some(sub), Some(key)) = (&existing, &new.signing_key)
                && sub.signing_key.as_ref() != Some(key)
            {
                return Err(HubError::conflict(format!(
                    "Subscription {} exists with another signing key: rotate it with \
                     POST /v1/subscriptions/{}/signing-key/rotate",
                    sub.id, sub.id
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
                if let Some(amebo) = new.amebo_signature {
                    sub.amebo_signature = amebo;
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
                created_at: self.now_ms(),
                signing_key: Some(new.signing_key.unwrap_or_else(new_signing_key)),
                previous_signing_key: None,
                amebo_signature: new.amebo_signature.unwrap_or(true),
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
            // Shown here once; later only by the reveal call.
            signing_key: if created {
                sub.signing_key.clone()
            } else {
                None
            },
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

    /// A subscription `who` owns (or any, for the admin).
    fn owned_subscription(
        &self,
        who: &Principal,
        id: &str,
        doing: &str,
    ) -> HubResult<Subscription> {
        let sub = self.subscription(id)?;
        if who.may_act_as(&sub.application) {
            Ok(sub)
        } else {
            Err(HubError::Forbidden(format!(
                "Only {} itself or a superadmin can {doing}",
                sub.application
            )))
        }
    }

    /// A subscription's signing key, for its owner (the reveal call).
    pub fn signing_key(&self, who: &Principal, id: &str) -> HubResult<SigningKeyView> {
        let sub = self.owned_subscription(who, id, "see its signing key")?;
        Ok(self.signing_key_view(&sub))
    }

    fn signing_key_view(&self, sub: &Subscription) -> SigningKeyView {
        let now = self.now_ms();
        SigningKeyView {
            subscription: sub.id.clone(),
            signing_key: sub.signing_key.clone(),
            previous_valid_until: sub
                .previous_signing_key
                .as_ref()
                .filter(|p| p.live_at(now).is_some())
                .map(|p| iso(p.until)),
        }
    }

    /// Replaces a subscription's signing key (generated when not given);
    /// the replaced one keeps signing deliveries too for the grace period.
    pub async fn rotate_signing_key(
        &self,
        who: &Principal,
        id: &str,
        rotation: SigningKeyRotation,
    ) -> HubResult<SigningKeyView> {
        let grace = grace_period(rotation.grace_period.as_ref())?;
        if let Some(key) = &rotation.signing_key {
            signing_key_bytes(key)?;
        }
        let _guard = self.inner.changes.lock().await;
        let mut sub = self.owned_subscription(who, id, "rotate its signing key")?;
        // A subscription from before per-subscription keys was signed with
        // its application's secret: that is what its receivers know.
        let old = match sub.signing_key.take() {
            Some(key) => Some(key),
            None => self
                .application_secrets(&sub.application)
                .and_then(|s| s.into_iter().next()),
        };
        sub.signing_key = Some(rotation.signing_key.unwrap_or_else(new_signing_key));
        sub.previous_signing_key =
            old.and_then(|old| super::applications::retiring(old, self.now_ms(), grace));
        self.write_record(&self.inner.tables.subscriptions, &sub.id, &sub)
            .await?;
        let view = self.signing_key_view(&sub);
        self.catalog_mut().put_subscription(sub);
        self.changed();
        Ok(view)
    }

    /// What a delivery to `sub` is signed with now; `None` when its
    /// application is inactive or gone.
    pub fn signing_keys(&self, sub: &Subscription) -> Option<SigningKeys> {
        let now = self.now_ms();
        let catalog = self.catalog();
        let app = catalog
            .applications
            .get(&sub.application)
            .filter(|a| a.active)?;
        let app_secrets = app.secrets_at(now);
        let amebo = if sub.amebo_signature {
            app_secrets.iter().map(|s| (*s).to_owned()).collect()
        } else {
            Vec::new()
        };
        let standard = match &sub.signing_key {
            Some(key) => std::iter::once(key.as_str())
                .chain(
                    sub.previous_signing_key
                        .as_ref()
                        .and_then(|p| p.live_at(now)),
                )
                .map(standard_key)
                .collect(),
            None => app_secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
        };
        Some(SigningKeys { amebo, standard })
    }

    /// Deactivates a subscription: nothing new is queued for it and what is
    /// queued waits (a later subscribe of the same handler resumes it).
    pub async fn unsubscribe(&self, who: &Principal, id: &str) -> HubResult<Unsubscribed> {
        let _guard = self.inner.changes.lock().await;
        let sub = self.owned_subscription(who, id, "unsubscribe it")?;
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

    /// Disables a subscription whose endpoint answered 410 Gone (the hub
    /// itself does it: its audit entry's actor is `system`).
    pub async fn disable_gone(&self, id: &str, reason: String) -> HubResult<()> {
        let _guard = self.inner.changes.lock().await;
        let sub = self.subscription(id)?;
        if sub.active {
            let application = sub.application.clone();
            self.deactivate(sub, Some(reason)).await?;
            self.record_audit(crate::model::audit::AuditRecord {
                action: "subscription.disable".to_owned(),
                target: Some(id.to_owned()),
                actor: "system".to_owned(),
                application: Some(application),
                status: 410,
                ..Default::default()
            })
            .await?;
        }
        Ok(())
    }
}
