//! [`PostgresBroker`]: the [`Broker`] trait on PostgreSQL.

mod commit;
mod lines;
mod messages;
mod queues;
mod reads;
mod sends;
mod sql;
mod tending;
mod together;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tidings_core::{
    Broker, ConsumerName, DeadLetter, DeadLetterSelection, Delivery, Error, GroupName, MessageId,
    Nack, OutgoingMessage, Payload, PendingDelivery, QueueConfig, QueueInfo, QueueName,
    ReceiveOptions, Record, RecordScan, Result, SendReceipt, StorageUsage, TableName, Transaction,
};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::counters;
use crate::error::{Failure, hash32};
use crate::migrate::{self, Migrated, Placeholders};
use crate::options::{PostgresOptions, redact};
use crate::wakeups::{self, Announcer, Wakeups};
use sql::Statements;

/// A broker whose queues and records live in a schema of a PostgreSQL
/// database. Cheap to share behind an `Arc`: it holds a pool of
/// connections and one more that listens for other processes' sends.
pub struct PostgresBroker {
    shared: Arc<Shared>,
    tasks: [JoinHandle<()>; 3],
}

/// What the broker's operations, and the tasks it starts, work with.
pub(crate) struct Shared {
    options: PostgresOptions,
    pool: Pool,
    sql: Statements,
    /// Ids and settings of queues seen (a queue deleted and created again
    /// elsewhere is looked up again when its old id is refused).
    queues: RwLock<HashMap<QueueName, Arc<QueueMeta>>>,
    wakeups: Arc<Wakeups>,
    announcer: Announcer,
    /// Sends waiting to share a statement, by queue.
    sends: lines::Lines<messages::SendBatch>,
    /// Transactions running, and waiting to share one.
    commits: lines::Lines<together::Ops>,
    /// Reads of records by key running, and waiting to share a statement.
    reads: lines::Lines<reads::Keys>,
    /// Told when a transaction added to a counter (its deltas want folding).
    added: Arc<Notify>,
    /// When each consumer last tended its group.
    tending: tending::Tending,
}

/// A queue as the functions know it.
#[derive(Debug)]
pub(crate) struct QueueMeta {
    pub(crate) id: i64,
    pub(crate) config: QueueConfig,
}

impl std::fmt::Debug for PostgresBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBroker")
            .field("url", &redact(&self.shared.options.url))
            .field("schema", &self.shared.options.schema)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresBroker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PostgresBroker {
    /// Connects to the database a URL names, e.g.
    /// `postgres://postgres@127.0.0.1/app?schema=tidings`, creating or
    /// upgrading the schema.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(PostgresOptions::from_url(url)?).await
    }

    /// Connects with explicit options, creating or upgrading the schema
    /// unless `options.migrate` is off (then an outdated schema is an error).
    pub async fn open_with(options: PostgresOptions) -> Result<Self> {
        let broker = Self::connect(options).await?;
        broker.migrate(broker.options().migrate).await?;
        Ok(broker)
    }

    /// Connects without looking at the schema: call
    /// [`PostgresBroker::migrate`] before anything else.
    pub async fn connect(options: PostgresOptions) -> Result<Self> {
        let config = options.config()?;
        let tls = crate::tls::connector(&options)?;
        crate::tls::warn_if_unverified(&options, &config);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .build()
            .map_err(|e| Error::InvalidArgument(format!("connection pool: {e}")))?;
        let wakeups = Arc::new(Wakeups::default());
        let (announcer, [notifier, listener]) =
            wakeups::start(wakeups.clone(), pool.clone(), config, tls, &options.schema);
        let sql = Statements::new(&options.schema_ident());
        let added = Arc::new(Notify::new());
        let folder = counters::start(pool.clone(), sql.fold_counters.clone(), added.clone());
        let shared = Arc::new(Shared {
            sql,
            options,
            pool,
            queues: RwLock::new(HashMap::new()),
            wakeups,
            announcer,
            sends: lines::Lines::default(),
            commits: lines::Lines::default(),
            reads: lines::Lines::default(),
            added,
            tending: tending::Tending::default(),
        });
        Ok(Self {
            shared,
            tasks: [notifier, listener, folder],
        })
    }

    /// Brings the schema to this build's version (with `apply`), or checks
    /// that it is there. [`PostgresBroker::open`] does it already; this is
    /// what `tidings migrate` runs.
    pub async fn migrate(&self, apply: bool) -> Result<Migrated> {
        self.migrate_to(apply, migrate::SCHEMA_VERSION).await
    }

    /// [`PostgresBroker::migrate`] to `target` (tests aim lower, to see an
    /// upgrade).
    pub(crate) async fn migrate_to(&self, apply: bool, target: i32) -> Result<Migrated> {
        let options = &self.shared.options;
        let schema = options.schema_ident();
        let places = Placeholders {
            schema: &schema,
            queue_lock: hash32(&format!("queues:{}", options.schema)),
            record_lock: hash32(&format!("records:{}", options.schema)),
        };
        let places = &places;
        let shared = &self.shared;
        shared
            .attempt(false, move |client| async move {
                migrate::run(&client, &shared.options.schema, places, apply, target).await
            })
            .await
            .map_err(|f| f.into_error(false))
    }

    /// The options it was opened with.
    pub fn options(&self) -> &PostgresOptions {
        &self.shared.options
    }
}

impl Shared {
    /// Runs `op` on a pooled connection, again (after a growing pause)
    /// while it fails in a way that cannot have applied it and may pass: no
    /// connection, a server restarting, a deadlock. `could_commit` says
    /// whether `op` commits as it runs (a single statement outside a
    /// transaction), so that a lost connection leaves its outcome unknown.
    async fn attempt<T, F, Fut>(&self, could_commit: bool, op: F) -> std::result::Result<T, Failure>
    where
        F: Fn(deadpool_postgres::Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        self.attempt_within(could_commit, self.options.retry_for, op)
            .await
    }

    /// [`Self::attempt`], retrying for `retry_for` at most (zero: once).
    async fn attempt_within<T, F, Fut>(
        &self,
        could_commit: bool,
        retry_for: Duration,
        op: F,
    ) -> std::result::Result<T, Failure>
    where
        F: Fn(deadpool_postgres::Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            let failure = match self.pool.get().await {
                Ok(client) => match op(client).await {
                    Ok(value) => return Ok(value),
                    Err(failure) => failure,
                },
                Err(e) => Failure::NoConnection(format!(
                    "no connection to PostgreSQL at {}: {}",
                    redact(&self.options.url),
                    tidings_core::error::with_causes(&e)
                )),
            };
            if !failure.retryable(could_commit) || started.elapsed() >= retry_for {
                return Err(failure);
            }
            tracing::debug!(?failure, "retrying a PostgreSQL operation");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Runs `op` on the queue: a queue unknown here is looked up; one whose
    /// id the database refuses (deleted, perhaps created again by another
    /// process) is looked up once more.
    async fn on_queue<T, F, Fut>(&self, queue: &QueueName, could_commit: bool, op: F) -> Result<T>
    where
        F: Fn(deadpool_postgres::Client, Arc<QueueMeta>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, Failure>>,
    {
        let mut looked_again = false;
        loop {
            let meta = self.queue_meta(queue).await?;
            match self
                .attempt(could_commit, |client| op(client, meta.clone()))
                .await
            {
                Ok(value) => return Ok(value),
                Err(failure) if failure.is_queue_not_found() => {
                    self.forget(queue);
                    if looked_again {
                        return Err(Error::QueueNotFound(queue.to_string()));
                    }
                    looked_again = true;
                }
                Err(failure) => return Err(failure.into_error(could_commit)),
            }
        }
    }

    /// The queue's id and settings, from memory or the database.
    async fn queue_meta(&self, queue: &QueueName) -> Result<Arc<QueueMeta>> {
        if let Some(meta) = self
            .queues
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(queue)
        {
            return Ok(meta.clone());
        }
        let found = self
            .attempt(false, move |client| async move {
                let statement = client.prepare_cached(&self.sql.queue_by_name).await?;
                Ok(client.query_opt(&statement, &[&queue.as_str()]).await?)
            })
            .await
            .map_err(|f| f.into_error(false))?;
        let Some(row) = found else {
            return Err(Error::QueueNotFound(queue.to_string()));
        };
        let meta = Arc::new(QueueMeta {
            id: row.get(0),
            config: parse_config(queue, row.get(1))?,
        });
        self.queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(queue.clone(), meta.clone());
        Ok(meta)
    }

    fn forget(&self, queue: &QueueName) {
        self.queues
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(queue);
    }

    /// Whether sends to the queue wait for the server's configured commit.
    fn synchronous(&self, meta: &QueueMeta) -> bool {
        meta.config.durability.unwrap_or(self.options.durability) == tidings_core::Durability::Sync
    }
}

/// A queue's stored settings.
fn parse_config(queue: &QueueName, text: &str) -> Result<QueueConfig> {
    serde_json::from_str(text).map_err(|e| Error::Corrupt {
        location: format!("settings of queue {queue}"),
        detail: e.to_string(),
    })
}

/// A duration as the functions take it: milliseconds, capped so that
/// adding it to a time cannot overflow.
fn millis(d: std::time::Duration) -> i64 {
    const CAP: i64 = 10_000_000_000_000; // about 300 years
    i64::try_from(d.as_millis()).map_or(CAP, |ms| ms.min(CAP))
}

/// A message id as the functions know it (`None`: not one of ours).
fn seq_of(id: &MessageId) -> Option<i64> {
    id.as_str().parse().ok().filter(|seq: &i64| *seq > 0)
}

#[async_trait]
impl Broker for PostgresBroker {
    async fn create_queue(&self, queue: &QueueName, config: QueueConfig) -> Result<bool> {
        self.shared.create(queue, config).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueName>> {
        self.shared.list().await
    }

    /// One try, without riding out an outage as operations do: a readiness
    /// probe must answer within its own timeout.
    async fn ready(&self) -> Result<()> {
        self.shared
            .attempt_within(false, Duration::ZERO, move |client| async move {
                client.simple_query("SELECT 1").await?;
                Ok(())
            })
            .await
            .map_err(|f| f.into_error(false))
    }

    async fn maintain(&self) -> Result<u64> {
        self.shared.tidy_all().await
    }

    async fn storage_usage(&self) -> Result<StorageUsage> {
        self.shared.usage().await
    }

    async fn queue_info(&self, queue: &QueueName) -> Result<QueueInfo> {
        self.shared.info(queue).await
    }

    async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        self.shared.delete(queue).await
    }

    async fn purge_queue(&self, queue: &QueueName) -> Result<u64> {
        self.shared.purge(queue).await
    }

    async fn send_batch(
        &self,
        queue: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>> {
        self.shared.send_all(queue, messages).await
    }

    async fn receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        self.shared.take(queue, group, consumer, options).await
    }

    async fn ack(&self, queue: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64> {
        self.shared.settle(queue, group, ids, true).await
    }

    async fn ack_and_receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        ack: &[MessageId],
        options: ReceiveOptions,
    ) -> Result<(u64, Vec<Delivery>)> {
        options.validate()?;
        // Losing these acks in a crash only delivers their messages again.
        let acked = if ack.is_empty() {
            0
        } else {
            self.shared.settle(queue, group, ack, false).await?
        };
        let deliveries = self.shared.take(queue, group, consumer, options).await?;
        Ok((acked, deliveries))
    }

    async fn nack_many(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        nack: Nack,
    ) -> Result<u64> {
        self.shared.give_back(queue, group, ids, nack).await
    }

    async fn pending(
        &self,
        queue: &QueueName,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        self.shared.pending(queue, group, limit).await
    }

    async fn forget_consumer(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        self.shared.forget_consumer(queue, group, consumer).await
    }

    async fn delete_group(&self, queue: &QueueName, group: &GroupName) -> Result<bool> {
        self.shared.delete_group(queue, group).await
    }

    async fn dead_letter(&self, queue: &QueueName, id: &MessageId) -> Result<Option<DeadLetter>> {
        self.shared.letter(queue, id).await
    }

    async fn peek(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.shared.peek(queue, after, limit).await
    }

    async fn dead_letters(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.shared.letters(queue, after, limit).await
    }

    async fn requeue_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        self.shared.requeue(queue, selection).await
    }

    async fn purge_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        self.shared.purge_letters(queue, selection).await
    }

    async fn commit(&self, transaction: Transaction) -> Result<Vec<SendReceipt>> {
        self.shared.apply(transaction).await
    }

    async fn get_record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        self.shared.record(table, key).await
    }

    async fn get_records(&self, keys: &[(TableName, String)]) -> Result<Vec<Option<Payload>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.shared.records_of(keys).await
    }

    async fn scan_records(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>> {
        self.shared.records(table, scan).await
    }
}
