//! Sending, receiving, settling, and the dead letters.

use std::time::Duration;

use tidings_core::{
    ConsumerName, DeadLetter, DeadLetterSelection, Delivery, Error, GroupName, Headers, MessageId,
    Nack, OutgoingMessage, Payload, QueueName, ReceiveOptions, Result, SendReceipt,
};
use tokio::time::Instant;
use tokio_postgres::Row;

use super::queues::timestamp;
use super::{Shared, millis, seq_of};

/// A batch of messages as the `send` function takes it: one array per field.
#[derive(Debug, Default)]
pub(crate) struct SendBatch {
    pub(super) payloads: Vec<String>,
    pub(super) headers: Vec<Option<String>>,
    pub(super) dedup_ids: Vec<Option<String>>,
    pub(super) ttls: Vec<Option<i64>>,
    pub(super) delays: Vec<Option<i64>>,
}

impl SendBatch {
    /// How many messages it holds.
    pub(super) fn len(&self) -> usize {
        self.payloads.len()
    }

    /// Adds another batch's messages after its own.
    pub(super) fn append(&mut self, other: SendBatch) {
        self.payloads.extend(other.payloads);
        self.headers.extend(other.headers);
        self.dedup_ids.extend(other.dedup_ids);
        self.ttls.extend(other.ttls);
        self.delays.extend(other.delays);
    }

    pub(super) fn push(&mut self, message: &OutgoingMessage) -> Result<()> {
        self.payloads.push(message.payload.as_str().to_owned());
        self.headers.push(if message.headers.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&message.headers).map_err(Error::storage)?)
        });
        self.dedup_ids.push(message.dedup_id.clone());
        self.ttls.push(message.ttl.map(millis));
        self.delays.push(message.delay.map(millis));
        Ok(())
    }

    /// The dedup ids as the function takes them: `None` when no message has one.
    pub(super) fn dedup_param(&self) -> Option<&Vec<Option<String>>> {
        self.dedup_ids
            .iter()
            .any(Option::is_some)
            .then_some(&self.dedup_ids)
    }

    pub(super) fn of(messages: &[OutgoingMessage]) -> Result<Self> {
        let mut batch = Self::default();
        for message in messages {
            batch.push(message)?;
        }
        Ok(batch)
    }
}

/// The receipts of a `send` call's rows.
pub(super) fn receipts(rows: &[Row]) -> Vec<SendReceipt> {
    rows.iter()
        .map(|row| SendReceipt {
            id: MessageId(row.get::<_, i64>(0).to_string()),
            duplicate: row.get(1),
        })
        .collect()
}

/// Headers as stored (`None`: none).
fn headers(text: Option<&str>, what: &str) -> Result<Headers> {
    match text {
        None => Ok(Headers::new()),
        Some(text) => serde_json::from_str(text).map_err(|e| Error::Corrupt {
            location: format!("headers of {what}"),
            detail: e.to_string(),
        }),
    }
}

/// The dead letters a selection names (`None`: all of them).
fn chosen(selection: &DeadLetterSelection) -> Option<Vec<i64>> {
    match selection {
        DeadLetterSelection::All => None,
        DeadLetterSelection::Ids(ids) => Some(seqs(ids)),
    }
}

/// The stored message ids among `ids`, once each.
fn seqs(ids: &[MessageId]) -> Vec<i64> {
    let mut seqs: Vec<i64> = ids.iter().filter_map(seq_of).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

impl Shared {
    /// Stores a batch in one statement (and wakes the queue's receivers).
    pub(super) async fn send_now(
        &self,
        queue: &QueueName,
        batch: &SendBatch,
    ) -> Result<Vec<SendReceipt>> {
        let (id, rows) = self
            .on_queue(queue, true, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.send).await?;
                let rows = client
                    .query(
                        &statement,
                        &[
                            &meta.id,
                            &batch.payloads,
                            &batch.headers,
                            &batch.dedup_param(),
                            &batch.ttls,
                            &batch.delays,
                            &self.synchronous(&meta),
                        ],
                    )
                    .await?;
                Ok((meta.id, rows))
            })
            .await?;
        if !rows.is_empty() {
            self.announcer.announce(id);
        }
        Ok(receipts(&rows))
    }
}

impl Shared {
    pub(super) async fn send_all(
        self: &std::sync::Arc<Self>,
        queue: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>> {
        OutgoingMessage::validate_all(&messages)?;
        let batch = SendBatch::of(&messages)?;
        self.in_line(queue, batch).await
    }

    /// Receives, waiting up to `options.wait` for the first message: woken
    /// by sends (here or, through NOTIFY, elsewhere) and by the group's next
    /// due time, never by polling.
    pub(super) async fn take(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        options.validate()?;
        let deadline = Instant::now() + options.wait;
        let max = i32::try_from(options.max_messages).unwrap_or(i32::MAX);
        // Whether to tend the group (see `tending`): now and then, and
        // always before waiting.
        let mut tend = None;
        loop {
            let queue_id = self.queue_meta(queue).await?.id;
            let mut woken = self.wakeups.watch(queue_id);
            let tending = *tend.get_or_insert_with(|| {
                self.tending
                    .due(queue_id, group, consumer, std::time::Instant::now())
            });
            let (rows, due_in) = self
                .on_queue(queue, false, move |client, meta| async move {
                    let statement = client.prepare_cached(&self.sql.receive).await?;
                    let rows = client
                        .query(
                            &statement,
                            &[
                                &meta.id,
                                &group.as_str(),
                                &consumer.as_str(),
                                &max,
                                &tending,
                            ],
                        )
                        .await?;
                    if !rows.is_empty() || Instant::now() >= deadline || !tending {
                        return Ok((rows, None));
                    }
                    let statement = client.prepare_cached(&self.sql.next_due).await?;
                    let due = client
                        .query_one(&statement, &[&meta.id, &group.as_str()])
                        .await?;
                    Ok((rows, due.get::<_, Option<i64>>(0)))
                })
                .await?;
            if rows.is_empty() && !tending {
                // Nothing ready: bring back what has come due, and look again.
                tend = Some(true);
                continue;
            }
            if !rows.is_empty() || Instant::now() >= deadline {
                return rows.iter().map(|row| delivery(queue, row)).collect();
            }
            // Due now but taken by someone else: look again shortly.
            let until = due_in.map_or(deadline, |ms| {
                let ms = u64::try_from(ms.max(2)).unwrap_or(2);
                deadline.min(Instant::now() + Duration::from_millis(ms))
            });
            // Woken by a send: what it sent is ready, and tending is due
            // only as often as ever. At a due time: tend.
            tend = tokio::select! {
                _ = woken.changed() => None,
                () = tokio::time::sleep_until(until) => Some(true),
            };
        }
    }

    /// Acks `ids` for the group; `synchronous` waits for the commit to be
    /// as durable as the server makes it.
    pub(super) async fn settle(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        synchronous: bool,
    ) -> Result<u64> {
        let seqs = &seqs(ids);
        self.on_queue(queue, true, move |client, meta| async move {
            let statement = client.prepare_cached(&self.sql.ack).await?;
            let row = client
                .query_one(&statement, &[&meta.id, &group.as_str(), seqs, &synchronous])
                .await?;
            Ok(row.get::<_, Vec<i64>>(0).len() as u64)
        })
        .await
    }

    pub(super) async fn give_back(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        nack: Nack,
    ) -> Result<u64> {
        let seqs = &seqs(ids);
        let (delay, reason) = match &nack {
            Nack::Retry { delay } => (millis(*delay), None),
            Nack::DeadLetter { reason } => (0, Some(reason.as_str())),
        };
        let (id, given) = self
            .on_queue(queue, true, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.nack).await?;
                let row = client
                    .query_one(
                        &statement,
                        &[&meta.id, &group.as_str(), seqs, &delay, &reason],
                    )
                    .await?;
                Ok((meta.id, row.get::<_, Vec<i64>>(0).len() as u64))
            })
            .await?;
        if given > 0 && reason.is_none() {
            self.announcer.announce(id);
        }
        Ok(given)
    }

    /// See `Broker::peek`: the stored messages, oldest first, read in one
    /// statement that locks nothing.
    pub(super) async fn peek(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let after = after.and_then(seq_of).unwrap_or(0);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .on_queue(queue, false, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.peek).await?;
                Ok(client
                    .query(&statement, &[&meta.id, &after, &limit])
                    .await?)
            })
            .await?;
        rows.iter().map(|row| delivery(queue, row)).collect()
    }

    pub(super) async fn letters(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let after = after.and_then(seq_of).unwrap_or(0);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .on_queue(queue, false, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.letters).await?;
                Ok(client
                    .query(&statement, &[&meta.id, &after, &limit])
                    .await?)
            })
            .await?;
        rows.iter().map(|row| dead_letter(queue, row)).collect()
    }

    pub(super) async fn letter(
        &self,
        queue: &QueueName,
        id: &MessageId,
    ) -> Result<Option<DeadLetter>> {
        let seq = seq_of(id).unwrap_or(0);
        let row = self
            .on_queue(queue, false, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.letter).await?;
                Ok(client.query_opt(&statement, &[&meta.id, &seq]).await?)
            })
            .await?;
        row.map(|row| dead_letter(queue, &row)).transpose()
    }

    pub(super) async fn requeue(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        let ids = &chosen(&selection);
        let (id, moved) = self
            .on_queue(queue, true, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.requeue).await?;
                let row = client.query_one(&statement, &[&meta.id, ids]).await?;
                Ok((meta.id, u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)))
            })
            .await?;
        if moved > 0 {
            self.announcer.announce(id);
        }
        Ok(moved)
    }

    pub(super) async fn purge_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        let ids = &chosen(&selection);
        self.on_queue(queue, true, move |client, meta| async move {
            let statement = client.prepare_cached(&self.sql.purge_letters).await?;
            Ok(client.execute(&statement, &[&meta.id, ids]).await?)
        })
        .await
    }
}

fn delivery(queue: &QueueName, row: &Row) -> Result<Delivery> {
    let seq: i64 = row.get(0);
    Ok(Delivery {
        id: MessageId(seq.to_string()),
        queue: queue.clone(),
        delivery_count: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
        payload: Payload::from_trusted(row.get::<_, String>(2)),
        headers: headers(row.get(3), &format!("message {seq} of queue {queue}"))?,
        dedup_id: row.get(4),
        enqueued_at: timestamp(row.get(5)),
    })
}

fn dead_letter(queue: &QueueName, row: &Row) -> Result<DeadLetter> {
    let id: i64 = row.get(0);
    let group: Option<String> = row.get(2);
    Ok(DeadLetter {
        id: MessageId(id.to_string()),
        original_id: MessageId(row.get::<_, i64>(1).to_string()),
        queue: queue.clone(),
        group: group.map(GroupName::new).transpose()?,
        reason: row.get(3),
        attempts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
        enqueued_at: timestamp(row.get(5)),
        dead_lettered_at: timestamp(row.get(6)),
        payload: Payload::from_trusted(row.get::<_, String>(7)),
        headers: headers(row.get(8), &format!("dead letter {id} of queue {queue}"))?,
        dedup_id: row.get(9),
    })
}
