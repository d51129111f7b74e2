//! Transactions, and reading records.
//!
//! A transaction's statements are sent together (pipelined) inside
//! `BEGIN`, its expectations first; its `COMMIT` is sent only when every
//! statement succeeded and every rule Tidings checks itself held (acks of
//! pending messages, inserts of free keys). Whatever fails before the
//! `COMMIT` leaves nothing behind, so it may be retried; a connection lost
//! during the `COMMIT` leaves the outcome unknown.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::future::join_all;
use tidings_core::record::prefix_end;
use tidings_core::{
    Error, GroupName, MessageId, Nack, Payload, QueueName, Record, RecordScan, Result, SendReceipt,
    TableName, Transaction, TxOp,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use super::messages::SendBatch;
use super::{QueueMeta, Shared, millis, seq_of};
use crate::error::{Failure, NOT_A_COUNTER, QUEUE_NOT_FOUND, RECORD_CHANGED};

/// One statement of a transaction.
enum Step<'t> {
    Expect {
        table: &'t TableName,
        key: &'t str,
        value: Option<&'t str>,
    },
    Send {
        queue: &'t QueueName,
        meta: Arc<QueueMeta>,
        batch: SendBatch,
    },
    Ack {
        queue: &'t QueueName,
        meta: Arc<QueueMeta>,
        group: &'t GroupName,
        ids: &'t [MessageId],
        seqs: Vec<i64>,
    },
    Nack {
        queue: &'t QueueName,
        meta: Arc<QueueMeta>,
        group: &'t GroupName,
        id: &'t MessageId,
        seqs: Vec<i64>,
        delay: i64,
        reason: Option<&'t str>,
    },
    Put {
        table: &'t TableName,
        key: &'t str,
        value: &'t str,
        only_if_absent: bool,
    },
    Delete {
        table: &'t TableName,
        key: &'t str,
    },
    /// Puts of several records no other step of the transaction touches,
    /// in key order.
    PutMany {
        tables: Vec<&'t str>,
        keys: Vec<&'t [u8]>,
        values: Vec<&'t str>,
    },
    Add {
        table: &'t TableName,
        key: &'t str,
        delta: i64,
    },
}

/// What a step's statement answered.
enum Answer {
    Rows(Vec<Row>),
    Count(u64),
}

type StepFuture<'a> =
    Pin<Box<dyn Future<Output = std::result::Result<Answer, tokio_postgres::Error>> + Send + 'a>>;

impl Step<'_> {
    fn sql<'s>(&self, sql: &'s super::sql::Statements) -> &'s str {
        match self {
            Step::Expect { .. } => &sql.expect,
            Step::Send { .. } => &sql.send,
            Step::Ack { .. } => &sql.ack,
            Step::Nack { .. } => &sql.nack,
            Step::Put {
                only_if_absent: false,
                ..
            } => &sql.put_record,
            Step::Put {
                only_if_absent: true,
                ..
            } => &sql.insert_record,
            Step::Delete { .. } => &sql.delete_record,
            Step::PutMany { .. } => &sql.put_records,
            Step::Add { .. } => &sql.add,
        }
    }

    /// The step's statement, run on `tx`.
    fn run<'a>(
        &'a self,
        tx: &'a deadpool_postgres::Transaction<'_>,
        statement: &'a tokio_postgres::Statement,
        synchronous: &'a bool,
    ) -> StepFuture<'a> {
        match self {
            Step::Expect { table, key, value } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 3] = [&table.as_str(), &key.as_bytes(), value];
                tx.query(statement, &params).await.map(Answer::Rows)
            }),
            Step::Send { meta, batch, .. } => Box::pin(async move {
                let dedup_ids = batch.dedup_param();
                let params: [&(dyn ToSql + Sync); 7] = [
                    &meta.id,
                    &batch.payloads,
                    &batch.headers,
                    &dedup_ids,
                    &batch.ttls,
                    &batch.delays,
                    synchronous,
                ];
                tx.query(statement, &params).await.map(Answer::Rows)
            }),
            Step::Ack {
                meta, group, seqs, ..
            } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 4] =
                    [&meta.id, &group.as_str(), seqs, synchronous];
                tx.query(statement, &params).await.map(Answer::Rows)
            }),
            Step::Nack {
                meta,
                group,
                seqs,
                delay,
                reason,
                ..
            } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 5] =
                    [&meta.id, &group.as_str(), seqs, delay, reason];
                tx.query(statement, &params).await.map(Answer::Rows)
            }),
            Step::Put {
                table, key, value, ..
            } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 3] = [&table.as_str(), &key.as_bytes(), value];
                tx.execute(statement, &params).await.map(Answer::Count)
            }),
            Step::Delete { table, key } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 2] = [&table.as_str(), &key.as_bytes()];
                tx.execute(statement, &params).await.map(Answer::Count)
            }),
            Step::PutMany {
                tables,
                keys,
                values,
            } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 3] = [tables, keys, values];
                tx.execute(statement, &params).await.map(Answer::Count)
            }),
            Step::Add { table, key, delta } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 3] = [&table.as_str(), &key.as_bytes(), delta];
                tx.query(statement, &params).await.map(Answer::Rows)
            }),
        }
    }

    /// The failure of the step's statement, in the domain's terms.
    fn failure(&self, e: tokio_postgres::Error) -> Failure {
        let code = e.code().map(tokio_postgres::error::SqlState::code);
        match (self, code) {
            (
                Step::Send { queue, .. } | Step::Ack { queue, .. } | Step::Nack { queue, .. },
                Some(QUEUE_NOT_FOUND),
            ) => Failure::Domain(Error::QueueNotFound(queue.to_string())),
            (Step::Expect { table, key, .. }, Some(RECORD_CHANGED)) => {
                Failure::Domain(Error::RecordChanged {
                    table: table.to_string(),
                    key: (*key).to_owned(),
                })
            }
            (Step::Add { table, key, .. }, Some(NOT_A_COUNTER)) => {
                Failure::Domain(tidings_core::record::not_a_counter(table.as_str(), key))
            }
            _ => Failure::from(e),
        }
    }

    /// Checks what the statement answered against the rules Tidings keeps
    /// itself, collecting send receipts.
    fn check(&self, answer: Answer, receipts: &mut Vec<SendReceipt>) -> Result<()> {
        match (self, answer) {
            (Step::Send { .. }, Answer::Rows(rows)) => {
                receipts.extend(super::messages::receipts(&rows));
            }
            (
                Step::Ack {
                    queue, group, ids, ..
                },
                Answer::Rows(rows),
            ) => {
                let acked = first_array(&rows);
                if let Some(missing) = ids
                    .iter()
                    .find(|id| seq_of(id).is_none_or(|seq| !acked.contains(&seq)))
                {
                    return Err(not_pending(queue, group, missing));
                }
            }
            (
                Step::Nack {
                    queue, group, id, ..
                },
                Answer::Rows(rows),
            ) if first_array(&rows).is_empty() => {
                return Err(not_pending(queue, group, id));
            }
            (
                Step::Put {
                    table,
                    key,
                    only_if_absent: true,
                    ..
                },
                Answer::Count(0),
            ) => {
                return Err(Error::RecordExists {
                    table: table.to_string(),
                    key: (*key).to_owned(),
                });
            }
            _ => {}
        }
        Ok(())
    }
}

fn first_array(rows: &[Row]) -> Vec<i64> {
    rows.first()
        .map(|row| row.get::<_, Vec<i64>>(0))
        .unwrap_or_default()
}

fn not_pending(queue: &QueueName, group: &GroupName, id: &MessageId) -> Error {
    Error::NotPending {
        queue: queue.to_string(),
        group: group.to_string(),
        id: id.to_string(),
    }
}

impl Shared {
    /// Commits a transaction: alone, or in one PostgreSQL transaction with
    /// others committed at the same time (see `together`).
    pub(super) async fn apply(
        self: &Arc<Self>,
        transaction: Transaction,
    ) -> Result<Vec<SendReceipt>> {
        transaction.validate()?;
        if transaction.is_empty() {
            return Ok(Vec::new());
        }
        self.in_line(&(), super::together::Ops(transaction.into_ops()))
            .await
    }

    /// Commits one transaction in a PostgreSQL transaction of its own.
    pub(super) async fn apply_alone(&self, ops: &[TxOp]) -> Result<Vec<SendReceipt>> {
        let mut retried = false;
        loop {
            let result = match self.plan(ops).await {
                Ok(steps) => self
                    .execute(&steps)
                    .await
                    .map(|receipts| receipts.into_iter().flatten().collect()),
                Err(e) => Err(e),
            };
            match result {
                // A queue deleted and created again elsewhere: look it up again.
                Err(Error::QueueNotFound(name)) if !retried => {
                    retried = true;
                    if let Ok(queue) = QueueName::new(name) {
                        self.forget(&queue);
                    }
                }
                result => return result,
            }
        }
    }

    /// Commits several transactions in one PostgreSQL transaction: the
    /// outcome of running them one after another in this order. If any of
    /// them fails, none is committed and this fails.
    ///
    /// Statements are shared where that cannot change the outcome: sends to
    /// one queue go in one statement (in order); puts of records that no
    /// other operation of the batch touches in one; adds to a counter that
    /// is only added to, summed, in one. Being disjoint from everything
    /// else, they run after the rest.
    pub(super) async fn apply_batch(&self, members: &[Vec<TxOp>]) -> Result<Vec<Vec<SendReceipt>>> {
        let mut planned = Vec::with_capacity(members.len());
        for ops in members {
            planned.push(self.plan(ops).await?);
        }
        // How each record is used: (other operations, adds).
        let mut uses: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
        for step in planned.iter().flatten() {
            let (key, is_add) = match step {
                Step::Expect { table, key, .. }
                | Step::Put { table, key, .. }
                | Step::Delete { table, key } => ((table.as_str(), *key), false),
                Step::Add { table, key, .. } => ((table.as_str(), *key), true),
                _ => continue,
            };
            let used = uses.entry(key).or_default();
            if is_add {
                used.1 += 1;
            } else {
                used.0 += 1;
            }
        }
        let mut steps: Vec<Step<'_>> = Vec::new();
        let mut puts: Vec<(&TableName, &str, &str)> = Vec::new();
        let mut sums: BTreeMap<(&str, &str), (&TableName, i64)> = BTreeMap::new();
        // Sends by queue; where each member's receipts are in them.
        let mut sends: Vec<(&QueueName, Arc<QueueMeta>, SendBatch)> = Vec::new();
        let mut pieces: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); members.len()];
        for (member, member_steps) in planned.into_iter().enumerate() {
            for step in member_steps {
                match step {
                    Step::Put {
                        table,
                        key,
                        value,
                        only_if_absent: false,
                    } if uses.get(&(table.as_str(), key)) == Some(&(1, 0)) => {
                        puts.push((table, key, value));
                    }
                    Step::Add { table, key, delta }
                        if uses.get(&(table.as_str(), key)).is_some_and(|u| u.0 == 0) =>
                    {
                        let sum = sums.entry((table.as_str(), key)).or_insert((table, 0));
                        match sum.1.checked_add(delta) {
                            Some(total) => sum.1 = total,
                            None => steps.push(Step::Add { table, key, delta }),
                        }
                    }
                    Step::Send { queue, meta, batch } => {
                        let slot = match sends.iter().position(|(q, ..)| *q == queue) {
                            Some(slot) => slot,
                            None => {
                                sends.push((queue, meta, SendBatch::default()));
                                sends.len() - 1
                            }
                        };
                        let combined = &mut sends[slot].2;
                        let start = combined.len();
                        combined.append(batch);
                        pieces[member].push((slot, start..combined.len()));
                    }
                    other => steps.push(other),
                }
            }
        }
        // In key order, so that shared puts lock their rows in one order.
        puts.sort_unstable_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
        match puts.as_slice() {
            [] => {}
            [(table, key, value)] => steps.push(Step::Put {
                table,
                key,
                value,
                only_if_absent: false,
            }),
            _ => steps.push(Step::PutMany {
                tables: puts.iter().map(|p| p.0.as_str()).collect(),
                keys: puts.iter().map(|p| p.1.as_bytes()).collect(),
                values: puts.iter().map(|p| p.2).collect(),
            }),
        }
        for ((_, key), (table, delta)) in sums {
            steps.push(Step::Add { table, key, delta });
        }
        let first_send = steps.len();
        steps.extend(sends.into_iter().map(|(queue, meta, batch)| Step::Send {
            queue,
            meta,
            batch,
        }));
        let answered = self.execute(&steps).await?;
        Ok(pieces
            .into_iter()
            .map(|member| {
                member
                    .into_iter()
                    .flat_map(|(slot, range)| {
                        answered
                            .get(first_send + slot)
                            .and_then(|receipts| receipts.get(range))
                            .unwrap_or_default()
                            .iter()
                            .cloned()
                    })
                    .collect()
            })
            .collect())
    }

    /// Runs `steps` (pipelined) in one transaction and commits it if every
    /// step passed; returns the receipts each step answered (none but sends').
    async fn execute(&self, steps: &[Step<'_>]) -> Result<Vec<Vec<SendReceipt>>> {
        let only_buffered_sends = steps.iter().all(|step| match step {
            Step::Send { meta, .. } => !self.synchronous(meta),
            _ => false,
        });
        let synchronous = !only_buffered_sends;
        let announced: Vec<i64> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Send { meta, .. } => Some(meta.id),
                Step::Nack {
                    meta, reason: None, ..
                } => Some(meta.id),
                _ => None,
            })
            .collect();
        let receipts = self
            .attempt(false, move |mut client| async move {
                let mut statements = Vec::with_capacity(steps.len());
                for step in steps {
                    statements.push(client.prepare_cached(step.sql(&self.sql)).await?);
                }
                let tx = client.transaction().await?;
                let durability = async {
                    if synchronous {
                        Ok(())
                    } else {
                        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
                            .await
                    }
                };
                let answers = join_all(
                    steps
                        .iter()
                        .zip(&statements)
                        .map(|(step, statement)| step.run(&tx, statement, &synchronous)),
                );
                let (durability, answers) = futures_util::future::join(durability, answers).await;
                durability?;
                let mut receipts = Vec::with_capacity(steps.len());
                for (step, answer) in steps.iter().zip(answers) {
                    let answer = answer.map_err(|e| step.failure(e))?;
                    let mut answered = Vec::new();
                    step.check(answer, &mut answered)?;
                    receipts.push(answered);
                }
                match tx.commit().await {
                    Ok(()) => Ok(receipts),
                    Err(e) if e.as_db_error().is_some() => Err(Failure::Refused(e)),
                    Err(e) => Err(Failure::Domain(Error::OutcomeUnknown(format!(
                        "the connection to PostgreSQL broke during COMMIT: {e}"
                    )))),
                }
            })
            .await
            .map_err(|f| f.into_error(false))?;
        for id in announced {
            self.announcer.announce(id);
        }
        if steps.iter().any(|step| matches!(step, Step::Add { .. })) {
            self.added.notify_one();
        }
        Ok(receipts)
    }

    /// The transaction as statements: expectations first (in key order,
    /// so that transactions lock records in one order), then the rest in
    /// order, consecutive sends to one queue as one statement.
    async fn plan<'t>(&self, ops: &'t [TxOp]) -> Result<Vec<Step<'t>>> {
        let mut steps: Vec<Step<'t>> = Vec::with_capacity(ops.len());
        let mut expects: Vec<Step<'t>> = Vec::new();
        for op in ops {
            match op {
                TxOp::Expect { table, key, value } => expects.push(Step::Expect {
                    table,
                    key,
                    value: value.as_ref().map(Payload::as_str),
                }),
                TxOp::Send { queue, message } => {
                    if let Some(Step::Send {
                        queue: last, batch, ..
                    }) = steps.last_mut()
                        && *last == queue
                    {
                        batch.push(message)?;
                        continue;
                    }
                    let meta = self.queue_meta(queue).await?;
                    let mut batch = SendBatch::default();
                    batch.push(message)?;
                    steps.push(Step::Send { queue, meta, batch });
                }
                TxOp::Ack { queue, group, ids } => {
                    let mut seqs: Vec<i64> = ids.iter().filter_map(seq_of).collect();
                    seqs.sort_unstable();
                    seqs.dedup();
                    steps.push(Step::Ack {
                        queue,
                        meta: self.queue_meta(queue).await?,
                        group,
                        ids,
                        seqs,
                    });
                }
                TxOp::Nack {
                    queue,
                    group,
                    id,
                    nack,
                } => {
                    let (delay, reason) = match nack {
                        Nack::Retry { delay } => (millis(*delay), None),
                        Nack::DeadLetter { reason } => (0, Some(reason.as_str())),
                    };
                    steps.push(Step::Nack {
                        queue,
                        meta: self.queue_meta(queue).await?,
                        group,
                        id,
                        seqs: seq_of(id).into_iter().collect(),
                        delay,
                        reason,
                    });
                }
                TxOp::Put {
                    table,
                    key,
                    value,
                    only_if_absent,
                } => steps.push(Step::Put {
                    table,
                    key,
                    value: value.as_str(),
                    only_if_absent: *only_if_absent,
                }),
                TxOp::Delete { table, key } => steps.push(Step::Delete { table, key }),
                TxOp::Add { table, key, delta } => steps.push(Step::Add {
                    table,
                    key,
                    delta: *delta,
                }),
            }
        }
        expects.sort_by(|a, b| match (a, b) {
            (
                Step::Expect {
                    table: ta, key: ka, ..
                },
                Step::Expect {
                    table: tb, key: kb, ..
                },
            ) => (ta.as_str(), *ka).cmp(&(tb.as_str(), *kb)),
            _ => std::cmp::Ordering::Equal,
        });
        expects.extend(steps);
        Ok(expects)
    }

    pub(super) async fn record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        tidings_core::record::validate_key(key)?;
        let row = self
            .attempt(false, move |client| async move {
                let statement = client.prepare_cached(&self.sql.get_record).await?;
                Ok(client
                    .query_opt(&statement, &[&table.as_str(), &key.as_bytes()])
                    .await?)
            })
            .await
            .map_err(|f| f.into_error(false))?;
        Ok(row.map(|row| Payload::from_trusted(row.get::<_, String>(0))))
    }

    /// Reads records of several keys in one statement (one snapshot).
    pub(super) async fn records_of(
        &self,
        keys: &[(TableName, String)],
    ) -> Result<Vec<Option<Payload>>> {
        for (_, key) in keys {
            tidings_core::record::validate_key(key)?;
        }
        let tables: Vec<&str> = keys.iter().map(|(table, _)| table.as_str()).collect();
        let names: Vec<&[u8]> = keys.iter().map(|(_, key)| key.as_bytes()).collect();
        let (tables, names) = (&tables, &names);
        let rows = self
            .attempt(false, move |client| async move {
                let statement = client.prepare_cached(&self.sql.get_records).await?;
                Ok(client.query(&statement, &[tables, names]).await?)
            })
            .await
            .map_err(|f| f.into_error(false))?;
        Ok(rows
            .iter()
            .map(|row| row.get::<_, Option<String>>(0).map(Payload::from_trusted))
            .collect())
    }

    pub(super) async fn records(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>> {
        let (lower, upper) = &bounds(&scan);
        let limit = i64::try_from(scan.limit).unwrap_or(i64::MAX);
        let sql = self
            .sql
            .scan(lower.is_some(), upper.is_some(), scan.reverse);
        let limit = &limit;
        let rows = self
            .attempt(false, move |client| async move {
                let statement = client.prepare_cached(sql).await?;
                Ok(client
                    .query(&statement, &[&table.as_str(), lower, upper, limit])
                    .await?)
            })
            .await
            .map_err(|f| f.into_error(false))?;
        rows.iter()
            .map(|row| {
                let key =
                    String::from_utf8(row.get::<_, Vec<u8>>(0)).map_err(|e| Error::Corrupt {
                        location: format!("a record key of table {table}"),
                        detail: e.to_string(),
                    })?;
                Ok(Record {
                    key,
                    value: Payload::from_trusted(row.get::<_, String>(1)),
                })
            })
            .collect()
    }
}

/// The scan's key range as bytes: at or after `lower`, before `upper`.
fn bounds(scan: &RecordScan) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let prefix = scan.prefix.as_bytes();
    let lower = match scan.from.as_deref().map(str::as_bytes) {
        Some(from) if from > prefix => Some(from.to_vec()),
        _ if prefix.is_empty() => None,
        _ => Some(prefix.to_vec()),
    };
    let after_prefix = prefix_end(prefix);
    let upper = match (scan.to.as_deref().map(str::as_bytes), after_prefix) {
        (Some(to), Some(end)) => Some(if to < end.as_slice() {
            to.to_vec()
        } else {
            end
        }),
        (Some(to), None) => Some(to.to_vec()),
        (None, end) => end,
    };
    (lower, upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_bounds_meet_prefix_and_range() {
        let b = |scan: RecordScan| bounds(&scan);
        assert_eq!(b(RecordScan::all()), (None, None));
        assert_eq!(
            b(RecordScan::prefix("e.")),
            (Some(b"e.".to_vec()), Some(b"e/".to_vec()))
        );
        assert_eq!(
            b(RecordScan::prefix("e.").from("e.2").to("f")),
            (Some(b"e.2".to_vec()), Some(b"e/".to_vec()))
        );
        assert_eq!(
            b(RecordScan::all().after("b").to("c")),
            (Some(b"b\0".to_vec()), Some(b"c".to_vec()))
        );
    }
}
