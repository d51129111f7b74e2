//! Transactions in three steps: what they read is read before the lock
//! ([`EmbeddedBroker::read_for`]); under it, every op is checked
//! ([`EmbeddedBroker::check`]) before any is applied ([`EmbeddedBroker::apply`]).

use std::collections::HashMap;

use tidings_core::{Error, Nack, QueueName, Result, SendReceipt, TxOp};

use super::operations::enqueue;
use super::record_reads::RecordReads;
use super::{EmbeddedBroker, Queues, queue, wait_for};
use crate::records::record_key;
use crate::state::{Ctx, GiveBack, Prefetched, parse_id};
use crate::store::{Space, Wait};
use tidings_core::record::counter_value;

/// Counter values kept in memory at most (past it, they are read again).
const MAX_CACHED_COUNTERS: usize = 65_536;

fn not_pending(queue: &QueueName, group: &impl ToString, id: &impl ToString) -> Error {
    Error::NotPending {
        queue: queue.to_string(),
        group: group.to_string(),
        id: id.to_string(),
    }
}

impl EmbeddedBroker {
    /// Reads, before the lock, the messages the transaction's nacks
    /// dead-letter and the records its preconditions look at.
    pub(super) fn read_for(&self, ops: &[TxOp]) -> Result<(Prefetched, RecordReads)> {
        let dead_lettered: Vec<(&QueueName, Vec<u64>)> = ops
            .iter()
            .filter_map(|op| match op {
                TxOp::Nack {
                    queue,
                    id,
                    nack: Nack::DeadLetter { .. },
                    ..
                } => Some((queue, parse_id(id).into_iter().collect())),
                _ => None,
            })
            .collect();
        let checked = ops
            .iter()
            .filter_map(|op| match op {
                TxOp::Put {
                    table,
                    key,
                    only_if_absent: true,
                    ..
                }
                | TxOp::Expect { table, key, .. } => Some(record_key(table.as_str(), key)),
                _ => None,
            })
            .collect();
        let records = self
            .inner
            .stripes
            .read_ahead(&**self.inner.store(), checked)?;
        Ok((self.prefetch(&dead_lettered)?, records))
    }

    /// Checks every op against the index and the records (changing
    /// nothing): queues exist, acked and nacked messages are in flight,
    /// inserted keys are free, expectations hold, counters hold integers.
    /// Returns the nacks' plans and the counters' new values, in order.
    pub(super) fn check(
        &self,
        queues: &mut Queues,
        ops: &[TxOp],
        records: &RecordReads,
        ctx: &Ctx<'_>,
    ) -> Result<(Vec<GiveBack>, Vec<i64>)> {
        let (stripes, store) = (&self.inner.stripes, ctx.store);
        // Keys written by earlier ops: their value (put) or none (deleted).
        let mut written: HashMap<Vec<u8>, Option<&[u8]>> = HashMap::new();
        // Counters added to by earlier ops: their sums.
        let mut added: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut sums = Vec::new();
        let mut plans = Vec::new();
        for op in ops {
            match op {
                TxOp::Send { queue: name, .. } => {
                    queue(queues, name)?;
                }
                TxOp::Ack {
                    queue: name,
                    group,
                    ids,
                } => {
                    let q = queue(queues, name)?;
                    if let Some(id) = ids
                        .iter()
                        .find(|id| !parse_id(id).is_some_and(|seq| q.is_in_flight(group, seq)))
                    {
                        return Err(not_pending(name, group, id));
                    }
                }
                TxOp::Nack {
                    queue: name,
                    group,
                    id,
                    nack,
                } => {
                    let q = queue(queues, name)?;
                    let seq = parse_id(id).filter(|&seq| q.is_in_flight(group, seq));
                    let seq = seq.ok_or_else(|| not_pending(name, group, id))?;
                    plans.push(q.plan_give_back(group, &[seq], nack.clone(), ctx)?);
                }
                TxOp::Put {
                    table,
                    key,
                    only_if_absent,
                    value,
                } => {
                    let at = record_key(table.as_str(), key);
                    if *only_if_absent {
                        let taken = match written.get(&at) {
                            _ if added.contains_key(&at) => true,
                            Some(present) => present.is_some(),
                            None => records.get(stripes, store, &at)?.is_some(),
                        };
                        if taken {
                            return Err(Error::RecordExists {
                                table: table.to_string(),
                                key: key.clone(),
                            });
                        }
                    }
                    added.remove(&at);
                    written.insert(at, Some(value.as_str().as_bytes()));
                }
                TxOp::Delete { table, key } => {
                    let at = record_key(table.as_str(), key);
                    added.remove(&at);
                    written.insert(at, None);
                }
                TxOp::Add { table, key, delta } => {
                    let at = record_key(table.as_str(), key);
                    let base = match (added.get(&at), written.get(&at)) {
                        (Some(sum), _) => *sum,
                        (None, Some(value)) => counter_value(table.as_str(), key, *value)?,
                        (None, None) => match ctx.counters.get(&at) {
                            Some(value) => *value,
                            None => {
                                let stored = records.get(stripes, store, &at)?;
                                counter_value(table.as_str(), key, stored.as_deref())?
                            }
                        },
                    };
                    let sum = base.checked_add(*delta).ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "adding {delta} to record {key:?} of table {table} would overflow"
                        ))
                    })?;
                    added.insert(at, sum);
                    sums.push(sum);
                }
                TxOp::Expect { table, key, value } => {
                    let at = record_key(table.as_str(), key);
                    let stored = records.get(stripes, store, &at)?;
                    if stored.as_deref() != value.as_ref().map(|v| v.as_str().as_bytes()) {
                        return Err(Error::RecordChanged {
                            table: table.to_string(),
                            key: key.clone(),
                        });
                    }
                }
            }
        }
        Ok((plans, sums))
    }

    /// Applies the checked ops in order (cannot fail but for a queue that is
    /// gone, which the check has excluded). Returns the sends' receipts and
    /// how far the batch must get before the commit returns.
    pub(super) fn apply(
        &self,
        queues: &mut Queues,
        ops: Vec<TxOp>,
        (plans, sums): (Vec<GiveBack>, Vec<i64>),
        ctx: &mut Ctx<'_>,
    ) -> Result<(Vec<SendReceipt>, Wait)> {
        let record_wait = wait_for(self.inner.durability);
        let mut receipts = Vec::new();
        let mut wait = Wait::Written;
        let mut plans = plans.into_iter();
        let mut sums = sums.into_iter();
        for op in ops {
            match op {
                TxOp::Send {
                    queue: name,
                    message,
                } => {
                    let q = queue(queues, &name)?;
                    wait = wait.max(self.send_wait(q));
                    let (receipt, seq) = enqueue(q, message, ctx);
                    receipts.push(receipt);
                    let qid = q.id();
                    ctx.sent.push((name, qid, seq.into_iter().collect()));
                }
                TxOp::Ack {
                    queue: name,
                    group,
                    ids,
                } => {
                    let q = queue(queues, &name)?;
                    for seq in ids.iter().filter_map(parse_id) {
                        q.ack(&group, seq, ctx);
                    }
                }
                TxOp::Nack {
                    queue: name, group, ..
                } => {
                    let q = queue(queues, &name)?;
                    if let Some(plan) = plans.next() {
                        q.apply_give_back(&group, plan, ctx);
                    }
                }
                TxOp::Put {
                    table, key, value, ..
                } => {
                    wait = wait.max(record_wait);
                    let at = record_key(table.as_str(), &key);
                    ctx.counters.remove(&at);
                    ctx.batch
                        .put(Space::Records, at, value.as_str().as_bytes().to_vec());
                }
                TxOp::Delete { table, key } => {
                    wait = wait.max(record_wait);
                    let at = record_key(table.as_str(), &key);
                    ctx.counters.remove(&at);
                    ctx.batch.delete(Space::Records, at);
                }
                TxOp::Add { table, key, .. } => {
                    wait = wait.max(record_wait);
                    let sum = sums.next().unwrap_or_default();
                    let at = record_key(table.as_str(), &key);
                    if ctx.counters.len() >= MAX_CACHED_COUNTERS {
                        ctx.counters.clear();
                    }
                    ctx.counters.insert(at.clone(), sum);
                    ctx.batch
                        .put(Space::Records, at, sum.to_string().into_bytes());
                }
                TxOp::Expect { .. } => {}
            }
        }
        Ok((receipts, wait))
    }
}
