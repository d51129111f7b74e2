//! Secrets that rotate with overlap, and what a delivery is signed with.
//!
//! Two kinds of secret sign a delivery:
//! - a subscription's **signing key** (`whsec_` + base64 of 24 to 64 random
//!   bytes, as the Standard Webhooks spec asks) signs the `webhook-*`
//!   headers; it is known to the receiving endpoint only, so a leak there
//!   gives nobody a way into the hub;
//! - the application's **secret** (Amebo's) signs `x-amebo-signature`, the
//!   compatibility path, and is also the application's password and
//!   request-signing key on the hub.
//!
//! A rotation keeps the replaced secret valid for a grace period
//! ([`Retiring`]): deliveries are signed with both, and requests and
//! sessions made with the old application secret keep working until then.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{HubError, HubResult};
use crate::model::period::Period;

/// A secret replaced by a rotation, still accepted until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retiring {
    /// The replaced secret.
    pub secret: String,
    /// When it stops being accepted, ms since the epoch.
    pub until: u64,
}

impl Retiring {
    /// The replaced secret if still in its grace period at `now`.
    pub fn live_at(&self, now: u64) -> Option<&str> {
        (now < self.until).then_some(self.secret.as_str())
    }
}

/// A current secret followed by the replaced one while it is still live.
pub fn with_retiring<'a>(
    current: &'a str,
    previous: Option<&'a Retiring>,
    now: u64,
) -> Vec<&'a str> {
    std::iter::once(current)
        .chain(previous.and_then(|p| p.live_at(now)))
        .collect()
}

/// How a Standard Webhooks signing key starts.
pub const SIGNING_KEY_PREFIX: &str = "whsec_";
/// Fewest random bytes a signing key may have (the spec's lower bound).
pub const MIN_SIGNING_KEY_BYTES: usize = 24;
/// Most bytes a signing key may have (the spec's upper bound).
pub const MAX_SIGNING_KEY_BYTES: usize = 64;

/// A fresh signing key: `whsec_` and the base64 of 32 random bytes.
pub fn new_signing_key() -> String {
    let bytes = crate::ids::random_bytes::<32>();
    format!(
        "{SIGNING_KEY_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The HMAC key a signing key stands for: its base64 decoded. Refuses
/// (422) a key that is not `whsec_` + base64 of 24 to 64 bytes.
pub fn signing_key_bytes(key: &str) -> HubResult<Vec<u8>> {
    let refused = || {
        HubError::unprocessable(format!(
            "signing_key - must be {SIGNING_KEY_PREFIX} followed by the base64 of \
             {MIN_SIGNING_KEY_BYTES} to {MAX_SIGNING_KEY_BYTES} random bytes; \
             omit it to have one generated"
        ))
    };
    let encoded = key.strip_prefix(SIGNING_KEY_PREFIX).ok_or_else(refused)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| refused())?;
    if (MIN_SIGNING_KEY_BYTES..=MAX_SIGNING_KEY_BYTES).contains(&bytes.len()) {
        Ok(bytes)
    } else {
        Err(refused())
    }
}

/// How long a replaced secret stays valid when the rotation does not say.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Longest grace period a rotation may ask for.
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a replaced secret stays valid: seconds or a duration (`"24h"`);
/// `0` ends it at once (after a leak).
pub type GracePeriod = Period;

/// The grace period asked for, or [`DEFAULT_GRACE`]; refuses (400) one
/// that cannot be read or is longer than [`MAX_GRACE`].
pub fn grace_period(given: Option<&GracePeriod>) -> HubResult<Duration> {
    given.map_or(Ok(DEFAULT_GRACE), |p| {
        crate::model::period::duration(p, "grace_period", MAX_GRACE)
    })
}

/// Length from which an application secret is not called weak: the
/// base64 of 24 random bytes.
pub const RECOMMENDED_SECRET_CHARS: usize = 32;

/// Why an application secret is weak, if it is. Such secrets are accepted
/// (Amebo's rule is 16 characters, and its seed registers shorter, readable
/// ones) but the answer and the log say so.
pub fn weakness(secret: &str) -> Option<String> {
    let chars = secret.chars().count();
    let distinct = secret
        .chars()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if chars < RECOMMENDED_SECRET_CHARS || distinct < 8 {
        Some(format!(
            "the secret is weak ({chars} characters, {distinct} distinct): anyone who guesses \
             it can act as this application; omit it to have a random one generated, or give \
             {RECOMMENDED_SECRET_CHARS} or more random characters"
        ))
    } else {
        None
    }
}

/// What one delivery is signed with, as of the moment it is sent: the
/// current secrets first, then the replaced ones in their grace period.
#[derive(Debug, Clone, Default)]
pub struct SigningKeys {
    /// Application secrets for `x-amebo-signature` (empty: the header is
    /// off for the subscription).
    pub amebo: Vec<String>,
    /// HMAC keys of the `webhook-signature` header (never empty).
    pub standard: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_keys_are_spec_strength() {
        let key = new_signing_key();
        assert!(key.starts_with("whsec_"));
        assert_eq!(signing_key_bytes(&key).map(|b| b.len()).ok(), Some(32));
        let b64 = |n: usize| {
            format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
            )
        };
        assert!(signing_key_bytes(&b64(23)).is_err());
        assert!(signing_key_bytes(&b64(24)).is_ok());
        assert!(signing_key_bytes(&b64(64)).is_ok());
        assert!(signing_key_bytes(&b64(65)).is_err());
        assert!(signing_key_bytes("user-service-secret-long-enough-0123456789").is_err());
        assert!(signing_key_bytes("whsec_not base64!").is_err());
    }

    #[test]
    fn grace_periods() {
        assert_eq!(grace_period(None).ok(), Some(DEFAULT_GRACE));
        let zero = GracePeriod::Seconds(0);
        assert_eq!(grace_period(Some(&zero)).ok(), Some(Duration::ZERO));
        assert!(grace_period(Some(&GracePeriod::Text("31d".to_owned()))).is_err());
    }

    #[test]
    fn retiring_secrets_expire() {
        let old = Retiring {
            secret: "old".to_owned(),
            until: 1_000,
        };
        assert_eq!(with_retiring("new", Some(&old), 999), ["new", "old"]);
        assert_eq!(with_retiring("new", Some(&old), 1_000), ["new"]);
        assert_eq!(with_retiring("new", None, 0), ["new"]);
    }

    #[test]
    fn weak_secrets_are_named() {
        assert!(weakness("user-service-secret").is_some());
        assert!(weakness(&"a".repeat(40)).is_some());
        assert!(weakness(&crate::ids::new_secret()).is_none());
    }
}
