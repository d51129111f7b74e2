//! Plain-SQL queues on PostgreSQL, driven with the same client
//! (tokio-postgres, a deadpool pool of the same size) in the same shapes as
//! Tidings' rows: the floor (the least work each row needs: one INSERT per
//! send, one UPDATE … SKIP LOCKED per receive, one DELETE per ack) and
//! pgmq's SQL functions. A row of Tidings can come close to its floor but
//! not pass it.
//!
//! Receives commit without waiting for the disk, as Tidings' do (a lost
//! receive only delivers again); sends and acks wait.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tidings::Payload;

use crate::engine::spread;
use tokio::sync::Notify;
use tokio_postgres::NoTls;

/// Drops a schema with everything in it.
pub(crate) async fn drop_schema(url: &str, schema: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await?;
    drop(client);
    driver.await??;
    Ok(())
}

fn pool(url: &str, size: usize) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager).max_size(size).build()?)
}

/// The statements of one plain-SQL queue.
struct Statements {
    /// `$1` payload text, `$2` the send time in µs.
    send_one: String,
    /// `$1` payloads (`text[]`).
    send_many: String,
    /// `$1` how many (`integer`): rows of (id, send time in µs).
    receive: String,
    /// `$1` ids (`bigint[]`).
    ack: String,
}

/// A plain-SQL queue and the pool that drives it.
pub(crate) struct SqlQueue {
    url: String,
    pool: Pool,
    sql: Statements,
}

/// The floor: a table, and the least SQL per operation.
pub(crate) struct Floor {
    queue: SqlQueue,
    schema: String,
}

/// pgmq 1.x, installed from its SQL-only script into the schema `pgmq`.
pub(crate) struct Pgmq {
    queue: SqlQueue,
}

const NOW_MS: &str = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

impl Floor {
    pub(crate) async fn create(url: &str, schema: &str) -> anyhow::Result<Self> {
        drop_schema(url, schema).await?;
        let pool = pool(url, 16)?;
        let s = format!("\"{schema}\"");
        pool.get()
            .await?
            .batch_execute(&format!(
                "CREATE SCHEMA {s};
                 CREATE TABLE {s}.q (
                     id bigserial PRIMARY KEY,
                     payload text NOT NULL,
                     sent_us bigint NOT NULL DEFAULT 0,
                     visible_at bigint NOT NULL DEFAULT 0
                 );"
            ))
            .await?;
        let sql = Statements {
            send_one: format!("INSERT INTO {s}.q (payload, sent_us) VALUES ($1, $2)"),
            send_many: format!("INSERT INTO {s}.q (payload) SELECT unnest($1::text[])"),
            receive: format!(
                "UPDATE {s}.q SET visible_at = {NOW_MS} + 30000 WHERE id IN \
                 (SELECT id FROM {s}.q WHERE visible_at <= {NOW_MS} ORDER BY id \
                  LIMIT $1::integer FOR UPDATE SKIP LOCKED) RETURNING id, sent_us"
            ),
            ack: format!("DELETE FROM {s}.q WHERE id = ANY($1)"),
        };
        Ok(Self {
            queue: SqlQueue {
                url: url.to_owned(),
                pool,
                sql,
            },
            schema: schema.to_owned(),
        })
    }

    pub(crate) async fn drop_schema(self) -> anyhow::Result<()> {
        let Self { queue, schema } = self;
        queue.pool.close();
        drop_schema(&queue.url, &schema).await
    }
}

impl Pgmq {
    /// Installs pgmq from `sql` (dropping any earlier `pgmq` schema) and
    /// creates the queue `bench`.
    pub(crate) async fn install(url: &str, sql: &Path) -> anyhow::Result<Self> {
        let script = std::fs::read_to_string(sql)
            .with_context(|| format!("cannot read pgmq's SQL at {}", sql.display()))?;
        drop_schema(url, "pgmq").await?;
        let pool = pool(url, 16)?;
        let client = pool.get().await?;
        client
            .batch_execute(&script)
            .await
            .context("installing pgmq's SQL")?;
        client.batch_execute("SELECT pgmq.create('bench')").await?;
        drop(client);
        let sql = Statements {
            send_one: "SELECT pgmq.send('bench', jsonb_build_object('p', $1::text::jsonb, 'sent_us', $2::bigint))"
                .to_owned(),
            send_many: "SELECT pgmq.send_batch('bench', \
                        array(SELECT jsonb_build_object('p', x::jsonb) FROM unnest($1::text[]) AS x))"
                .to_owned(),
            receive: "SELECT msg_id, coalesce((message->>'sent_us')::bigint, 0) \
                      FROM pgmq.read('bench', 30, $1)"
                .to_owned(),
            ack: "SELECT pgmq.delete('bench', $1::bigint[])".to_owned(),
        };
        Ok(Self {
            queue: SqlQueue {
                url: url.to_owned(),
                pool,
                sql,
            },
        })
    }

    pub(crate) async fn uninstall(self) -> anyhow::Result<()> {
        self.queue.pool.close();
        drop_schema(&self.queue.url, "pgmq").await
    }
}

impl std::ops::Deref for Floor {
    type Target = SqlQueue;
    fn deref(&self) -> &SqlQueue {
        &self.queue
    }
}

impl std::ops::Deref for Pgmq {
    type Target = SqlQueue;
    fn deref(&self) -> &SqlQueue {
        &self.queue
    }
}

impl SqlQueue {
    /// `producers` tasks send `total` messages, `batch` per statement; msg/s.
    pub(crate) async fn send(
        &self,
        payload: &Payload,
        total: usize,
        producers: usize,
        batch: usize,
    ) -> anyhow::Result<f64> {
        let (pool, payload) = (self.pool.clone(), payload.as_str().to_owned());
        let sql = if batch == 1 {
            self.sql.send_one.clone()
        } else {
            self.sql.send_many.clone()
        };
        spread(producers, total, batch, move |n| {
            let (pool, payload, sql) = (pool.clone(), payload.clone(), sql.clone());
            async move {
                let client = pool.get().await?;
                let statement = client.prepare_cached(&sql).await?;
                if batch == 1 {
                    client.execute(&statement, &[&payload, &0i64]).await?;
                } else {
                    client.execute(&statement, &[&vec![payload; n]]).await?;
                }
                Ok(())
            }
        })
        .await
    }

    /// One consumer takes `total` messages, `batch` at a time, acking each
    /// batch before the next; msg/s.
    pub(crate) async fn receive_ack(&self, total: usize, batch: usize) -> anyhow::Result<f64> {
        let receiver = self.receiver().await?;
        let acker = self.pool.get().await?;
        let (receive, ack) = (
            receiver.prepare(&self.sql.receive).await?,
            acker.prepare_cached(&self.sql.ack).await?,
        );
        let qty = i32::try_from(batch)?;
        let started = Instant::now();
        let mut done = 0;
        while done < total {
            let rows = receiver.query(&receive, &[&qty]).await?;
            anyhow::ensure!(!rows.is_empty(), "the queue ran dry after {done}");
            let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            acker.execute(&ack, &[&ids]).await?;
            done += ids.len();
        }
        Ok(done as f64 / started.elapsed().as_secs_f64())
    }

    /// A connection of its own whose commits do not wait for the disk.
    async fn receiver(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute("SET synchronous_commit TO OFF")
            .await?;
        Ok(client)
    }

    /// Sends at `rate`/s for `length`, each send a task of its own, while
    /// one consumer, woken in process after each send's commit (as Tidings
    /// wakes its own receivers), takes them; p50, p99, max in ms and count.
    pub(crate) async fn latency(
        &self,
        payload: &Payload,
        rate: u64,
        length: Duration,
    ) -> anyhow::Result<(f64, f64, f64, usize)> {
        let origin = Instant::now();
        let total = usize::try_from(rate.saturating_mul(length.as_secs().max(1)))?;
        let wake = Arc::new(Notify::new());
        let receiver = {
            let client = self.receiver().await?;
            let receive = client.prepare(&self.sql.receive).await?;
            let acker = self.pool.get().await?;
            let ack = acker.prepare_cached(&self.sql.ack).await?;
            let wake = wake.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total);
                while latencies.len() < total {
                    let woken = wake.notified();
                    let rows = client.query(&receive, &[&100i32]).await?;
                    if rows.is_empty() {
                        tokio::time::timeout(Duration::from_secs(5), woken)
                            .await
                            .context("no message for 5 s")?;
                        continue;
                    }
                    let now = origin.elapsed().as_micros() as f64;
                    let mut ids = Vec::with_capacity(rows.len());
                    for row in &rows {
                        ids.push(row.get::<_, i64>(0));
                        latencies.push((now - row.get::<_, i64>(1) as f64) / 1000.0);
                    }
                    acker.execute(&ack, &[&ids]).await?;
                }
                anyhow::Ok(latencies)
            })
        };
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = tokio::time::Instant::now();
        let mut sends = Vec::with_capacity(total);
        for i in 0..total {
            tokio::time::sleep_until(start + interval * u32::try_from(i)?).await;
            let (pool, wake, sql) = (self.pool.clone(), wake.clone(), self.sql.send_one.clone());
            let payload = payload.as_str().to_owned();
            sends.push(tokio::spawn(async move {
                let sent_us = i64::try_from(origin.elapsed().as_micros())?;
                let client = pool.get().await?;
                let statement = client.prepare_cached(&sql).await?;
                client.execute(&statement, &[&payload, &sent_us]).await?;
                wake.notify_one();
                anyhow::Ok(())
            }));
        }
        for send in sends {
            send.await??;
        }
        let latencies = receiver.await??;
        let n = latencies.len();
        Ok(crate::patterns::percentiles(latencies, n))
    }
}

/// deadpool-postgres and bb8 under the same load: 64 tasks, each taking a
/// connection and running one INSERT, `total` times in all; msg/s of each
/// (and of deadpool with its statement cache, which bb8 does not have).
pub(crate) async fn pools(url: &str, total: usize) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let schema = format!("tidings_bench_pools_{}", std::process::id());
    drop_schema(url, &schema).await?;
    let s = format!("\"{schema}\"");
    {
        let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {s}; CREATE TABLE {s}.q (id bigserial PRIMARY KEY, payload text NOT NULL);"
            ))
            .await?;
        drop(client);
        driver.await??;
    }
    let insert = format!("INSERT INTO {s}.q (payload) VALUES ($1)");
    let tasks = 64;
    let per_task = total / tasks;

    let mut rates = Vec::new();
    for (name, cached) in [("deadpool", false), ("deadpool-cached", true)] {
        let deadpool = pool(url, 16)?;
        let rate = spread(tasks, tasks * per_task, 1, {
            let insert = insert.clone();
            move |_| {
                let (pool, insert) = (deadpool.clone(), insert.clone());
                async move {
                    let client = pool.get().await?;
                    if cached {
                        let statement = client.prepare_cached(&insert).await?;
                        client.execute(&statement, &[&"{}"]).await?;
                    } else {
                        client.execute(insert.as_str(), &[&"{}"]).await?;
                    }
                    anyhow::Ok(())
                }
            }
        })
        .await?;
        rates.push((name, rate));
    }
    let config: tokio_postgres::Config = url.parse()?;
    let manager = bb8_postgres::PostgresConnectionManager::new(config, NoTls);
    let bb8 = bb8::Pool::builder().max_size(16).build(manager).await?;
    // bb8 keeps no statements: each use prepares its statement unnamed, as
    // deadpool does without its cache.
    let rate = spread(tasks, tasks * per_task, 1, {
        let (bb8, insert) = (bb8.clone(), insert.clone());
        move |_| {
            let (pool, insert) = (bb8.clone(), insert.clone());
            async move {
                let client = pool.get().await.map_err(|e| anyhow::anyhow!("{e}"))?;
                client.execute(insert.as_str(), &[&"{}"]).await?;
                anyhow::Ok(())
            }
        }
    })
    .await?;
    rates.push(("bb8", rate));
    drop(bb8);
    drop_schema(url, &schema).await?;
    Ok(rates)
}
