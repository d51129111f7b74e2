//! Payload schemas: JSON Schema (drafts 4 to 2020-12), checked against its
//! meta-schema and compiled once when an action is registered.
//!
//! Formats (`email`, `uuid`, `date-time`, ...) are enforced. References to
//! other documents are never fetched: the crate is built without its HTTP
//! and file resolvers, so such a schema fails to compile with a clear reason.
//!
//! Patterns (`pattern`, `patternProperties`) run on the `regex` crate's
//! engine, whose matching time is linear in the input: a pattern cannot make
//! a publish take seconds. Backreferences and look-around, which need a
//! backtracking engine, make a schema fail to compile (422, with the
//! reason); so does a pattern whose compiled form exceeds
//! [`PATTERN_SIZE_LIMIT`].

use std::fmt;
use std::sync::Arc;

use jsonschema::Validator;
use serde_json::Value;

/// The largest compiled form of one pattern, bytes (and of its lazy DFA's
/// cache): patterns such as `a{1000}{1000}` are refused, not built.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// A compiled schema, cheap to clone.
#[derive(Clone)]
pub struct Schema {
    validator: Arc<Validator>,
}

impl fmt::Debug for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Schema")
    }
}

impl Schema {
    /// Checks and compiles `schema`. On failure, returns the reasons.
    pub fn compile(schema: &Value) -> Result<Self, Vec<String>> {
        if !schema.is_object() && !schema.is_boolean() {
            return Err(vec!["a schema must be a JSON object".to_owned()]);
        }
        // Checked against the meta-schema of its draft by `build` itself.
        jsonschema::options()
            .should_validate_formats(true)
            .with_pattern_options(
                jsonschema::PatternOptions::regex()
                    .size_limit(PATTERN_SIZE_LIMIT)
                    .dfa_size_limit(PATTERN_SIZE_LIMIT),
            )
            .build(schema)
            .map(|validator| Self {
                validator: Arc::new(validator),
            })
            .map_err(|e| vec![format!("{}: {e}", json_path(e.instance_path().as_str()))])
    }

    /// Every violation of `instance`, as `"<JSON path>: <message>"`, sorted by path.
    pub fn violations(&self, instance: &Value) -> Vec<String> {
        if self.validator.is_valid(instance) {
            return Vec::new();
        }
        let mut found: Vec<(String, String)> = self
            .validator
            .iter_errors(instance)
            .map(|e| (json_path(e.instance_path().as_str()), e.to_string()))
            .collect();
        found.sort();
        found
            .into_iter()
            .map(|(path, message)| format!("{path}: {message}"))
            .collect()
    }
}

/// Payloads up to this size (bytes) are checked where they arrive; larger
/// ones on the blocking pool, so a large payload never holds an async
/// worker (and the requests it serves).
pub const INLINE_BYTES: usize = 16 * 1024;

/// Checks large payloads off the async workers, a bounded number at once.
#[derive(Debug, Clone)]
pub struct Checker {
    slots: Arc<tokio::sync::Semaphore>,
}

impl Checker {
    /// A checker running at most `parallel` large checks at once.
    pub fn new(parallel: usize) -> Self {
        Self {
            slots: Arc::new(tokio::sync::Semaphore::new(parallel.max(1))),
        }
    }

    /// The violations of `instance` (`bytes` long as sent): inline if it is
    /// small, on the blocking pool otherwise, waiting for a slot.
    /// Fails only if the check itself could not finish (the runtime is
    /// shutting down).
    pub async fn violations(
        &self,
        schema: &Schema,
        instance: Value,
        bytes: usize,
    ) -> Result<Vec<String>, tidings_core::Error> {
        if bytes <= INLINE_BYTES {
            return Ok(schema.violations(&instance));
        }
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| tidings_core::Error::Closed)?;
        let schema = schema.clone();
        tokio::task::spawn_blocking(move || schema.violations(&instance))
            .await
            .map_err(|_| tidings_core::Error::Closed)
    }
}

impl Default for Checker {
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }
}

/// Turns a JSON pointer (`/items/0/id`) into a JSON path (`$.items[0].id`).
fn json_path(pointer: &str) -> String {
    let mut path = String::from("$");
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push('[');
            path.push_str(&segment);
            path.push(']');
        } else {
            path.push('.');
            path.push_str(&segment);
        }
    }
    path
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A large payload is checked on the blocking pool: on a runtime with
    /// one thread, the task that lets the check finish runs while it waits.
    /// Checked inline, the check would hold that thread until its format
    /// gave up (and found a violation).
    #[tokio::test(flavor = "current_thread")]
    async fn large_payloads_are_checked_off_the_async_worker() {
        use std::sync::atomic::{AtomicBool, Ordering};
        static RELEASED: AtomicBool = AtomicBool::new(false);
        let gate = |_: &str| {
            let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while !RELEASED.load(Ordering::Acquire) {
                if std::time::Instant::now() > until {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            true
        };
        let schema = serde_json::json!({"properties": {"k": {"type": "string", "format": "gate"}}});
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .with_format("gate", gate)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{e}"));
        let schema = Schema {
            validator: Arc::new(validator),
        };
        let payload = serde_json::json!({"k": "x", "padding": "y".repeat(INLINE_BYTES)});
        let checker = Checker::new(1);
        let release = async { RELEASED.store(true, Ordering::Release) };
        let (found, ()) = tokio::join!(
            checker.violations(&schema, payload, INLINE_BYTES + 20),
            release
        );
        assert_eq!(found.ok(), Some(Vec::new()));
    }
    use serde_json::json;

    #[test]
    fn reports_every_violation_with_its_path() {
        let schema = Schema::compile(&json!({
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "total": {"type": "number", "minimum": 0},
                "email": {"type": "string", "format": "email"},
                "items": {"type": "array", "items": {"type": "integer"}}
            },
            "required": ["id"],
            "additionalProperties": false
        }))
        .unwrap();
        assert!(
            schema
                .violations(&json!({"id": "a", "email": "x@y.io"}))
                .is_empty()
        );
        let errors = schema.violations(
            &json!({"id": 4, "total": -3, "extra": true, "email": "nope", "items": [1, "2"]}),
        );
        assert_eq!(errors.len(), 5, "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("$.id: ")));
        assert!(errors.iter().any(|e| e.starts_with("$.total: ")));
        assert!(errors.iter().any(|e| e.starts_with("$.email: ")));
        assert!(errors.iter().any(|e| e.starts_with("$.items[1]: ")));
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("$: ") && e.contains("extra"))
        );
    }

    #[test]
    fn rejects_invalid_schemas_and_remote_refs() {
        // Linear-time patterns only: a backreference (which backtracks,
        // and can take seconds on a short input) does not compile.
        let reasons = Schema::compile(&json!({"type": "string", "pattern": "^(a|a)*\\1b$"}))
            .err()
            .unwrap_or_default();
        assert!(!reasons.is_empty());
        assert!(
            Schema::compile(&json!({"pattern": "(?<=a)b"})).is_err(),
            "look-behind"
        );
        assert!(
            Schema::compile(&json!({"pattern": "a{1000}{1000}"})).is_err(),
            "too large"
        );
        let ok = Schema::compile(&json!({"type": "string", "pattern": "^[a-z]+-[0-9]{2,}$"}));
        let ok = ok.map(|s| (s.violations(&json!("ab-12")), s.violations(&json!("ab-1"))));
        assert!(matches!(ok, Ok((good, bad)) if good.is_empty() && !bad.is_empty()));
        assert!(Schema::compile(&json!({"type": "nonsense"})).is_err());
        assert!(Schema::compile(&json!("string")).is_err());
        assert!(Schema::compile(&json!({"$ref": "https://example.com/schema.json"})).is_err());
        assert!(
            Schema::compile(
                &json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "object"})
            )
            .is_ok()
        );
        assert!(
            Schema::compile(&json!({"$schema": "https://unknown.example/meta", "type": "object"}))
                .is_err()
        );
    }
}
