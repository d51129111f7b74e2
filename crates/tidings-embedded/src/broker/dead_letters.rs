//! Reading and selecting dead letters.

use tidings_core::{DeadLetter, DeadLetterSelection, GroupName, QueueName, Result, Timestamp};

use crate::records::{DeadRecord, decode, seq_key};
use crate::state::{QueueState, message_id, parse_id};
use crate::store::{Space, Store};

pub(super) fn dead_letter_out(queue: &QueueName, dseq: u64, record: DeadRecord) -> DeadLetter {
    let message = record.message;
    DeadLetter {
        id: message_id(dseq),
        original_id: message_id(record.original_seq),
        queue: queue.clone(),
        group: record.group.and_then(|g| GroupName::new(g).ok()),
        reason: record.reason,
        attempts: record.attempts,
        enqueued_at: Timestamp(message.enqueued_at),
        dead_lettered_at: Timestamp(record.dead_lettered_at),
        payload: tidings_core::Payload::from_trusted(message.payload),
        headers: message.headers.into_iter().collect(),
        dedup_id: message.dedup_id,
    }
}

/// Reads a dead letter of queue `qid`, outside the engine's lock: `None` if
/// it is gone (requeued or purged since it was chosen).
pub(super) fn read_dead(store: &dyn Store, qid: u64, dseq: u64) -> Result<Option<DeadRecord>> {
    store
        .get(Space::Dead, &seq_key(qid, dseq))?
        .map(|bytes| decode("dead letter", &bytes))
        .transpose()
}

/// Dead letters handled per lock section by requeue and purge: each step
/// is atomic and short (64 KiB of 1 KiB letters: one commit of the writer
/// well under a millisecond), so other queues never wait long behind a
/// large one.
pub(super) const STEP: usize = 64;

/// Where a requeue or purge is in its selection, step by step.
pub(super) struct Steps {
    selection: DeadLetterSelection,
    /// With `All`: the next step starts at this dead seq.
    after: u64,
    /// With ids: how many of the list were looked at.
    looked_at: usize,
}

impl Steps {
    pub(super) fn new(selection: DeadLetterSelection) -> Self {
        Self {
            selection,
            after: 0,
            looked_at: 0,
        }
    }

    /// The next step: up to [`STEP`] letters still dead (with ids, the
    /// next ones of the list that are), or `None` when the selection is done.
    pub(super) fn next(&mut self, q: &QueueState) -> Option<Vec<u64>> {
        let chosen: Vec<u64> = match &self.selection {
            DeadLetterSelection::All => q.dead.keys_from(self.after).take(STEP).collect(),
            DeadLetterSelection::Ids(ids) => {
                let mut chosen = Vec::with_capacity(STEP.min(ids.len()));
                while chosen.len() < STEP && self.looked_at < ids.len() {
                    let id = &ids[self.looked_at];
                    self.looked_at += 1;
                    chosen.extend(parse_id(id).filter(|d| q.dead.contains(*d)));
                }
                chosen
            }
        };
        let last = *chosen.last()?;
        self.after = last + 1;
        Some(chosen)
    }
}
