//! Sending, receiving and acknowledging.

use std::time::{Duration, Instant};

use redis::Value;
use tidings_core::{
    ConsumerName, Delivery, Error, ExpiryAction, GroupName, MessageId, OutgoingMessage, QueueName,
    ReceiveOptions, Result, SendReceipt,
};

use super::messages::{delivery, message_args};
use super::{RedisBroker, ScriptReply, ids_as_args, millis};
use crate::{scripts, value};

/// How often a group is searched for timed-out deliveries: a quarter of the
/// visibility timeout, within these bounds.
const RECLAIM_EVERY: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// What one run of the receive script found.
struct Taken {
    deliveries: Vec<Delivery>,
    /// Messages to dead-letter: id, reason, deliveries so far.
    dead: Vec<(String, String, u32)>,
    /// The newest id in the stream, to block for anything newer.
    last_id: String,
    /// When the next held message is due.
    due_in: Option<Duration>,
}

impl RedisBroker {
    pub(super) async fn send_now(
        &self,
        queue: &QueueName,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<SendReceipt>> {
        let config = self.config(queue).await?;
        let keys = self.keys(queue)?;
        let mut args = Vec::with_capacity(3 + messages.len() * 6);
        args.push(queue.as_str().as_bytes().to_vec());
        args.push(millis(config.dedup_window).max(1).to_string().into_bytes());
        args.push(messages.len().to_string().into_bytes());
        for message in messages {
            args.extend(message_args(message, &config));
        }
        let reply = self.script(&scripts::SEND, &[&keys.stream], args).await?;
        Ok(receipts(&reply))
    }

    pub(super) async fn receive_now(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        let config = self.config(queue).await?;
        let keys = self.keys(queue)?;
        let deadline = Instant::now() + options.wait;
        let reclaim_every = (config.visibility_timeout / 4).clamp(RECLAIM_EVERY.0, RECLAIM_EVERY.1);
        let mut force_reclaim = false;
        loop {
            let key = (queue.clone(), group.clone());
            let reclaim = force_reclaim
                || self.reclaimed.lock().is_ok_and(|mut r| {
                    let due = r.get(&key).is_none_or(|at| at.elapsed() >= reclaim_every);
                    if due {
                        r.insert(key.clone(), Instant::now());
                    }
                    due
                });
            let taken = self
                .take(queue, group, consumer, &options, &config, reclaim)
                .await?;
            for (id, reason, count) in &taken.dead {
                self.dead_letter_taken(queue, group, id, reason, *count, &config)
                    .await?;
            }
            let now = Instant::now();
            if !taken.deliveries.is_empty() || now >= deadline {
                return Ok(taken.deliveries);
            }
            if !taken.dead.is_empty() {
                continue;
            }
            let mut wait = (deadline - now).min(reclaim_every);
            if let Some(due) = taken.due_in {
                wait = wait.min(due);
            }
            force_reclaim = wait < deadline - now;
            self.wait_for_entry(&keys.stream, &taken.last_id, wait)
                .await?;
        }
    }

    /// One run of the receive script (creating the group if needed).
    async fn take(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: &ReceiveOptions,
        config: &tidings_core::QueueConfig,
        reclaim: bool,
    ) -> Result<Taken> {
        let keys = self.keys(queue)?;
        let flag = |b: bool| if b { b"1".to_vec() } else { b"0".to_vec() };
        let mut create = !self.group_created(queue, group);
        loop {
            let args = vec![
                queue.as_str().as_bytes().to_vec(),
                group.as_str().as_bytes().to_vec(),
                consumer.as_str().as_bytes().to_vec(),
                options.max_messages.to_string().into_bytes(),
                millis(config.visibility_timeout).to_string().into_bytes(),
                config.max_deliveries.to_string().into_bytes(),
                flag(reclaim),
                flag(config.on_expiry == ExpiryAction::DeadLetter),
                flag(create),
            ];
            match self
                .script_reply(&scripts::RECEIVE, &[&keys.stream], args)
                .await?
            {
                ScriptReply::Done(reply) => {
                    if create {
                        self.mark_group(queue, group, true);
                    }
                    return Ok(self.taken(queue, &reply));
                }
                // Redis lost the group (restarted empty, or purged by
                // someone): create it and try again, once.
                ScriptReply::Refused { code, .. } if code == "NOGROUP" && !create => {
                    self.mark_group(queue, group, false);
                    create = true;
                }
                ScriptReply::Refused { code, detail } => {
                    return Err(Error::Corrupt {
                        location: keys.stream.clone(),
                        detail: format!("receive refused: {code} {detail}"),
                    });
                }
            }
        }
    }

    fn taken(&self, queue: &QueueName, reply: &Value) -> Taken {
        let parts = value::items(reply);
        let mut deliveries = Vec::new();
        let mut dead = Vec::new();
        for item in parts.first().map(value::items).unwrap_or_default() {
            let fields = value::items(item);
            let (Some(id), Some(count)) = (
                fields.first().and_then(value::text),
                fields.get(1).and_then(value::int),
            ) else {
                continue;
            };
            let count = u32::try_from(count).unwrap_or(u32::MAX);
            let Some(entry) = value::entry(&Value::Array(vec![
                Value::BulkString(id.clone().into_bytes()),
                fields.get(2).cloned().unwrap_or(Value::Nil),
            ])) else {
                continue;
            };
            match delivery(queue, &entry, count) {
                Ok(d) => deliveries.push(d),
                // Never dropped: an entry nobody can read goes to the dead letters.
                Err(why) => dead.push((id, format!("unreadable entry: {why}"), count)),
            }
        }
        for item in parts.get(1).map(value::items).unwrap_or_default() {
            let f = value::items(item);
            if let (Some(id), Some(reason), Some(count)) = (
                f.first().and_then(value::text),
                f.get(1).and_then(value::text),
                f.get(2).and_then(value::int),
            ) {
                dead.push((id, reason, u32::try_from(count).unwrap_or(0)));
            }
        }
        let due_in = parts
            .get(3)
            .and_then(value::int)
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis);
        Taken {
            deliveries,
            dead,
            last_id: parts
                .get(2)
                .and_then(value::text)
                .unwrap_or_else(|| "0-0".into()),
            due_in,
        }
    }

    /// Blocks until the stream has an entry newer than `last_id`, or `wait` passes.
    async fn wait_for_entry(&self, stream: &str, last_id: &str, wait: Duration) -> Result<()> {
        let ms = millis(wait).max(1);
        let mut conn = self.conns.blocking().await?;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(ms)
            .arg("STREAMS")
            .arg(stream)
            .arg(last_id);
        let limit = wait + self.options.timeout;
        match tokio::time::timeout(limit, cmd.query_async::<Value>(&mut conn)).await {
            Ok(Ok(_)) => {
                self.conns.give_back(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(self.redis_error(e)),
            Err(_) => Err(Error::Unavailable(format!(
                "Redis did not answer a blocking read within {limit:?}"
            ))),
        }
    }

    pub(super) async fn ack_now(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
    ) -> Result<u64> {
        let config = self.config(queue).await?;
        let keys = self.keys(queue)?;
        let ids = ids_as_args(ids);
        if ids.is_empty() {
            return Ok(0);
        }
        let [max_len, max_age] = Self::retention_args(&config);
        let mut args = vec![
            queue.as_str().as_bytes().to_vec(),
            group.as_str().as_bytes().to_vec(),
            max_len,
            max_age,
        ];
        args.extend(ids);
        let acked = self.script(&scripts::ACK, &[&keys.stream], args).await?;
        Ok(value::int(&acked)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0))
    }
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
