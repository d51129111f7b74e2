//! Sending, receiving and acknowledging.
//!
//! Message bodies travel only through native commands (XADD, XREADGROUP,
//! XRANGE): passing them through Lua costs more than reading them. Scripts
//! decide (is the queue there, what expired, what timed out) and move ids.

use std::time::{Duration, Instant};

use redis::Value;
use tidings_core::{
    ConsumerName, Delivery, Error, ExpiryAction, GroupName, MessageId, OutgoingMessage,
    QueueConfig, QueueName, ReceiveOptions, Result, SendReceipt,
};

use super::messages::{delivery, message_args};
use super::{RedisBroker, ScriptReply, ids_as_args, millis};
use crate::wire::entry::Entry;
use crate::{scripts, value};

/// How often a group is searched for timed-out deliveries: a quarter of the
/// visibility timeout, within these bounds.
const RECLAIM_EVERY: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// One receive call's fixed parts.
struct Receiver<'a> {
    queue: &'a QueueName,
    group: &'a GroupName,
    consumer: &'a ConsumerName,
    count: usize,
    config: &'a QueueConfig,
    stream: String,
}

/// What one read brought back.
struct Read {
    /// The server's clock, in milliseconds.
    now: u64,
    /// How long until a held message is due.
    due_in: Option<Duration>,
    entries: Vec<(Entry, u32)>,
    /// How many acks travelling with the read took effect.
    acked: u64,
}

/// Entries read, sorted by what happens to them.
#[derive(Default)]
struct Sorted {
    deliveries: Vec<Delivery>,
    /// Expired when read.
    expired: Vec<String>,
    /// Requeued for another group: acked and skipped.
    skipped: Vec<MessageId>,
    /// Delayed sends not yet due: id, due time.
    early: Vec<(String, u64)>,
    /// Unreadable: id, reason, deliveries.
    unreadable: Vec<(String, String, u32)>,
}

impl RedisBroker {
    pub(super) async fn send_now(
        &self,
        queue: &QueueName,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendReceipt>> {
        let config = self.config(queue).await?;
        let stream = self.layout.stream(queue)?;
        let plain = config.default_ttl.is_none()
            && messages
                .iter()
                .all(|m| m.dedup_id.is_none() && m.ttl.is_none() && m.delay.is_none());
        if plain && let Some(receipts) = self.send_plain(&stream, messages, &config).await? {
            return Ok(receipts);
        }
        let mut args = Vec::with_capacity(3 + messages.len() * 6);
        args.push(queue.as_str().as_bytes().to_vec());
        args.push(millis(config.dedup_window).max(1).to_string().into_bytes());
        args.push(messages.len().to_string().into_bytes());
        for message in messages {
            args.extend(message_args(message, &config));
        }
        let reply = self.script(&scripts::SEND, &[&stream], args).await?;
        Ok(receipts(&reply))
    }

    /// Messages without dedup id, TTL or delay: plain XADDs (in MULTI/EXEC
    /// for a batch, so it is all or nothing). `NOMKSTREAM` makes a send to a
    /// queue whose stream is missing fail; `None` then lets the script
    /// decide whether the queue exists at all.
    async fn send_plain(
        &self,
        stream: &str,
        messages: &[OutgoingMessage],
        config: &QueueConfig,
    ) -> Result<Option<Vec<SendReceipt>>> {
        let mut pipe = redis::pipe();
        if messages.len() > 1 {
            pipe.atomic();
        }
        for message in messages {
            let [data, pl, headers, ..] = message_args(message, config);
            let cmd = pipe
                .cmd("XADD")
                .arg(stream)
                .arg("NOMKSTREAM")
                .arg("*")
                .arg("data")
                .arg(data)
                .arg("pl")
                .arg(pl);
            if !headers.is_empty() {
                cmd.arg("h").arg(headers);
            }
        }
        let mut conn = self.conns.main();
        let ids: Vec<Option<String>> = self.call(pipe.query_async(&mut conn)).await?;
        if ids.iter().any(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(
            ids.into_iter()
                .flatten()
                .map(|id| SendReceipt {
                    id: MessageId(id),
                    duplicate: false,
                })
                .collect(),
        ))
    }

    pub(super) async fn receive_now(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        ack: &[MessageId],
        options: ReceiveOptions,
    ) -> Result<(u64, Vec<Delivery>)> {
        let config = self.config(queue).await?;
        let r = Receiver {
            queue,
            group,
            consumer,
            count: options.max_messages,
            config: &config,
            stream: self.layout.stream(queue)?,
        };
        let deadline = Instant::now() + options.wait;
        let reclaim_every = (config.visibility_timeout / 4).clamp(RECLAIM_EVERY.0, RECLAIM_EVERY.1);
        let mut force_reclaim = false;
        let mut acked = 0;
        // Acks travel with the first read, or go first when a sweep is due
        // (so the sweep does not take back what was just handled).
        let mut ack = self.ack_args(queue, group, ack, &config);
        loop {
            // Timed-out deliveries are looked for, and expiry swept, on a
            // schedule; in between a receive is native commands only.
            let sweep = force_reclaim || self.reclaim_due(queue, group, reclaim_every);
            if sweep {
                if let Some(args) = ack.take() {
                    acked += self.ack_script(&r.stream, args).await?;
                }
                let (found, _) = self.reclaim(&r).await?;
                if !found.is_empty() {
                    return Ok((acked, found));
                }
            }
            // Entries read but not delivered (expired, held, meant for
            // another group) leave room: read on, a few times at most.
            let mut found = Vec::new();
            let mut due_in = None;
            let mut now = 0;
            for _ in 0..10 {
                let want = r.count - found.len();
                let read = self.read(&r, want, sweep, ack.take()).await?;
                (now, due_in) = (read.now, read.due_in);
                acked += read.acked;
                let entries = read.entries;
                let read = entries.len();
                let (delivered, passed_over) = self.settle(&r, now, entries).await?;
                found.extend(delivered);
                if passed_over == 0 || read < want || found.len() == r.count {
                    break;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !found.is_empty() || left.is_zero() {
                return Ok((acked, found));
            }
            let mut wait = left.min(reclaim_every);
            if let Some(due) = due_in {
                wait = wait.min(due);
            }
            force_reclaim = wait < left;
            let read_at = Instant::now();
            let entries = self.read_blocking(&r, wait).await?;
            let now = now + millis(read_at.elapsed());
            let (found, _) = self.settle(&r, now, entries).await?;
            if !found.is_empty() {
                return Ok((acked, found));
            }
        }
    }

    /// Whether this process should look for timed-out deliveries of the group now.
    fn reclaim_due(&self, queue: &QueueName, group: &GroupName, every: Duration) -> bool {
        let key = (queue.clone(), group.clone());
        self.reclaimed.lock().is_ok_and(|mut r| {
            let due = r.get(&key).is_none_or(|at| at.elapsed() >= every);
            if due {
                r.insert(key, Instant::now());
            }
            due
        })
    }

    /// Claims timed-out deliveries (dead-lettering those out of deliveries).
    async fn reclaim(&self, r: &Receiver<'_>) -> Result<(Vec<Delivery>, usize)> {
        let args = vec![
            r.queue.as_str().as_bytes().to_vec(),
            r.group.as_str().as_bytes().to_vec(),
            r.consumer.as_str().as_bytes().to_vec(),
            r.count.to_string().into_bytes(),
            millis(r.config.visibility_timeout).to_string().into_bytes(),
            r.config.max_deliveries.to_string().into_bytes(),
        ];
        let reply = match self
            .script_reply(&scripts::RECLAIM, &[&r.stream], args)
            .await?
        {
            ScriptReply::Done(reply) => reply,
            // No group yet: nothing to reclaim.
            ScriptReply::Refused { .. } => return Ok((Vec::new(), 0)),
        };
        let parts = value::items(&reply);
        for item in parts.get(1).map(value::items).unwrap_or_default() {
            let f = value::items(item);
            if let (Some(id), Some(reason), Some(n)) = (
                f.first().and_then(value::text),
                f.get(1).and_then(value::text),
                f.get(2).and_then(value::int),
            ) {
                let n = u32::try_from(n).unwrap_or(0);
                self.dead_letter_taken(r.queue, r.group, &id, &reason, n, r.config)
                    .await?;
            }
        }
        let claimed: Vec<(String, u32)> = parts
            .first()
            .map(value::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|c| {
                let c = value::items(c);
                Some((
                    value::text(c.first()?)?,
                    u32::try_from(value::int(c.get(1)?)?).ok()?,
                ))
            })
            .collect();
        if claimed.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let mut pipe = redis::pipe();
        for (id, _) in &claimed {
            pipe.cmd("XRANGE").arg(&r.stream).arg(id).arg(id);
        }
        pipe.cmd("TIME");
        let mut conn = self.conns.main();
        let mut replies: Vec<Value> = self.call(pipe.query_async(&mut conn)).await?;
        let now = replies.pop().map_or(0, |t| server_millis(&t));
        let entries: Vec<(Entry, u32)> = replies
            .iter()
            .zip(&claimed)
            .filter_map(|(reply, (_, n))| Some((value::entries(reply).pop()?, *n)))
            .collect();
        self.settle(r, now, entries).await
    }

    /// Acks (when given), the prepare script and a native XREADGROUP, in
    /// one round trip.
    async fn read(
        &self,
        r: &Receiver<'_>,
        count: usize,
        prepare: bool,
        mut ack: Option<Vec<Vec<u8>>>,
    ) -> Result<Read> {
        let mut create = !self.group_created(r.queue, r.group);
        let mut acked = 0;
        loop {
            let flag = |b: bool| if b { "1" } else { "0" };
            let scripted = prepare || create;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            let acking = ack.take();
            if let Some(args) = &acking {
                pipe.cmd("EVALSHA")
                    .arg(scripts::ACK.get_hash())
                    .arg(1)
                    .arg(&r.stream)
                    .arg(args);
            }
            if scripted {
                pipe.cmd("EVALSHA")
                    .arg(scripts::PREPARE.get_hash())
                    .arg(1)
                    .arg(&r.stream)
                    .arg(r.queue.as_str())
                    .arg(r.group.as_str())
                    .arg(flag(create))
                    .arg(flag(r.config.on_expiry == ExpiryAction::DeadLetter));
            } else {
                // Between sweeps: the server's clock (to judge expiry and
                // delays) and the first held message, natively.
                pipe.cmd("TIME");
                pipe.cmd("ZRANGE")
                    .arg(format!("{}:held:{}", r.stream, r.group))
                    .arg(0)
                    .arg(0)
                    .arg("WITHSCORES");
            }
            pipe.cmd("XREADGROUP")
                .arg("GROUP")
                .arg(r.group.as_str())
                .arg(r.consumer.as_str())
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&r.stream)
                .arg(">");
            let mut conn = self.conns.main();
            let mut replies: Vec<Value> = self.call(pipe.query_async(&mut conn)).await?;
            let expected = 2 + usize::from(acking.is_some()) + usize::from(!scripted);
            if replies.len() != expected {
                return Err(Error::Unavailable(
                    "Redis answered a pipeline in part".into(),
                ));
            }
            if let Some(args) = acking {
                acked += match replies.remove(0) {
                    Value::ServerError(e) if e.code() == "NOQUEUE" => {
                        return Err(Error::QueueNotFound(r.queue.to_string()));
                    }
                    // Forgotten script, or any other refusal: the ack runs
                    // alone (reloading scripts) and reports its own error.
                    Value::ServerError(_) => self.ack_script(&r.stream, args).await?,
                    reply => value::count(&reply),
                };
            }
            let read = &replies[replies.len() - 1];
            let mut now = None;
            let mut due_in = None;
            if scripted {
                match &replies[0] {
                    Value::ServerError(e) if e.code() == "NOQUEUE" => {
                        return Err(Error::QueueNotFound(r.queue.to_string()));
                    }
                    // Redis forgot the script (restarted): what the read took is
                    // still delivered; the script runs again next time.
                    Value::ServerError(e) if e.code() == "NOSCRIPT" => {
                        self.load_scripts().await?;
                    }
                    Value::ServerError(e) => {
                        return Err(Error::storage(redis::RedisError::from(e.clone())));
                    }
                    prepared => {
                        let parts = value::items(prepared);
                        now = parts
                            .first()
                            .and_then(value::int)
                            .and_then(|n| u64::try_from(n).ok());
                        due_in = parts
                            .get(2)
                            .and_then(value::int)
                            .and_then(|ms| u64::try_from(ms).ok())
                            .map(Duration::from_millis);
                        for id in parts.get(1).map(value::items).unwrap_or_default() {
                            if let Some(id) = value::text(id) {
                                self.dead_letter_taken(
                                    r.queue, r.group, &id, "expired", 0, r.config,
                                )
                                .await?;
                            }
                        }
                    }
                }
            } else {
                let server_now = server_millis(&replies[0]);
                now = Some(server_now);
                due_in = value::items(&replies[1])
                    .get(1)
                    .and_then(value::int)
                    .and_then(|due| u64::try_from(due).ok())
                    .map(|due| Duration::from_millis(due.saturating_sub(server_now)));
            }
            match read {
                Value::ServerError(e) if e.code() == "NOGROUP" && !create => {
                    // The group (or the whole queue) is gone: the script
                    // makes the group again, or says the queue is gone.
                    self.mark_group(r.queue, r.group, false);
                    create = true;
                    continue;
                }
                Value::ServerError(e) => {
                    return Err(Error::storage(redis::RedisError::from(e.clone())));
                }
                _ => {}
            }
            if create {
                self.mark_group(r.queue, r.group, true);
            }
            let now = now.unwrap_or_else(|| tidings_core::Timestamp::now().as_millis());
            return Ok(Read {
                now,
                due_in,
                entries: read_entries(read),
                acked,
            });
        }
    }

    /// XREADGROUP BLOCK on a connection of its own.
    async fn read_blocking(&self, r: &Receiver<'_>, wait: Duration) -> Result<Vec<(Entry, u32)>> {
        let mut conn = self.conns.blocking().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(r.group.as_str())
            .arg(r.consumer.as_str())
            .arg("COUNT")
            .arg(r.count)
            .arg("BLOCK")
            .arg(millis(wait).max(1))
            .arg("STREAMS")
            .arg(&r.stream)
            .arg(">");
        let limit = wait + self.options.timeout;
        match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(reply)) => {
                self.conns.give_back(conn);
                Ok(read_entries(&reply))
            }
            // The group went away (Redis restarted empty): the next read makes it again.
            Ok(Err(e)) if e.code() == Some("NOGROUP") => {
                self.conns.give_back(conn);
                self.mark_group(r.queue, r.group, false);
                Ok(Vec::new())
            }
            Ok(Err(e)) => Err(self.redis_error(e)),
            Err(_) => Err(Error::Unavailable(format!(
                "Redis did not answer a blocking read within {limit:?}"
            ))),
        }
    }

    /// Delivers what can be delivered; expires, skips, holds or
    /// dead-letters the rest. Returns the deliveries and how many entries
    /// were passed over.
    async fn settle(
        &self,
        r: &Receiver<'_>,
        now: u64,
        entries: Vec<(Entry, u32)>,
    ) -> Result<(Vec<Delivery>, usize)> {
        let total = entries.len();
        let mut sorted = Sorted::default();
        for (entry, count) in entries {
            let number = |name| entry.field(name).and_then(|v| v.parse::<u64>().ok());
            if number("x").is_some_and(|x| x <= now) {
                sorted.expired.push(entry.id);
            } else if entry.field("only").is_some_and(|g| g != r.group.as_str()) {
                sorted.skipped.push(MessageId(entry.id));
            } else if let Some(due) = number("nb").filter(|nb| *nb > now) {
                sorted.early.push((entry.id, due));
            } else {
                match delivery(r.queue, &entry, count) {
                    Ok(d) => sorted.deliveries.push(d),
                    // Never dropped: what nobody can read goes to the dead letters.
                    Err(why) => sorted.unreadable.push((
                        entry.id,
                        format!("unreadable entry: {why}"),
                        count,
                    )),
                }
            }
        }
        if !sorted.expired.is_empty() {
            if r.config.on_expiry == ExpiryAction::DeadLetter {
                for id in &sorted.expired {
                    self.dead_letter_taken(r.queue, r.group, id, "expired", 0, r.config)
                        .await?;
                }
            } else {
                let mut args = vec![r.queue.as_str().as_bytes().to_vec()];
                args.extend(sorted.expired.iter().map(|id| id.as_bytes().to_vec()));
                self.script(&scripts::EXPIRE, &[&r.stream], args).await?;
            }
        }
        if !sorted.skipped.is_empty() {
            self.ack_now(r.queue, r.group, &sorted.skipped).await?;
        }
        for (id, due) in &sorted.early {
            self.hold(r.queue, r.group, &[id.as_str()], "delayed", *due, r.config)
                .await?;
        }
        for (id, reason, count) in &sorted.unreadable {
            self.dead_letter_taken(r.queue, r.group, id, reason, *count, r.config)
                .await?;
        }
        let passed_over = total - sorted.deliveries.len();
        Ok((sorted.deliveries, passed_over))
    }

    /// Holds pending messages back, all in one script run (see
    /// `lua/hold.lua`). Returns how many were pending and held.
    pub(super) async fn hold(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[&str],
        mode: &str,
        when: u64,
        config: &QueueConfig,
    ) -> Result<u64> {
        let stream = self.layout.stream(queue)?;
        let mut args = vec![
            queue.as_str().as_bytes().to_vec(),
            group.as_str().as_bytes().to_vec(),
            mode.as_bytes().to_vec(),
            when.to_string().into_bytes(),
            millis(config.visibility_timeout).to_string().into_bytes(),
        ];
        args.extend(ids.iter().map(|id| id.as_bytes().to_vec()));
        let held = self.script(&scripts::HOLD, &[&stream], args).await?;
        Ok(value::count(&held))
    }

    pub(super) async fn ack_now(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
    ) -> Result<u64> {
        let config = self.config(queue).await?;
        let stream = self.layout.stream(queue)?;
        match self.ack_args(queue, group, ids, &config) {
            Some(args) => self.ack_script(&stream, args).await,
            None => Ok(0),
        }
    }

    /// The ack script's arguments, or `None` when no id could be pending.
    fn ack_args(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        config: &QueueConfig,
    ) -> Option<Vec<Vec<u8>>> {
        let ids = ids_as_args(ids);
        if ids.is_empty() {
            return None;
        }
        let [max_len, max_age] = Self::retention_args(config);
        let mut args = vec![
            queue.as_str().as_bytes().to_vec(),
            group.as_str().as_bytes().to_vec(),
            max_len,
            max_age,
        ];
        args.extend(ids);
        Some(args)
    }

    async fn ack_script(&self, stream: &str, args: Vec<Vec<u8>>) -> Result<u64> {
        let acked = self.script(&scripts::ACK, &[stream], args).await?;
        Ok(value::count(&acked))
    }
}

/// Entries of an XREADGROUP reply, each delivered for the first time.
fn read_entries(reply: &Value) -> Vec<(Entry, u32)> {
    value::items(reply)
        .first()
        .map(value::items)
        .and_then(|stream| stream.get(1))
        .map(value::entries)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e, 1))
        .collect()
}

/// Milliseconds from a TIME reply.
fn server_millis(time: &Value) -> u64 {
    let parts = value::items(time);
    let secs = parts.first().and_then(value::int).unwrap_or(0);
    let micros = parts.get(1).and_then(value::int).unwrap_or(0);
    u64::try_from(secs * 1000 + micros / 1000).unwrap_or(0)
}

/// Receipts from a reply of id, duplicate flag pairs.
pub(super) fn receipts(reply: &Value) -> Vec<SendReceipt> {
    value::items(reply)
        .chunks_exact(2)
        .filter_map(|pair| {
            Some(SendReceipt {
                id: MessageId(value::text(&pair[0])?),
                duplicate: value::int(&pair[1]) == Some(1),
            })
        })
        .collect()
}
