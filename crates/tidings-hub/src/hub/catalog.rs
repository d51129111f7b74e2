//! The in-memory catalog: applications, actions (with compiled schemas) and
//! subscriptions, loaded from the broker at start and kept in step with it.

use std::collections::{BTreeMap, HashMap};

use tidings_core::{Broker, Payload, RecordScan};

use crate::error::HubResult;
use crate::model::{Action, Application, Subscription};
use crate::schema::Schema;
use crate::sealing::{HoldsSecrets, Sealer};
use crate::tables::Tables;

/// Every record of a table that holds secrets, opened; each as stored goes
/// into `stored`.
pub(crate) async fn scan_sealed<T: serde::de::DeserializeOwned + HoldsSecrets>(
    broker: &dyn Broker,
    table: &tidings_core::TableName,
    sealer: &Sealer,
    stored: &mut Stored,
) -> HubResult<Vec<(String, T)>> {
    scan_stored::<T>(broker, table, stored)
        .await?
        .into_iter()
        .map(|(key, record)| {
            let opened = sealer
                .open_record(table.as_str(), &key, record)
                .map_err(|e| tidings_core::Error::Corrupt {
                    location: format!("the secrets of record {key:?} of table {table}"),
                    detail: e.to_string(),
                })?;
            Ok((key, opened))
        })
        .collect()
}

/// Every record of a table, decoded; each as stored goes into `stored`.
async fn scan_stored<T: serde::de::DeserializeOwned>(
    broker: &dyn Broker,
    table: &tidings_core::TableName,
    stored: &mut Stored,
) -> HubResult<Vec<(String, T)>> {
    let records = broker.scan_records(table, RecordScan::all()).await?;
    let mut decoded = Vec::with_capacity(records.len());
    for record in records {
        decoded.push((
            record.key.clone(),
            crate::tables::decode::<T>(table, &record.key, &record.value)?,
        ));
        stored.insert((table.to_string(), record.key), record.value);
    }
    Ok(decoded)
}

/// Catalog records exactly as this process last read or wrote them, by
/// table and key: what a write of one expects to find (compare-and-set),
/// so a change made meanwhile through another process is not overwritten.
pub(crate) type Stored = HashMap<(String, String), Payload>;

/// An action with its compiled schema.
#[derive(Debug, Clone)]
pub struct ActionEntry {
    /// The record.
    pub action: Action,
    /// Its schema, compiled.
    pub schema: Schema,
}

/// Everything the hub looks up on every request.
#[derive(Debug, Default)]
pub struct Catalog {
    /// By name.
    pub applications: BTreeMap<String, Application>,
    /// API key hash to application name.
    pub api_keys: HashMap<String, String>,
    /// By name.
    pub actions: BTreeMap<String, ActionEntry>,
    /// By id.
    pub subscriptions: BTreeMap<String, Subscription>,
    /// Session token hash to session.
    pub sessions: HashMap<String, super::sessions::Session>,
    next_action_id: u64,
    /// The records above as stored (kept only where several processes may
    /// share the store).
    pub(crate) stored: Stored,
}

impl Catalog {
    pub(crate) async fn load(
        broker: &dyn Broker,
        tables: &Tables,
        sealer: &Sealer,
        now: u64,
    ) -> HubResult<Self> {
        let mut catalog = Self::default();
        let mut stored = Stored::new();
        for (name, app) in
            scan_sealed::<Application>(broker, &tables.applications, sealer, &mut stored).await?
        {
            debug_assert_eq!(name, app.name);
            catalog.put_application(app);
        }
        for (name, action) in scan_stored::<Action>(broker, &tables.actions, &mut stored).await? {
            match Schema::compile(&action.schemata) {
                Ok(schema) => catalog.put_action(action, schema),
                // Stored schemas compiled when registered; one that no longer
                // does (a library change) is reported, not fatal.
                Err(reasons) => {
                    tracing::error!(action = %name, ?reasons, "stored schema no longer compiles; action skipped")
                }
            }
        }
        for (_, sub) in
            scan_sealed::<Subscription>(broker, &tables.subscriptions, sealer, &mut stored).await?
        {
            catalog.put_subscription(sub);
        }
        for (hash, session) in
            scan_sealed::<super::sessions::Session>(broker, &tables.sessions, sealer, &mut stored)
                .await?
        {
            if session.expires_at > now {
                catalog.sessions.insert(hash, session);
            }
        }
        catalog.stored = stored;
        Ok(catalog)
    }

    pub(crate) fn put_application(&mut self, app: Application) {
        if let Some(old) = self.applications.get(&app.name) {
            self.api_keys.remove(&old.api_key_hash);
        }
        self.api_keys
            .insert(app.api_key_hash.clone(), app.name.clone());
        self.applications.insert(app.name.clone(), app);
    }

    pub(crate) fn remove_application(&mut self, name: &str) {
        if let Some(old) = self.applications.remove(name) {
            self.api_keys.remove(&old.api_key_hash);
        }
    }

    pub(crate) fn put_action(&mut self, action: Action, schema: Schema) {
        self.next_action_id = self.next_action_id.max(action.id + 1);
        self.actions
            .insert(action.name.clone(), ActionEntry { action, schema });
    }

    pub(crate) fn next_action_id(&self) -> u64 {
        self.next_action_id.max(1)
    }

    pub(crate) fn put_subscription(&mut self, sub: Subscription) {
        self.subscriptions.insert(sub.id.clone(), sub);
    }

    /// An action by name or numeric id.
    pub fn action(&self, id_or_name: &str) -> Option<&ActionEntry> {
        self.actions.get(id_or_name).or_else(|| {
            let id: u64 = id_or_name.parse().ok()?;
            self.actions.values().find(|a| a.action.id == id)
        })
    }

    /// Active subscriptions of an action whose subscriber is active.
    pub fn deliverable(&self, action: &str) -> Vec<&Subscription> {
        self.subscriptions
            .values()
            .filter(|s| s.action == action && s.active)
            .filter(|s| {
                self.applications
                    .get(&s.application)
                    .is_some_and(|a| a.active)
            })
            .collect()
    }
}
