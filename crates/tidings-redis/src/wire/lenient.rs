//! Reading the JSON that Python's `json.dumps` writes, without losing bytes.
//!
//! LeanMQ entries are JSON objects written with Python defaults: bare `NaN`
//! and `Infinity` tokens, integers of any size, `\uXXXX` escapes that may be
//! lone surrogates. `serde_json` rejects some of that, and a parse/serialise
//! round trip would reorder keys and reformat numbers. So entries are handled
//! as text: [`members`] finds the top-level members of an object (string and
//! bracket aware, values left untouched), and [`to_standard`] rewrites only
//! the non-standard tokens.

use std::borrow::Cow;

/// One top-level member of a JSON object, as slices of the original text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    /// The key as written, without its quotes (escapes not resolved).
    pub key: &'a str,
    /// The value as written.
    pub value: &'a str,
}

/// The top-level members of `text` if it is a JSON object, in order.
/// Values are not validated beyond finding where they end.
pub fn members(text: &str) -> Option<Vec<Member<'_>>> {
    let bytes = text.as_bytes();
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    at = skip_ws(bytes, at + 1);
    let mut out = Vec::new();
    if bytes.get(at) == Some(&b'}') {
        return (skip_ws(bytes, at + 1) == bytes.len()).then_some(out);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(bytes, at)?;
        let key = text.get(at + 1..key_end - 1)?;
        at = skip_ws(bytes, key_end);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let start = skip_ws(bytes, at + 1);
        let end = value_end(bytes, start)?;
        out.push(Member {
            key,
            value: text.get(start..end)?,
        });
        at = skip_ws(bytes, end);
        match bytes.get(at) {
            Some(b',') => at = skip_ws(bytes, at + 1),
            Some(b'}') => {
                return (skip_ws(bytes, at + 1) == bytes.len()).then_some(out);
            }
            _ => return None,
        }
    }
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while bytes.get(at).is_some_and(u8::is_ascii_whitespace) {
        at += 1;
    }
    at
}

/// The index just past the string starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start + 1;
    loop {
        match bytes.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2,
            _ => at += 1,
        }
    }
}

/// The index just past the value starting at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut at = start;
            loop {
                match bytes.get(at)? {
                    b'"' => {
                        at = string_end(bytes, at)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(at + 1);
                        }
                    }
                    _ => {}
                }
                at += 1;
            }
        }
        _ => {
            let mut at = start;
            while let Some(b) = bytes.get(at) {
                if matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace() {
                    break;
                }
                at += 1;
            }
            (at > start).then_some(at)
        }
    }
}

/// `text` with Python's non-standard JSON made standard: `NaN`, `Infinity`
/// and `-Infinity` become `null` (as JavaScript's `JSON.stringify` does),
/// lone surrogate escapes become U+FFFD. Everything else is kept as written
/// (big integers included). Borrows when there is nothing to change.
pub fn to_standard(text: &str) -> Cow<'_, str> {
    if !(text.contains("NaN")
        || text.contains("Infinity")
        || text.contains("\\ud")
        || text.contains("\\uD"))
    {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                let end = string_end(bytes, at).unwrap_or(bytes.len());
                let mut i = at + 1;
                while i + 1 < end {
                    if bytes[i] == b'\\' {
                        if bytes[i + 1] == b'u'
                            && let Some(unit) = hex_unit(bytes, i + 2)
                        {
                            let lone = match unit {
                                0xD800..=0xDBFF => {
                                    !(bytes.get(i + 6) == Some(&b'\\')
                                        && bytes.get(i + 7) == Some(&b'u')
                                        && hex_unit(bytes, i + 8)
                                            .is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)))
                                }
                                0xDC00..=0xDFFF => true,
                                _ => false,
                            };
                            if lone {
                                out.push_str(&text[copied..i]);
                                out.push_str("\\ufffd");
                                copied = i + 6;
                                i += 6;
                                continue;
                            }
                            // A valid pair: skip both halves.
                            if (0xD800..=0xDBFF).contains(&unit) {
                                i += 12;
                                continue;
                            }
                        }
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
                at = end;
            }
            b'N' | b'I' | b'-' => {
                let token = ["NaN", "Infinity", "-Infinity"]
                    .into_iter()
                    .find(|t| text[at..].starts_with(t));
                if let Some(token) = token {
                    out.push_str(&text[copied..at]);
                    out.push_str("null");
                    at += token.len();
                    copied = at;
                } else {
                    at += 1;
                }
            }
            _ => at += 1,
        }
    }
    if copied == 0 {
        return Cow::Borrowed(text);
    }
    out.push_str(&text[copied..]);
    Cow::Owned(out)
}

fn hex_unit(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

/// The text of a JSON string literal holding `s`.
pub fn quote(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The value of a JSON string literal as written (with its quotes), if it is one.
pub fn unquote(literal: &str) -> Option<String> {
    serde_json::from_str::<String>(&to_standard(literal)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_members_of_python_output() {
        let text = r#"{"nan": NaN, "inf": -Infinity, "big": 1180591620717411303424, "s": "a\"}", "o": {"x": [1, {"y": "]"}]}, "_metadata": {"id": "u"}}"#;
        let m = members(text).unwrap();
        let keys: Vec<_> = m.iter().map(|m| m.key).collect();
        assert_eq!(keys, ["nan", "inf", "big", "s", "o", "_metadata"]);
        assert_eq!(m[1].value, "-Infinity");
        assert_eq!(m[2].value, "1180591620717411303424");
        assert_eq!(m[3].value, r#""a\"}""#);
        assert_eq!(m[4].value, r#"{"x": [1, {"y": "]"}]}"#);
        assert_eq!(m[5].value, r#"{"id": "u"}"#);
    }

    #[test]
    fn rejects_what_is_not_an_object() {
        for bad in [
            "[1]",
            "1",
            "",
            "{",
            r#"{"a" 1}"#,
            r#"{"a": 1"#,
            r#"{"a": 1} x"#,
            "{1: 2}",
        ] {
            assert!(members(bad).is_none(), "{bad}");
        }
        assert_eq!(members(" { } ").unwrap(), vec![]);
    }

    #[test]
    fn standardises_only_what_must_change() {
        let plain = r#"{"a": "NaN inside a string is text"}"#;
        assert!(matches!(to_standard(plain), Cow::Borrowed(_)));
        let text =
            r#"{"n": NaN, "i": [Infinity, -Infinity], "s": "NaN", "big": 1180591620717411303424}"#;
        let fixed = to_standard(text);
        assert_eq!(
            fixed,
            r#"{"n": null, "i": [null, null], "s": "NaN", "big": 1180591620717411303424}"#
        );
        serde_json::from_str::<serde_json::Value>(&fixed).unwrap();
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let text = r#"{"a": "x\ud800y", "b": "\ud83d\ude00", "c": "\udc00"}"#;
        let fixed = to_standard(text);
        assert_eq!(
            fixed,
            r#"{"a": "x\ufffdy", "b": "\ud83d\ude00", "c": "\ufffd"}"#
        );
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["b"], "😀");
    }

    #[test]
    fn quoting_round_trips() {
        assert_eq!(unquote(&quote("h\u{e9} \"q\"")).unwrap(), "h\u{e9} \"q\"");
        assert_eq!(unquote(r#""h\u00e9""#).unwrap(), "h\u{e9}");
        assert!(unquote("12").is_none());
    }
}
