//! The catalog's change feed, which keeps the catalog of every hub process
//! on one shared storage in step.
//!
//! Every transaction that writes catalog records (applications, actions,
//! subscriptions, sessions) also sends, in the same commit, a message naming
//! them to the queue `hub.catalog`. Each process reads that queue in a
//! consumer group of its own (every group sees every message), woken by the
//! backend as any receive is (Redis blocking reads, PostgreSQL
//! LISTEN/NOTIFY), and reads the named records again. The group is made
//! before the catalog is loaded, so a change either is in what was loaded
//! or waits in the group; a process that could not receive for a while (a
//! lost connection) loads the whole catalog again once it can. On an
//! exclusive storage (the embedded engine) there is no other process and
//! no feed.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{
    Broker, ConsumerName, Delivery, GroupName, MessageId, OutgoingMessage, Payload, QueueConfig,
    QueueName, ReceiveOptions, SendReceipt, Transaction, TxOp,
};
use tokio_util::sync::CancellationToken;

use super::{Hub, Inner};
use crate::error::HubResult;
use crate::model::{Action, Application, Subscription};
use crate::schema::Schema;
use crate::sealing::HoldsSecrets;

/// How long a change waits in the groups of processes that do not read it
/// (stopped ones): a process that is away longer loads the whole catalog.
const KEPT: Duration = Duration::from_secs(3600);
/// How long one receive of the feed waits.
const WAIT: Duration = Duration::from_secs(5);
/// Pause after a failed receive.
const PAUSE: Duration = Duration::from_millis(200);

/// One message of the feed: which records a commit wrote.
#[derive(Debug, Serialize, Deserialize)]
struct Change {
    /// The process that committed it (it applied the change itself).
    origin: String,
    /// Table and key of every catalog record written.
    records: Vec<(String, String)>,
}

/// This process's place in the feed.
pub(crate) struct Feed {
    pub(crate) queue: QueueName,
    group: GroupName,
    consumer: ConsumerName,
    /// The process's id.
    process: String,
    /// Cancelled when the hub is dropped: the reading task ends.
    stop: CancellationToken,
}

/// The feed's queue.
pub(crate) fn queue() -> HubResult<QueueName> {
    Ok(QueueName::new("hub.catalog")?)
}

/// The name of process `process` as a consumer (and, in the feed, as a
/// group): of the feed and of every subscription.
pub(crate) fn member_name(process: &str) -> String {
    format!("process-{process}")
}

impl Feed {
    pub(crate) fn new(process: &str) -> HubResult<Self> {
        Ok(Self {
            queue: queue()?,
            group: GroupName::new(member_name(process))?,
            consumer: ConsumerName::new(member_name(process))?,
            process: process.to_owned(),
            stop: CancellationToken::new(),
        })
    }

    /// Stops reading the feed (the hub is going away).
    pub(crate) fn stop(&self) {
        self.stop.cancel();
    }

    /// Makes this process's group (before the catalog is loaded). Returns
    /// what was already waiting, to be applied once the catalog is loaded.
    pub(crate) async fn join(&self, broker: &dyn Broker) -> HubResult<Vec<Delivery>> {
        let config = QueueConfig {
            default_ttl: Some(KEPT),
            ..QueueConfig::default()
        };
        match broker.create_queue(&self.queue, config).await {
            // Created by another version with other settings: still a feed.
            Ok(_) | Err(tidings_core::Error::QueueConfigConflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(broker
            .receive(
                &self.queue,
                &self.group,
                &self.consumer,
                ReceiveOptions::new(100, Duration::ZERO),
            )
            .await?)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(feed) = &self.feed {
            feed.stop.cancel();
        }
    }
}

impl Hub {
    /// Commits `tx`; if it writes catalog records, with a message to the
    /// feed naming them.
    pub(crate) async fn commit(
        &self,
        mut tx: Transaction,
    ) -> tidings_core::Result<Vec<SendReceipt>> {
        let Some(feed) = &self.inner.feed else {
            return self.inner.broker.commit(tx).await;
        };
        let tables = &self.inner.tables;
        let catalog_tables = [
            &tables.applications,
            &tables.actions,
            &tables.subscriptions,
            &tables.sessions,
        ];
        // The catalog records the transaction writes, with their new values
        // (`None`: deleted).
        let written: Vec<((String, String), Option<Payload>)> = tx
            .ops()
            .iter()
            .filter_map(|op| match op {
                TxOp::Put {
                    table, key, value, ..
                } => Some((table, key, Some(value))),
                TxOp::Delete { table, key } => Some((table, key, None)),
                _ => None,
            })
            .filter(|(table, _, _)| catalog_tables.contains(table))
            .map(|(table, key, value)| ((table.to_string(), key.clone()), value.cloned()))
            .collect();
        if written.is_empty() {
            return self.inner.broker.commit(tx).await;
        }
        // An overwrite of a catalog record expects it as this process last
        // saw it: one changed meanwhile through another process (not heard
        // of here yet) fails the write instead of being overwritten.
        let guards = self.guards(&tx);
        for (table, key, value) in &guards {
            tx.expect(table.clone(), key.clone(), Some(value.clone()));
        }
        let change = Change {
            origin: feed.process.clone(),
            records: written.iter().map(|(place, _)| place.clone()).collect(),
        };
        tx.send(feed.queue.clone(), OutgoingMessage::json(&change)?);
        match self.inner.broker.commit(tx).await {
            Ok(receipts) => {
                let mut catalog = self.catalog_mut();
                for (place, value) in written {
                    match value {
                        Some(value) => catalog.stored.insert(place, value),
                        None => catalog.stored.remove(&place),
                    };
                }
                Ok(receipts)
            }
            Err(e @ tidings_core::Error::RecordChanged { .. }) if !guards.is_empty() => {
                // Read them again once the change under way is done (its
                // caller holds the catalog's lock), so a retry starts from
                // what is stored.
                let stale: BTreeSet<(String, String)> = guards
                    .into_iter()
                    .map(|(table, key, _)| (table.to_string(), key))
                    .collect();
                let hub = Arc::downgrade(&self.inner);
                tokio::spawn(async move {
                    if let Some(inner) = hub.upgrade()
                        && let Err(e) = (Hub { inner }).refresh(&stale).await
                    {
                        tracing::warn!(error = %e, "cannot read changed catalog records again");
                    }
                });
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// The records `tx` overwrites that this process has seen as stored,
    /// unless `tx` already says what it expects of them.
    fn guards(&self, tx: &Transaction) -> Vec<(tidings_core::TableName, String, Payload)> {
        let catalog = self.catalog();
        let expected: HashSet<(&str, &str)> = tx
            .ops()
            .iter()
            .filter_map(|op| match op {
                TxOp::Expect { table, key, .. } => Some((table.as_str(), key.as_str())),
                _ => None,
            })
            .collect();
        tx.ops()
            .iter()
            .filter_map(|op| match op {
                TxOp::Put {
                    table,
                    key,
                    only_if_absent: false,
                    ..
                } if !expected.contains(&(table.as_str(), key.as_str())) => catalog
                    .stored
                    .get(&(table.to_string(), key.clone()))
                    .map(|value| (table.clone(), key.clone(), value.clone())),
                _ => None,
            })
            .collect()
    }

    /// Starts reading the feed (after the catalog is loaded), beginning
    /// with what `join` found waiting.
    pub(crate) fn follow(&self, waiting: Vec<Delivery>) {
        let Some(feed) = &self.inner.feed else {
            return;
        };
        let stop = feed.stop.clone();
        let hub = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = read(hub, waiting) => {}
            }
        });
    }

    /// Reads an action and `subs` again from the store (what is gone is
    /// removed).
    pub(crate) async fn refresh_publication(
        &self,
        action: &str,
        subs: &[Subscription],
    ) -> HubResult<()> {
        let tables = &self.inner.tables;
        let table = tables.subscriptions.to_string();
        let mut records: BTreeSet<(String, String)> =
            subs.iter().map(|s| (table.clone(), s.id.clone())).collect();
        records.insert((tables.actions.to_string(), action.to_owned()));
        self.refresh(&records).await
    }

    /// Reads an action and its application again from the store (what is
    /// gone is removed).
    pub(crate) async fn refresh_action(&self, action: &str) -> HubResult<()> {
        let tables = &self.inner.tables;
        let records = BTreeSet::from([(tables.actions.to_string(), action.to_owned())]);
        self.refresh(&records).await?;
        let application =
            self.with_catalog(|c| c.actions.get(action).map(|e| e.action.application.clone()));
        if let Some(application) = application {
            let records = BTreeSet::from([(tables.applications.to_string(), application)]);
            self.refresh(&records).await?;
        }
        Ok(())
    }

    /// Reads the records a change names again, in place of the catalog's
    /// copies (removing those that are gone).
    async fn refresh(&self, records: &BTreeSet<(String, String)>) -> HubResult<()> {
        let tables = &self.inner.tables;
        let wanted: Vec<(tidings_core::TableName, String)> = records
            .iter()
            .filter_map(|(table, key)| {
                let table = [
                    &tables.applications,
                    &tables.actions,
                    &tables.subscriptions,
                    &tables.sessions,
                ]
                .into_iter()
                .find(|t| t.as_str() == table)?;
                Some((table.clone(), key.clone()))
            })
            .collect();
        // Taken while reading, so a change this process makes meanwhile
        // (written, then applied) is never overwritten by an older reading.
        let _guard = self.inner.changes.lock().await;
        let values = self.inner.broker.get_records(&wanted).await?;
        let sealer = &self.inner.config.sealer;
        let now = self.now_ms();
        let mut catalog = self.catalog_mut();
        for ((table, key), value) in wanted.iter().zip(values) {
            let place = (table.to_string(), key.clone());
            match &value {
                Some(v) => catalog.stored.insert(place, v.clone()),
                None => catalog.stored.remove(&place),
            };
            if *table == tables.applications {
                match value {
                    Some(v) => {
                        catalog.put_application(open::<Application>(sealer, table, key, &v)?)
                    }
                    None => catalog.remove_application(key),
                }
            } else if *table == tables.actions {
                let action = match value {
                    Some(v) => Some(crate::tables::decode::<Action>(table, key, &v)?),
                    None => None,
                };
                match action.map(|a| (Schema::compile(&a.schemata), a)) {
                    Some((Ok(schema), action)) => catalog.put_action(action, schema),
                    Some((Err(reasons), _)) => {
                        tracing::error!(action = %key, ?reasons, "stored schema does not compile; action skipped");
                        catalog.actions.remove(key);
                    }
                    None => {
                        catalog.actions.remove(key);
                    }
                }
            } else if *table == tables.subscriptions {
                match value {
                    Some(v) => {
                        catalog.put_subscription(open::<Subscription>(sealer, table, key, &v)?);
                    }
                    None => {
                        catalog.subscriptions.remove(key);
                    }
                }
            } else {
                let session = match value {
                    Some(v) => Some(open::<super::sessions::Session>(sealer, table, key, &v)?),
                    None => None,
                };
                match session.filter(|s| s.expires_at > now) {
                    Some(session) => catalog.sessions.insert(key.clone(), session),
                    None => catalog.sessions.remove(key),
                };
            }
        }
        drop(catalog);
        self.changed();
        Ok(())
    }
}

/// A stored catalog record, its secrets opened.
fn open<T: serde::de::DeserializeOwned + HoldsSecrets>(
    sealer: &crate::sealing::Sealer,
    table: &tidings_core::TableName,
    key: &str,
    value: &tidings_core::Payload,
) -> HubResult<T> {
    let record = crate::tables::decode::<T>(table, key, value)?;
    Ok(sealer
        .open_record(table.as_str(), key, record)
        .map_err(|e| tidings_core::Error::Corrupt {
            location: format!("the secrets of record {key:?} of table {table}"),
            detail: e.to_string(),
        })?)
}

/// The feed's reading loop, until the hub is dropped.
async fn read(hub: Weak<Inner>, mut received: Vec<Delivery>) {
    // Whether changes may have been missed: the whole catalog is loaded
    // again at the next chance.
    let mut behind = false;
    loop {
        let Some(inner) = hub.upgrade() else { return };
        let hub_now = Hub { inner };
        let Some(feed) = &hub_now.inner.feed else {
            return;
        };
        if behind {
            match hub_now.reload_catalog().await {
                Ok(()) => {
                    tracing::info!("catalog loaded again after an interruption of its change feed");
                    behind = false;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the catalog again; retrying");
                    drop(hub_now);
                    tokio::time::sleep(PAUSE).await;
                    continue;
                }
            }
        }
        let mut records = BTreeSet::new();
        let mut ids: Vec<MessageId> = Vec::with_capacity(received.len());
        for delivery in received.drain(..) {
            ids.push(delivery.id.clone());
            match delivery.payload.json::<Change>() {
                Ok(change) if change.origin == feed.process => {}
                Ok(change) => records.extend(change.records),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable message in the catalog feed; loading the whole catalog");
                    behind = true;
                }
            }
        }
        if !records.is_empty()
            && let Err(e) = hub_now.refresh(&records).await
        {
            tracing::warn!(error = %e, "cannot read changed catalog records; loading the whole catalog");
            behind = true;
        }
        let (broker, queue, group, consumer) = (
            hub_now.inner.broker.clone(),
            feed.queue.clone(),
            feed.group.clone(),
            feed.consumer.clone(),
        );
        // Not kept while waiting: dropping the hub ends the loop.
        drop(hub_now);
        match broker
            .ack_and_receive(
                &queue,
                &group,
                &consumer,
                &ids,
                ReceiveOptions::new(100, WAIT),
            )
            .await
        {
            Ok((_, deliveries)) => received = deliveries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog's change feed; the catalog is loaded again once it can");
                behind = true;
                tokio::time::sleep(PAUSE).await;
            }
        }
    }
}
