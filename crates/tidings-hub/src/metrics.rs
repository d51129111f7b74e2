//! Prometheus metrics of the hub: counters and histograms updated as events
//! are published and delivered, and per-subscription queue gauges read from
//! the broker at scrape time (cheap: no scans of events or gists).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-action series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action.
    pub action: String,
}

/// Labels of attempt outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `delivered`, `retrying`, `dead_lettered`, or `deferred` (held back by an open breaker).
    pub outcome: &'static str,
}

/// Labels of what retention removes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `events`, `gists`, `dead_letters`, `dedupers`, `audit` or `queues`.
    pub kind: &'static str,
}

/// Labels of the stored deliveries' gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `pending`, `retrying`, `delivered` or `failed`.
    pub status: &'static str,
}

/// Labels of per-subscription series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    /// The subscription id.
    pub subscription: String,
    /// Its action.
    pub action: String,
    /// The subscriber.
    pub application: String,
}

/// Labels of the process's info series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProcessLabels {
    /// This process's id among those sharing the store.
    pub process: String,
    /// The version of Tidings it runs.
    pub version: &'static str,
}

/// The hub's metrics.
pub struct HubMetrics {
    registry: Registry,
    /// Events published, by action.
    pub published: Family<ActionLabels, Counter>,
    /// Delivery attempts, by outcome.
    pub attempts: Family<OutcomeLabels, Counter>,
    /// From when an event was due to its successful delivery, seconds.
    pub delivery_latency: Histogram,
    /// This process's totals since it started, as its heartbeat reports
    /// them to the others (the console's charts).
    pub activity: Activity,
    /// Duration of one webhook request, seconds.
    pub attempt_duration: Histogram,
    pub(crate) queued: Family<SubscriptionLabels, Gauge>,
    pub(crate) in_flight: Family<SubscriptionLabels, Gauge>,
    pub(crate) oldest_age: Family<SubscriptionLabels, Gauge<f64, AtomicU64>>,
    pub(crate) dead_letters: Family<SubscriptionLabels, Gauge>,
    /// What retention removed, by kind.
    pub retention_removed: Family<KindLabels, Counter>,
    /// When the last sweep ended, ms since the epoch (0: none yet).
    pub(crate) last_sweep_ms: AtomicU64,
    retention_lag: Gauge<f64, AtomicU64>,
    oldest_event_age: Gauge<f64, AtomicU64>,
    events_stored: Gauge,
    deliveries_stored: Family<StatusLabels, Gauge>,
    storage_used: Gauge,
    storage_free: Gauge,
    storage_low: Gauge,
    /// 1, labelled with this process's id and version.
    pub(crate) process_info: Family<ProcessLabels, Gauge>,
    /// Processes sharing the store that reported themselves lately, as
    /// counted at this process's last heartbeat.
    pub(crate) processes_live: Gauge,
    /// Held while the subscription gauges are replaced and the registry
    /// encoded, so a scrape never sees another's half-filled gauges.
    scrape: Mutex<()>,
}

/// The hub-wide readings of a scrape.
pub(crate) struct HubReading {
    pub(crate) storage: tidings_core::StorageUsage,
    pub(crate) storage_low: bool,
    pub(crate) oldest_event_age: f64,
    pub(crate) retention_lag: f64,
    /// Events stored (from the counters).
    pub(crate) events_stored: u64,
    /// Deliveries stored by status (from the counters).
    pub(crate) deliveries_stored: [(&'static str, u64); 4],
}

/// One subscription's queue, read at scrape time.
pub(crate) struct SubscriptionReading {
    pub(crate) labels: SubscriptionLabels,
    /// Deliveries waiting, due or delayed.
    pub(crate) waiting: u64,
    /// Deliveries being attempted.
    pub(crate) in_flight: u64,
    pub(crate) dead_letters: u64,
    /// Age of the oldest undelivered event, seconds.
    pub(crate) oldest_age: f64,
}

impl Default for HubMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("tidings");
        let published = Family::<ActionLabels, Counter>::default();
        registry.register("events_published", "Events published", published.clone());
        let attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Webhook delivery attempts by outcome",
            attempts.clone(),
        );
        // 0.5 ms to about 65 s.
        let delivery_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "delivery_latency_seconds",
            "From an event's due time to its successful delivery",
            delivery_latency.clone(),
        );
        let attempt_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "attempt_duration_seconds",
            "Duration of one webhook request",
            attempt_duration.clone(),
        );
        let queued = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "subscription_queued",
            "Deliveries waiting (due or delayed) per subscription",
            queued.clone(),
        );
        let in_flight = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "subscription_in_flight",
            "Deliveries being attempted per subscription",
            in_flight.clone(),
        );
        let oldest_age = Family::<SubscriptionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "subscription_oldest_age_seconds",
            "Age of the oldest undelivered event per subscription",
            oldest_age.clone(),
        );
        let dead_letters = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "subscription_dead_letters",
            "Dead-lettered deliveries per subscription",
            dead_letters.clone(),
        );
        let retention_removed = Family::<KindLabels, Counter>::default();
        registry.register(
            "retention_removed",
            "Records removed by retention, by kind",
            retention_removed.clone(),
        );
        let retention_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "retention_lag_seconds",
            "Time since the last retention sweep ended (since the start before the first)",
            retention_lag.clone(),
        );
        let oldest_event_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "oldest_event_age_seconds",
            "Age of the oldest stored event",
            oldest_event_age.clone(),
        );
        let events_stored = Gauge::default();
        registry.register(
            "events_stored",
            "Events stored (kept exactly with every write)",
            events_stored.clone(),
        );
        let deliveries_stored = Family::<StatusLabels, Gauge>::default();
        registry.register(
            "deliveries_stored",
            "Delivery records (gists) stored, by status (kept exactly with every write)",
            deliveries_stored.clone(),
        );
        let storage_used = Gauge::default();
        registry.register(
            "storage_used_bytes",
            "Bytes the storage takes (embedded engine: the data directory)",
            storage_used.clone(),
        );
        let storage_free = Gauge::default();
        registry.register(
            "storage_free_bytes",
            "Bytes free where the storage is (embedded engine: its disk)",
            storage_free.clone(),
        );
        let storage_low = Gauge::default();
        registry.register(
            "storage_free_below_warning",
            "1 while the free space is under --disk-free-warning",
            storage_low.clone(),
        );
        let process_info = Family::<ProcessLabels, Gauge>::default();
        registry.register(
            "process_info",
            "1, labelled with this process's id (as GET /v1/cluster shows it) and version",
            process_info.clone(),
        );
        let processes_live = Gauge::default();
        registry.register(
            "cluster_processes_live",
            "Hub processes sharing the store that reported themselves lately (at this process's last heartbeat)",
            processes_live.clone(),
        );
        Self {
            registry,
            process_info,
            processes_live,
            retention_removed,
            last_sweep_ms: AtomicU64::new(0),
            retention_lag,
            oldest_event_age,
            events_stored,
            deliveries_stored,
            storage_used,
            storage_free,
            storage_low,
            published,
            attempts,
            delivery_latency,
            activity: Activity::default(),
            attempt_duration,
            queued,
            in_flight,
            oldest_age,
            dead_letters,
            scrape: Mutex::new(()),
        }
    }
}

impl HubMetrics {
    /// Records the publish → delivery latency of one delivered event.
    pub fn delivered_after(&self, ms: u64) {
        self.delivery_latency.observe(ms as f64 / 1000.0);
        self.activity.latency.add(ms);
    }

    /// Counts one published event.
    pub fn published(&self, action: &str) {
        self.published
            .get_or_create(&ActionLabels {
                action: action.to_owned(),
            })
            .inc();
        self.activity.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one attempt's outcome.
    pub fn attempt(&self, outcome: &'static str) {
        self.attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        let total = match outcome {
            "delivered" => &self.activity.delivered,
            "retrying" | "dead_lettered" => &self.activity.failed,
            _ => return,
        };
        total.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition (OpenMetrics), with the subscription gauges set
    /// to `readings` (taken before, with the awaits they need): replacing
    /// and encoding happen under one lock, so concurrent scrapes cannot
    /// clear each other's gauges.
    pub(crate) fn encode_with(
        &self,
        readings: Vec<SubscriptionReading>,
        hub: &HubReading,
    ) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.storage_used.set(bytes(hub.storage.used_bytes));
        self.storage_free.set(bytes(hub.storage.free_bytes));
        self.storage_low.set(i64::from(hub.storage_low));
        self.oldest_event_age.set(hub.oldest_event_age);
        self.retention_lag.set(hub.retention_lag);
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.events_stored.set(gauge(hub.events_stored));
        for (status, n) in hub.deliveries_stored {
            self.deliveries_stored
                .get_or_create(&StatusLabels { status })
                .set(gauge(n));
        }
        self.queued.clear();
        self.in_flight.clear();
        self.oldest_age.clear();
        self.dead_letters.clear();
        for r in readings {
            self.queued.get_or_create(&r.labels).set(gauge(r.waiting));
            self.in_flight
                .get_or_create(&r.labels)
                .set(gauge(r.in_flight));
            self.dead_letters
                .get_or_create(&r.labels)
                .set(gauge(r.dead_letters));
            self.oldest_age.get_or_create(&r.labels).set(r.oldest_age);
        }
        self.encode()
    }

    /// The text exposition (OpenMetrics).
    fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The content type of [`crate::Hub::metrics_text`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds of the [`LatencyTally`]'s buckets, ms: 1, 2, 4 … about
/// 65 s, then everything longer.
pub const TALLY_BOUNDS_MS: [u64; 17] = [
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 32_768, 65_536,
];

/// A process's totals since it started.
#[derive(Debug, Default)]
pub struct Activity {
    /// Events published.
    pub published: AtomicU64,
    /// Attempts that delivered.
    pub delivered: AtomicU64,
    /// Attempts that failed (to be retried, or dead-lettered).
    pub failed: AtomicU64,
    /// Publish → delivery latencies of the delivered.
    pub latency: LatencyTally,
}

impl Activity {
    /// The totals now.
    pub fn totals(&self) -> ActivityTotals {
        ActivityTotals {
            published: self.published.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            latency: self.latency.counts().to_vec(),
        }
    }
}

/// [`Activity`] read at one moment (what a heartbeat stores).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActivityTotals {
    /// Events published.
    pub published: u64,
    /// Attempts that delivered.
    pub delivered: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Delivered, by latency bucket ([`TALLY_BOUNDS_MS`], then longer).
    pub latency: Vec<u64>,
}

/// Delivery latencies counted by bucket, readable at any time: a reader
/// takes two [`LatencyTally::counts`] and the difference is what was
/// delivered between them.
#[derive(Debug, Default)]
pub struct LatencyTally {
    counts: [AtomicU64; TALLY_BOUNDS_MS.len() + 1],
}

impl LatencyTally {
    /// Counts one latency.
    pub fn add(&self, ms: u64) {
        let bucket = TALLY_BOUNDS_MS
            .iter()
            .position(|bound| ms <= *bound)
            .unwrap_or(TALLY_BOUNDS_MS.len());
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The count of each bucket so far (the last: over the largest bound).
    pub fn counts(&self) -> [u64; TALLY_BOUNDS_MS.len() + 1] {
        std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed))
    }
}
