//! [`RedisBroker`]: the [`Broker`] trait on Redis Streams.

mod commit;
mod dead;
mod groups;
mod info;
mod messages;
mod receive;
mod records;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::{Script, Value};
use tidings_core::{
    Broker, ConsumerName, DeadLetter, DeadLetterSelection, Delivery, Error, GroupName, MessageId,
    Nack, OutgoingMessage, Payload, PendingDelivery, QueueConfig, QueueInfo, QueueName,
    ReceiveOptions, Record, RecordScan, Result, SendReceipt, TableName, Transaction,
};

use crate::conn::Connections;
use crate::keys::{Layout, QueueKeys};
use crate::wire::entry::{is_stream_id, python_time};
use crate::{RedisOptions, scripts, value};

/// A broker whose queues live in Redis, in LeanMQ 0.2.0's data layout, so
/// that Python LeanMQ clients and Tidings share them.
///
/// Every operation is one Lua script: atomic, one round trip. Cheap to share
/// behind an `Arc`; it holds one multiplexed connection plus a dedicated one
/// per blocked receive.
pub struct RedisBroker {
    options: RedisOptions,
    layout: Layout,
    conns: Connections,
    /// Settings of queues seen, with the Redis run id they were seen under.
    queues: RwLock<HashMap<QueueName, Known>>,
    /// Groups this process has created (or seen), so receives skip creation.
    groups: Mutex<HashSet<(QueueName, GroupName)>>,
    /// When each group was last searched for timed-out deliveries.
    reclaimed: Mutex<HashMap<(QueueName, GroupName), Instant>>,
    /// Run ids of servers known at open or whose data loss was reported.
    reported_loss: Mutex<HashSet<String>>,
}

#[derive(Clone)]
struct Known {
    config: QueueConfig,
    run_id: String,
}

impl RedisBroker {
    /// Connects to the Redis a URL names, e.g. `redis://127.0.0.1:6379/0?prefix=mq:`.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with(RedisOptions::from_url(url)?).await
    }

    /// Connects with explicit options.
    pub async fn open_with(options: RedisOptions) -> Result<Self> {
        let conns = Connections::open(&options).await?;
        let broker = Self {
            layout: Layout::new(options.prefix.clone(), options.hash_tags),
            options,
            conns,
            queues: RwLock::new(HashMap::new()),
            groups: Mutex::new(HashSet::new()),
            reclaimed: Mutex::new(HashMap::new()),
            reported_loss: Mutex::new(HashSet::new()),
        };
        let run_id = broker.run_id(&broker.layout.registry()).await?;
        if let Ok(mut r) = broker.reported_loss.lock() {
            r.insert(run_id);
        }
        broker.load_scripts().await?;
        broker.warn_if_not_durable().await;
        Ok(broker)
    }

    /// Loads every script (the read path runs one inside a pipeline, where
    /// redis-rs cannot reload it on NOSCRIPT).
    async fn load_scripts(&self) -> Result<()> {
        if self.conns.is_cluster() {
            // SCRIPT LOAD goes to every node only as a command of its own.
            for code in scripts::SOURCES {
                self.command(redis::cmd("SCRIPT").arg("LOAD").arg(*code))
                    .await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for code in scripts::SOURCES {
            pipe.cmd("SCRIPT").arg("LOAD").arg(*code).ignore();
        }
        let mut conn = self.conns.main();
        self.call(pipe.query_async::<()>(&mut conn)).await
    }

    /// Says once, at open, when Redis can lose acknowledged sends on a crash.
    async fn warn_if_not_durable(&self) {
        let mut conn = self.conns.main();
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("append*");
        let asked = cmd.query_async::<Vec<String>>(&mut conn);
        let Ok(Ok(config)) = tokio::time::timeout(self.options.timeout, asked).await else {
            return;
        };
        let get = |k: &str| {
            config
                .chunks_exact(2)
                .find(|kv| kv[0] == k)
                .map(|kv| kv[1].clone())
                .unwrap_or_default()
        };
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if (get("appendonly") != "yes" || get("appendfsync") != "always")
            && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                appendonly = %get("appendonly"),
                appendfsync = %get("appendfsync"),
                "this Redis does not fsync every write: a send it acknowledged can be lost if it crashes \
                 (see docs/redis.md, Durability)"
            );
        }
    }

    /// The key layout (prefix and hash tags).
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Runs one Redis call with the configured timeout.
    async fn call<T>(&self, fut: impl Future<Output = redis::RedisResult<T>>) -> Result<T> {
        match tokio::time::timeout(self.options.timeout, fut).await {
            Ok(result) => result.map_err(|e| self.redis_error(e)),
            Err(_) => Err(Error::Unavailable(format!(
                "Redis did not answer within {:?}",
                self.options.timeout
            ))),
        }
    }

    fn redis_error(&self, e: redis::RedisError) -> Error {
        if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            Error::Unavailable(format!("Redis: {e}"))
        } else {
            Error::storage(e)
        }
    }

    /// Runs a script on the shared connection. A `NOQUEUE name` error reply
    /// becomes `QueueNotFound`; other error replies are left to the caller
    /// through [`ScriptReply::Refused`].
    async fn script_reply(
        &self,
        script: &Script,
        keys: &[&str],
        args: Vec<Vec<u8>>,
    ) -> Result<ScriptReply> {
        let mut inv = script.prepare_invoke();
        for key in keys {
            inv.key(*key);
        }
        for arg in args {
            inv.arg(arg);
        }
        let mut conn = self.conns.main();
        let reply =
            tokio::time::timeout(self.options.timeout, inv.invoke_async::<Value>(&mut conn));
        match reply.await {
            Ok(Ok(value)) => Ok(ScriptReply::Done(value)),
            Ok(Err(e)) => match (e.code(), e.detail()) {
                (Some("NOQUEUE"), detail) => {
                    Err(Error::QueueNotFound(detail.unwrap_or_default().to_owned()))
                }
                (
                    Some(
                        code @ ("CONFLICT" | "NOTPENDING" | "EXISTS" | "CHANGED" | "NOTINTEGER"
                        | "NOGROUP"),
                    ),
                    detail,
                ) => Ok(ScriptReply::Refused {
                    code: code.to_owned(),
                    detail: detail.unwrap_or_default().to_owned(),
                }),
                _ => Err(Self::script_error(e)),
            },
            // The script was sent: Redis may run it after all (a pause, a
            // slow fsync), so what it did is unknown.
            Err(_) => Err(Error::OutcomeUnknown(format!(
                "Redis did not answer a script within {:?}",
                self.options.timeout
            ))),
        }
    }

    /// A script's failure: refused connections never sent it (nothing was
    /// applied); a dropped connection or a timeout after sending leaves what
    /// it did unknown.
    fn script_error(e: redis::RedisError) -> Error {
        if e.is_connection_refusal() {
            Error::Unavailable(format!("Redis: {e}"))
        } else if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
            Error::OutcomeUnknown(format!("Redis: {e}"))
        } else {
            Error::storage(e)
        }
    }

    /// Runs a script that refuses nothing but unknown queues.
    async fn script(&self, script: &Script, keys: &[&str], args: Vec<Vec<u8>>) -> Result<Value> {
        match self.script_reply(script, keys, args).await? {
            ScriptReply::Done(value) => Ok(value),
            ScriptReply::Refused { code, detail } => Err(Error::Corrupt {
                location: keys.first().map(|k| (*k).to_owned()).unwrap_or_default(),
                detail: format!("unexpected script refusal {code} {detail}"),
            }),
        }
    }

    /// Runs one command on the shared connection.
    async fn command(&self, cmd: &redis::Cmd) -> Result<Value> {
        let mut conn = self.conns.main();
        self.call(cmd.query_async::<Value>(&mut conn)).await
    }

    /// The run id of the server holding `key` (it changes when the server
    /// restarts; in a cluster each node has its own).
    async fn run_id(&self, key: &str) -> Result<String> {
        let info = self.call(self.conns.info_server(key)).await?;
        let text = value::text(&info).unwrap_or_default();
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_owned())
    }

    fn keys(&self, queue: &QueueName) -> Result<QueueKeys> {
        self.layout.queue(queue)
    }

    /// The settings of a queue (cached), or `QueueNotFound`.
    async fn config(&self, queue: &QueueName) -> Result<QueueConfig> {
        if let Some(known) = self.queues.read().ok().and_then(|q| q.get(queue).cloned()) {
            return Ok(known.config);
        }
        let keys = self.keys(queue)?;
        let mut pipe = redis::pipe();
        pipe.cmd("HGET")
            .arg(&keys.meta)
            .arg("tidings")
            .cmd("EXISTS")
            .arg(&keys.meta);
        let mut conn = self.conns.main();
        let (stored, exists): (Option<String>, bool) =
            self.call(pipe.query_async(&mut conn)).await?;
        if !exists {
            return Err(Error::QueueNotFound(queue.to_string()));
        }
        // A queue LeanMQ created has no Tidings settings: the defaults apply.
        let config = match stored {
            Some(json) => serde_json::from_str(&json).map_err(|e| Error::Corrupt {
                location: keys.meta.clone(),
                detail: format!("settings: {e}"),
            })?,
            None => QueueConfig::default(),
        };
        self.remember(queue, config.clone()).await;
        Ok(config)
    }

    async fn remember(&self, queue: &QueueName, config: QueueConfig) {
        let run_id = match self.keys(queue) {
            Ok(keys) => self.run_id(&keys.stream).await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if let Ok(mut q) = self.queues.write() {
            q.insert(queue.clone(), Known { config, run_id });
        }
    }

    fn forget(&self, queue: &QueueName) {
        if let Ok(mut q) = self.queues.write() {
            q.remove(queue);
        }
        if let Ok(mut g) = self.groups.lock() {
            g.retain(|(q, _)| q != queue);
        }
    }

    /// After `QueueNotFound` for a queue this process knew: if the server
    /// holding it has restarted without its data, create the queue again and
    /// say so once per restart; if someone deleted it, forget it.
    async fn recover(&self, queue: &QueueName) -> Result<bool> {
        let Some(known) = self.queues.read().ok().and_then(|q| q.get(queue).cloned()) else {
            return Ok(false);
        };
        let keys = self.keys(queue)?;
        // A deletion by Tidings leaves a tombstone; without one, the same
        // server as before (it never restarted) means a deletion too.
        let tombstone = self
            .command(redis::cmd("EXISTS").arg(keys.tombstone()))
            .await?;
        if value::int(&tombstone) == Some(1) {
            self.forget(queue);
            return Ok(false);
        }
        let run_id = self.run_id(&keys.stream).await?;
        if run_id == known.run_id {
            self.forget(queue);
            return Ok(false);
        }
        if let Ok(mut reported) = self.reported_loss.lock()
            && reported.insert(run_id.clone())
        {
            tracing::warn!(
                prefix = %self.layout.prefix(),
                "Redis restarted without its data; creating queues and consumer groups again"
            );
        }
        if let Ok(mut g) = self.groups.lock() {
            g.retain(|(q, _)| q != queue);
        }
        self.create(queue, &known.config).await?;
        if let Ok(mut q) = self.queues.write() {
            q.insert(
                queue.clone(),
                Known {
                    config: known.config,
                    run_id,
                },
            );
        }
        Ok(true)
    }

    /// Runs `op`, once more after recovering the queue from a Redis restart.
    async fn healing<T, Fut>(&self, queue: &QueueName, op: impl Fn() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        match op().await {
            Err(Error::QueueNotFound(_)) if self.recover(queue).await? => op().await,
            other => other,
        }
    }

    async fn create(&self, queue: &QueueName, config: &QueueConfig) -> Result<bool> {
        let keys = self.keys(queue)?;
        let settings = serde_json::to_string(config).map_err(Error::storage)?;
        // Registry first: a crash in between leaves a listed name without
        // metadata, which listing skips, never a queue nobody can find.
        self.command(
            redis::cmd("SADD")
                .arg(self.layout.registry())
                .arg(&keys.stream)
                .arg(&keys.dlq),
        )
        .await?;
        let generation = crate::wire::entry::new_message_id();
        let created = self
            .script_reply(
                &scripts::CREATE,
                &[&keys.stream],
                vec![
                    settings.into_bytes(),
                    python_time().into_bytes(),
                    keys.main_group.clone().into_bytes(),
                    keys.dlq_group.clone().into_bytes(),
                    generation.as_bytes()[..8].to_vec(),
                ],
            )
            .await?;
        match created {
            ScriptReply::Done(v) => Ok(value::int(&v) == Some(1)),
            ScriptReply::Refused { .. } => Err(Error::QueueConfigConflict(queue.to_string())),
        }
    }

    fn retention_args(config: &QueueConfig) -> [Vec<u8>; 2] {
        let r = &config.retention;
        let max_len = r
            .max_len
            .map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        [
            max_len.to_string().into_bytes(),
            millis(r.max_age.unwrap_or_default())
                .to_string()
                .into_bytes(),
        ]
    }

    fn group_created(&self, queue: &QueueName, group: &GroupName) -> bool {
        self.groups
            .lock()
            .map(|g| g.contains(&(queue.clone(), group.clone())))
            .unwrap_or(false)
    }

    fn mark_group(&self, queue: &QueueName, group: &GroupName, created: bool) {
        if let Ok(mut g) = self.groups.lock() {
            if created {
                g.insert((queue.clone(), group.clone()));
            } else {
                g.remove(&(queue.clone(), group.clone()));
            }
        }
    }
}

/// What a script answered.
enum ScriptReply {
    /// It ran to the end.
    Done(Value),
    /// It refused, changing nothing (`code detail`).
    Refused { code: String, detail: String },
}

/// Milliseconds of a duration, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Messages a maintenance script run expires or trims at most.
const MAINTAIN_STEP: u64 = 1000;

fn ids_as_args(ids: &[MessageId]) -> Vec<Vec<u8>> {
    ids.iter()
        .filter(|id| is_stream_id(id.as_str()))
        .map(|id| id.as_str().as_bytes().to_vec())
        .collect()
}

#[async_trait]
impl Broker for RedisBroker {
    async fn create_queue(&self, queue: &QueueName, config: QueueConfig) -> Result<bool> {
        config.validate()?;
        let created = self.create(queue, &config).await?;
        self.remember(queue, config).await;
        Ok(created)
    }

    /// Applies time to every queue, read or not: expired messages are
    /// dropped or dead-lettered and retention trimmed, in steps of
    /// [`MAINTAIN_STEP`] per script run. (Dedup ids expire by themselves:
    /// Redis keys with a TTL.)
    async fn maintain(&self) -> Result<u64> {
        // Expired messages belong to no group: the name is not recorded.
        let maintainer = GroupName::new("maintenance")?;
        let mut removed = 0u64;
        for queue in self.list_queues().await? {
            let config = match self.config(&queue).await {
                Ok(config) => config,
                Err(Error::QueueNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let stream = self.keys(&queue)?.stream;
            let dead = config.on_expiry == tidings_core::ExpiryAction::DeadLetter;
            let [max_len, max_age] = Self::retention_args(&config);
            loop {
                let args = vec![
                    queue.as_str().as_bytes().to_vec(),
                    if dead { b"1".to_vec() } else { b"0".to_vec() },
                    max_len.clone(),
                    max_age.clone(),
                    MAINTAIN_STEP.to_string().into_bytes(),
                ];
                let reply = match self
                    .script_reply(&scripts::MAINTAIN, &[&stream], args)
                    .await?
                {
                    ScriptReply::Done(reply) => reply,
                    // Deleted meanwhile.
                    ScriptReply::Refused { .. } => break,
                };
                let parts = value::items(&reply);
                let dropped = parts
                    .first()
                    .and_then(value::int)
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0);
                let expired: Vec<String> = parts
                    .get(1)
                    .map(value::items)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(value::text)
                    .collect();
                for id in &expired {
                    self.dead_letter_taken(&queue, &maintainer, id, "expired", 0, &config)
                        .await?;
                }
                let done = dropped + expired.len() as u64;
                removed += done;
                if done < MAINTAIN_STEP {
                    break;
                }
            }
        }
        Ok(removed)
    }

    async fn list_queues(&self) -> Result<Vec<QueueName>> {
        let members = self
            .command(redis::cmd("SMEMBERS").arg(self.layout.registry()))
            .await?;
        let mut names: Vec<(QueueName, String)> = value::items(&members)
            .iter()
            .filter_map(value::text)
            .filter_map(|key| {
                let name = self.layout.queue_of(&key)?;
                let meta = self.keys(&name).ok()?.meta;
                Some((name, meta))
            })
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        // One pipeline on a single server; one command per queue on a
        // cluster, where the keys live in different slots.
        let exists: Vec<bool> = if self.conns.is_cluster() {
            let mut exists = Vec::with_capacity(names.len());
            for (_, meta) in &names {
                exists.push(
                    value::int(&self.command(redis::cmd("EXISTS").arg(meta)).await?) == Some(1),
                );
            }
            exists
        } else {
            let mut pipe = redis::pipe();
            for (_, meta) in &names {
                pipe.cmd("EXISTS").arg(meta);
            }
            let mut conn = self.conns.main();
            self.call(pipe.query_async(&mut conn)).await?
        };
        let mut exists = exists.into_iter();
        names.retain(|_| exists.next().unwrap_or(false));
        let mut names: Vec<QueueName> = names.into_iter().map(|(n, _)| n).collect();
        names.sort();
        Ok(names)
    }

    async fn queue_info(&self, queue: &QueueName) -> Result<QueueInfo> {
        self.healing(queue, || self.info(queue)).await
    }

    async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        let keys = self.keys(queue)?;
        self.script(
            &scripts::DELETE,
            &[&keys.stream],
            vec![queue.as_str().as_bytes().to_vec()],
        )
        .await?;
        self.forget(queue);
        self.command(
            redis::cmd("SREM")
                .arg(self.layout.registry())
                .arg(&keys.stream)
                .arg(&keys.dlq),
        )
        .await?;
        Ok(())
    }

    async fn purge_queue(&self, queue: &QueueName) -> Result<u64> {
        let keys = self.keys(queue)?;
        let purged = self
            .script(
                &scripts::PURGE,
                &[&keys.stream],
                vec![queue.as_str().as_bytes().to_vec()],
            )
            .await?;
        Ok(value::count(&purged))
    }

    async fn send_batch(
        &self,
        queue: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>> {
        OutgoingMessage::validate_all(&messages)?;
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        self.healing(queue, || self.send_now(queue, &messages))
            .await
    }

    async fn receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        options.validate()?;
        let (_, found) = self
            .healing(queue, || {
                self.receive_now(queue, group, consumer, &[], options)
            })
            .await?;
        Ok(found)
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
        self.healing(queue, || {
            self.receive_now(queue, group, consumer, ack, options)
        })
        .await
    }

    async fn ack(&self, queue: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64> {
        self.healing(queue, || self.ack_now(queue, group, ids))
            .await
    }

    async fn pending(
        &self,
        queue: &QueueName,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        self.healing(queue, || self.pending_of(queue, group, limit))
            .await
    }

    async fn forget_consumer(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        self.healing(queue, || self.forget_consumer_of(queue, group, consumer))
            .await
    }

    async fn delete_group(&self, queue: &QueueName, group: &GroupName) -> Result<bool> {
        self.healing(queue, || self.ungroup(queue, group)).await
    }

    async fn nack_many(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        nack: Nack,
    ) -> Result<u64> {
        let config = self.config(queue).await?;
        let mut chosen: Vec<&str> = Vec::with_capacity(ids.len());
        for id in ids.iter().map(MessageId::as_str) {
            if is_stream_id(id) && !chosen.contains(&id) {
                chosen.push(id);
            }
        }
        if chosen.is_empty() {
            return Ok(0);
        }
        match nack {
            Nack::Retry { delay } => {
                self.hold(queue, group, &chosen, "retry", millis(delay), &config)
                    .await
            }
            Nack::DeadLetter { reason } => {
                self.dead_letter_pending(queue, group, &chosen, &reason)
                    .await
            }
        }
    }

    async fn dead_letter(&self, queue: &QueueName, id: &MessageId) -> Result<Option<DeadLetter>> {
        self.find_dead(queue, id).await
    }

    async fn peek(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.peek_stream(queue, after, limit).await
    }

    async fn dead_letters(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.list_dead(queue, after, limit).await
    }

    async fn requeue_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        self.requeue(queue, selection).await
    }

    async fn purge_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        self.config(queue).await?;
        let keys = self.keys(queue)?;
        let mut args = vec![queue.as_str().as_bytes().to_vec()];
        match selection {
            DeadLetterSelection::All => args.push(b"all".to_vec()),
            DeadLetterSelection::Ids(ids) => {
                args.push(b"ids".to_vec());
                args.extend(ids_as_args(&ids));
            }
        }
        let purged = self
            .script(&scripts::PURGE_DEAD, &[&keys.stream], args)
            .await?;
        Ok(value::count(&purged))
    }

    async fn commit(&self, transaction: Transaction) -> Result<Vec<SendReceipt>> {
        transaction.validate()?;
        if transaction.is_empty() {
            return Ok(Vec::new());
        }
        self.commit_now(transaction).await
    }

    async fn get_record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        self.record(table, key).await
    }

    async fn scan_records(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>> {
        self.scan(table, scan).await
    }
}
