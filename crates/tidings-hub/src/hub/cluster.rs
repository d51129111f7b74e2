//! The processes sharing a store: each reports itself in `hub.processes`
//! (id, version, when it started, its last heartbeat) every
//! [`HubConfig::heartbeat`](super::HubConfig::heartbeat); [`Hub::cluster`]
//! lists them with the owners of the ordered subscriptions' leases.
//!
//! Liveness is judged by the reader's clock against the writer's: a process
//! is live while its last heartbeat is less than three intervals old, so
//! clocks that differ by more than an interval or two make a live process
//! look missing (never the other way round for long: a missing process's
//! record stops changing). A process that stops gracefully removes its
//! record; the record of one that died is removed by the others once it
//! has been silent for [`FORGET_AFTER`].

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{RecordScan, Transaction};
use tidings_patterns::lease::Holder;

use super::Hub;
use crate::error::HubResult;
use crate::metrics::ActivityTotals;
use crate::tables::{encode, scan};
use crate::time::iso;
use crate::views::{ClusterView, LeaseView, ProcessView};

/// How long the record of a process that stopped beating is kept (it shows
/// as not live meanwhile), before a live process removes it.
pub const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Heartbeats missed before a process is shown as not live.
const MISSED: u32 = 3;

/// What a process writes about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ProcessRecord {
    /// The version of Tidings it runs.
    pub(crate) version: String,
    /// When it opened the hub (its clock, ms since the epoch).
    pub(crate) started: u64,
    /// Its last heartbeat (its clock, ms since the epoch).
    pub(crate) heartbeat: u64,
    /// Its operating-system process id.
    pub(crate) pid: u32,
    /// The machine's name, where it can be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<String>,
    /// Its totals since it started, at its last heartbeat.
    #[serde(default)]
    pub(crate) activity: ActivityTotals,
}

/// What one process has done since it started, as last reported.
#[derive(Debug, Clone)]
pub struct ProcessActivity {
    /// The process's id.
    pub process: String,
    /// When it started (its clock, ms since the epoch).
    pub started: u64,
    /// Its totals.
    pub totals: ActivityTotals,
}

/// The machine's name (Linux), if readable.
fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

impl Hub {
    /// Reports this process alive now in `hub.processes`, and removes the
    /// records of processes silent for longer than [`FORGET_AFTER`]. The
    /// hub calls it when it opens and then every heartbeat interval.
    pub async fn beat(&self) -> HubResult<()> {
        let inner = &self.inner;
        if inner.left.load(Ordering::Relaxed) {
            return Ok(());
        }
        let now = self.now_ms();
        let record = ProcessRecord {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started: inner.opened_at,
            heartbeat: now,
            pid: std::process::id(),
            host: host_name(),
            activity: inner.metrics.activity.totals(),
        };
        let mut tx = Transaction::new();
        tx.put(
            inner.tables.processes.clone(),
            inner.process.clone(),
            encode(&record)?,
        );
        inner.broker.commit(tx).await?;
        let forget_before = now.saturating_sub(FORGET_AFTER.as_millis() as u64);
        let mut live = 0;
        for stored in inner
            .broker
            .scan_records(&inner.tables.processes, RecordScan::all())
            .await?
        {
            let Ok(other) = serde_json::from_str::<ProcessRecord>(stored.value.as_str()) else {
                continue;
            };
            if self.is_live(&other, now) {
                live += 1;
            }
            if other.heartbeat < forget_before {
                // Only if it is still as read: a process that came back
                // keeps its record.
                let mut tx = Transaction::new();
                tx.expect(
                    inner.tables.processes.clone(),
                    stored.key.clone(),
                    Some(stored.value),
                )
                .delete(inner.tables.processes.clone(), stored.key.clone());
                match inner.broker.commit(tx).await {
                    // This process removed it: it sweeps after it.
                    Ok(_) => self.sweep_after(&stored.key).await,
                    Err(tidings_core::Error::RecordChanged { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        inner.metrics.processes_live.set(live);
        let live = usize::try_from(live).unwrap_or(1).max(1);
        if inner.live_processes.swap(live, Ordering::Relaxed) != live {
            // Subscriptions' lanes are shared out anew (see the dispatcher).
            self.changed();
        }
        Ok(())
    }

    /// What each live process sharing the store has done since it started:
    /// this one's totals as they are now, the others' as their last
    /// heartbeat reported them.
    pub async fn activity(&self) -> HubResult<Vec<ProcessActivity>> {
        let inner = &self.inner;
        let now = self.now_ms();
        let mut all = vec![ProcessActivity {
            process: inner.process.clone(),
            started: inner.opened_at,
            totals: inner.metrics.activity.totals(),
        }];
        for (id, record) in
            scan::<ProcessRecord>(&*inner.broker, &inner.tables.processes, RecordScan::all())
                .await?
        {
            if id != inner.process && self.is_live(&record, now) {
                all.push(ProcessActivity {
                    process: id,
                    started: record.started,
                    totals: record.activity,
                });
            }
        }
        Ok(all)
    }

    /// Live processes sharing the store (at least 1), as counted at this
    /// process's last heartbeat. A subscription's `concurrency` is shared
    /// out among them.
    pub fn live_processes(&self) -> usize {
        self.inner.live_processes.load(Ordering::Relaxed)
    }

    fn is_live(&self, record: &ProcessRecord, now: u64) -> bool {
        let window = self.inner.config.heartbeat.as_millis() as u64 * u64::from(MISSED);
        record.heartbeat.saturating_add(window) >= now
    }

    /// Starts the heartbeat: every interval until the hub is dropped. A
    /// failed beat is logged and tried at the next interval.
    pub(crate) fn start_heartbeat(&self) {
        let hub = std::sync::Arc::downgrade(&self.inner);
        let every = self.inner.config.heartbeat;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = hub.upgrade() else { return };
                if let Err(e) = (Hub { inner }).beat().await {
                    tracing::warn!(error = %e, "heartbeat not recorded; tried again at the next");
                }
            }
        });
    }

    /// Removes this process's record and stops its heartbeat: called when
    /// it stops gracefully, so the others do not list it as missing.
    pub async fn leave(&self) -> HubResult<()> {
        let inner = &self.inner;
        inner.left.store(true, Ordering::Relaxed);
        // Its feed is read no more: the group can go.
        if let Some(feed) = &inner.feed {
            feed.stop();
        }
        let mut tx = Transaction::new();
        tx.delete(inner.tables.processes.clone(), inner.process.clone());
        inner.broker.commit(tx).await?;
        self.sweep_after(&inner.process).await;
        Ok(())
    }

    /// Lets go of what process `process` left in the store once it is gone
    /// (stopped gracefully, or silent for [`FORGET_AFTER`]): its group of
    /// the catalog's feed, and its name among the consumers of each
    /// subscription. A name still holding deliveries stays (they come back
    /// to the group after their visibility timeout). Failures are logged:
    /// what is left behind takes room, it does not change any answer.
    async fn sweep_after(&self, process: &str) {
        let inner = &self.inner;
        let name = super::feed::member_name(process);
        let (Ok(group), Ok(consumer)) = (
            tidings_core::GroupName::new(name.clone()),
            tidings_core::ConsumerName::new(name),
        ) else {
            return;
        };
        if inner.feed.is_some()
            && let Ok(feed) = super::feed::queue()
            && let Err(e) = inner.broker.delete_group(&feed, &group).await
        {
            tracing::warn!(process, error = %e, "cannot delete the catalog feed's group of a process that is gone");
        }
        let subscriptions: Vec<String> = self.catalog().subscriptions.keys().cloned().collect();
        let mut kept = 0u64;
        for sub in subscriptions {
            let Ok(queue) = crate::tables::subscription_queue(&sub) else {
                continue;
            };
            match inner
                .broker
                .forget_consumer(&queue, &inner.tables.group, &consumer)
                .await
            {
                Ok(_) | Err(tidings_core::Error::QueueNotFound(_)) => {}
                Err(e) => {
                    kept += 1;
                    tracing::debug!(process, subscription = %sub, error = %e, "cannot forget a consumer");
                }
            }
        }
        if kept > 0 {
            tracing::warn!(
                process,
                subscriptions = kept,
                "the consumer name of a process that is gone stays in some subscriptions' groups"
            );
        }
    }

    /// The processes sharing this store and which one delivers each ordered
    /// subscription.
    pub async fn cluster(&self) -> HubResult<ClusterView> {
        let inner = &self.inner;
        let now = self.now_ms();
        let mut processes: Vec<ProcessView> =
            scan::<ProcessRecord>(&*inner.broker, &inner.tables.processes, RecordScan::all())
                .await?
                .into_iter()
                .map(|(id, p)| ProcessView {
                    live: self.is_live(&p, now),
                    this: id == inner.process,
                    id,
                    version: p.version,
                    started: iso(p.started),
                    heartbeat: iso(p.heartbeat),
                    pid: p.pid,
                    host: p.host,
                })
                .collect();
        processes.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
        let ordered = scan::<Holder>(&*inner.broker, &inner.tables.leases, RecordScan::all())
            .await?
            .into_iter()
            .map(|(subscription, holder)| LeaseView {
                subscription,
                process: holder.owner,
            })
            .collect();
        Ok(ClusterView {
            this: inner.process.clone(),
            heartbeat: iso_duration(inner.config.heartbeat),
            processes,
            ordered,
        })
    }
}

/// `5s`, `250ms`: how intervals are shown.
fn iso_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}
