//! Webhook signatures: Amebo's `x-amebo-signature` and the Standard Webhooks
//! headers, both computed over the exact bytes sent.

use base64::Engine;
use hmac::{KeyInit, Mac};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        unreachable!("HMAC accepts keys of any length")
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Amebo's signature: lowercase hex HMAC-SHA256 of `body` keyed with the
/// subscriber's secret.
///
/// ```
/// let sig = tidings_hub::signature::amebo("secret", br#"{"a":1}"#);
/// assert_eq!(sig.len(), 64);
/// ```
pub fn amebo(secret: &str, body: &[u8]) -> String {
    hex::encode(mac(secret.as_bytes(), &[body]))
}

/// What a signed request signs (the `v1=` form of `x-amebo-signature`):
/// `v1`, the method, the path with its query, the timestamp (Unix seconds)
/// and the body, each of the first four followed by a line feed. Binding the
/// method, the path and the time means a captured request cannot be
/// replayed as another one, or later.
pub fn request_parts<'a>(
    method: &'a str,
    path_and_query: &'a str,
    timestamp: &'a str,
    body: &'a [u8],
) -> [&'a [u8]; 8] {
    [
        b"v1\n",
        method.as_bytes(),
        b"\n",
        path_and_query.as_bytes(),
        b"\n",
        timestamp.as_bytes(),
        b"\n",
        body,
    ]
}

/// One Standard Webhooks signature: `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}` keyed with `key` (a signing key's decoded
/// bytes; a verifier takes `whsec_` + their base64). The
/// `webhook-signature` header lists one per valid key, space-separated.
pub fn standard(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let raw = mac(key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// Checks a hex HMAC-SHA256 signature of `message` in constant time.
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

/// SHA-256 of a secret, hex: how API keys are stored.
pub fn digest(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(standard(b"k", "msg_1", 1_700_000_000, b"{}").starts_with("v1,"));
    }
}
