//! Where the hub keeps its records in the broker, and typed access to them.
//!
//! | table               | key                        | record           |
//! |---------------------|----------------------------|------------------|
//! | `hub.applications`  | application name           | [`Application`](crate::model::Application) |
//! | `hub.actions`       | action name                | [`Action`](crate::model::Action) |
//! | `hub.subscriptions` | subscription id            | [`Subscription`](crate::model::Subscription) |
//! | `hub.events`        | event id (time-ordered)    | [`Event`](crate::model::Event) |
//! | `hub.dedupers`      | action, newline, deduper   | `{"event": id}`  |
//! | `hub.gists`         | event id `.` subscription  | [`Gist`](crate::model::Gist) |
//! | `hub.sessions`      | SHA-256 of the token       | [`Session`](crate::hub::sessions::Session) |
//! | `hub.audit`         | entry id (time-ordered)    | [`AuditEntry`](crate::model::audit::AuditEntry) |
//! | `hub.events_by_action` | action, newline, event id | `null` (an index) |
//! | `hub.expiring_dedupers` | expiry (16 hex ms), newline, event id | the deduper's key and event |
//! | `hub.counts`, `hub.gists_by_subscription`, `hub.gists_by_status` | see [`crate::indexes`] | counters and indexes |
//! | `hub.meta`          | a name                     | the hub's own bookkeeping |
//! | `hub.leases`        | subscription id            | which process delivers an ordered subscription |
//! | `hub.processes`     | process id                 | what a process reports about itself (see [`crate::hub::cluster`]) |
//!
//! Each subscription's deliveries wait in the queue `hub.sub.<id>` (one
//! message per event, holding the event id), read by the group `webhooks`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tidings_core::{Broker, GroupName, Payload, QueueName, RecordScan, TableName, Transaction};

use crate::error::{HubError, HubResult};

/// The hub's tables.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    pub(crate) applications: TableName,
    pub(crate) actions: TableName,
    pub(crate) subscriptions: TableName,
    pub(crate) events: TableName,
    pub(crate) dedupers: TableName,
    pub(crate) gists: TableName,
    pub(crate) sessions: TableName,
    pub(crate) audit: TableName,
    pub(crate) events_by_action: TableName,
    pub(crate) expiring_dedupers: TableName,
    pub(crate) counts: TableName,
    pub(crate) gists_by_subscription: TableName,
    pub(crate) gists_by_status: TableName,
    pub(crate) meta: TableName,
    pub(crate) leases: TableName,
    pub(crate) processes: TableName,
    pub(crate) group: GroupName,
}

impl Tables {
    pub(crate) fn new() -> HubResult<Self> {
        Ok(Self {
            applications: TableName::new("hub.applications")?,
            actions: TableName::new("hub.actions")?,
            subscriptions: TableName::new("hub.subscriptions")?,
            events: TableName::new("hub.events")?,
            dedupers: TableName::new("hub.dedupers")?,
            gists: TableName::new("hub.gists")?,
            sessions: TableName::new("hub.sessions")?,
            audit: TableName::new("hub.audit")?,
            events_by_action: TableName::new("hub.events_by_action")?,
            expiring_dedupers: TableName::new("hub.expiring_dedupers")?,
            counts: TableName::new("hub.counts")?,
            gists_by_subscription: TableName::new("hub.gists_by_subscription")?,
            gists_by_status: TableName::new("hub.gists_by_status")?,
            meta: TableName::new("hub.meta")?,
            leases: TableName::new("hub.leases")?,
            processes: TableName::new("hub.processes")?,
            group: GroupName::new("webhooks")?,
        })
    }
}

/// The queue of a subscription's deliveries.
pub(crate) fn subscription_queue(id: &str) -> HubResult<QueueName> {
    Ok(QueueName::new(format!("hub.sub.{id}"))?)
}

/// The key of a deduper record.
pub(crate) fn deduper_key(action: &str, deduper: &str) -> String {
    format!("{action}\n{deduper}")
}

pub(crate) fn encode<T: Serialize>(value: &T) -> HubResult<Payload> {
    Ok(Payload::from_value(value)?)
}

pub(crate) fn put<T: Serialize>(
    tx: &mut Transaction,
    table: &TableName,
    key: impl Into<String>,
    value: &T,
) -> HubResult<()> {
    tx.put(table.clone(), key, encode(value)?);
    Ok(())
}

pub(crate) fn decode<T: DeserializeOwned>(
    table: &TableName,
    key: &str,
    value: &Payload,
) -> HubResult<T> {
    serde_json::from_str(value.as_str()).map_err(|e| {
        HubError::Storage(tidings_core::Error::Corrupt {
            location: format!("record {key:?} of table {table}"),
            detail: e.to_string(),
        })
    })
}

pub(crate) async fn get<T: DeserializeOwned>(
    broker: &dyn Broker,
    table: &TableName,
    key: &str,
) -> HubResult<Option<T>> {
    match broker.get_record(table, key).await? {
        Some(value) => decode(table, key, &value).map(Some),
        None => Ok(None),
    }
}

pub(crate) async fn scan<T: DeserializeOwned>(
    broker: &dyn Broker,
    table: &TableName,
    scan: RecordScan,
) -> HubResult<Vec<(String, T)>> {
    let records = broker.scan_records(table, scan).await?;
    records
        .into_iter()
        .map(|r| decode(table, &r.key, &r.value).map(|v| (r.key, v)))
        .collect()
}

/// Matches of a predicate over a key range, page by page: skips `skip`
/// matches, returns up to `take`, and counts every match when `count` is set.
pub(crate) async fn page<T: DeserializeOwned>(
    broker: &dyn Broker,
    table: &TableName,
    range: RecordScan,
    mut matches: impl FnMut(&T) -> bool,
    skip: usize,
    take: usize,
    count: bool,
) -> HubResult<(Vec<T>, usize)> {
    const CHUNK: usize = 512;
    let mut found = Vec::new();
    let mut total = 0usize;
    let mut cursor = range.limit(CHUNK);
    loop {
        let chunk = broker.scan_records(table, cursor.clone()).await?;
        let Some(last) = chunk.last().map(|r| r.key.clone()) else {
            break;
        };
        let full = chunk.len() == CHUNK;
        for record in chunk {
            let value: T = decode(table, &record.key, &record.value)?;
            if matches(&value) {
                if total >= skip && found.len() < take {
                    found.push(value);
                }
                total += 1;
            }
        }
        if !full || (!count && found.len() >= take) {
            break;
        }
        cursor = if cursor.reverse {
            RecordScan {
                to: Some(last),
                ..cursor
            }
        } else {
            RecordScan {
                from: Some(format!("{last}\0")),
                ..cursor
            }
        };
    }
    Ok((found, total))
}
