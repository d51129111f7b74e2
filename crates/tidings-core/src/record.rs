//! Records: small JSON documents kept by key in named tables, next to the
//! queues, and written in the same transactions as sends and acks.
//!
//! They hold what services built on a broker must remember durably (an event
//! hub's catalog and event log, saga state, subscriptions), so that such state
//! lives in one place with the messages and changes atomically with them.
//! Keys are ordered as bytes; a scan walks one key range in either direction.

use crate::{Error, Payload, Result};

/// Longest record key, in bytes.
pub const MAX_RECORD_KEY_BYTES: usize = 512;

/// Checks a record key: 1 to [`MAX_RECORD_KEY_BYTES`] bytes, any text.
pub fn validate_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > MAX_RECORD_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "a record key must be 1 to {MAX_RECORD_KEY_BYTES} bytes long, got {}",
            key.len()
        )));
    }
    Ok(())
}

/// The count a counter record holds ([`crate::TxOp::Add`]): `stored` as
/// decimal text, 0 when absent; anything else is an error naming the record.
pub fn counter_value(table: &str, key: &str, stored: Option<&[u8]>) -> Result<i64> {
    let Some(bytes) = stored else {
        return Ok(0);
    };
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.trim().parse::<i64>().ok())
        .ok_or_else(|| not_a_counter(table, key))
}

/// The error of an [`crate::TxOp::Add`] to a record that holds something
/// other than an integer.
pub fn not_a_counter(table: &str, key: &str) -> Error {
    Error::InvalidArgument(format!(
        "record {key:?} of table {table} does not hold an integer, so nothing can be added to it"
    ))
}

/// The first key after every key that starts with `prefix` (`None`: no
/// key is after them all, the prefix being empty or all `0xFF`): the end of
/// a prefix scan's range, for stores that scan ranges of bytes.
///
/// ```
/// use tidings_core::record::prefix_end;
/// assert_eq!(prefix_end(b"e."), Some(b"e/".to_vec()));
/// assert_eq!(prefix_end(&[b'a', 0xFF]), Some(vec![b'b']));
/// assert_eq!(prefix_end(&[0xFF]), None);
/// ```
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Its key within the table.
    pub key: String,
    /// Its value.
    pub value: Payload,
}

/// Which records a scan returns: keys in `from..to` that start with `prefix`,
/// in key order (or reverse order), at most `limit` of them.
///
/// ```
/// use tidings_core::RecordScan;
/// // The ten newest keys before "k500" that start with "k".
/// let scan = RecordScan::prefix("k").to("k500").limit(10).reverse();
/// assert!(scan.reverse);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordScan {
    /// Only keys starting with this.
    pub prefix: String,
    /// Only keys at or after this one.
    pub from: Option<String>,
    /// Only keys before this one.
    pub to: Option<String>,
    /// At most this many (`usize::MAX` by default).
    pub limit: usize,
    /// Highest key first.
    pub reverse: bool,
}

impl RecordScan {
    /// Every record of the table.
    pub fn all() -> Self {
        Self {
            limit: usize::MAX,
            ..Self::default()
        }
    }

    /// Records whose keys start with `prefix`.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            ..Self::all()
        }
    }

    /// Starts at `key` (included).
    pub fn from(mut self, key: impl Into<String>) -> Self {
        self.from = Some(key.into());
        self
    }

    /// Starts just after `key`.
    pub fn after(self, key: &str) -> Self {
        self.from(format!("{key}\0"))
    }

    /// Stops before `key`.
    pub fn to(mut self, key: impl Into<String>) -> Self {
        self.to = Some(key.into());
        self
    }

    /// Returns at most `limit` records.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// Highest key first.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    /// Whether `key` is in range (prefix, from, to; not the limit).
    pub fn contains(&self, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && self.from.as_deref().is_none_or(|from| key >= from)
            && self.to.as_deref().is_none_or(|to| key < to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_ranges() {
        let scan = RecordScan::prefix("e.").from("e.2").to("e.5");
        assert!(scan.contains("e.2"));
        assert!(scan.contains("e.4z"));
        assert!(!scan.contains("e.5"));
        assert!(!scan.contains("e.1"));
        assert!(!scan.contains("f.3"));
        let after = RecordScan::all().after("b");
        assert!(!after.contains("b"));
        assert!(after.contains("b0"));
        assert!(after.contains("c"));
    }

    #[test]
    fn keys_are_bounded() {
        assert!(validate_key("").is_err());
        assert!(validate_key(&"k".repeat(513)).is_err());
        assert!(validate_key("any text / at all: ✓").is_ok());
    }
}
