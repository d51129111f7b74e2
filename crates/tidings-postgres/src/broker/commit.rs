//! Transactions, and reading records.
//!
//! A transaction's statements are sent together (pipelined) inside
//! `BEGIN`, its expectations first; its `COMMIT` is sent only when every
//! statement succeeded and every rule Tidings checks itself held (acks of
//! pending messages, inserts of free keys). Whatever fails before the
//! `COMMIT` leaves nothing behind, so it may be retried; a connection lost
//! during the `COMMIT` leaves the outcome unknown.

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
                    .execute(
                        &steps,
                        &[Range {
                            start: 0,
                            end: steps.len(),
                        }],
                    )
                    .await
                    .map(|mut receipts| receipts.pop().unwrap_or_default()),
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

    /// Commits several transactions in one PostgreSQL transaction, their
    /// statements one after another: the outcome of running them in this
    /// order. If any of them fails, none is committed and this fails.
    pub(super) async fn apply_batch(&self, members: &[Vec<TxOp>]) -> Result<Vec<Vec<SendReceipt>>> {
        let mut steps = Vec::new();
        let mut bounds = Vec::with_capacity(members.len());
        for ops in members {
            let start = steps.len();
            steps.extend(self.plan(ops).await?);
            bounds.push(start..steps.len());
        }
        self.execute(&steps, &bounds).await
    }

    /// Runs `steps` (pipelined) in one transaction and commits it if every
    /// step passed; returns the receipts of each range of `bounds`.
    async fn execute(
        &self,
        steps: &[Step<'_>],
        bounds: &[Range<usize>],
    ) -> Result<Vec<Vec<SendReceipt>>> {
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
                let mut answers = answers.into_iter();
                let mut receipts = Vec::with_capacity(bounds.len());
                for range in bounds {
                    let mut member = Vec::new();
                    for (step, answer) in steps[range.clone()].iter().zip(answers.by_ref()) {
                        let answer = answer.map_err(|e| step.failure(e))?;
                        step.check(answer, &mut member)?;
                    }
                    receipts.push(member);
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
