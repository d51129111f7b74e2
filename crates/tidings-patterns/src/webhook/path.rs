//! Webhook paths and the queues they map to: LeanMQ's rule, so Python
//! `LeanMQWebhook` services and Tidings services on one Redis meet on the
//! same queues.
//!
//! 1. Normalise: drop one trailing `/` (unless the path is `/`), and make
//!    sure it starts with `/`.
//! 2. Queue name: strip every leading and trailing `/`, turn the other `/`
//!    into `_`, and every character Python's `str.isalnum()` rejects (any
//!    not in a Unicode letter or number category) into `_`.
//!
//! Paths that differ only where step 2 writes `_` (`/a-b`, `/a.b`, `/a/b`)
//! share one queue in LeanMQ; [`Webhook::on`](super::Webhook::on) refuses a
//! second such path instead of silently merging the two routes.

use tidings_core::{Error, QueueName, Result};
use unicode_general_category::{GeneralCategory as C, get_general_category};

/// The path as LeanMQ stores it in `_leanmq.webhook.path`.
///
/// ```
/// use tidings_patterns::webhook::normalize;
/// assert_eq!(normalize("/order/status/"), "/order/status");
/// assert_eq!(normalize("order/status"), "/order/status");
/// assert_eq!(normalize("/"), "/");
/// ```
pub fn normalize(path: &str) -> String {
    let trimmed = if path != "/" {
        path.strip_suffix('/').unwrap_or(path)
    } else {
        path
    };
    if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// The queue a path maps to.
///
/// ```
/// use tidings_patterns::webhook::queue_for;
/// assert_eq!(queue_for("/order/status/")?.as_str(), "order_status");
/// assert_eq!(queue_for("/v1/users/{id}")?.as_str(), "v1_users__id_");
/// assert!(queue_for("/").is_err());
/// # Ok::<_, tidings_core::Error>(())
/// ```
pub fn queue_for(path: &str) -> Result<QueueName> {
    let name: String = normalize(path)
        .trim_matches('/')
        .chars()
        .map(|c| if python_isalnum(c) { c } else { '_' })
        .collect();
    if name.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "the webhook path {path:?} has no name to make a queue of"
        )));
    }
    QueueName::new(name).map_err(|e| {
        Error::InvalidArgument(format!(
            "the webhook path {path:?} gives no valid queue name: {e}"
        ))
    })
}

/// Python's `str.isalnum()` for one character: Unicode letters and numbers.
fn python_isalnum(c: char) -> bool {
    matches!(
        get_general_category(c),
        C::UppercaseLetter
            | C::LowercaseLetter
            | C::TitlecaseLetter
            | C::ModifierLetter
            | C::OtherLetter
            | C::DecimalNumber
            | C::LetterNumber
            | C::OtherNumber
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leanmq_examples() {
        // The examples verified against LeanMQ 0.2.0 (reference §3.5).
        for (path, queue) in [
            ("/order/status/", "order_status"),
            ("order/status", "order_status"),
            ("/a-b", "a_b"),
            ("/a.b", "a_b"),
            ("/a_b", "a_b"),
            ("/a/b", "a_b"),
            ("a b", "a_b"),
            ("//x//", "x"),
            ("/v1/users/{id}", "v1_users__id_"),
            ("/Ünï/çødé", "Ünï_çødé"),
        ] {
            assert_eq!(queue_for(path).unwrap().as_str(), queue, "{path}");
        }
        assert_eq!(normalize("//x//"), "//x/");
    }

    #[test]
    fn marks_are_not_alphanumeric_in_python() {
        // U+093E DEVANAGARI VOWEL SIGN AA: alphabetic for Rust, not for Python.
        assert!('\u{93e}'.is_alphabetic());
        assert!(!python_isalnum('\u{93e}'));
        assert!(python_isalnum('²'));
        assert!(python_isalnum('一'));
    }
}
