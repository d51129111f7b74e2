//! Identifiers and secrets.
//!
//! Event ids are 32 hex characters (the shape of Amebo's uuid hex): a 64-bit
//! *row id* (milliseconds since the epoch shifted left by 10 bits, plus a
//! counter) followed by 64 random bits. Sorting ids as text sorts events by
//! publish time, so the event log is a time index; the row id stays below
//! 2^53, so JavaScript clients read it exactly.

use std::sync::Mutex;

use std::sync::PoisonError;

/// Events one process may number per millisecond before borrowing from the next.
const PER_MS_BITS: u32 = 10;

/// Hands out strictly increasing row ids.
#[derive(Debug, Default)]
pub struct RowIds {
    last: Mutex<u64>,
}

impl RowIds {
    /// The next row id at `now_ms`.
    pub fn next(&self, now_ms: u64) -> u64 {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let id = (now_ms << PER_MS_BITS).max(*last + 1);
        *last = id;
        id
    }
}

/// The first row id at `ms`.
pub fn first_row_at(ms: u64) -> u64 {
    ms << PER_MS_BITS
}

/// The first row id at or after `ms`, as the key prefix of an event id.
pub fn row_key_at(ms: u64) -> String {
    format!("{:016x}", first_row_at(ms))
}

/// The publish time (ms) encoded in a row id.
pub fn row_time(row: u64) -> u64 {
    row >> PER_MS_BITS
}

/// An event id from its row id.
pub fn event_id(row: u64) -> String {
    format!("{row:016x}{:016x}", rand::random::<u64>())
}

/// A request id: 32 hex characters. Like the random half of an event id it
/// comes from the thread's generator (ChaCha, seeded from the operating
/// system), not a system call per request; secrets and keys below read the
/// operating system's source directly.
pub fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The row id of an event id, if it is one.
pub fn parse_event_row(id: &str) -> Option<u64> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&id[..16], 16).ok()
}

/// 32 random hex characters (subscription ids).
pub fn random_id() -> String {
    hex::encode(random_bytes::<16>())
}

/// A fresh secret: 64 hex characters (256 bits).
pub fn new_secret() -> String {
    hex::encode(random_bytes::<32>())
}

/// A fresh API key: `tidings_` and 64 hex characters.
pub fn new_api_key() -> String {
    format!("{API_KEY_PREFIX}{}", hex::encode(random_bytes::<32>()))
}

/// How API keys start.
pub const API_KEY_PREFIX: &str = "tidings_";

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS random source does not fail on supported platforms; if it ever
    // did, a weak id is better caught here than silently zero.
    if getrandom::fill(&mut bytes).is_err() {
        tracing::error!("the operating system's random source failed");
        std::process::abort();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_increase_and_encode_time() {
        let ids = RowIds::default();
        let a = ids.next(1_800_000_000_000);
        let b = ids.next(1_800_000_000_000);
        let c = ids.next(1_799_999_999_999);
        assert!(a < b && b < c);
        assert_eq!(row_time(a), 1_800_000_000_000);
        assert!(a < (1u64 << 53));
        let id = event_id(b);
        assert_eq!(parse_event_row(&id), Some(b));
        assert!(id > row_key_at(1_800_000_000_000));
        assert!(id < row_key_at(1_800_000_000_001));
    }
}
