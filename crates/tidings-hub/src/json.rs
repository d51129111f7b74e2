//! JSON documents with a key twice in one object are refused: a schema is
//! checked against one reading of such a document (the last value wins in
//! serde_json) while the payload is delivered as the publisher's bytes, which
//! a receiver may read the other way (the first wins). What is validated
//! must be exactly what is sent.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// What a document is, found in one pass over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading {
    /// JSON whose top is an object, no key twice in any object.
    Object,
    /// JSON whose top is not an object, no key twice in any object.
    NotObject,
    /// JSON with this key twice in one object.
    Duplicate(String),
    /// Not JSON: the parser's message.
    Malformed(String),
}

/// Reads `text` once: whether it is JSON, an object, and free of keys
/// given twice in one object.
pub fn read(text: &str) -> Reading {
    let mut de = serde_json::Deserializer::from_str(text);
    match NoDuplicates.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) if text.trim_start().starts_with('{') => Reading::Object,
        Ok(()) => Reading::NotObject,
        Err(e) => {
            let message = e.to_string();
            match message.split(DUPLICATE_MARK).nth(1) {
                Some(key) => Reading::Duplicate(key.to_owned()),
                None => Reading::Malformed(message),
            }
        }
    }
}

/// The first key found twice in one object of `text`, if any. Text that is
/// not JSON has none (its parse fails elsewhere, with its own message).
pub fn duplicate_key(text: &str) -> Option<String> {
    match read(text) {
        Reading::Duplicate(key) => Some(key),
        _ => None,
    }
}

/// Brackets the key in the walker's error, to find it again.
const DUPLICATE_MARK: &str = "\u{1}";

/// Walks a document, failing on a key seen twice in one object.
struct NoDuplicates;

impl<'de> DeserializeSeed<'de> for NoDuplicates {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NoDuplicates {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(NoDuplicates)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "{DUPLICATE_MARK}{key}{DUPLICATE_MARK}"
                )));
            }
            map.next_value_seed(NoDuplicates)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Reading, duplicate_key, read};

    #[test]
    fn finds_a_key_twice_in_any_object() {
        assert_eq!(
            duplicate_key(r#"{"amount": -5, "amount": 1}"#).as_deref(),
            Some("amount")
        );
        assert_eq!(
            duplicate_key(r#"{"a": [{"b": 1}, {"c": {"d": 1, "d": 2}}]}"#).as_deref(),
            Some("d")
        );
        assert_eq!(
            duplicate_key(r#"{"a\u0062": 1, "ab": 2}"#).as_deref(),
            Some("ab"),
            "escapes decoded"
        );
        assert_eq!(
            duplicate_key(r#"{"a": {"x": 1}, "b": {"x": 1}}"#),
            None,
            "one per object"
        );
        assert_eq!(duplicate_key(r#"[1, "two", null, true, 1e400]"#), None);
        assert_eq!(duplicate_key("not json"), None);
        assert_eq!(read(r#" {"a": [1]} "#), Reading::Object);
        assert_eq!(read("[1]"), Reading::NotObject);
        assert!(
            matches!(read(r#"{"a": 1} x"#), Reading::Malformed(_)),
            "trailing text"
        );
    }
}
