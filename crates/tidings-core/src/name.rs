//! Names of queues, record tables, consumer groups and consumers.
//!
//! The rules, the same for every kind except where noted:
//!
//! - 1 to [`MAX_NAME_BYTES`] bytes of UTF-8;
//! - letters and digits (Unicode, as `char::is_alphanumeric`), `_`, `-` and `.`;
//!   consumer names may also contain `:` and `@` (for `host:pid` style names);
//! - the first character is a letter, a digit or `_`.
//!
//! Names are shared, not copied, when cloned (they travel with every delivery).
//!
//! `:` is kept out of queue and group names because the Redis layout uses it as
//! a separator (`orders:dlq`), so a queue can never collide with another queue's
//! dead-letter stream.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Longest name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

fn validate(kind: &'static str, name: &str, extra: &[char]) -> Result<()> {
    let reject = |reason: &str| {
        Err(Error::InvalidName {
            kind: kind.to_owned(),
            name: name.to_owned(),
            reason: reason.to_owned(),
        })
    };
    let Some(first) = name.chars().next() else {
        return reject("must not be empty");
    };
    if name.len() > MAX_NAME_BYTES {
        return reject("must be at most 128 bytes long");
    }
    if !(first.is_alphanumeric() || first == '_') {
        return reject("must start with a letter, a digit or '_'");
    }
    let allowed = |c: char| c.is_alphanumeric() || c == '_' || c == '-' || c == '.';
    if !name.chars().all(|c| allowed(c) || extra.contains(&c)) {
        return reject(if extra.is_empty() {
            "may contain only letters, digits, '_', '-' and '.'"
        } else {
            "may contain only letters, digits, '_', '-', '.', ':' and '@'"
        });
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $ty:ident, $kind:literal, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
        pub struct $ty(Arc<str>);

        impl $ty {
            /// Checks `name` against the naming rules.
            pub fn new(name: impl Into<String>) -> Result<Self> {
                let name = name.into();
                validate($kind, &name, $extra)?;
                Ok(Self(name.into()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $ty {
            type Error = Error;
            fn try_from(name: String) -> Result<Self> {
                Self::new(name)
            }
        }

        impl TryFrom<&str> for $ty {
            type Error = Error;
            fn try_from(name: &str) -> Result<Self> {
                Self::new(name)
            }
        }

        impl std::str::FromStr for $ty {
            type Err = Error;
            fn from_str(name: &str) -> Result<Self> {
                Self::new(name)
            }
        }

        impl From<$ty> for String {
            fn from(name: $ty) -> String {
                name.0.to_string()
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// The name of a queue, e.g. `orders`.
    QueueName, "queue", &[]
);
name_type!(
    /// The name of a record table (see [`crate::record`]), e.g. `hub.events`.
    TableName, "table", &[]
);
name_type!(
    /// The name of a consumer group. Each group sees every message of a queue.
    GroupName, "group", &[]
);
name_type!(
    /// The name of one consumer within a group. Consumers of a group share its work.
    ConsumerName, "consumer", &[':', '@']
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in [
            "orders",
            "order_status",
            "a",
            "Ünï_çødé",
            "v1.events-2",
            "_x",
        ] {
            assert!(QueueName::new(ok).is_ok(), "{ok}");
        }
        assert!(ConsumerName::new("host-1:4242").is_ok());
    }

    #[test]
    fn rejects_bad_names_with_the_rule() {
        let long = "x".repeat(129);
        for (bad, rule) in [
            ("", "empty"),
            (long.as_str(), "128"),
            ("-x", "start"),
            ("a b", "only"),
            ("orders:dlq", "only"),
            ("a/b", "only"),
        ] {
            let err = QueueName::new(bad).expect_err(bad).to_string();
            assert!(err.contains(rule), "{bad}: {err}");
        }
        assert!(GroupName::new("g:1").is_err());
    }
}
