//! Reading and selecting dead letters.

use tidings_core::{DeadLetter, DeadLetterSelection, Error, GroupName, Result, Timestamp};

use crate::records::{DeadRecord, decode, seq_key};
use crate::state::{Ctx, QueueState, message_id, parse_id};
use crate::store::Space;

pub(super) fn dead_letter_out(q: &QueueState, dseq: u64, record: DeadRecord) -> DeadLetter {
    let message = record.message;
    DeadLetter {
        id: message_id(dseq),
        original_id: message_id(record.original_seq),
        queue: q.name.clone(),
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

pub(super) fn read_dead(q: &QueueState, dseq: u64, ctx: &Ctx<'_>) -> Result<DeadRecord> {
    match ctx.store.get(Space::Dead, &seq_key(q.id(), dseq))? {
        Some(bytes) => decode("dead letter", &bytes),
        None => Err(Error::Corrupt {
            location: format!("queue {:?} dead letter {dseq}", q.name.as_str()),
            detail: "indexed dead letter missing from the store".into(),
        }),
    }
}

pub(super) fn selected(q: &QueueState, selection: &DeadLetterSelection) -> Vec<u64> {
    match selection {
        DeadLetterSelection::All => q.dead.iter().copied().collect(),
        DeadLetterSelection::Ids(ids) => ids
            .iter()
            .filter_map(parse_id)
            .filter(|d| q.dead.contains(d))
            .collect(),
    }
}
