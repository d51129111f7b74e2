//! Applications: services that publish and receive events.

use serde::{Deserialize, Serialize};

use crate::error::{HubError, HubResult};
use crate::model::secret::{Retiring, with_retiring};
use crate::time::iso;
use crate::views::ApplicationView;

/// A registered application.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Application {
    /// Its name (the key).
    pub name: String,
    /// Base URL its subscription handlers are joined to.
    pub address: String,
    /// Free text.
    pub description: Option<String>,
    /// Inactive applications cannot authenticate, publish or receive.
    pub active: bool,
    /// Its password, its request-signing key and the key of the
    /// `x-amebo-signature` of the webhooks it receives (kept readable: both
    /// sides must compute the MAC).
    pub secret: String,
    /// The secret a rotation replaced, while its grace period lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<Retiring>,
    /// SHA-256 of its API key: a copy of the data does not reveal the key.
    pub api_key_hash: String,
    /// Creation time, ms since the epoch.
    pub created_at: u64,
    /// Queues and record tables it may use through the queue API: names,
    /// or prefixes ending in `*`. `None`: every one outside the hub's own.
    #[serde(default)]
    pub queues: Option<Vec<String>>,
    /// Random, new for every application created: what its sessions are
    /// bound to, so a deleted application's do not come back with a new
    /// one of the same name. (Empty for applications stored before it.)
    #[serde(default)]
    pub incarnation: String,
}

impl Application {
    /// What lists show (no secret, no key).
    pub fn view(&self) -> ApplicationView {
        ApplicationView {
            application: self.name.clone(),
            address: self.address.clone(),
            active: self.active,
            timestamped: iso(self.created_at),
            description: self.description.clone(),
            queues: self.queues.clone(),
        }
    }

    /// Its secrets valid at `now`: the current one, then the replaced one
    /// during its grace period.
    pub fn secrets_at(&self, now: u64) -> Vec<&str> {
        with_retiring(&self.secret, self.previous_secret.as_ref(), now)
    }

    /// Whether it may use queue or table `name` through the queue API.
    pub fn may_use(&self, name: &str) -> bool {
        self.queues.as_ref().is_none_or(|patterns| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => p == name,
            })
        })
    }
}

/// Checks queue patterns: names (letters, digits, `_`, `-`, `.`), or such a
/// prefix followed by `*`.
pub fn check_queue_patterns(patterns: &[String]) -> HubResult<()> {
    for p in patterns {
        let name = p.strip_suffix('*').unwrap_or(p);
        let ok = !p.is_empty()
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok {
            return Err(HubError::BadRequest(format!(
                "queues - {p:?} is not a queue name or a prefix ending in *"
            )));
        }
    }
    Ok(())
}

/// Checks an application name: a letter or digit, then up to 127 letters,
/// digits, `_`, `.` or `-` (Amebo's rule).
pub fn check_name(name: &str) -> HubResult<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 128 {
        Ok(())
    } else {
        Err(HubError::unprocessable(format!(
            "Application name {name:?} must match ^[A-Za-z0-9][A-Za-z0-9_.-]{{0,127}}$"
        )))
    }
}

/// Checks and normalises an address: an absolute http(s) URL, without
/// credentials in it (they would be shown in every listing; credentials
/// belong in headers).
pub fn normalize_address(address: &str) -> HubResult<String> {
    Ok(parse_address(address)?.to_string())
}

/// [`normalize_address`], as a parsed URL.
pub(crate) fn parse_address(address: &str) -> HubResult<reqwest::Url> {
    let url = reqwest::Url::parse(address.trim())
        .map_err(|e| HubError::BadRequest(format!("address - Input should be a valid URL, {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(HubError::BadRequest(
            "address - URL scheme should be 'http' or 'https'".to_owned(),
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(HubError::BadRequest(
            "address - a URL may not carry a user name or password; send credentials in headers"
                .to_owned(),
        ));
    }
    Ok(url)
}

/// Shortest secret accepted from a client.
pub const MIN_SECRET_CHARS: usize = 16;

/// Checks a client-chosen secret.
pub fn check_secret(secret: &str) -> HubResult<()> {
    if secret.chars().count() < MIN_SECRET_CHARS {
        return Err(HubError::unprocessable(
            "Secrets must be at least 16 characters",
        ));
    }
    if secret.starts_with(crate::sealing::SEALED_PREFIX) {
        return Err(HubError::unprocessable(format!(
            "Secrets may not start with {:?}",
            crate::sealing::SEALED_PREFIX
        )));
    }
    Ok(())
}

impl crate::sealing::HoldsSecrets for Application {
    fn secrets_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut secrets = vec![("secret", &mut self.secret)];
        if let Some(previous) = &mut self.previous_secret {
            secrets.push(("previous_secret", &mut previous.secret));
        }
        secrets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        assert!(check_name("user-service").is_ok());
        assert!(check_name("a").is_ok());
        assert!(check_name("-a").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(129)).is_err());
        assert_eq!(
            normalize_address("http://host:9").ok().as_deref(),
            Some("http://host:9/")
        );
        assert!(normalize_address("ftp://host/").is_err());
        assert!(normalize_address("/relative").is_err());
        assert!(normalize_address("http://user:password@host/").is_err());
        assert!(normalize_address("http://user@host/").is_err());
    }
}
