//! Secondary indexes and counters, written in the transactions that write
//! the records they describe, so that listings and totals never read the
//! whole log.
//!
//! | table                  | key                                   | value |
//! |------------------------|---------------------------------------|-------|
//! | `hub.counts`           | `events` `\n` action                  | events stored of the action |
//! |                        | `gists` `\n` subscription `\n` status | gists of the subscription in that status |
//! |                        | `attempts` `\n` subscription          | attempts counted in its stored gists |
//! | `hub.gists_by_subscription` | subscription `\n` gist key       | `null` |
//! | `hub.gists_by_status`  | subscription `\n` status `\n` gist key | `null` |
//!
//! Gist keys start with their event's time-ordered id, so each index range
//! is in publish order. Every change of a gist names what was stored before
//! ([`Before`]): the counters move from the old status to the new one, and
//! the write expects the old record unchanged, so two writers of one gist
//! cannot both count their change.

use tidings_core::{Broker, Payload, Transaction};

use crate::error::HubResult;
use crate::model::{Gist, GistStatus};
use crate::tables::{Tables, encode};

/// Every status, in the order `/v1/stats` counts them.
pub(crate) const STATUSES: [GistStatus; 4] = [
    GistStatus::Pending,
    GistStatus::Retrying,
    GistStatus::Delivered,
    GistStatus::Failed,
];

/// A gist as read, with the exact text stored (to expect it unchanged).
#[derive(Debug, Clone)]
pub(crate) struct StoredGist {
    pub(crate) gist: Gist,
    pub(crate) raw: Payload,
}

/// What a gist write replaces.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Before<'a> {
    /// Nothing, certainly (its event is being published now).
    New,
    /// Nothing, as read: the write fails if one was written meanwhile.
    Absent,
    /// This record, as read: the write fails if it changed meanwhile.
    Stored(&'a StoredGist),
}

/// Reads a gist with its stored text.
pub(crate) async fn read_gist(
    broker: &dyn Broker,
    tables: &Tables,
    key: &str,
) -> HubResult<Option<StoredGist>> {
    let Some(raw) = broker.get_record(&tables.gists, key).await? else {
        return Ok(None);
    };
    StoredGist::decode(tables, key, raw).map(Some)
}

impl StoredGist {
    /// A gist from its stored text.
    pub(crate) fn decode(tables: &Tables, key: &str, raw: Payload) -> HubResult<Self> {
        let gist = crate::tables::decode(&tables.gists, key, &raw)?;
        Ok(Self { gist, raw })
    }
}

/// The counter of a subscription's gists in `status`.
pub(crate) fn gist_count_key(subscription: &str, status: GistStatus) -> String {
    format!("gists\n{subscription}\n{}", status.as_str())
}

/// The counter of an action's stored events.
pub(crate) fn event_count_key(action: &str) -> String {
    format!("events\n{action}")
}

fn attempts_key(subscription: &str) -> String {
    format!("attempts\n{subscription}")
}

/// The key of a gist in `hub.gists_by_subscription`.
pub(crate) fn by_subscription_key(subscription: &str, gist: &str) -> String {
    format!("{subscription}\n{gist}")
}

/// The key of a gist in `hub.gists_by_status`.
pub(crate) fn by_status_key(subscription: &str, status: GistStatus, gist: &str) -> String {
    format!("{subscription}\n{}\n{gist}", status.as_str())
}

/// Writes `gist` over `before`, with its index entries and counters.
pub(crate) fn write_gist(
    tx: &mut Transaction,
    tables: &Tables,
    before: Before<'_>,
    gist: &Gist,
) -> HubResult<()> {
    let key = gist.key();
    let sub = &gist.subscription;
    let (old_status, old_attempts) = match before {
        Before::New => (None, 0),
        Before::Absent => {
            tx.expect(tables.gists.clone(), key.clone(), None);
            (None, 0)
        }
        Before::Stored(stored) => {
            tx.expect(tables.gists.clone(), key.clone(), Some(stored.raw.clone()));
            (Some(stored.gist.status), stored.gist.attempts)
        }
    };
    tx.put(tables.gists.clone(), key.clone(), encode(gist)?);
    let Some(old) = old_status else {
        index_new_gist(tx, tables, gist);
        return Ok(());
    };
    if old != gist.status {
        tx.delete(
            tables.gists_by_status.clone(),
            by_status_key(sub, old, &key),
        )
        .add(tables.counts.clone(), gist_count_key(sub, old), -1)
        .put(
            tables.gists_by_status.clone(),
            by_status_key(sub, gist.status, &key),
            null(),
        )
        .add(tables.counts.clone(), gist_count_key(sub, gist.status), 1);
    }
    let attempts = i64::from(gist.attempts) - i64::from(old_attempts);
    if attempts != 0 {
        tx.add(tables.counts.clone(), attempts_key(sub), attempts);
    }
    Ok(())
}

/// Indexes and counts a gist just stored (or stored before the indexes
/// existed).
pub(crate) fn index_new_gist(tx: &mut Transaction, tables: &Tables, gist: &Gist) {
    let (key, sub) = (gist.key(), &gist.subscription);
    tx.put(
        tables.gists_by_subscription.clone(),
        by_subscription_key(sub, &key),
        null(),
    )
    .put(
        tables.gists_by_status.clone(),
        by_status_key(sub, gist.status, &key),
        null(),
    )
    .add(tables.counts.clone(), gist_count_key(sub, gist.status), 1);
    if gist.attempts > 0 {
        tx.add(
            tables.counts.clone(),
            attempts_key(sub),
            i64::from(gist.attempts),
        );
    }
}

/// An index entry's value.
fn null() -> Payload {
    Payload::from_trusted("null".to_owned())
}

/// Deletes a gist as read, with its index entries and counters (the
/// delete fails if it changed meanwhile).
pub(crate) fn delete_gist(tx: &mut Transaction, tables: &Tables, stored: &StoredGist) {
    let gist = &stored.gist;
    let (key, sub) = (gist.key(), &gist.subscription);
    tx.expect(tables.gists.clone(), key.clone(), Some(stored.raw.clone()))
        .delete(tables.gists.clone(), key.clone())
        .delete(
            tables.gists_by_subscription.clone(),
            by_subscription_key(sub, &key),
        )
        .delete(
            tables.gists_by_status.clone(),
            by_status_key(sub, gist.status, &key),
        )
        .add(tables.counts.clone(), gist_count_key(sub, gist.status), -1);
    if gist.attempts > 0 {
        tx.add(
            tables.counts.clone(),
            attempts_key(sub),
            -i64::from(gist.attempts),
        );
    }
}

/// Counts an event of `action` in (`1`) or out (`-1`).
pub(crate) fn count_event(tx: &mut Transaction, tables: &Tables, action: &str, delta: i64) {
    tx.add(tables.counts.clone(), event_count_key(action), delta);
}

/// The counters, read in one scan of `hub.counts` (a few records per
/// action and subscription, however many events and gists are stored).
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    /// Stored events by action.
    pub(crate) events: std::collections::BTreeMap<String, u64>,
    /// Stored gists by subscription, by status (in [`STATUSES`] order).
    pub(crate) gists: std::collections::BTreeMap<String, [u64; 4]>,
    /// Attempts counted in the stored gists, by subscription.
    pub(crate) attempts: std::collections::BTreeMap<String, u64>,
}

impl Counts {
    /// Reads every counter.
    pub(crate) async fn read(broker: &dyn Broker, tables: &Tables) -> HubResult<Self> {
        let mut counts = Self::default();
        let records = broker
            .scan_records(&tables.counts, tidings_core::RecordScan::all())
            .await?;
        for record in records {
            let value = tidings_core::record::counter_value(
                tables.counts.as_str(),
                &record.key,
                Some(record.value.as_str().as_bytes()),
            )?;
            let value = u64::try_from(value).unwrap_or(0);
            let mut parts = record.key.split('\n');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("events"), Some(action), None) => {
                    counts.events.insert(action.to_owned(), value);
                }
                (Some("attempts"), Some(sub), None) => {
                    counts.attempts.insert(sub.to_owned(), value);
                }
                (Some("gists"), Some(sub), Some(status)) => {
                    if let Some(i) = GistStatus::parse(status)
                        .and_then(|s| STATUSES.iter().position(|&x| x == s))
                    {
                        counts.gists.entry(sub.to_owned()).or_default()[i] = value;
                    }
                }
                _ => {}
            }
        }
        Ok(counts)
    }

    /// Gists of `sub` in `status`.
    pub(crate) fn gists_of(&self, sub: &str, status: GistStatus) -> u64 {
        let i = STATUSES.iter().position(|&x| x == status).unwrap_or(0);
        self.gists.get(sub).map_or(0, |by| by[i])
    }
}
