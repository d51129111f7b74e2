//! What the round trip alone allows: the least Redis work each measured
//! row needs, sent with the same client library (redis-rs) in the same
//! shape, without anything Tidings adds. A row of Tidings can come close to
//! its floor but not pass it; LeanMQ ÷ floor is the best ratio any client
//! could reach in that run.

use std::time::Instant;

use anyhow::Context;
use redis::Value;
use redis::aio::MultiplexedConnection;
use tidings::Payload;

async fn connect(url: &str) -> anyhow::Result<MultiplexedConnection> {
    redis::Client::open(url)
        .with_context(|| format!("bad Redis URL {url}"))?
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot reach Redis at {url}"))
}

/// Deletes every key under `prefix` (a benchmark's leftovers).
pub(crate) async fn delete_prefix(url: &str, prefix: &str) -> anyhow::Result<()> {
    let mut conn = connect(url).await?;
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// One `XADD` per awaited call.
pub(crate) async fn send_one(
    url: &str,
    key: &str,
    payload: &Payload,
    total: usize,
) -> anyhow::Result<f64> {
    let mut conn = connect(url).await?;
    let started = Instant::now();
    for _ in 0..total {
        let _: String = redis::cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("data")
            .arg(payload.as_str())
            .query_async(&mut conn)
            .await?;
    }
    let rate = total as f64 / started.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
    Ok(rate)
}

/// One consumer: `XACK` and `XDEL` of the batch just read go with the
/// `XREADGROUP` of the next, one round trip per batch (what
/// `ack_and_receive` does, minus its checks: other groups, held and
/// retained messages, expiry, delays).
pub(crate) async fn receive_ack(
    url: &str,
    key: &str,
    payload: &Payload,
    total: usize,
    batch: usize,
) -> anyhow::Result<f64> {
    let mut conn = connect(url).await?;
    for start in (0..total).step_by(1000) {
        let mut fill = redis::pipe();
        for _ in start..total.min(start + 1000) {
            fill.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("data")
                .arg(payload.as_str())
                .ignore();
        }
        let _: () = fill.query_async(&mut conn).await?;
    }
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("floor")
        .arg("0")
        .query_async(&mut conn)
        .await?;
    let started = Instant::now();
    let (mut acked, mut ids) = (0, Vec::<String>::new());
    loop {
        let mut pipe = redis::pipe();
        if !ids.is_empty() {
            pipe.cmd("XACK").arg(key).arg("floor").arg(&ids).ignore();
            pipe.cmd("XDEL").arg(key).arg(&ids).ignore();
        }
        pipe.cmd("XREADGROUP")
            .arg("GROUP")
            .arg("floor")
            .arg("c0")
            .arg("COUNT")
            .arg(batch)
            .arg("STREAMS")
            .arg(key)
            .arg(">");
        let (read,): (Value,) = pipe.query_async(&mut conn).await?;
        acked += ids.len();
        ids = entry_ids(read);
        if ids.is_empty() {
            break;
        }
    }
    let rate = acked as f64 / started.elapsed().as_secs_f64();
    let _: () = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
    Ok(rate)
}

/// The ids of an `XREADGROUP` reply for one stream.
fn entry_ids(reply: Value) -> Vec<String> {
    let Value::Array(streams) = reply else {
        return Vec::new();
    };
    let Some(Value::Array(stream)) = streams.into_iter().next() else {
        return Vec::new();
    };
    let Some(Value::Array(entries)) = stream.into_iter().nth(1) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|entry| match entry {
            Value::Array(parts) => match parts.into_iter().next() {
                Some(Value::BulkString(id)) => String::from_utf8(id).ok(),
                _ => None,
            },
            _ => None,
        })
        .collect()
}
