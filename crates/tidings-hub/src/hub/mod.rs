//! [`Hub`]: the event hub's operations over any [`Broker`].
//!
//! The catalog (applications, actions with compiled schemas, subscriptions)
//! is kept in memory and written through to the broker's records; events and
//! gists are read from the broker. A publish is one broker transaction: the
//! event, its deduper, a gist and a queued delivery per active subscription.

pub(crate) mod actions;
mod applications;
mod audit;
mod catalog;
pub mod cluster;
mod events;
mod feed;
mod gists;
pub mod retention;
pub mod sessions;
mod subscriptions;
mod upgrades;

pub use actions::{ActionUpdate, NewAction};
pub use applications::{ApplicationUpdate, NewApplication, SecretRotation};
pub use audit::AuditFilter;
pub use catalog::Catalog;
pub use events::{EventFilter, NewEvent, Published};
pub(crate) use feed::member_name;
pub use gists::{DeliveryCounts, GistFilter};
pub use subscriptions::{NewSubscription, SigningKeyRotation};

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use tidings_core::{Broker, Clock};
use tokio::sync::watch;

use crate::destination::{DestinationPolicy, Destinations};
use crate::error::HubResult;
use crate::ids::RowIds;
use crate::metrics::{HubMetrics, SubscriptionLabels, SubscriptionReading};
use crate::sealing::{HoldsSecrets, Sealer};
use crate::tables::Tables;
pub use retention::{HELD_RECHECK, RetentionPolicy, Swept};

/// Settings of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Attempts per delivery when a subscription does not say (8: with the
    /// default schedule the last one is about 21 minutes after the first).
    pub default_max_retries: u32,
    /// Whole-request timeout of one webhook attempt. A delivery left in
    /// flight by a crash is retried this long plus 5 s later.
    pub attempt_timeout: Duration,
    /// Where webhooks may go (by default: public addresses only).
    pub destinations: DestinationPolicy,
    /// Actions an application may have (1,000).
    pub max_actions_per_application: usize,
    /// Largest schema, bytes of JSON (64 KiB).
    pub max_schema_bytes: usize,
    /// Bytes of schema all of an application's actions may have together
    /// (4 MiB): with the number of actions, what bounds the memory the
    /// hub's compiled schemas take.
    pub max_schema_bytes_per_application: usize,
    /// Where the hub reads the time for its rules (grace periods of
    /// rotated secrets, sessions): the system clock, or a test's.
    pub clock: Clock,
    /// The keys stored secrets are sealed with (none: stored in clear).
    pub sealer: Arc<Sealer>,
    /// How long events, deliveries and dedupers are kept.
    pub retention: RetentionPolicy,
    /// Free bytes under which `/readyz` and `/metrics` warn (`None`: never).
    pub disk_free_warning: Option<u64>,
    /// How often this process reports itself in `hub.processes` (5 s); it
    /// is shown as not live after three missed reports.
    pub heartbeat: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            default_max_retries: 8,
            attempt_timeout: Duration::from_secs(10),
            destinations: DestinationPolicy::default(),
            max_actions_per_application: 1000,
            max_schema_bytes: 64 * 1024,
            max_schema_bytes_per_application: 4 * 1024 * 1024,
            clock: Clock::System,
            sealer: Arc::new(Sealer::none()),
            retention: RetentionPolicy::default(),
            disk_free_warning: Some(1 << 30),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// A page of a list: `page` is 1-based, `size` at most [`MAX_PAGE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Which page.
    pub page: usize,
    /// Items per page.
    pub size: usize,
}

/// Largest page size.
pub const MAX_PAGE: usize = 100;

impl Page {
    /// Amebo's rules: page from 1, size 15 by default, at most 100, values below 1 mean the default.
    pub fn new(page: Option<i64>, size: Option<i64>) -> Self {
        let page = page.filter(|p| *p >= 1).map_or(1, |p| p as usize);
        let size = size
            .filter(|s| *s >= 1)
            .map_or(15, |s| (s as usize).min(MAX_PAGE));
        Self { page, size }
    }

    /// How many matches come before this page.
    pub fn skip(&self) -> usize {
        (self.page - 1).saturating_mul(self.size)
    }

    /// This page's items of a full list.
    pub fn slice<T: Clone>(&self, all: &[T]) -> Vec<T> {
        all.iter()
            .skip(self.skip())
            .take(self.size)
            .cloned()
            .collect()
    }
}

impl Default for Page {
    fn default() -> Self {
        Self::new(None, None)
    }
}

/// The event hub. Cheap to clone.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use serde_json::json;
/// use tidings_hub::hub::{EventFilter, NewAction, NewApplication, NewEvent};
/// use tidings_hub::{Hub, Page, Principal};
///
/// let broker = Arc::new(tidings_embedded::EmbeddedBroker::in_memory());
/// let hub = Hub::open(broker, Default::default()).await?;
/// let admin = Principal::Admin;
/// hub.create_application(&admin, NewApplication {
///     application: "shop".into(),
///     address: "http://127.0.0.1:9000".into(),
///     secret: None,
///     description: None,
///     queues: None,
/// }).await?;
/// hub.register_action(&admin, NewAction {
///     action: "order.placed".into(),
///     application: "shop".into(),
///     schemata: json!({"type": "object", "required": ["order_id"]}),
///     retention: None,
///     dedup_window: None,
/// }).await?;
/// let shop = Principal::Application("shop".into());
/// let new = |payload: &str| serde_json::from_value::<NewEvent>(json!({
///     "action": "order.placed", "deduper": "o-1",
///     "payload": serde_json::from_str::<serde_json::Value>(payload).unwrap(),
/// })).unwrap();
/// let first = hub.publish(&shop, new(r#"{"order_id": "o-1"}"#), None).await?;
/// let again = hub.publish(&shop, new(r#"{"order_id": "o-1"}"#), None).await?;
/// assert!(!first.duplicate && again.duplicate);
/// assert!(hub.publish(&shop, new("{}"), None).await.is_err()); // schema: order_id required
/// let log = hub.list_events(&shop, &EventFilter::default(), Page::default()).await?;
/// assert_eq!(log.len(), 1);
/// # Ok::<_, tidings_hub::HubError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) config: HubConfig,
    pub(crate) tables: Tables,
    catalog: RwLock<Catalog>,
    /// Serialises catalog changes (check, write, apply).
    pub(crate) changes: tokio::sync::Mutex<()>,
    /// Publishes hold it shared while they fan out; removing a subscription
    /// queue holds it exclusively, so no publish sends to a deleted queue.
    pub(crate) fanout: tokio::sync::RwLock<()>,
    pub(crate) rows: RowIds,
    /// Bumped on every catalog change: the dispatcher watches it.
    pub(crate) version: watch::Sender<u64>,
    pub(crate) metrics: HubMetrics,
    pub(crate) destinations: Arc<Destinations>,
    /// Checks large payloads off the async workers.
    pub(crate) checker: crate::schema::Checker,
    /// When it was opened, by its clock.
    pub(crate) opened_at: u64,
    /// Where retention's sweeps of events resume.
    pub(crate) sweep_progress: std::sync::Mutex<retention::SweepProgress>,
    /// This process's place in the catalog's change feed (none on an
    /// exclusive storage).
    pub(crate) feed: Option<feed::Feed>,
    /// This process's id (random at each open): its consumer names, the
    /// owner of the leases it holds.
    pub(crate) process: String,
    /// Set once this process has left the cluster (stopped gracefully):
    /// its heartbeat no longer reports it.
    pub(crate) left: std::sync::atomic::AtomicBool,
    /// Live processes sharing the store, as counted at the last heartbeat
    /// (at least 1: this one).
    pub(crate) live_processes: std::sync::atomic::AtomicUsize,
}

impl Hub {
    /// Opens the hub on `broker`: loads the catalog from its records and
    /// registers the built-in application and the dead-letter action.
    pub async fn open(broker: Arc<dyn Broker>, config: HubConfig) -> HubResult<Self> {
        let tables = Tables::new()?;
        let process = crate::ids::random_id()[..16].to_owned();
        let feed = if broker.exclusive() {
            None
        } else {
            Some(feed::Feed::new(&process)?)
        };
        // Joined before loading: a change is in what is loaded or waits.
        let waiting = match &feed {
            Some(feed) => feed.join(&*broker).await?,
            None => Vec::new(),
        };
        let mut catalog =
            Catalog::load(&*broker, &tables, &config.sealer, config.clock.now()).await?;
        if feed.is_none() {
            // Alone on its store: the catalog is the truth, nothing to guard.
            catalog.stored = Default::default();
        }
        let hub = Self {
            inner: Arc::new(Inner {
                broker,
                tables,
                catalog: RwLock::new(catalog),
                changes: tokio::sync::Mutex::new(()),
                fanout: tokio::sync::RwLock::new(()),
                rows: RowIds::default(),
                version: watch::channel(0).0,
                metrics: HubMetrics::default(),
                destinations: Arc::new(Destinations::new(config.destinations.clone())),
                checker: crate::schema::Checker::default(),
                opened_at: config.clock.now(),
                sweep_progress: std::sync::Mutex::default(),
                feed,
                process,
                left: std::sync::atomic::AtomicBool::new(false),
                live_processes: std::sync::atomic::AtomicUsize::new(1),
                config,
            }),
        };
        hub.follow(waiting);
        hub.ensure_builtins().await?;
        hub.index_stored().await?;
        hub.start_retention();
        hub.inner
            .metrics
            .process_info
            .get_or_create(&crate::metrics::ProcessLabels {
                process: hub.inner.process.clone(),
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        hub.beat().await?;
        hub.start_heartbeat();
        if hub.inner.config.sealer.enabled() {
            let resealing = hub.clone();
            tokio::spawn(async move {
                if let Err(e) = resealing.reseal().await {
                    tracing::error!(error = %e, "re-sealing stored secrets failed; it is tried again at the next start");
                }
            });
        }
        Ok(hub)
    }

    /// Reads the catalog from the store again, in place of the one in memory.
    pub(crate) async fn reload_catalog(&self) -> HubResult<()> {
        let config = &self.inner.config;
        let mut catalog = Catalog::load(
            &*self.inner.broker,
            &self.inner.tables,
            &config.sealer,
            config.clock.now(),
        )
        .await?;
        if self.inner.feed.is_none() {
            catalog.stored = Default::default();
        }
        *self.catalog_mut() = catalog;
        self.changed();
        Ok(())
    }

    /// The broker underneath.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    /// Where its webhooks may go (the server adds its listen addresses).
    pub fn destinations(&self) -> &Arc<Destinations> {
        &self.inner.destinations
    }

    /// The settings.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// This process's id among the hub processes sharing its store (random
    /// at each open).
    pub fn process_id(&self) -> &str {
        &self.inner.process
    }

    /// Watches catalog changes (the value is a change counter).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// The time by the hub's clock, ms since the epoch.
    pub fn now_ms(&self) -> u64 {
        self.inner.config.clock.now()
    }

    pub(crate) fn catalog(&self) -> RwLockReadGuard<'_, Catalog> {
        self.inner
            .catalog
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn catalog_mut(&self) -> RwLockWriteGuard<'_, Catalog> {
        self.inner
            .catalog
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes a record that holds secrets, sealed.
    pub(crate) async fn write_record<T: serde::Serialize + HoldsSecrets + Clone>(
        &self,
        table: &tidings_core::TableName,
        key: &str,
        value: &T,
    ) -> HubResult<()> {
        let mut tx = tidings_core::Transaction::new();
        self.put_sealed(&mut tx, table, key, value)?;
        self.commit(tx).await?;
        Ok(())
    }

    /// Adds to `tx` a record that holds secrets, sealed.
    pub(crate) fn put_sealed<T: serde::Serialize + HoldsSecrets + Clone>(
        &self,
        tx: &mut tidings_core::Transaction,
        table: &tidings_core::TableName,
        key: &str,
        value: &T,
    ) -> HubResult<()> {
        let sealed = self
            .inner
            .config
            .sealer
            .seal_record(table.as_str(), key, value);
        crate::tables::put(tx, table, key, &sealed)
    }

    pub(crate) fn changed(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    /// The metrics.
    pub fn metrics(&self) -> &HubMetrics {
        &self.inner.metrics
    }

    /// The Prometheus text exposition, with each subscription's queue read now.
    pub async fn metrics_text(&self) -> HubResult<String> {
        let subs: Vec<_> = self.with_catalog(|c| {
            c.subscriptions
                .values()
                .map(|s| SubscriptionLabels {
                    subscription: s.id.clone(),
                    action: s.action.clone(),
                    application: s.application.clone(),
                })
                .collect()
        });
        let mut readings = Vec::with_capacity(subs.len());
        for labels in subs {
            let queue = crate::tables::subscription_queue(&labels.subscription)?;
            let info = match self.inner.broker.queue_info(&queue).await {
                Ok(info) => info,
                Err(tidings_core::Error::QueueNotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            let group = info
                .groups
                .iter()
                .find(|g| g.name == self.inner.tables.group);
            let (waiting, in_flight) =
                group.map_or((info.length, 0), |g| (g.ready + g.delayed, g.pending));
            let oldest_age = if waiting + in_flight > 0 {
                info.oldest_message_age.map_or(0.0, |a| a.as_secs_f64())
            } else {
                0.0
            };
            readings.push(SubscriptionReading {
                labels,
                waiting,
                in_flight,
                dead_letters: info.dead_letters,
                oldest_age,
            });
        }
        let now = self.now_ms();
        let storage = self.inner.broker.storage_usage().await?;
        let oldest = crate::tables::scan::<serde_json::Value>(
            &*self.inner.broker,
            &self.inner.tables.events,
            tidings_core::RecordScan::all().limit(1),
        )
        .await?;
        let oldest_event_age = oldest
            .first()
            .and_then(|(id, _)| crate::ids::parse_event_row(id))
            .map_or(0.0, |row| {
                now.saturating_sub(crate::ids::row_time(row)) as f64 / 1000.0
            });
        let last = self
            .inner
            .metrics
            .last_sweep_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        let since = if last == 0 {
            self.inner.opened_at
        } else {
            last
        };
        let stats = self.stats().await?;
        let hub = crate::metrics::HubReading {
            storage,
            storage_low: self.storage_low(&storage),
            oldest_event_age,
            retention_lag: now.saturating_sub(since) as f64 / 1000.0,
            events_stored: stats.events as u64,
            deliveries_stored: [
                ("pending", stats.pending),
                ("retrying", stats.retrying),
                ("delivered", stats.delivered),
                ("failed", stats.failed),
            ],
        };
        Ok(self.inner.metrics.encode_with(readings, &hub))
    }

    /// Whether the free space is under the warning threshold.
    fn storage_low(&self, storage: &tidings_core::StorageUsage) -> bool {
        self.inner
            .config
            .disk_free_warning
            .zip(storage.free_bytes)
            .is_some_and(|(warn, free)| free < warn)
    }

    /// What `/readyz` should warn of while still ready: free space under
    /// `disk_free_warning`.
    pub async fn storage_warnings(&self) -> HubResult<Vec<String>> {
        let storage = self.inner.broker.storage_usage().await?;
        Ok(if self.storage_low(&storage) {
            vec![format!(
                "the storage's disk has {} bytes free, under the warning threshold of {} \
                 (--disk-free-warning); free space or expect writes to fail",
                storage.free_bytes.unwrap_or(0),
                self.inner.config.disk_free_warning.unwrap_or(0)
            )]
        } else {
            Vec::new()
        })
    }

    /// Reads the catalog.
    pub fn with_catalog<T>(&self, f: impl FnOnce(&Catalog) -> T) -> T {
        f(&self.catalog())
    }
}
