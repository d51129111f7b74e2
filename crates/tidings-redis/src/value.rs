//! Reading Redis replies (RESP2 shapes, as scripts return them).

use redis::Value;

use crate::wire::entry::Entry;

/// Text of a bulk or simple string (invalid UTF-8 replaced).
pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(match std::str::from_utf8(b) {
            Ok(text) => text.to_owned(),
            Err(_) => String::from_utf8_lossy(b).into_owned(),
        }),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer, from an integer or its text.
pub(crate) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        other => text(other)?.parse().ok(),
    }
}

/// A count a script answered (0 if it is not one).
pub(crate) fn count(v: &Value) -> u64 {
    int(v).and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

/// The items of an array (none for nil).
pub(crate) fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

/// A stream entry: `[id, [field, value, ...]]`.
pub(crate) fn entry(v: &Value) -> Option<Entry> {
    let parts = items(v);
    let id = text(parts.first()?)?;
    let flat = items(parts.get(1)?);
    let fields = flat
        .chunks_exact(2)
        .filter_map(|kv| Some((text(&kv[0])?, text(&kv[1])?)))
        .collect();
    Some(Entry { id, fields })
}

/// The entries of an XRANGE reply.
pub(crate) fn entries(v: &Value) -> Vec<Entry> {
    items(v).iter().filter_map(entry).collect()
}
