//! Webhook signatures: Amebo's `x-amebo-signature` and the Standard Webhooks
//! headers, both computed over the exact bytes sent.

pub use tidings_signatures::{amebo, standard, verify_hex};

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

/// SHA-256 of a secret, hex: how API keys are stored.
pub fn digest(secret: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(secret.as_bytes()))
}
