//! Transactions: sends, acks, nacks and record writes in one script run.

use tidings_core::{
    Error, GroupName, MessageId, Nack, QueueName, Result, SendReceipt, TableName, Transaction, TxOp,
};

use super::messages::{flat, message_args};
use super::receive::receipts;
use super::{RedisBroker, ScriptReply, millis};
use crate::keys::slot;
use crate::scripts;
use crate::wire::entry::is_stream_id;

/// An operation as the script sees it, with what to report if it is refused.
enum Step {
    /// An ack or nack: refused when the message is not pending.
    Pending(QueueName, GroupName, MessageId),
    Record(TableName, String),
    Other,
}

impl RedisBroker {
    pub(super) async fn commit_now(&self, transaction: Transaction) -> Result<Vec<SendReceipt>> {
        let ops = transaction.into_ops();
        let mut queues: Vec<QueueName> = Vec::new();
        let mut tables: Vec<TableName> = Vec::new();
        for op in &ops {
            match op {
                TxOp::Send { queue, .. } | TxOp::Ack { queue, .. } | TxOp::Nack { queue, .. } => {
                    if !queues.contains(queue) {
                        queues.push(queue.clone());
                    }
                }
                TxOp::Put { table, .. }
                | TxOp::Delete { table, .. }
                | TxOp::Expect { table, .. }
                | TxOp::Add { table, .. } => {
                    if !tables.contains(table) {
                        tables.push(table.clone());
                    }
                }
            }
        }
        let mut keys = Vec::with_capacity(queues.len() + tables.len());
        let mut args = vec![queues.len().to_string().into_bytes()];
        let mut configs = Vec::with_capacity(queues.len());
        for queue in &queues {
            let config = self.config(queue).await?;
            keys.push(self.keys(queue)?.stream);
            let [max_len, max_age] = Self::retention_args(&config);
            args.push(queue.as_str().as_bytes().to_vec());
            args.push(millis(config.dedup_window).max(1).to_string().into_bytes());
            args.push(max_len);
            args.push(max_age);
            configs.push(config);
        }
        for table in &tables {
            keys.push(self.layout.table(table).values);
        }
        self.check_one_slot(&keys)?;

        let index = |q: &QueueName| queues.iter().position(|x| x == q).unwrap_or(0) + 1;
        let table_index =
            |t: &TableName| queues.len() + tables.iter().position(|x| x == t).unwrap_or(0) + 1;
        let mut steps = Vec::new();
        for op in ops {
            match op {
                TxOp::Send { queue, message } => {
                    let qi = index(&queue);
                    args.push(b"S".to_vec());
                    args.push(qi.to_string().into_bytes());
                    args.extend(message_args(&message, &configs[qi - 1]));
                    steps.push(Step::Other);
                }
                TxOp::Ack { queue, group, ids } => {
                    for id in ids {
                        if !is_stream_id(id.as_str()) {
                            return Err(Error::NotPending {
                                queue: queue.to_string(),
                                group: group.to_string(),
                                id: id.to_string(),
                            });
                        }
                        args.push(b"A".to_vec());
                        args.push(index(&queue).to_string().into_bytes());
                        args.push(group.as_str().as_bytes().to_vec());
                        args.push(id.as_str().as_bytes().to_vec());
                        steps.push(Step::Pending(queue.clone(), group.clone(), id));
                    }
                }
                TxOp::Nack {
                    queue,
                    group,
                    id,
                    nack,
                } => {
                    let qi = index(&queue);
                    let not_pending = || Error::NotPending {
                        queue: queue.to_string(),
                        group: group.to_string(),
                        id: id.to_string(),
                    };
                    if !is_stream_id(id.as_str()) {
                        return Err(not_pending());
                    }
                    args.push(b"N".to_vec());
                    args.push(qi.to_string().into_bytes());
                    args.push(group.as_str().as_bytes().to_vec());
                    args.push(id.as_str().as_bytes().to_vec());
                    match nack {
                        Nack::Retry { delay } => {
                            args.push(b"retry".to_vec());
                            args.push(millis(delay).to_string().into_bytes());
                            let vis = millis(configs[qi - 1].visibility_timeout);
                            args.push(vis.to_string().into_bytes());
                            args.push(b"0".to_vec());
                            args.push(b"0".to_vec());
                        }
                        Nack::DeadLetter { reason } => {
                            let read = self
                                .dead_letters_of(&queue, &group, &[id.as_str()], &reason)
                                .await?;
                            let Some((_, count, fields)) = read.into_iter().next() else {
                                return Err(not_pending());
                            };
                            args.push(b"dead".to_vec());
                            args.push(b"0".to_vec());
                            args.push(b"0".to_vec());
                            args.push(count.to_string().into_bytes());
                            args.push((fields.len() * 2).to_string().into_bytes());
                            args.extend(flat(fields));
                        }
                    }
                    steps.push(Step::Pending(queue.clone(), group.clone(), id));
                }
                TxOp::Put {
                    table,
                    key,
                    value,
                    only_if_absent,
                } => {
                    args.push(b"P".to_vec());
                    args.push(table_index(&table).to_string().into_bytes());
                    args.push(key.clone().into_bytes());
                    args.push(value.as_str().as_bytes().to_vec());
                    args.push(if only_if_absent {
                        b"1".to_vec()
                    } else {
                        b"0".to_vec()
                    });
                    steps.push(Step::Record(table, key));
                }
                TxOp::Delete { table, key } => {
                    args.push(b"D".to_vec());
                    args.push(table_index(&table).to_string().into_bytes());
                    args.push(key.clone().into_bytes());
                    steps.push(Step::Record(table, key));
                }
                TxOp::Add { table, key, delta } => {
                    args.push(b"I".to_vec());
                    args.push(table_index(&table).to_string().into_bytes());
                    args.push(key.clone().into_bytes());
                    args.push(delta.to_string().into_bytes());
                    steps.push(Step::Record(table, key));
                }
                TxOp::Expect { table, key, value } => {
                    args.push(b"X".to_vec());
                    args.push(table_index(&table).to_string().into_bytes());
                    args.push(key.clone().into_bytes());
                    match value {
                        Some(v) => {
                            args.push(b"1".to_vec());
                            args.push(v.as_str().as_bytes().to_vec());
                        }
                        None => {
                            args.push(b"0".to_vec());
                            args.push(Vec::new());
                        }
                    }
                    steps.push(Step::Record(table, key));
                }
            }
        }
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        match self.script_reply(&scripts::COMMIT, &key_refs, args).await? {
            ScriptReply::Done(reply) => Ok(receipts(&reply)),
            ScriptReply::Refused { code, detail } => {
                let step = detail
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| steps.get(n.wrapping_sub(1)));
                Err(match (code.as_str(), step) {
                    ("NOTPENDING", Some(Step::Pending(queue, group, id))) => Error::NotPending {
                        queue: queue.to_string(),
                        group: group.to_string(),
                        id: id.to_string(),
                    },
                    ("EXISTS", Some(Step::Record(table, key))) => Error::RecordExists {
                        table: table.to_string(),
                        key: key.clone(),
                    },
                    ("CHANGED", Some(Step::Record(table, key))) => Error::RecordChanged {
                        table: table.to_string(),
                        key: key.clone(),
                    },
                    ("NOTINTEGER", Some(Step::Record(table, key))) => {
                        tidings_core::record::not_a_counter(table.as_str(), key)
                    }
                    _ => Error::Corrupt {
                        location: keys.join(" "),
                        detail: format!("transaction refused: {code} {detail}"),
                    },
                })
            }
        }
    }

    /// With hash tags (Redis Cluster), every key of a transaction must be in
    /// one slot: queues in different slots cannot be changed atomically.
    fn check_one_slot(&self, keys: &[String]) -> Result<()> {
        if !self.options.hash_tags {
            return Ok(());
        }
        let Some(first) = keys.first() else {
            return Ok(());
        };
        let home = slot(first);
        if let Some(other) = keys.iter().find(|k| slot(k) != home) {
            return Err(Error::InvalidArgument(format!(
                "a transaction must stay in one Redis Cluster slot, but {first:?} and {other:?} \
                 are in slots {home} and {}; give the queues a shared hash tag in the prefix \
                 (e.g. prefix=mq:{{shop}}:) to change them together",
                slot(other)
            )));
        }
        Ok(())
    }
}
