//! What tests on PostgreSQL share (feature `testing`): a schema of the
//! test's own, dropped afterwards, and a server of the test's own
//! ([`server::OwnServer`]) for tests that crash one.
//!
//! Tests read `TIDINGS_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`). When PostgreSQL cannot
//! be reached they fail under `CI=true` and are skipped, with a message,
//! elsewhere ([`skip_or_fail`]).

pub mod server;

use std::sync::atomic::{AtomicU32, Ordering};

use tidings_core::Broker;
use tidings_core::testing::Fixture;

use crate::PostgresBroker;

/// The PostgreSQL the tests use.
pub fn postgres_url() -> String {
    std::env::var("TIDINGS_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A schema name no other test uses.
pub fn fresh_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "tidings_test_{}_{}_{}",
        std::process::id(),
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The broker URL for `schema` on the test server.
pub fn url_with_schema(schema: &str) -> String {
    let base = postgres_url();
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}schema={schema}")
}

/// A schema dropped, with everything in it, when this is dropped.
#[derive(Debug)]
pub struct TestSchema(pub String);

impl TestSchema {
    /// A fresh schema name.
    pub fn fresh() -> Self {
        Self(fresh_schema())
    }

    /// The broker URL for it.
    pub fn url(&self) -> String {
        url_with_schema(&self.0)
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        drop_schema(&self.0);
    }
}

/// A broker in a schema of its own.
pub struct PostgresFixture {
    /// The broker (dropped before the schema).
    pub broker: PostgresBroker,
    /// Its schema.
    pub schema: TestSchema,
}

impl Fixture for PostgresFixture {
    fn broker(&self) -> &dyn Broker {
        &self.broker
    }
}

/// Opens a broker in a fresh schema, or `None` (skip) when PostgreSQL is
/// not there and this is not CI.
pub async fn fixture() -> Option<PostgresFixture> {
    let schema = TestSchema::fresh();
    match PostgresBroker::open(&schema.url()).await {
        Ok(broker) => Some(PostgresFixture { broker, schema }),
        Err(e) => skip_or_fail(&e),
    }
}

/// Opens a broker on `url` with its schema brought only to `version` (an
/// older one), to see what an upgrade does to what it holds. Only the
/// statements that version has may be used on it.
pub async fn open_at_version(url: &str, version: i32) -> tidings_core::Result<PostgresBroker> {
    let mut options = crate::PostgresOptions::from_url(url)?;
    options.migrate = false;
    let broker = PostgresBroker::connect(options).await?;
    broker.migrate_to(true, version).await?;
    Ok(broker)
}

/// Under CI a missing PostgreSQL fails the test (panics); elsewhere the
/// test is skipped (`None`), with a message.
pub fn skip_or_fail<T>(e: &dyn std::fmt::Display) -> Option<T> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "PostgreSQL is required under CI=true ({}): {e}",
        postgres_url()
    );
    eprintln!(
        "skipped: PostgreSQL not reachable at {} ({e})",
        postgres_url()
    );
    None
}

/// Drops `schema` with everything in it (on a thread of its own, so it
/// can be called from async code and from `Drop`).
pub fn drop_schema(schema: &str) {
    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let _ = std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async {
            let Ok((client, connection)) =
                tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await
            else {
                return;
            };
            let driver = tokio::spawn(connection);
            let _ = client.batch_execute(&sql).await;
            drop(client);
            let _ = driver.await;
        });
    })
    .join();
}
