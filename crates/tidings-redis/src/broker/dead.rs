//! Dead letters: moving messages there, listing and requeueing them.
//!
//! A move reads the entry, builds the dead-letter entry here (the payload's
//! bytes are copied, never re-serialised), then one script checks that the
//! message is still where it was read and moves it: added to the dead-letter
//! stream and acked in the same step, so it is never lost and never in both.

use tidings_core::{
    DeadLetter, DeadLetterSelection, Error, GroupName, MessageId, QueueConfig, QueueName, Result,
};

use super::RedisBroker;
use super::messages::{dead_letter, dead_letter_fields, flat, requeued_fields};
use crate::wire::entry::{Entry, is_stream_id};
use crate::{scripts, value};

/// A message to move to the dead letters: its id, the delivery count it
/// was read with, and the dead letter's fields.
pub(super) type Move = (String, u32, Vec<(String, String)>);

/// Dead letters requeued per script run.
const REQUEUE_PAGE: usize = 100;

impl RedisBroker {
    /// Dead-letters what a receive found timed out too often, expired, or unreadable.
    pub(super) async fn dead_letter_taken(
        &self,
        queue: &QueueName,
        group: &GroupName,
        id: &str,
        reason: &str,
        count: u32,
        config: &QueueConfig,
    ) -> Result<()> {
        let expired = reason == "expired" && count == 0;
        let Some(entry) = self.entry(&self.keys(queue)?.stream, id).await? else {
            return Ok(());
        };
        let group_field = (!expired).then_some(group);
        let fields = dead_letter_fields(&entry, group_field, count, reason);
        let mode = if expired { "expired" } else { "pending" };
        self.move_to_dead(
            queue,
            mode,
            group,
            vec![(id.to_owned(), count, fields)],
            config,
        )
        .await?;
        Ok(())
    }

    /// `nack` with a dead letter: moves the messages pending in `group`,
    /// in one script run (each as it was read; one redelivered meanwhile
    /// is skipped). Returns how many moved.
    pub(super) async fn dead_letter_pending(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[&str],
        reason: &str,
    ) -> Result<u64> {
        let config = self.config(queue).await?;
        let moves = self.dead_letters_of(queue, group, ids, reason).await?;
        self.move_to_dead(queue, "pending", group, moves, &config)
            .await
    }

    /// Reads the messages pending in `group` among `ids`, with their
    /// delivery counts, and builds the dead letter each would become.
    pub(super) async fn dead_letters_of(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[&str],
        reason: &str,
    ) -> Result<Vec<Move>> {
        let keys = self.keys(queue)?;
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("XRANGE").arg(&keys.stream).arg(*id).arg(*id);
            pipe.cmd("XPENDING")
                .arg(&keys.stream)
                .arg(group.as_str())
                .arg(*id)
                .arg(*id)
                .arg(1);
        }
        let mut conn = self.conns.main();
        let replies: Vec<redis::Value> = match self.call(pipe.query_async(&mut conn)).await {
            Ok(r) => r,
            // No such group: nothing is pending in it.
            Err(Error::Storage(e)) if e.to_string().contains("NOGROUP") => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut moves = Vec::with_capacity(ids.len());
        for (id, pair) in ids.iter().zip(replies.chunks(2)) {
            let entry = pair.first().and_then(|r| value::entries(r).pop());
            let count = pair
                .get(1)
                .map(value::items)
                .and_then(|p| p.first())
                .map(value::items)
                .and_then(|p| p.get(3))
                .and_then(value::int)
                .and_then(|n| u32::try_from(n).ok());
            if let (Some(entry), Some(count)) = (entry, count) {
                let fields = dead_letter_fields(&entry, Some(group), count, reason);
                moves.push(((*id).to_owned(), count, fields));
            }
        }
        Ok(moves)
    }

    /// Moves messages to the dead-letter stream, each with its expected
    /// delivery count and entry (see `lua/move.lua`). Returns how many moved.
    async fn move_to_dead(
        &self,
        queue: &QueueName,
        mode: &str,
        group: &GroupName,
        moves: Vec<Move>,
        config: &QueueConfig,
    ) -> Result<u64> {
        if moves.is_empty() {
            return Ok(0);
        }
        let keys = self.keys(queue)?;
        let [max_len, max_age] = Self::retention_args(config);
        let mut args = vec![
            queue.as_str().as_bytes().to_vec(),
            mode.as_bytes().to_vec(),
            group.as_str().as_bytes().to_vec(),
            max_len,
            max_age,
            moves.len().to_string().into_bytes(),
        ];
        for (id, count, fields) in moves {
            args.push(id.into_bytes());
            args.push(count.to_string().into_bytes());
            args.push((fields.len() * 2).to_string().into_bytes());
            args.extend(flat(fields));
        }
        let moved = self.script(&scripts::MOVE, &[&keys.stream], args).await?;
        Ok(value::count(&moved))
    }

    /// One entry of a stream (a queue's, or its dead letters').
    async fn entry(&self, stream: &str, id: &str) -> Result<Option<Entry>> {
        let reply = self
            .command(redis::cmd("XRANGE").arg(stream).arg(id).arg(id))
            .await?;
        Ok(value::entries(&reply).pop())
    }

    /// One dead letter by id.
    pub(super) async fn find_dead(
        &self,
        queue: &QueueName,
        id: &MessageId,
    ) -> Result<Option<DeadLetter>> {
        self.config(queue).await?;
        if !is_stream_id(id.as_str()) {
            return Ok(None);
        }
        let letter = self.entry(&self.keys(queue)?.dlq, id.as_str()).await?;
        Ok(letter.map(|e| dead_letter(queue, &e)))
    }

    pub(super) async fn list_dead(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        let entries = self.page_of(queue, Stream::Dead, after, limit).await?;
        Ok(entries.iter().map(|e| dead_letter(queue, e)).collect())
    }

    /// The entries of a queue's stream, oldest first (see `Broker::peek`);
    /// an entry that is not a message Tidings can read is left out.
    pub(super) async fn peek_stream(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<tidings_core::Delivery>> {
        let entries = self.page_of(queue, Stream::Messages, after, limit).await?;
        Ok(entries
            .iter()
            .filter_map(|e| super::messages::delivery(queue, e, 0).ok())
            .collect())
    }

    /// Up to `limit` entries of one of a queue's streams, oldest first,
    /// after the entry `after`.
    async fn page_of(
        &self,
        queue: &QueueName,
        stream: Stream,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Entry>> {
        self.config(queue).await?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.keys(queue)?;
        let (key, what) = match stream {
            Stream::Messages => (&keys.stream, "message"),
            Stream::Dead => (&keys.dlq, "dead-letter"),
        };
        let start = match after {
            Some(id) if is_stream_id(id.as_str()) => format!("({id}"),
            Some(id) => {
                return Err(Error::InvalidArgument(format!("{id:?} is not a {what} id")));
            }
            None => "-".to_owned(),
        };
        let reply = self
            .command(
                redis::cmd("XRANGE")
                    .arg(key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(limit),
            )
            .await?;
        Ok(value::entries(&reply))
    }

    pub(super) async fn requeue(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        self.config(queue).await?;
        let keys = self.keys(queue)?;
        let mut moved = 0;
        match selection {
            DeadLetterSelection::Ids(ids) => {
                let mut pipe = redis::pipe();
                let ids: Vec<&MessageId> =
                    ids.iter().filter(|id| is_stream_id(id.as_str())).collect();
                for id in &ids {
                    pipe.cmd("XRANGE")
                        .arg(&keys.dlq)
                        .arg(id.as_str())
                        .arg(id.as_str());
                }
                if ids.is_empty() {
                    return Ok(0);
                }
                let mut conn = self.conns.main();
                let replies: Vec<redis::Value> = self.call(pipe.query_async(&mut conn)).await?;
                let entries: Vec<Entry> = replies.iter().flat_map(value::entries).collect();
                for page in entries.chunks(REQUEUE_PAGE) {
                    moved += self.requeue_entries(queue, page).await?;
                }
            }
            DeadLetterSelection::All => loop {
                let reply = self
                    .command(
                        redis::cmd("XRANGE")
                            .arg(&keys.dlq)
                            .arg("-")
                            .arg("+")
                            .arg("COUNT")
                            .arg(REQUEUE_PAGE),
                    )
                    .await?;
                let page = value::entries(&reply);
                if page.is_empty() {
                    break;
                }
                moved += self.requeue_entries(queue, &page).await?;
            },
        }
        Ok(moved)
    }

    async fn requeue_entries(&self, queue: &QueueName, entries: &[Entry]) -> Result<u64> {
        let keys = self.keys(queue)?;
        let mut args = vec![
            queue.as_str().as_bytes().to_vec(),
            keys.dlq_group.clone().into_bytes(),
            entries.len().to_string().into_bytes(),
        ];
        for entry in entries {
            let fields = requeued_fields(entry, &keys.dlq, &keys.stream);
            args.push(entry.id.clone().into_bytes());
            // Back to the group that gave up on it; to every group if none did.
            args.push(entry.field("g").unwrap_or_default().as_bytes().to_vec());
            args.push((fields.len() * 2).to_string().into_bytes());
            args.extend(flat(fields));
        }
        let moved = self
            .script(&scripts::REQUEUE, &[&keys.stream], args)
            .await?;
        Ok(value::count(&moved))
    }
}

/// A queue's streams.
#[derive(Clone, Copy)]
enum Stream {
    /// Its messages.
    Messages,
    /// Its dead letters.
    Dead,
}
