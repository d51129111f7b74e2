//! A Redis broker under its own key prefix, removed afterwards.
//!
//! Tests read `TIDINGS_REDIS_URL` (default `redis://127.0.0.1:6379`). When
//! Redis cannot be reached they fail under `CI=true` and are skipped, with a
//! message, elsewhere.

#![allow(dead_code)]

pub mod python;
pub mod server;

use tidings_core::Broker;
use tidings_core::testing::Fixture;
use tidings_redis::RedisBroker;

/// The Redis the tests use.
pub fn redis_url() -> String {
    std::env::var("TIDINGS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh key prefix.
pub fn fresh_prefix() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    format!("tidings-test:{}:", hex::encode(b))
}

/// The broker URL for `prefix` on the test Redis.
pub fn url_with_prefix(prefix: &str) -> String {
    let base = redis_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}prefix={prefix}")
}

pub struct RedisFixture {
    pub broker: RedisBroker,
    pub prefix: String,
}

impl Fixture for RedisFixture {
    fn broker(&self) -> &dyn Broker {
        &self.broker
    }
}

/// Opens a broker under a fresh prefix, or `None` (skip) when Redis is not
/// there and this is not CI.
pub async fn fixture() -> Option<RedisFixture> {
    let prefix = fresh_prefix();
    match RedisBroker::open(&url_with_prefix(&prefix)).await {
        Ok(broker) => Some(RedisFixture { broker, prefix }),
        Err(e) => skip_or_fail(&e),
    }
}

/// Under CI a missing Redis fails the test; elsewhere the test is skipped.
pub fn skip_or_fail<T>(e: &dyn std::fmt::Display) -> Option<T> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "Redis is required under CI=true ({}): {e}",
        redis_url()
    );
    eprintln!("skipped: Redis not reachable at {} ({e})", redis_url());
    None
}

impl Drop for RedisFixture {
    fn drop(&mut self) {
        delete_prefix(&self.prefix);
    }
}

/// Deletes every key under `prefix`.
pub fn delete_prefix(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url()) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let pattern = format!("{prefix}*");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(&pattern)
        .query(&mut conn)
        .unwrap_or_default();
    for chunk in keys.chunks(500) {
        let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}
