//! Transactions, and reading records.
//!
//! A transaction's statements are sent together (pipelined) inside
//! `BEGIN`, its expectations first; its `COMMIT` is sent only when every
//! statement succeeded and every rule Tidings checks itself held (acks of
//! pending messages, inserts of free keys). Whatever fails before the
//! `COMMIT` leaves nothing behind, so it may be retried; a connection lost
//! during the `COMMIT` leaves the outcome unknown.

use std::collections::{BTreeMap, HashMap, HashSet};
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

/// A record compared with what is expected (`None`: absent) and, if it
/// matches, written over.
struct Swap<'t> {
    table: &'t TableName,
    key: &'t str,
    expected: Option<&'t str>,
    value: &'t str,
}

/// An add to a counter.
type Addition<'t> = (&'t TableName, &'t str, i64);

/// One statement of a transaction.
enum Step<'t> {
    Expect {
        table: &'t TableName,
        key: &'t str,
        value: Option<&'t str>,
    },
    /// Compare-and-sets of distinct records, in key order: all written, or
    /// (one did not match) none.
    Swaps(Vec<Swap<'t>>),
    Send {
        queue: &'t QueueName,
        meta: Arc<QueueMeta>,
        batch: SendBatch,
    },
    Ack {
        queue: &'t QueueName,
        meta: Arc<QueueMeta>,
        group: &'t GroupName,
        ids: Vec<&'t MessageId>,
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
    /// Deletes of several records no other step of the transaction
    /// touches, in key order.
    DeleteMany {
        tables: Vec<&'t str>,
        keys: Vec<&'t [u8]>,
    },
    /// Adds to distinct counters, in key order.
    Adds(Vec<Addition<'t>>),
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
            Step::Swaps(_) => &sql.swap_records,
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
            Step::DeleteMany { .. } => &sql.delete_records,
            Step::Adds(_) => &sql.add_many,
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
            Step::Swaps(swaps) => Box::pin(async move {
                let tables: Vec<&str> = swaps.iter().map(|s| s.table.as_str()).collect();
                let keys: Vec<&[u8]> = swaps.iter().map(|s| s.key.as_bytes()).collect();
                let expected: Vec<Option<&str>> = swaps.iter().map(|s| s.expected).collect();
                let values: Vec<&str> = swaps.iter().map(|s| s.value).collect();
                let params: [&(dyn ToSql + Sync); 4] = [&tables, &keys, &expected, &values];
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
            Step::DeleteMany { tables, keys } => Box::pin(async move {
                let params: [&(dyn ToSql + Sync); 2] = [tables, keys];
                tx.query(statement, &params).await.map(Answer::Rows)
            }),
            Step::Adds(adds) => Box::pin(async move {
                let tables: Vec<&str> = adds.iter().map(|a| a.0.as_str()).collect();
                let keys: Vec<&[u8]> = adds.iter().map(|a| a.1.as_bytes()).collect();
                let deltas: Vec<i64> = adds.iter().map(|a| a.2).collect();
                let params: [&(dyn ToSql + Sync); 3] = [&tables, &keys, &deltas];
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
            (Step::Adds(adds), Some(NOT_A_COUNTER)) => {
                // The function names the counter by its position, from 1.
                let position = e
                    .as_db_error()
                    .and_then(|db| db.detail())
                    .and_then(|detail| detail.parse::<usize>().ok());
                match position.and_then(|n| adds.get(n.checked_sub(1)?)) {
                    Some((table, key, _)) => {
                        Failure::Domain(tidings_core::record::not_a_counter(table.as_str(), key))
                    }
                    None => Failure::from(e),
                }
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
                    .find(|id| seq_of(id).is_none_or(|seq| acked.binary_search(&seq).is_err()))
                {
                    return Err(not_pending(queue, group, missing));
                }
            }
            (Step::Swaps(swaps), Answer::Rows(rows)) => {
                let position = rows.first().map_or(0, |row| row.get::<_, i32>(0));
                if let Some(changed) = usize::try_from(position)
                    .ok()
                    .and_then(|n| swaps.get(n.checked_sub(1)?))
                {
                    return Err(Error::RecordChanged {
                        table: changed.table.to_string(),
                        key: changed.key.to_owned(),
                    });
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
            let result = self
                .commit_members(&[ops])
                .await
                .map(|receipts| receipts.into_iter().flatten().collect());
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
    pub(super) async fn apply_batch(&self, members: &[Vec<TxOp>]) -> Result<Vec<Vec<SendReceipt>>> {
        let members: Vec<&[TxOp]> = members.iter().map(Vec::as_slice).collect();
        self.commit_members(&members).await
    }

    /// Commits `members` in one PostgreSQL transaction, their statements
    /// shared where they can be (see [`combine`]); each member's receipts.
    async fn commit_members(&self, members: &[&[TxOp]]) -> Result<Vec<Vec<SendReceipt>>> {
        let mut planned = Vec::with_capacity(members.len());
        for ops in members {
            planned.push(self.plan(ops).await?);
        }
        let combined = combine(planned);
        let answered = self.execute(&combined.steps).await?;
        Ok(combined.receipts(answered))
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
        if steps.iter().any(|step| matches!(step, Step::Adds(_))) {
            self.added.notify_one();
        }
        Ok(receipts)
    }

    /// The transaction as statements: expectations first (in key order,
    /// so that transactions lock records in one order), then the rest in
    /// order, consecutive sends to one queue as one statement, and an
    /// expectation with the one put of its record as one compare-and-set.
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
                        ids: ids.iter().collect(),
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
                TxOp::Add { table, key, delta } => {
                    steps.push(Step::Adds(vec![(table, key, *delta)]))
                }
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
        Ok(pair(expects, steps))
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

    /// Reads records of several keys in one statement (one snapshot),
    /// shared with reads running at the same time (see `reads`).
    pub(super) async fn records_of(
        self: &Arc<Self>,
        keys: &[(TableName, String)],
    ) -> Result<Vec<Option<Payload>>> {
        for (_, key) in keys {
            tidings_core::record::validate_key(key)?;
        }
        self.in_line(&(), super::reads::Keys(keys.to_vec())).await
    }

    /// Reads records of several keys in one statement, now.
    pub(super) async fn records_now(
        &self,
        keys: &[(TableName, String)],
    ) -> Result<Vec<Option<Payload>>> {
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

/// A transaction's expectations (in key order) and its other steps, with
/// each expectation whose record the transaction puts once and touches no
/// other way made one compare-and-set with that put (first, in key order).
fn pair<'t>(expects: Vec<Step<'t>>, mut steps: Vec<Step<'t>>) -> Vec<Step<'t>> {
    // By record: [expectations, plain puts, other uses].
    let mut uses: HashMap<(&str, &str), [usize; 3]> = HashMap::new();
    for step in expects.iter().chain(&steps) {
        let (table, key, kind) = match step {
            Step::Expect { table, key, .. } => (table, *key, 0),
            Step::Put {
                table,
                key,
                only_if_absent: false,
                ..
            } => (table, *key, 1),
            Step::Put { table, key, .. } | Step::Delete { table, key } => (table, *key, 2),
            Step::Adds(adds) => {
                for (table, key, _) in adds {
                    uses.entry((table.as_str(), key)).or_default()[2] += 1;
                }
                continue;
            }
            _ => continue,
        };
        uses.entry((table.as_str(), key)).or_default()[kind] += 1;
    }
    let paired =
        |table: &TableName, key: &str| uses.get(&(table.as_str(), key)) == Some(&[1, 1, 0]);
    let mut values: HashMap<(&str, &str), &str> = HashMap::new();
    steps.retain(|step| match step {
        Step::Put {
            table,
            key,
            value,
            only_if_absent: false,
        } if paired(table, key) => {
            values.insert((table.as_str(), key), value);
            false
        }
        _ => true,
    });
    let mut swaps = Vec::new();
    let mut planned = Vec::with_capacity(expects.len() + steps.len() + 1);
    for step in expects {
        match step {
            Step::Expect {
                table,
                key,
                value: expected,
            } => match values.get(&(table.as_str(), key)) {
                Some(value) => swaps.push(Swap {
                    table,
                    key,
                    expected,
                    value,
                }),
                None => planned.push(Step::Expect {
                    table,
                    key,
                    value: expected,
                }),
            },
            other => planned.push(other),
        }
    }
    if !swaps.is_empty() {
        planned.insert(0, Step::Swaps(swaps));
    }
    planned.extend(steps);
    planned
}

/// The statements of transactions that commit together.
struct Combined<'t> {
    steps: Vec<Step<'t>>,
    /// Where each member's send receipts are: (step, range of its answer).
    pieces: Vec<Vec<(usize, Range<usize>)>>,
}

impl Combined<'_> {
    /// Each member's receipts, from what each step answered.
    fn receipts(self, answered: Vec<Vec<SendReceipt>>) -> Vec<Vec<SendReceipt>> {
        self.pieces
            .into_iter()
            .map(|member| {
                member
                    .into_iter()
                    .flat_map(|(step, range)| {
                        answered
                            .get(step)
                            .and_then(|receipts| receipts.get(range))
                            .unwrap_or_default()
                            .iter()
                            .cloned()
                    })
                    .collect()
            })
            .collect()
    }
}

/// The planned statements of transactions run one after another, as the
/// statements of one transaction with the same outcome.
///
/// Statements are shared where that cannot change the outcome:
/// compare-and-sets of records no other operation touches in one (first,
/// in key order, as expectations are); acks to one group in one, where no
/// message of the queue is acked or nacked twice; puts of records no other
/// operation touches in one, and deletes of such records in one; adds to
/// counters that are only added to, summed, in one; sends to one queue in
/// one (in order). Being disjoint from everything else, the puts, deletes,
/// adds and sends run after the rest.
fn combine(planned: Vec<Vec<Step<'_>>>) -> Combined<'_> {
    // How each record is used: (other operations, adds).
    let mut uses: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
    // The messages settled (acked or nacked), by queue.
    let mut settled: HashMap<&str, Vec<i64>> = HashMap::new();
    for step in planned.iter().flatten() {
        match step {
            Step::Expect { table, key, .. }
            | Step::Put { table, key, .. }
            | Step::Delete { table, key } => {
                uses.entry((table.as_str(), *key)).or_default().0 += 1;
            }
            Step::Swaps(swaps) => {
                for swap in swaps {
                    uses.entry((swap.table.as_str(), swap.key)).or_default().0 += 1;
                }
            }
            Step::Adds(adds) => {
                for (table, key, _) in adds {
                    uses.entry((table.as_str(), key)).or_default().1 += 1;
                }
            }
            Step::Ack { queue, seqs, .. } | Step::Nack { queue, seqs, .. } => {
                settled.entry(queue.as_str()).or_default().extend(seqs);
            }
            _ => {}
        }
    }
    // Queues with a message settled twice keep their acks apart (the
    // second must find it settled).
    let twice: HashSet<&str> = settled
        .into_iter()
        .filter_map(|(queue, mut seqs)| {
            let all = seqs.len();
            seqs.sort_unstable();
            seqs.dedup();
            (seqs.len() != all).then_some(queue)
        })
        .collect();
    let alone = |table: &TableName, key: &str| uses.get(&(table.as_str(), key)) == Some(&(1, 0));
    let mut steps: Vec<Step<'_>> = Vec::new();
    let mut swaps: Vec<Swap<'_>> = Vec::new();
    let mut acks: HashMap<(&str, &str), usize> = HashMap::new();
    let mut puts: Vec<(&TableName, &str, &str)> = Vec::new();
    let mut deletes: Vec<(&TableName, &str)> = Vec::new();
    let mut sums: BTreeMap<(&str, &str), (&TableName, i64)> = BTreeMap::new();
    // Sends by queue; where each member's receipts are in them.
    let mut sends: Vec<(&QueueName, Arc<QueueMeta>, SendBatch)> = Vec::new();
    let mut pieces: Vec<Vec<(usize, Range<usize>)>> = vec![Vec::new(); planned.len()];
    for (member, member_steps) in planned.into_iter().enumerate() {
        for step in member_steps {
            match step {
                Step::Swaps(member_swaps) => {
                    for swap in member_swaps {
                        if alone(swap.table, swap.key) {
                            swaps.push(swap);
                        } else {
                            steps.push(Step::Swaps(vec![swap]));
                        }
                    }
                }
                Step::Put {
                    table,
                    key,
                    value,
                    only_if_absent: false,
                } if alone(table, key) => puts.push((table, key, value)),
                Step::Delete { table, key } if alone(table, key) => deletes.push((table, key)),
                Step::Adds(adds) => {
                    for (table, key, delta) in adds {
                        if uses.get(&(table.as_str(), key)).is_some_and(|u| u.0 > 0) {
                            steps.push(Step::Adds(vec![(table, key, delta)]));
                            continue;
                        }
                        let sum = sums.entry((table.as_str(), key)).or_insert((table, 0));
                        match sum.1.checked_add(delta) {
                            Some(total) => sum.1 = total,
                            None => steps.push(Step::Adds(vec![(table, key, delta)])),
                        }
                    }
                }
                Step::Ack {
                    queue,
                    meta,
                    group,
                    ids,
                    seqs,
                } if !twice.contains(queue.as_str()) => {
                    match acks.get(&(queue.as_str(), group.as_str())) {
                        Some(&at) => {
                            if let Some(Step::Ack {
                                ids: all_ids,
                                seqs: all_seqs,
                                ..
                            }) = steps.get_mut(at)
                            {
                                all_ids.extend(ids);
                                all_seqs.extend(seqs);
                            }
                        }
                        None => {
                            acks.insert((queue.as_str(), group.as_str()), steps.len());
                            steps.push(Step::Ack {
                                queue,
                                meta,
                                group,
                                ids,
                                seqs,
                            });
                        }
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
    for step in &mut steps {
        if let Step::Ack { seqs, .. } = step {
            seqs.sort_unstable();
        }
    }
    let mut all = Vec::with_capacity(steps.len() + sends.len() + 3);
    if !swaps.is_empty() {
        swaps.sort_unstable_by(|a, b| (a.table.as_str(), a.key).cmp(&(b.table.as_str(), b.key)));
        all.push(Step::Swaps(swaps));
    }
    all.extend(steps);
    // In key order, so that shared puts lock their rows in one order.
    puts.sort_unstable_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    match puts.as_slice() {
        [] => {}
        [(table, key, value)] => all.push(Step::Put {
            table,
            key,
            value,
            only_if_absent: false,
        }),
        _ => all.push(Step::PutMany {
            tables: puts.iter().map(|p| p.0.as_str()).collect(),
            keys: puts.iter().map(|p| p.1.as_bytes()).collect(),
            values: puts.iter().map(|p| p.2).collect(),
        }),
    }
    deletes.sort_unstable_by(|a, b| (a.0.as_str(), a.1).cmp(&(b.0.as_str(), b.1)));
    match deletes.as_slice() {
        [] => {}
        [(table, key)] => all.push(Step::Delete { table, key }),
        _ => all.push(Step::DeleteMany {
            tables: deletes.iter().map(|d| d.0.as_str()).collect(),
            keys: deletes.iter().map(|d| d.1.as_bytes()).collect(),
        }),
    }
    if !sums.is_empty() {
        all.push(Step::Adds(
            sums.into_iter()
                .map(|((_, key), (table, delta))| (table, key, delta))
                .collect(),
        ));
    }
    let first_send = all.len();
    all.extend(
        sends
            .into_iter()
            .map(|(queue, meta, batch)| Step::Send { queue, meta, batch }),
    );
    for member in &mut pieces {
        for (step, _) in member.iter_mut() {
            *step += first_send;
        }
    }
    Combined { steps: all, pieces }
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
