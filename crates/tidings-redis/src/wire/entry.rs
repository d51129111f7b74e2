//! Stream entries in LeanMQ's layout, plus the fields Tidings adds.
//!
//! LeanMQ reads one field, `data`: a JSON object holding the user's keys and
//! the reserved `_metadata` (stripped before delivery), `_failures` and
//! `_requeues`. Tidings writes the payload's own bytes first and the reserved
//! keys after them, and records the payload's length in field `pl`, so it
//! reads its own entries back by slicing instead of parsing. A payload that is
//! not a JSON object is wrapped as `{"_value": ...}` (`pl` = `v`). Other
//! Tidings fields (`h` headers, `dd` dedup id, `x` expiry, `nb` not before,
//! `only` group) are ignored by Python, which reads only `data`.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::IgnoredAny;
use tidings_core::{Headers, Payload};

use super::lenient::{self, Member};

/// Keys of `data` that belong to the queue, not to the payload.
pub const RESERVED: [&str; 3] = ["_metadata", "_failures", "_requeues"];

/// A stream entry as read from Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The stream id, `ms-seq`.
    pub id: String,
    /// Field/value pairs in stored order.
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// The value of a field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The milliseconds part of the id: when Redis stored the entry.
    pub fn millis(&self) -> u64 {
        id_millis(&self.id)
    }

    /// The payload, with reserved keys removed and Python's JSON made standard.
    pub fn payload(&self) -> Result<Payload, String> {
        let data = self.field("data").ok_or("the entry has no data field")?;
        let text: Cow<'_, str> = match self.field("pl") {
            Some("v") => {
                let members = lenient::members(data).ok_or("data is not a JSON object")?;
                let value = members
                    .iter()
                    .find(|m| m.key == "_value")
                    .ok_or("a wrapped payload has no _value")?;
                Cow::Borrowed(value.value)
            }
            Some(len) => {
                let len: usize = len.parse().map_err(|_| "field pl is not a length")?;
                if len == 2 {
                    Cow::Borrowed("{}")
                } else {
                    let head = data
                        .get(..len.saturating_sub(1))
                        .filter(|_| len > 2)
                        .ok_or("field pl does not match the data")?;
                    Cow::Owned(format!("{head}}}"))
                }
            }
            None => Cow::Owned(rebuild(data)?),
        };
        // Tidings checked its own payloads when they were sent; what others
        // wrote is made standard and checked here.
        if matches!(self.field("pl"), Some(pl) if pl != "v") {
            return Ok(Payload::from_trusted(text.into_owned()));
        }
        let standard = lenient::to_standard(&text);
        serde_json::from_str::<IgnoredAny>(&standard)
            .map_err(|e| format!("data is not valid JSON: {e}"))?;
        Ok(Payload::from_trusted(standard.into_owned()))
    }

    /// Headers written by Tidings (none for Python entries).
    pub fn headers(&self) -> Headers {
        self.field("h")
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default()
    }

    /// The caller's id: field `dd` from Tidings, `_metadata.id` from LeanMQ.
    pub fn dedup_id(&self) -> Option<String> {
        if let Some(dd) = self.field("dd") {
            return Some(dd.to_owned());
        }
        if self.field("pl").is_some() {
            return None;
        }
        self.metadata_id()
    }

    /// `_metadata.id`, the message id LeanMQ keeps across DLQ moves.
    pub fn metadata_id(&self) -> Option<String> {
        let data = self.field("data")?;
        let members = lenient::members(data)?;
        let meta = members.iter().find(|m| m.key == "_metadata")?;
        let meta = lenient::members(meta.value)?;
        lenient::unquote(meta.iter().find(|m| m.key == "id")?.value)
    }

    /// The reserved members of `data` (for moving the entry on).
    pub fn reserved(&self) -> Vec<Member<'_>> {
        self.field("data")
            .and_then(lenient::members)
            .map(|m| {
                m.into_iter()
                    .filter(|m| RESERVED.contains(&m.key))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The payload members as written (no standardisation), for copying an
    /// entry on without changing a byte of what the user sent.
    pub fn raw_payload(&self) -> Result<String, String> {
        match self.field("pl") {
            None => rebuild(self.field("data").ok_or("the entry has no data field")?),
            Some(_) => Ok(self.payload()?.as_str().to_owned()),
        }
    }
}

/// `data` without its reserved members, as an object of the same bytes.
fn rebuild(data: &str) -> Result<String, String> {
    let members = lenient::members(data).ok_or("data is not a JSON object")?;
    let mut out = String::with_capacity(data.len());
    out.push('{');
    for m in members.iter().filter(|m| !RESERVED.contains(&m.key)) {
        if out.len() > 1 {
            out.push_str(", ");
        }
        out.push('"');
        out.push_str(m.key);
        out.push_str("\": ");
        out.push_str(m.value);
    }
    out.push('}');
    Ok(out)
}

/// The milliseconds part of a stream id (0 if it has none).
pub fn id_millis(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// Whether `id` is a stream id Redis accepts (`ms` or `ms-seq`).
pub fn is_stream_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let digits = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

/// The `data` field for `payload` followed by the reserved members, and the
/// value of field `pl`.
pub fn compose(payload: &str, reserved: &[(&str, String)]) -> (String, String) {
    let payload = payload.trim();
    let tail_len: usize = reserved.iter().map(|(k, v)| k.len() + v.len() + 6).sum();
    let mut data = String::with_capacity(payload.len() + tail_len + 16);
    let (pl, mut empty) = if payload.starts_with('{') && payload.ends_with('}') {
        let head = &payload[..payload.len() - 1];
        data.push_str(head);
        let empty = head[1..].trim().is_empty();
        (payload.len().to_string(), empty)
    } else {
        data.push_str("{\"_value\": ");
        data.push_str(payload);
        ("v".to_owned(), false)
    };
    for (key, value) in reserved {
        if !empty {
            data.push_str(", ");
        }
        empty = false;
        data.push('"');
        data.push_str(key);
        data.push_str("\": ");
        data.push_str(value);
    }
    data.push('}');
    (data, pl)
}

/// LeanMQ's `_metadata` value.
pub fn metadata(id: &str, ttl_seconds: Option<u64>) -> String {
    let ttl = ttl_seconds.map_or_else(|| "null".to_owned(), |s| s.to_string());
    format!(
        "{{\"id\": {}, \"timestamp\": {}, \"ttl\": {ttl}}}",
        lenient::quote(id),
        python_time()
    )
}

/// Appends `item` (JSON text) to the list literal `list` (a fresh list if
/// `list` is absent or not a list).
pub fn append_to_list(list: Option<&str>, item: &str) -> String {
    match list.map(str::trim) {
        Some(l) if l.starts_with('[') && l.ends_with(']') => {
            if l[1..l.len() - 1].trim().is_empty() {
                format!("[{item}]")
            } else {
                format!("{}, {item}]", &l[..l.len() - 1])
            }
        }
        _ => format!("[{item}]"),
    }
}

/// A `_failures` item.
pub fn failure(reason: &str) -> String {
    format!(
        "{{\"timestamp\": {}, \"reason\": {}}}",
        python_time(),
        lenient::quote(reason)
    )
}

/// A `_requeues` item.
pub fn requeue(from_dlq: &str, to_queue: &str) -> String {
    format!(
        "{{\"timestamp\": {}, \"from_dlq\": {}, \"to_queue\": {}}}",
        python_time(),
        lenient::quote(from_dlq),
        lenient::quote(to_queue)
    )
}

/// The reason of the last `_failures` item, and how many there are.
pub fn last_failure(failures: &str) -> (Option<String>, u32) {
    let Ok(list) = serde_json::from_str::<Vec<serde_json::Value>>(&lenient::to_standard(failures))
    else {
        return (None, 0);
    };
    let reason = list
        .last()
        .and_then(|f| f.get("reason"))
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    (reason, u32::try_from(list.len()).unwrap_or(u32::MAX))
}

/// Now as Python's `time.time()` writes it: seconds with a fraction.
pub fn python_time() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", now.as_secs(), now.subsec_micros())
}

/// A fresh message id in the form LeanMQ uses (a version-4 UUID).
pub fn new_message_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No entropy: fall back to the clock, still unique enough for an id.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: "1795310300089-0".into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn own_entries_read_back_byte_for_byte() {
        for payload in [r#"{"b":1,"a":[1,2]}"#, "{}", r#"{ "x" : 1 }"#] {
            let (data, pl) = compose(payload, &[("_metadata", metadata("m-1", Some(3)))]);
            let parsed: serde_json::Value = serde_json::from_str(&data).unwrap();
            assert_eq!(parsed["_metadata"]["id"], "m-1");
            assert_eq!(parsed["_metadata"]["ttl"], 3);
            let e = entry(&[("data", &data), ("pl", &pl)]);
            assert_eq!(e.payload().unwrap().as_str(), payload.trim());
            assert_eq!(e.metadata_id().as_deref(), Some("m-1"));
            assert_eq!(e.dedup_id(), None);
        }
    }

    #[test]
    fn other_json_values_are_wrapped() {
        for payload in ["1", r#""text""#, "[1,2]", "null"] {
            let (data, pl) = compose(payload, &[("_metadata", metadata("m", None))]);
            assert_eq!(pl, "v");
            let e = entry(&[("data", &data), ("pl", &pl)]);
            assert_eq!(e.payload().unwrap().as_str(), payload);
        }
    }

    #[test]
    fn python_entries_lose_only_reserved_keys() {
        let data = r#"{"order_id": 2, "nan": NaN, "_leanmq": {"webhook": {"path": "/a"}}, "_metadata": {"id": "my-uuid-2", "timestamp": 1795310300.090385, "ttl": 60}, "_failures": [{"timestamp": 1.5, "reason": "bad"}]}"#;
        let e = entry(&[("data", data)]);
        assert_eq!(
            e.payload().unwrap().as_str(),
            r#"{"order_id": 2, "nan": null, "_leanmq": {"webhook": {"path": "/a"}}}"#
        );
        assert_eq!(e.dedup_id().as_deref(), Some("my-uuid-2"));
        let reserved = e.reserved();
        assert_eq!(reserved.len(), 2);
        assert_eq!(last_failure(reserved[1].value), (Some("bad".into()), 1));
        assert!(e.raw_payload().unwrap().contains("NaN"));
    }

    #[test]
    fn unreadable_entries_say_why() {
        assert!(entry(&[("other", "x")]).payload().is_err());
        assert!(entry(&[("data", "[1]")]).payload().is_err());
        assert!(entry(&[("data", "{\"a\": nope}")]).payload().is_err());
        assert!(entry(&[("data", "{}"), ("pl", "99")]).payload().is_err());
    }

    #[test]
    fn lists_grow() {
        assert_eq!(append_to_list(None, "1"), "[1]");
        assert_eq!(append_to_list(Some("[ ]"), "1"), "[1]");
        assert_eq!(append_to_list(Some("[0]"), "1"), "[0, 1]");
        assert_eq!(append_to_list(Some("\"junk\""), "1"), "[1]");
    }

    #[test]
    fn stream_ids() {
        for ok in ["0", "1-0", "1795310300089-12"] {
            assert!(is_stream_id(ok), "{ok}");
        }
        for bad in ["", "-", "1-", "a-1", "1-2-3", "garbage"] {
            assert!(!is_stream_id(bad), "{bad}");
        }
        let id = new_message_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }
}
