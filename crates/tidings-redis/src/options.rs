//! Opening options, read from a broker URL.

use std::time::Duration;

use tidings_core::{Error, Result};

/// LeanMQ's key prefix for queues.
pub const DEFAULT_PREFIX: &str = "mq:";

/// How to reach Redis and lay out keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// The connection URL handed to redis-rs (Tidings' own options removed).
    pub url: String,
    /// Key prefix: `mq:` like LeanMQ, `webhook:` like LeanMQWebhook.
    pub prefix: String,
    /// Wrap each queue's name in a hash tag, so its keys share a Redis
    /// Cluster slot (changes key names: Python clients must use `{name}`).
    pub hash_tags: bool,
    /// How long one command may take before it fails (blocking receives excepted).
    pub timeout: Duration,
    /// Speak the Redis Cluster protocol (the URL names one node to start
    /// from). Implies `hash_tags`.
    pub cluster: bool,
}

impl RedisOptions {
    /// Options for `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            hash_tags: false,
            timeout: Duration::from_secs(5),
            cluster: false,
        }
    }

    /// Parses `redis://host:port/db?prefix=mq:&hash_tags=true&timeout=5s`
    /// (add `cluster=true` for a Redis Cluster).
    /// Query options Tidings does not know are left for redis-rs.
    ///
    /// ```
    /// use tidings_redis::RedisOptions;
    /// let o = RedisOptions::from_url("redis://127.0.0.1:6379/2?prefix=webhook:&timeout=2s")?;
    /// assert_eq!(o.url, "redis://127.0.0.1:6379/2");
    /// assert_eq!(o.prefix, "webhook:");
    /// assert_eq!(o.timeout, std::time::Duration::from_secs(2));
    /// # Ok::<_, tidings_core::Error>(())
    /// ```
    pub fn from_url(url: &str) -> Result<Self> {
        let invalid = |reason: String| Error::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(invalid(
                "a Redis URL starts with redis:// or rediss://".into(),
            ));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut options = Self::new(base);
        let mut passed = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "prefix" => options.prefix = value.to_owned(),
                "hash_tags" | "cluster" => {
                    let on = match value {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => {
                            return Err(invalid(format!("{key}={value:?} is not true or false")));
                        }
                    };
                    if key == "cluster" {
                        options.cluster = on;
                    } else {
                        options.hash_tags = on;
                    }
                }
                "timeout" => {
                    options.timeout = parse_duration(value).ok_or_else(|| {
                        invalid(format!(
                            "timeout={value:?} is not a duration like 5s or 500ms"
                        ))
                    })?;
                }
                "protocol" => {
                    return Err(invalid(
                        "Tidings speaks RESP2 to Redis; remove protocol=".into(),
                    ));
                }
                _ => passed.push(pair),
            }
        }
        if !passed.is_empty() {
            options.url = format!("{base}?{}", passed.join("&"));
        }
        if options.cluster {
            options.hash_tags = true;
        }
        Ok(options)
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_leanmq() {
        let o = RedisOptions::from_url("redis://127.0.0.1:6379").unwrap();
        assert_eq!(o.prefix, "mq:");
        assert!(!o.hash_tags);
        assert_eq!(o.url, "redis://127.0.0.1:6379");
    }

    #[test]
    fn options_are_checked() {
        let o = RedisOptions::from_url("redis://h/0?hash_tags=true&password_x=1&timeout=250ms")
            .unwrap();
        assert!(o.hash_tags);
        assert_eq!(o.url, "redis://h/0?password_x=1");
        assert_eq!(o.timeout, Duration::from_millis(250));
        let c = RedisOptions::from_url("redis://h:7000?cluster=true").unwrap();
        assert!(c.cluster && c.hash_tags);
        for bad in [
            "http://h",
            "redis://h?hash_tags=maybe",
            "redis://h?timeout=5",
            "redis://h?protocol=resp3",
        ] {
            assert!(RedisOptions::from_url(bad).is_err(), "{bad}");
        }
    }
}
