//! Message payloads and headers.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest accepted payload: 1 MiB of JSON text.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// Largest accepted total size of a message's header names and values: 64 KiB.
pub const MAX_HEADERS_BYTES: usize = 64 * 1024;

/// A JSON value kept as its text, so it is parsed once when it enters the
/// broker and never again on the way through.
///
/// ```
/// use tidings_core::Payload;
/// let p = Payload::from_json_str(r#"{"a": 1}"#)?;
/// let v: serde_json::Value = p.json()?;
/// assert_eq!(v["a"], 1);
/// assert!(Payload::from_json_str("{oops").is_err());
/// # Ok::<_, tidings_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Arc<str>);

impl Payload {
    /// Serializes `value` as JSON.
    pub fn from_value<T: Serialize + ?Sized>(value: &T) -> Result<Self> {
        let text =
            serde_json::to_string(value).map_err(|e| Error::InvalidPayload(e.to_string()))?;
        Self::checked_size(text)
    }

    /// Takes JSON text, checking that it is one valid JSON value.
    pub fn from_json_str(text: impl Into<String>) -> Result<Self> {
        let text = text.into();
        serde_json::from_str::<IgnoredAny>(&text)
            .map_err(|e| Error::InvalidPayload(e.to_string()))?;
        Self::checked_size(text)
    }

    /// Wraps text that was already checked (read back from storage).
    pub fn from_trusted(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }

    fn checked_size(text: String) -> Result<Self> {
        if text.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::PayloadTooLarge {
                size: text.len(),
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        Ok(Self(text.into()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never true for a valid payload).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Deserializes the payload into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.0).map_err(|e| Error::InvalidPayload(e.to_string()))
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(|e| serde::ser::Error::custom(e.to_string()))?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(d)?;
        Ok(Self(Arc::from(raw.get())))
    }
}

/// Message headers: string names to string values, sorted by name.
pub type Headers = BTreeMap<String, String>;

/// Checks the total size of `headers` against [`MAX_HEADERS_BYTES`].
pub fn check_headers(headers: &Headers) -> Result<()> {
    let size: usize = headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_HEADERS_BYTES {
        return Err(Error::InvalidArgument(format!(
            "headers take {size} bytes, more than the limit of {MAX_HEADERS_BYTES}"
        )));
    }
    if headers.keys().any(String::is_empty) {
        return Err(Error::InvalidArgument("a header name is empty".into()));
    }
    Ok(())
}
