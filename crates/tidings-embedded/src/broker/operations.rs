//! The [`Broker`] operations of the embedded engine, each one lock section
//! over the index followed by a wait for the store.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::dead_letters::{Steps, dead_letter_out, read_dead};
use super::{EmbeddedBroker, finish, queue};
use tokio::time::Instant;

use tidings_core::{
    Broker, ConsumerName, DeadLetter, DeadLetterSelection, Delivery, Error, GroupName, MessageId,
    Nack, OutgoingMessage, Payload, PendingDelivery, QueueConfig, QueueInfo, QueueName,
    ReceiveOptions, Record, RecordScan, Result, SendReceipt, TableName, Timestamp, Transaction,
    TxOp,
};

use crate::budget::Admission;
use crate::records::{MessageRecord, QueueRecord, seq_key};
use crate::state::{Ctx, QueueState, message_id, parse_id};
use crate::store::{Pending, Space, Wait};

/// After each step of a bulk requeue, a pause this many times as long as
/// the step took: the requeue takes a third of the disk's time at most, so
/// sends to other queues keep their latency (`tidings-bench engine --scenario
/// requeue-beside`).
const BULK_PAUSE: u32 = 2;

/// What the records of one ack or nack take, about (a mark and its key).
const ID_BYTES: usize = 64;

/// What the records of `messages` take, about: the write budget's estimate.
fn sends_bytes(messages: &[OutgoingMessage]) -> usize {
    messages.iter().map(message_bytes).sum()
}

fn message_bytes(m: &OutgoingMessage) -> usize {
    let headers: usize = m.headers.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
    m.payload.len() + headers + m.dedup_id.as_ref().map_or(0, |d| 2 * d.len()) + 64
}

/// The write budget's estimate of a transaction's records.
fn transaction_bytes(ops: &[TxOp]) -> usize {
    ops.iter()
        .map(|op| match op {
            TxOp::Send { message, .. } => message_bytes(message),
            TxOp::Put { key, value, .. } => key.len() + value.len() + 16,
            TxOp::Ack { ids, .. } => ids.len() * ID_BYTES,
            TxOp::Nack { .. } | TxOp::Delete { .. } | TxOp::Expect { .. } | TxOp::Add { .. } => {
                ID_BYTES
            }
        })
        .sum()
}

/// Stores one message (or finds its duplicate). Returns the receipt and the
/// new message's seq.
pub(super) fn enqueue(
    q: &mut QueueState,
    message: OutgoingMessage,
    ctx: &mut Ctx<'_>,
) -> (SendReceipt, Option<u64>) {
    if let Some(id) = &message.dedup_id
        && let Some(original) = q.dedup_hit(id, ctx.now)
    {
        let receipt = SendReceipt {
            id: message_id(original),
            duplicate: true,
        };
        return (receipt, None);
    }
    let config = &q.record.config;
    let record = MessageRecord {
        enqueued_at: ctx.now,
        expires_at: message
            .ttl
            .or(config.default_ttl)
            .map(|ttl| Timestamp(ctx.now).plus(ttl).as_millis()),
        deliver_at: message
            .delay
            .map(|d| Timestamp(ctx.now).plus(d).as_millis()),
        only_group: None,
        dedup_id: message.dedup_id,
        headers: message.headers.into_iter().collect(),
        payload: message.payload.as_str().to_owned(),
    };
    let seq = q.insert_message(&record, ctx);
    if let Some(id) = record.dedup_id {
        q.remember_dedup(id, seq, ctx);
    }
    let receipt = SendReceipt {
        id: message_id(seq),
        duplicate: false,
    };
    (receipt, Some(seq))
}

/// Removals per lock section of [`Broker::maintain`].
const MAINTAIN_STEP: usize = 1000;

impl EmbeddedBroker {
    /// Acks `ids` for `group` now; the returned [`Pending`] says when that is
    /// in the log.
    fn apply_ack(
        &self,
        admission: Admission,
        name: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
    ) -> (Result<u64>, Pending) {
        self.write(admission, |queues, ctx| {
            let q = queue(queues, name)?;
            let acked = ids
                .iter()
                .filter_map(parse_id)
                .filter(|&seq| q.ack(group, seq, ctx))
                .count();
            Ok((acked as u64, Wait::Written))
        })
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn create_queue(&self, name: &QueueName, config: QueueConfig) -> Result<bool> {
        config.validate()?;
        finish(self.write(self.admit(256).await, |queues, ctx| {
            if let Some(q) = queues.get(name) {
                return if q.record.config == config {
                    Ok((false, Wait::Synced))
                } else {
                    Err(Error::QueueConfigConflict(name.to_string()))
                };
            }
            let record = QueueRecord {
                id: ctx.seq.next(ctx.batch),
                config,
                created_at: ctx.now,
                expired_total: 0,
                dead_lettered_total: 0,
            };
            let q = QueueState::new(name.clone(), record);
            q.save_record(ctx);
            queues.insert(name.clone(), q);
            Ok((true, Wait::Synced))
        }))
        .await
    }

    async fn list_queues(&self) -> Result<Vec<QueueName>> {
        Ok(self.lock().queues.keys().cloned().collect())
    }

    /// Its directory is locked; in memory, it belongs to this process.
    fn exclusive(&self) -> bool {
        true
    }

    /// Every queue, a step of [`MAINTAIN_STEP`] removals per lock section.
    async fn maintain(&self) -> Result<u64> {
        let names: Vec<QueueName> = self.lock().queues.keys().cloned().collect();
        let mut removed = 0u64;
        for name in names {
            loop {
                let (out, pending) = self.write(Admission::none(), |queues, ctx| {
                    let done = match queues.get_mut(&name) {
                        Some(q) => q.maintain_at_most(ctx, MAINTAIN_STEP)?,
                        None => 0,
                    };
                    Ok((done, Wait::Written))
                });
                let done = out?;
                pending.wait().await?;
                removed += done as u64;
                if done < MAINTAIN_STEP {
                    break;
                }
                tokio::task::yield_now().await;
            }
            match self.expire_unread(&name).await {
                Ok(()) | Err(Error::QueueNotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// The data directory's size and its disk's free space.
    async fn storage_usage(&self) -> Result<tidings_core::StorageUsage> {
        let Some(path) = self.inner.path.clone() else {
            return Ok(tidings_core::StorageUsage::default());
        };
        let usage = tokio::task::spawn_blocking(move || tidings_core::StorageUsage {
            used_bytes: Some(crate::store::fjall::bytes_under(&path)),
            free_bytes: crate::store::fjall::free_bytes(&path),
        })
        .await
        .map_err(|e| Error::storage(std::io::Error::other(e)))?;
        Ok(usage)
    }

    /// Ready if a small synced write goes through (reopening the store
    /// first if a write had failed): a full disk shows here.
    async fn ready(&self) -> Result<()> {
        self.recover()?;
        if let Some(free) = self
            .inner
            .path
            .as_deref()
            .and_then(crate::store::fjall::free_bytes)
            .filter(|free| *free < crate::store::MIN_FREE_BYTES)
        {
            return Err(Error::StorageFull(format!(
                "the data directory's disk is full ({free} bytes free)"
            )));
        }
        let mut batch = crate::store::Batch::default();
        batch.put(
            Space::Meta,
            crate::records::META_PROBE.to_vec(),
            self.inner.clock.now().to_be_bytes().to_vec(),
        );
        let pending = {
            let _state = self.lock();
            self.inner.store().submit(batch, crate::store::Wait::Synced)
        };
        pending.wait().await
    }

    async fn queue_info(&self, name: &QueueName) -> Result<QueueInfo> {
        self.apply_time(name).await?;
        let (out, _) = self.write(Admission::none(), |queues, ctx| {
            let q = queue(queues, name)?;
            q.maintain(ctx)?;
            Ok((q.info(ctx.now), Wait::Nothing))
        });
        out
    }

    async fn delete_queue(&self, name: &QueueName) -> Result<()> {
        finish(self.write(self.admit(0).await, |queues, ctx| {
            let mut q = queues
                .remove(name)
                .ok_or_else(|| Error::QueueNotFound(name.to_string()))?;
            q.delete_all(ctx);
            Ok(((), Wait::Synced))
        }))
        .await
    }

    async fn purge_queue(&self, name: &QueueName) -> Result<u64> {
        finish(self.write(self.admit(0).await, |queues, ctx| {
            let q = queue(queues, name)?;
            Ok((q.purge(ctx), Wait::Written))
        }))
        .await
    }

    async fn send_batch(
        &self,
        name: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>> {
        OutgoingMessage::validate_all(&messages)?;
        let receipts = finish(self.write(
            self.admit(sends_bytes(&messages)).await,
            |queues, ctx| {
                let q = queue(queues, name)?;
                q.maintain(ctx)?;
                let mut receipts = Vec::with_capacity(messages.len());
                let mut seqs = Vec::with_capacity(messages.len());
                for message in messages {
                    let (receipt, seq) = enqueue(q, message, ctx);
                    receipts.push(receipt);
                    seqs.extend(seq);
                }
                ctx.sent.push((name.clone(), q.id(), seqs));
                Ok((receipts, self.send_wait(q)))
            },
        ))
        .await;
        self.expire_unread_after(name).await;
        receipts
    }

    async fn receive(
        &self,
        name: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        options.validate()?;
        let deadline = Instant::now() + options.wait;
        loop {
            let (out, pending) = self.write(Admission::none(), |queues, ctx| {
                let q = queue(queues, name)?;
                q.maintain(ctx)?;
                let taken = q.take(group, consumer, options.max_messages, ctx)?;
                let mut woken = Box::pin(q.notify.clone().notified_owned());
                woken.as_mut().enable();
                let next_due = q.next_due(group).map(|t| t.saturating_sub(ctx.now));
                let wait = if q.records_deliveries_first() && !taken.is_empty() {
                    Wait::Written
                } else {
                    Wait::Nothing
                };
                Ok(((q.id(), taken, woken, next_due), wait))
            });
            let (qid, taken, woken, next_due) = out?;
            let deliveries = self.read_deliveries(name, qid, taken)?;
            // The deliveries are handed out once written (when the queue
            // records them first).
            pending.wait().await?;
            if self.expire_unread_after(name).await && deliveries.is_empty() {
                // Expiries were applied: look again at once.
                continue;
            }
            if !deliveries.is_empty() || Instant::now() >= deadline {
                return Ok(deliveries);
            }
            // One millisecond past the due time, as stored times are whole milliseconds.
            let wake_at = next_due
                .map(|ms| Instant::now() + Duration::from_millis(ms + 1))
                .map_or(deadline, |due| due.min(deadline));
            tokio::select! {
                () = woken => {}
                () = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack_and_receive(
        &self,
        name: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        ack: &[MessageId],
        options: ReceiveOptions,
    ) -> Result<(u64, Vec<Delivery>)> {
        options.validate()?;
        if ack.is_empty() {
            return Ok((0, self.receive(name, group, consumer, options).await?));
        }
        let admission = self.admit(ack.len() * ID_BYTES).await;
        let (acked, written) = self.apply_ack(admission, name, group, ack);
        let acked = acked?;
        // The acks are applied; their write to the log goes on without the
        // call waiting for it, so a consumer's next messages are not held up
        // behind it (decision 0011). A crash before it lands delivers those
        // messages again: at least once, never lost.
        drop(written);
        Ok((acked, self.receive(name, group, consumer, options).await?))
    }

    async fn ack(&self, name: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64> {
        let admission = self.admit(ids.len() * ID_BYTES).await;
        finish(self.apply_ack(admission, name, group, ids)).await
    }

    async fn nack_many(
        &self,
        name: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        nack: Nack,
    ) -> Result<u64> {
        let seqs: Vec<u64> = ids.iter().filter_map(parse_id).collect();
        // Dead letters copy their messages: read them before the lock.
        let prefetched = match nack {
            Nack::DeadLetter { .. } => self.prefetch(&[(name, seqs.clone())])?,
            Nack::Retry { .. } => HashMap::new(),
        };
        let admission = self.admit(ids.len() * ID_BYTES).await;
        finish(self.write_with(admission, prefetched, |queues, ctx| {
            let q = queue(queues, name)?;
            let given_back = q.give_back(group, &seqs, nack, ctx)?;
            Ok((given_back, Wait::Written))
        }))
        .await
    }

    async fn pending(
        &self,
        name: &QueueName,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        let (out, _) = self.write(Admission::none(), |queues, ctx| {
            let q = queue(queues, name)?;
            let pending = q.groups.get(group).map_or_else(Vec::new, |g| {
                g.pending(limit)
                    .into_iter()
                    .map(|(seq, flight, count)| PendingDelivery {
                        id: message_id(seq),
                        consumer: flight.consumer.to_string(),
                        delivery_count: count,
                        visible_in: Duration::from_millis(flight.deadline.saturating_sub(ctx.now)),
                    })
                    .collect()
            });
            Ok((pending, Wait::Nothing))
        });
        out
    }

    async fn forget_consumer(
        &self,
        name: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        // Consumers are known in memory only (since the engine opened).
        let (out, _) = self.write(Admission::none(), |queues, _ctx| {
            let q = queue(queues, name)?;
            let forgotten = q
                .groups
                .get_mut(group)
                .is_some_and(|g| g.forget_consumer(consumer));
            Ok((forgotten, Wait::Nothing))
        });
        out
    }

    async fn delete_group(&self, name: &QueueName, group: &GroupName) -> Result<bool> {
        finish(self.write(self.admit(0).await, |queues, ctx| {
            let q = queue(queues, name)?;
            let deleted = q.delete_group(group, ctx);
            Ok((deleted, Wait::Synced))
        }))
        .await
    }

    async fn dead_letter(&self, name: &QueueName, id: &MessageId) -> Result<Option<DeadLetter>> {
        self.apply_time(name).await?;
        let (out, _) = self.write(Admission::none(), |queues, ctx| {
            let q = queue(queues, name)?;
            q.maintain(ctx)?;
            let dseq = parse_id(id).filter(|d| q.dead.contains(*d));
            Ok(((q.id(), dseq), Wait::Nothing))
        });
        let (qid, Some(dseq)) = out? else {
            return Ok(None);
        };
        // Read outside the lock; gone meanwhile (requeued, purged) is none.
        let record = read_dead(&**self.inner.store(), qid, dseq)?;
        Ok(record.map(|r| dead_letter_out(name, dseq, r)))
    }

    async fn peek(
        &self,
        name: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let start = after.and_then(parse_id).map_or(0, |s| s.saturating_add(1));
        self.apply_time(name).await?;
        let (out, _) = self.write(Admission::none(), |queues, ctx| {
            let q = queue(queues, name)?;
            q.maintain(ctx)?;
            let chosen: Vec<(u64, u32)> = q
                .messages
                .keys_from(start)
                .take(limit)
                .map(|seq| (seq, 0))
                .collect();
            Ok(((q.id(), chosen), Wait::Nothing))
        });
        let (qid, chosen) = out?;
        // Read outside the lock; one gone meanwhile is left out.
        self.read_deliveries(name, qid, chosen)
    }

    async fn dead_letters(
        &self,
        name: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        // An id of another format (or none) starts from the beginning.
        let start = after.and_then(parse_id).map_or(0, |d| d.saturating_add(1));
        self.apply_time(name).await?;
        let (out, _) = self.write(Admission::none(), |queues, ctx| {
            let q = queue(queues, name)?;
            q.maintain(ctx)?;
            let chosen: Vec<u64> = q.dead.keys_from(start).take(limit).collect();
            Ok(((q.id(), chosen), Wait::Nothing))
        });
        let (qid, chosen) = out?;
        // Read outside the lock; one gone meanwhile is left out.
        let mut letters = Vec::with_capacity(chosen.len());
        for dseq in chosen {
            if let Some(record) = read_dead(&**self.inner.store(), qid, dseq)? {
                letters.push(dead_letter_out(name, dseq, record));
            }
        }
        Ok(letters)
    }

    async fn requeue_dead_letters(
        &self,
        name: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        let mut moved = 0;
        let mut steps = Steps::new(selection);
        let mut pause = Duration::ZERO;
        loop {
            // A step: chosen under the lock, read outside it, then moved
            // under the lock (those still dead), all or nothing.
            let (out, _) = self.write(Admission::none(), |queues, _| {
                let q = queue(queues, name)?;
                Ok(((q.id(), steps.next(q)), Wait::Nothing))
            });
            let (qid, Some(chosen)) = out? else {
                return Ok(moved);
            };
            // A bulk requeue leaves the disk to other queues most of the time.
            tokio::time::sleep(pause).await;
            let step_started = Instant::now();
            // Only which group gave up on each is read (outside the lock).
            let mut letters = Vec::with_capacity(chosen.len());
            for dseq in chosen {
                if let Some(dead) = read_dead(&**self.inner.store(), qid, dseq)? {
                    letters.push((dseq, dead.group));
                }
            }
            // Their bodies stay where they are: a small record each.
            let bytes = letters.len() * 64;
            moved += finish(self.write(self.admit(bytes).await, |queues, ctx| {
                let q = queue(queues, name)?;
                if q.id() != qid {
                    return Err(Error::QueueNotFound(name.to_string()));
                }
                let mut seqs = Vec::with_capacity(letters.len());
                for (dseq, group) in letters {
                    if q.dead.remove(dseq).is_none() {
                        continue;
                    }
                    let only_group = group.as_deref().and_then(|g| q.group_id_of(g));
                    seqs.push(q.requeue_letter(dseq, only_group, ctx));
                }
                let count = seqs.len() as u64;
                ctx.sent.push((name.clone(), qid, seqs));
                Ok((count, self.send_wait(q)))
            }))
            .await?;
            pause = step_started.elapsed() * BULK_PAUSE;
        }
    }

    async fn purge_dead_letters(
        &self,
        name: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        let mut purged = 0;
        let mut steps = Steps::new(selection);
        loop {
            let step = finish(self.write(self.admit(0).await, |queues, ctx| {
                let q = queue(queues, name)?;
                let chosen = steps.next(q).unwrap_or_default();
                for &dseq in &chosen {
                    q.dead.remove(dseq);
                    ctx.batch.delete(Space::Dead, seq_key(q.id(), dseq));
                }
                Ok((chosen.len() as u64, Wait::Written))
            }))
            .await?;
            if step == 0 {
                return Ok(purged);
            }
            purged += step;
        }
    }

    async fn commit(&self, transaction: Transaction) -> Result<Vec<SendReceipt>> {
        transaction.validate()?;
        let ops = transaction.into_ops();
        let (prefetched, records) = self.read_for(&ops)?;
        let admission = self.admit(transaction_bytes(&ops)).await;
        finish(self.write_with(admission, prefetched, |queues, ctx| {
            // Everything is checked (and read) first: nothing is applied
            // unless all of it can be.
            let plans = self.check(queues, &ops, &records, ctx)?;
            self.apply(queues, ops, plans, ctx)
        }))
        .await
    }

    async fn get_record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        tidings_core::record::validate_key(key)?;
        self.read_record(table, key)
    }

    async fn scan_records(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>> {
        self.read_records(table, &scan)
    }
}
