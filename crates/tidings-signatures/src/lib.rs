//! The hub's webhook signatures, for the hub that signs and the receivers
//! that check them.
//!
//! Every delivery carries the Standard Webhooks headers (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature`), keyed with the subscription's
//! signing key (`whsec_...`), and, unless the subscription opted out, Amebo's
//! `x-amebo-signature`, keyed with the subscriber application's secret. Both
//! cover the exact bytes sent: a receiver must verify the raw body before it
//! parses it (a body parsed and serialised again is not what was signed).
//!
//! ```
//! use tidings_signatures::{Verifier, standard};
//!
//! let key = "whsec_a2V5LW9mLTMyLWJ5dGVzLWZvci10aGUtZXhhbXBsZQ==";
//! let verifier = Verifier::new(key).unwrap();
//! let body = br#"{"event":"e1","payload":{"n":1}}"#;
//! let mut headers = http::HeaderMap::new();
//! headers.insert("webhook-id", "msg_1".parse().unwrap());
//! headers.insert("webhook-timestamp", "1800000000".parse().unwrap());
//! let signature = standard(verifier.signing_key().unwrap(), "msg_1", 1_800_000_000, body);
//! headers.insert("webhook-signature", signature.parse().unwrap());
//! let delivery = verifier.verify_at(&headers, body, 1_800_000_010).unwrap();
//! assert_eq!(delivery.event.as_deref(), Some("e1"));
//! assert!(verifier.verify_at(&headers, body, 1_800_001_000).is_err()); // stale
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hmac::{KeyInit, Mac};
use http::HeaderMap;
use serde_json::Value;

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "axum")]
pub use extract::{Verified, VerifiedRejection};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// How far a Standard Webhooks timestamp may be from the receiver's clock
/// (the Standard Webhooks libraries' default): older deliveries are refused
/// as stale or replayed.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How signing keys start.
pub const SIGNING_KEY_PREFIX: &str = "whsec_";

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of any length")
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Amebo's signature: lowercase hex HMAC-SHA256 of `body` keyed with the
/// subscriber application's secret.
///
/// ```
/// let sig = tidings_signatures::amebo("secret", br#"{"a":1}"#);
/// assert_eq!(sig.len(), 64);
/// ```
pub fn amebo(secret: &str, body: &[u8]) -> String {
    hex::encode(mac(secret.as_bytes(), &[body]))
}

/// One Standard Webhooks signature: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` keyed with `key` (a signing key's decoded
/// bytes). The `webhook-signature` header lists one per valid key,
/// space-separated.
pub fn standard(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let raw = mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Checks a hex HMAC-SHA256 signature of the concatenated `parts` in
/// constant time.
pub fn verify_hex(secret: &str, parts: &[&[u8]], signature: &str) -> bool {
    let Ok(given) = hex::decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    for part in parts {
        mac.update(part);
    }
    mac.verify_slice(&given).is_ok()
}

/// A signing key that is not `whsec_` and base64.
#[derive(Debug, thiserror::Error)]
#[error("a signing key is {SIGNING_KEY_PREFIX} followed by base64")]
pub struct KeyError;

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    /// A header the scheme needs is absent.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// `webhook-timestamp` is not a number of seconds.
    #[error("webhook-timestamp is not Unix seconds")]
    BadTimestamp,
    /// `webhook-timestamp` is further from now than the tolerance.
    #[error("webhook-timestamp is {0} s from now: stale or replayed")]
    Stale(i64),
    /// No signature matches the key for these bytes: forged, changed, or
    /// signed with another key.
    #[error("no signature matches the key")]
    Mismatch,
    /// The body is signed correctly but is not a JSON object.
    #[error("the body is not a JSON object")]
    NotJson,
}

/// What a receiver verifies with.
#[derive(Clone)]
enum Secret {
    /// A subscription's signing key, decoded: the Standard Webhooks headers.
    SigningKey(Vec<u8>),
    /// An application's secret: `x-amebo-signature` (or its `-previous`).
    ApplicationSecret(String),
}

/// A verified delivery.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event's id (the body's `event`, or `x-amebo-event-id`): the key
    /// to drop repeats by (retries and replays of one event carry it).
    pub event: Option<String>,
    /// The Standard Webhooks `webhook-id` (the same on every retry of one
    /// delivery).
    pub webhook_id: Option<String>,
    /// The body, parsed after it was verified: `event`, `action`,
    /// `payload`, `metadata`, `timestamped`.
    pub body: Value,
}

/// Checks deliveries against one key.
#[derive(Clone)]
pub struct Verifier {
    secret: Secret,
    tolerance: Duration,
}

impl Verifier {
    /// A verifier for a subscription's signing key (`whsec_...`, checked
    /// against the Standard Webhooks headers) or the subscriber
    /// application's secret (anything else, checked against
    /// `x-amebo-signature`, which carries no time: only the first kind
    /// refuses stale deliveries).
    pub fn new(secret: &str) -> Result<Self, KeyError> {
        let secret = match secret.strip_prefix(SIGNING_KEY_PREFIX) {
            Some(encoded) => Secret::SigningKey(
                base64::engine::general_purpose::STANDARD
                    .decode(encoded)
                    .map_err(|_| KeyError)?,
            ),
            None => Secret::ApplicationSecret(secret.to_owned()),
        };
        Ok(Self {
            secret,
            tolerance: TOLERANCE,
        })
    }

    /// How far from now a Standard Webhooks timestamp may be ([`TOLERANCE`]
    /// unless set).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// The signing key's bytes, if this verifier has one.
    pub fn signing_key(&self) -> Option<&[u8]> {
        match &self.secret {
            Secret::SigningKey(key) => Some(key),
            Secret::ApplicationSecret(_) => None,
        }
    }

    /// Verifies a delivery by the system clock.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<Delivery, Rejection> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(headers, body, now)
    }

    /// Verifies a delivery as of `now` (Unix seconds).
    pub fn verify_at(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        now: u64,
    ) -> Result<Delivery, Rejection> {
        let text = |name: &'static str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
        };
        match &self.secret {
            Secret::SigningKey(key) => {
                let id = text("webhook-id").ok_or(Rejection::MissingHeader("webhook-id"))?;
                let stamp = text("webhook-timestamp")
                    .ok_or(Rejection::MissingHeader("webhook-timestamp"))?;
                let given = text("webhook-signature")
                    .ok_or(Rejection::MissingHeader("webhook-signature"))?;
                let sent_at: u64 = stamp.trim().parse().map_err(|_| Rejection::BadTimestamp)?;
                let age = i64::try_from(now).unwrap_or(i64::MAX)
                    - i64::try_from(sent_at).unwrap_or(i64::MAX);
                if age.unsigned_abs() > self.tolerance.as_secs() {
                    return Err(Rejection::Stale(age));
                }
                let raw = mac(key, &[id.as_bytes(), b".", stamp.as_bytes(), b".", body]);
                let matches = given.split_whitespace().any(|candidate| {
                    candidate
                        .strip_prefix("v1,")
                        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                        .is_some_and(|sig| constant_time_eq(&sig, &raw))
                });
                if !matches {
                    return Err(Rejection::Mismatch);
                }
            }
            Secret::ApplicationSecret(secret) => {
                let present = ["x-amebo-signature", "x-amebo-signature-previous"]
                    .into_iter()
                    .filter_map(text)
                    .collect::<Vec<_>>();
                if present.is_empty() {
                    return Err(Rejection::MissingHeader("x-amebo-signature"));
                }
                if !present.iter().any(|sig| verify_hex(secret, &[body], sig)) {
                    return Err(Rejection::Mismatch);
                }
            }
        }
        let parsed: Value = serde_json::from_slice(body).map_err(|_| Rejection::NotJson)?;
        if !parsed.is_object() {
            return Err(Rejection::NotJson);
        }
        let event = parsed["event"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| text("x-amebo-event-id").map(str::to_owned));
        Ok(Delivery {
            event,
            webhook_id: text("webhook-id").map(str::to_owned),
            body: parsed,
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const KEY: &str = "whsec_a2V5LW9mLTMyLWJ5dGVzLWZvci10aGUtZXhhbXBsZQ==";
    const BODY: &[u8] = br#"{"event":"e1","action":"a","payload":{"n":1}}"#;
    const NOW: u64 = 1_800_000_000;

    fn signed(key: &[u8], id: &str, at: u64, body: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", at.to_string().parse().unwrap());
        h.insert(
            "webhook-signature",
            standard(key, id, at, body).parse().unwrap(),
        );
        h
    }

    #[test]
    fn known_vectors() {
        // RFC 4231 test case 2.
        assert_eq!(
            amebo("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let sig = amebo("k", b"body");
        assert!(verify_hex("k", &[b"bo", b"dy"], &sig));
        assert!(!verify_hex("k2", &[b"body"], &sig));
    }

    #[test]
    fn a_signed_delivery_verifies_and_names_its_event() {
        let v = Verifier::new(KEY).unwrap();
        let key = v.signing_key().unwrap().to_vec();
        let d = v
            .verify_at(&signed(&key, "msg_1", NOW, BODY), BODY, NOW + 3)
            .unwrap();
        assert_eq!(d.event.as_deref(), Some("e1"));
        assert_eq!(d.webhook_id.as_deref(), Some("msg_1"));
        assert_eq!(d.body["payload"]["n"], 1);
    }

    #[test]
    fn changed_forged_stale_or_reserialised_deliveries_are_refused() {
        let v = Verifier::new(KEY).unwrap();
        let key = v.signing_key().unwrap().to_vec();
        let headers = signed(&key, "msg_1", NOW, BODY);
        let tampered = br#"{"event":"e1","action":"a","payload":{"n":2}}"#;
        assert_eq!(
            v.verify_at(&headers, tampered, NOW).err(),
            Some(Rejection::Mismatch)
        );
        let other = signed(b"another key", "msg_1", NOW, BODY);
        assert_eq!(
            v.verify_at(&other, BODY, NOW).err(),
            Some(Rejection::Mismatch)
        );
        assert_eq!(
            v.verify_at(&headers, BODY, NOW + 301).err(),
            Some(Rejection::Stale(301))
        );
        assert_eq!(
            v.verify_at(&headers, BODY, NOW - 301).err(),
            Some(Rejection::Stale(-301))
        );
        let reordered = br#"{"action":"a","event":"e1","payload":{"n":1}}"#;
        assert_eq!(
            v.verify_at(&headers, reordered, NOW).err(),
            Some(Rejection::Mismatch)
        );
        assert_eq!(
            v.verify_at(&HeaderMap::new(), BODY, NOW).err(),
            Some(Rejection::MissingHeader("webhook-id"))
        );
    }

    #[test]
    fn either_key_of_a_rotation_verifies() {
        let v = Verifier::new(KEY).unwrap();
        let key = v.signing_key().unwrap().to_vec();
        let mut headers = signed(&key, "msg_1", NOW, BODY);
        let both = format!(
            "{} {}",
            standard(b"new key", "msg_1", NOW, BODY),
            standard(&key, "msg_1", NOW, BODY)
        );
        headers.insert("webhook-signature", both.parse().unwrap());
        assert!(v.verify_at(&headers, BODY, NOW).is_ok());
    }

    #[test]
    fn the_amebo_header_verifies_with_the_application_secret() {
        let v = Verifier::new("app-secret").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-amebo-signature",
            amebo("new-secret", BODY).parse().unwrap(),
        );
        assert_eq!(
            v.verify_at(&headers, BODY, NOW).err(),
            Some(Rejection::Mismatch)
        );
        headers.insert(
            "x-amebo-signature-previous",
            amebo("app-secret", BODY).parse().unwrap(),
        );
        assert!(v.verify_at(&headers, BODY, NOW).is_ok());
        assert!(Verifier::new("whsec_not base64!").is_err());
    }
}
