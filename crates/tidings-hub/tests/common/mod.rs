//! What the hub's tests share: a webhook endpoint on loopback.

#![allow(clippy::unwrap_used, dead_code)]

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An endpoint that answers 500 to posts on paths starting with `/bad`,
/// 200 otherwise.
pub async fn endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let status = if head.starts_with("POST /bad") {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = tcp.write_all(answer.as_bytes()).await;
            });
        }
    });
    address
}

/// A Redis broker under a fresh prefix (`name` in it), and the prefix; or
/// `None` (skip) when Redis is not there and this is not CI.
pub async fn redis_broker(name: &str) -> Option<(tidings_redis::RedisBroker, String)> {
    let url = redis_url();
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    let prefix = format!("tidings-test:{name}-{}:", hex::encode(bytes));
    let sep = if url.contains('?') { '&' } else { '?' };
    match tidings_redis::RedisBroker::open(&format!("{url}{sep}prefix={prefix}")).await {
        Ok(broker) => Some((broker, prefix)),
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "Redis is required under CI=true: {e}"
            );
            eprintln!("skipped: Redis not reachable at {url}: {e}");
            None
        }
    }
}

/// Runs `test` on a Redis broker under a fresh prefix, then deletes its
/// keys (skipped when Redis is not there and this is not CI).
pub async fn on_redis<F, Fut>(name: &str, test: F)
where
    F: FnOnce(std::sync::Arc<dyn tidings_core::Broker>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some((broker, prefix)) = redis_broker(name).await else {
        return;
    };
    test(std::sync::Arc::new(broker)).await;
    delete_redis_prefix(&prefix);
}

/// Deletes every Redis key under `prefix`.
pub fn delete_redis_prefix(prefix: &str) {
    let client = redis::Client::open(redis_url().as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query(&mut con)
        .unwrap();
    for key in keys {
        let _: () = redis::cmd("DEL").arg(key).query(&mut con).unwrap();
    }
}

fn redis_url() -> String {
    std::env::var("TIDINGS_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Runs `test` on a PostgreSQL broker in a fresh schema, then drops the
/// schema (skipped when PostgreSQL is not there and this is not CI).
pub async fn on_postgres<F, Fut>(test: F)
where
    F: FnOnce(std::sync::Arc<dyn tidings_core::Broker>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(fixture) = tidings_postgres::testing::fixture().await else {
        return;
    };
    let tidings_postgres::testing::PostgresFixture { broker, schema } = fixture;
    test(std::sync::Arc::new(broker)).await;
    drop(schema);
}
