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

/// The next step of dead letters a selection names: with `All`, those
/// after `after`; with ids, the next ones of the list still dead.
pub(super) fn next_step(
    q: &QueueState,
    selection: &DeadLetterSelection,
    after: u64,
    done_ids: usize,
) -> Vec<u64> {
    match selection {
        DeadLetterSelection::All => q.dead.range(after..).take(STEP).copied().collect(),
        DeadLetterSelection::Ids(ids) => ids
            .iter()
            .skip(done_ids)
            .take(STEP)
            .filter_map(parse_id)
            .filter(|d| q.dead.contains(d))
            .collect(),
    }
}
