//! The last hour, for the overview's charts: every few seconds the server
//! reads what every live hub process has done since it started (each
//! reports its totals with its heartbeat, [`Hub::activity`]) and the
//! stored deliveries' counts, and keeps one point per reading.
//!
//! Rates and latencies are cluster-wide: the differences of each process's
//! totals between two readings, summed (a process first seen after it
//! started counts from its first reading; one that left drops out).
//! Pending, retrying and dead letters are the store's counts.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tidings_hub::Hub;
use tidings_hub::hub::cluster::ProcessActivity;
use tidings_hub::metrics::{ActivityTotals, TALLY_BOUNDS_MS};
use tidings_hub::views::Stats;
use tokio_util::sync::CancellationToken;

/// How much is kept: one hour.
pub const SPAN_MS: u64 = 3_600_000;

/// The default time between readings.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(10);

/// One point of the charts.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When it was read, ms since the epoch.
    pub at: u64,
    /// Events published per second since the reading before.
    pub published: f64,
    /// Deliveries per second.
    pub delivered: f64,
    /// Failed attempts per second.
    pub failed: f64,
    /// Median publish → webhook latency of what was delivered, ms.
    pub p50: Option<f64>,
    /// Its 99th percentile, ms.
    pub p99: Option<f64>,
    /// Deliveries waiting for a first attempt.
    pub pending: u64,
    /// Deliveries waiting for another attempt.
    pub retrying: u64,
    /// Dead letters.
    pub dead: u64,
}

/// What one reading saw.
#[derive(Debug, Clone)]
pub struct Reading {
    /// When, ms since the epoch.
    pub at: u64,
    /// Each live process's totals.
    pub processes: Vec<ProcessActivity>,
    /// The store's counts.
    pub stats: Stats,
}

/// The points of the last hour.
#[derive(Default)]
pub struct Trend {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Each process's totals at the last reading: (started, totals).
    last: HashMap<String, (u64, ActivityTotals)>,
    last_at: Option<u64>,
    points: VecDeque<Point>,
}

impl Trend {
    /// Adds a reading: a point for the time since the one before (none for
    /// the first), dropping points older than an hour.
    pub fn record(&self, reading: Reading) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let previous_at = state.last_at;
        let mut sum = ActivityTotals {
            latency: vec![0; TALLY_BOUNDS_MS.len() + 1],
            ..ActivityTotals::default()
        };
        let mut next = HashMap::with_capacity(reading.processes.len());
        for process in reading.processes {
            let before = match state.last.get(&process.process) {
                Some((started, totals)) if *started == process.started => Some(totals.clone()),
                // New since the reading before: all it did is in the interval.
                _ if previous_at.is_some_and(|at| process.started >= at) => {
                    Some(ActivityTotals::default())
                }
                // Seen for the first time, older than that: from now on.
                _ => None,
            };
            if let Some(before) = before {
                add_difference(&mut sum, &process.totals, &before);
            }
            next.insert(process.process, (process.started, process.totals));
        }
        state.last = next;
        state.last_at = Some(reading.at);
        let Some(previous_at) = previous_at else {
            return;
        };
        let secs = (reading.at.saturating_sub(previous_at) as f64 / 1000.0).max(0.001);
        state.points.push_back(Point {
            at: reading.at,
            published: sum.published as f64 / secs,
            delivered: sum.delivered as f64 / secs,
            failed: sum.failed as f64 / secs,
            p50: percentile(&sum.latency, 0.50),
            p99: percentile(&sum.latency, 0.99),
            pending: reading.stats.pending,
            retrying: reading.stats.retrying,
            dead: reading.stats.failed,
        });
        let oldest = reading.at.saturating_sub(SPAN_MS);
        while state.points.front().is_some_and(|p| p.at < oldest) {
            state.points.pop_front();
        }
    }

    /// The points kept, oldest first.
    pub fn points(&self) -> Vec<Point> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.points.iter().cloned().collect()
    }

    /// Reads the hub now and records it.
    pub async fn read(&self, hub: &Hub) -> tidings_hub::HubResult<()> {
        let processes = hub.activity().await?;
        let stats = hub.stats().await?;
        self.record(Reading {
            at: hub.now_ms(),
            processes,
            stats,
        });
        Ok(())
    }

    /// Reads the hub every `every` until `shutdown`.
    pub async fn run(&self, hub: Hub, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            if let Err(e) = self.read(&hub).await {
                tracing::warn!(error = %e, "the console could not read the hub's activity");
            }
        }
    }
}

/// Adds `now - before` (counters only grow; a smaller one counts as 0).
fn add_difference(sum: &mut ActivityTotals, now: &ActivityTotals, before: &ActivityTotals) {
    sum.published += now.published.saturating_sub(before.published);
    sum.delivered += now.delivered.saturating_sub(before.delivered);
    sum.failed += now.failed.saturating_sub(before.failed);
    for (i, total) in sum.latency.iter_mut().enumerate() {
        let after = now.latency.get(i).copied().unwrap_or(0);
        let earlier = before.latency.get(i).copied().unwrap_or(0);
        *total += after.saturating_sub(earlier);
    }
}

/// The `q` quantile of latencies counted by bucket, ms: linear within the
/// bucket it falls in (the last, open bucket reads as its lower bound).
pub fn percentile(buckets: &[u64], q: f64) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, count) in buckets.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        if (below + count) as f64 >= rank {
            let lower = if i == 0 { 0 } else { TALLY_BOUNDS_MS[i - 1] } as f64;
            let Some(upper) = TALLY_BOUNDS_MS.get(i) else {
                return Some(lower);
            };
            let within = (rank - below as f64) / *count as f64;
            return Some(lower + within.clamp(0.0, 1.0) * (*upper as f64 - lower));
        }
        below += count;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pending: u64, failed: u64) -> Stats {
        Stats {
            events: 0,
            delivered: 0,
            pending,
            retrying: 0,
            failed,
            total: 0,
            attempts: 0,
            attempts_ok: 0,
            version: String::new(),
        }
    }

    fn process(id: &str, started: u64, published: u64, latencies_at_8ms: u64) -> ProcessActivity {
        let mut latency = vec![0; TALLY_BOUNDS_MS.len() + 1];
        latency[3] = latencies_at_8ms;
        ProcessActivity {
            process: id.to_owned(),
            started,
            totals: ActivityTotals {
                published,
                delivered: latencies_at_8ms,
                failed: 0,
                latency,
            },
        }
    }

    #[test]
    fn rates_are_summed_over_processes_between_readings() {
        let trend = Trend::default();
        trend.record(Reading {
            at: 10_000,
            processes: vec![process("a", 0, 100, 0)],
            stats: stats(5, 0),
        });
        assert!(trend.points().is_empty(), "one reading makes no point");
        trend.record(Reading {
            at: 20_000,
            processes: vec![process("a", 0, 300, 50), process("b", 15_000, 100, 50)],
            stats: stats(7, 2),
        });
        let points = trend.points();
        assert_eq!(points.len(), 1);
        // a: 200 more; b started in the interval: all 100 of it. Over 10 s.
        assert!((points[0].published - 30.0).abs() < 1e-9, "{points:?}");
        assert!((points[0].delivered - 10.0).abs() < 1e-9, "{points:?}");
        assert_eq!((points[0].pending, points[0].dead), (7, 2));
        let p50 = points[0].p50.unwrap_or_default();
        assert!((4.0..=8.0).contains(&p50), "{p50}");
        // a restarted (new start time) and b left: a counts from its new start.
        trend.record(Reading {
            at: 30_000,
            processes: vec![process("a", 25_000, 20, 0)],
            stats: stats(0, 2),
        });
        assert!((trend.points()[1].published - 2.0).abs() < 1e-9);
        assert_eq!(trend.points()[1].p99, None);
    }

    #[test]
    fn a_process_seen_late_counts_from_then_and_old_points_go() {
        let trend = Trend::default();
        trend.record(Reading {
            at: 1_000,
            processes: vec![],
            stats: stats(0, 0),
        });
        // Started before the first reading but not seen then: not a spike.
        trend.record(Reading {
            at: 2_000,
            processes: vec![process("a", 0, 1_000_000, 0)],
            stats: stats(0, 0),
        });
        assert_eq!(trend.points()[0].published, 0.0);
        trend.record(Reading {
            at: 2_000 + SPAN_MS + 1_000,
            processes: vec![process("a", 0, 1_000_000, 0)],
            stats: stats(0, 0),
        });
        assert_eq!(trend.points().len(), 1, "the point over an hour old went");
    }

    #[test]
    fn percentiles_fall_in_their_buckets() {
        let mut buckets = vec![0; TALLY_BOUNDS_MS.len() + 1];
        buckets[0] = 98; // ≤ 1 ms
        buckets[10] = 2; // 512–1024 ms
        let p50 = percentile(&buckets, 0.5).unwrap_or_default();
        assert!(p50 <= 1.0, "{p50}");
        let p99 = percentile(&buckets, 0.99).unwrap_or_default();
        assert!((512.0..=1024.0).contains(&p99), "{p99}");
        assert_eq!(percentile(&[0; 3], 0.5), None);
        let mut open = vec![0; TALLY_BOUNDS_MS.len() + 1];
        open[TALLY_BOUNDS_MS.len()] = 1;
        assert_eq!(percentile(&open, 0.99), Some(65_536.0));
    }
}
