//! Subscriptions: an application's handler for one action's events.

use serde::{Deserialize, Serialize};

use crate::error::{HubError, HubResult};
use crate::model::secret::Retiring;
use crate::time::iso;
use crate::views::SubscriptionView;

/// A subscription.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    /// 32 hex characters, or the id the subscriber chose.
    pub id: String,
    /// The subscribing application.
    pub application: String,
    /// The action it receives.
    pub action: String,
    /// The handler as given: a path (joined to the application's address)
    /// or a full URL.
    pub handler: String,
    /// The URL deliveries are posted to.
    pub endpoint: String,
    /// Attempts per event before it is dead-lettered.
    pub max_retries: u32,
    /// Delays between attempts, seconds (`None`: the default schedule).
    pub retry_schedule: Option<Vec<u64>>,
    /// One delivery in flight at a time, in publish order.
    pub ordered: bool,
    /// Deliveries in flight at once, in all processes (`None`: each
    /// process's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Free text.
    pub description: Option<String>,
    /// Inactive (unsubscribed, or disabled by a 410 answer) subscriptions get nothing.
    pub active: bool,
    /// Why it was disabled, if it was.
    pub disabled_reason: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Its Standard Webhooks signing key (`whsec_...`). `None` only for
    /// subscriptions stored before keys were per subscription: they are
    /// signed with the application's secret until their key is rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<String>,
    /// The signing key a rotation replaced, while its grace period lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_signing_key: Option<Retiring>,
    /// Whether deliveries carry `x-amebo-signature` (keyed with the
    /// application's secret: the compatibility path).
    #[serde(default = "yes")]
    pub amebo_signature: bool,
}

fn yes() -> bool {
    true
}

impl Subscription {
    /// What the API shows.
    pub fn view(&self) -> SubscriptionView {
        SubscriptionView {
            subscription: self.id.clone(),
            application: self.application.clone(),
            action: self.action.clone(),
            handler: self.handler.clone(),
            endpoint: self.endpoint.clone(),
            max_retries: self.max_retries,
            retry_schedule: self.retry_schedule.clone(),
            ordered: self.ordered,
            concurrency: self.concurrency,
            description: self.description.clone(),
            active: self.active,
            disabled_reason: self.disabled_reason.clone(),
            timestamped: iso(self.created_at),
            amebo_signature: self.amebo_signature,
            signing_key: None,
            previous_signing_key_until: self.previous_signing_key.as_ref().map(|p| iso(p.until)),
            reactivated: false,
            registered_application: None,
        }
    }
}

impl crate::sealing::HoldsSecrets for Subscription {
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut secrets = Vec::new();
        if let Some(key) = &mut self.signing_key {
            secrets.push(("signing_key", key));
        }
        if let Some(previous) = &mut self.previous_signing_key {
            secrets.push(("previous_signing_key", &mut previous.secret));
        }
        secrets
    }
}

/// Most deliveries a subscription may have in flight.
pub const MAX_CONCURRENCY: u32 = 256;

/// Most attempts a subscription may ask for (Amebo's bound).
pub const MAX_RETRIES_LIMIT: u32 = 10_000;

/// Resolves a handler: a full http(s) URL is used as is; a path starting
/// with `/` is appended to the application's address and must stay under
/// it (`..` and its encodings cannot climb out of the address's path).
/// Neither may carry a user name or password.
pub fn resolve_endpoint(address: &str, handler: &str) -> HubResult<String> {
    use crate::model::application::parse_address;
    let handler = handler.trim();
    if handler.starts_with("http://") || handler.starts_with("https://") {
        return parse_address(handler)
            .map(|url| url.to_string())
            .map_err(|e| match e {
                HubError::BadRequest(m) => {
                    HubError::BadRequest(m.replacen("address", "handler", 1))
                }
                other => other,
            });
    }
    if !handler.starts_with('/') {
        return Err(HubError::BadRequest(
            "handler - must be a path starting with '/' or an http(s) URL".to_owned(),
        ));
    }
    let base = parse_address(address)?;
    let joined = format!("{}{handler}", base.as_str().trim_end_matches('/'));
    let url = parse_address(&joined)
        .map_err(|_| HubError::BadRequest(format!("handler - {joined:?} is not a valid URL")))?;
    let base_path = format!("{}/", base.path().trim_end_matches('/'));
    let stays = url.origin() == base.origin()
        && (url.path() == base_path.trim_end_matches('/') || url.path().starts_with(&base_path));
    if !stays {
        return Err(HubError::BadRequest(format!(
            "handler - {handler:?} leaves the application's address {address:?}"
        )));
    }
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handlers_resolve_like_amebo() {
        let url = resolve_endpoint("http://h/mailer/", "/hooks/x").ok();
        assert_eq!(url.as_deref(), Some("http://h/mailer/hooks/x"));
        let url = resolve_endpoint("http://h/", "https://email.example/webhooks/a").ok();
        assert_eq!(url.as_deref(), Some("https://email.example/webhooks/a"));
        assert!(resolve_endpoint("http://h/", "hooks").is_err());
        // Paths stay under the address.
        for escape in ["/../x", "/../../x", "/%2e%2e/x", "/./../x", "/a/../../x"] {
            assert!(
                resolve_endpoint("http://h/mailer/", escape).is_err(),
                "{escape} escapes /mailer/"
            );
        }
        let inside = resolve_endpoint("http://h/mailer/", "/a/../b").ok();
        assert_eq!(inside.as_deref(), Some("http://h/mailer/b"));
        let root = resolve_endpoint("http://h/", "/../x").ok();
        assert_eq!(
            root.as_deref(),
            Some("http://h/x"),
            "nothing above the root"
        );
        assert!(
            resolve_endpoint("http://h:8/mailer", "/@evil.example/x")
                .is_ok_and(|u| u.starts_with("http://h:8/mailer/"))
        );
        // No credentials in URLs.
        assert!(resolve_endpoint("http://h/", "http://user:pw@e.example/x").is_err());
    }
}
