//! Retention: what the hub removes, when, and how (docs/retention.md).
//!
//! - A deduper is remembered for its action's dedup window: each is listed
//!   at publish in `hub.expiring_dedupers` under its expiry time, so expired
//!   ones are found by a range read, never by a scan of the dedupers.
//! - A delivered gist goes `retain_delivered` after its delivery, a failed
//!   one (with its dead letter) `retain_failed` after it died; pending and
//!   retrying gists stay.
//! - An event goes once it is older than its action's retention and none of
//!   its deliveries is pending or retrying. Events are listed per action at
//!   publish in `hub.events_by_action`, so each action's expired events are
//!   a key range.
//!
//! A sweep works in batches of `batch` records, each one transaction, and
//! reads the time from the hub's clock; the server runs one every
//! `interval`. After each batch it rests `rest` times as long as the batch
//! took, so a large purge takes a bounded share of the machine and the
//! publishes and deliveries waiting behind a batch's commit are few.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Broker, RecordScan, Transaction};

use super::Hub;
use crate::error::HubResult;
use crate::ids::{parse_event_row, row_key_at, row_time};
use crate::indexes::delete_gist;
use crate::model::{Event, Gist, GistStatus};
use crate::tables::{deduper_key, get, scan};

/// How long the hub keeps what it stores.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Events (`None`: forever), unless their action says otherwise.
    pub events: Option<Duration>,
    /// Delivered gists, from their delivery (`None`: forever).
    pub delivered: Option<Duration>,
    /// Failed gists and their dead letters, from their death (`None`: forever).
    pub failed: Option<Duration>,
    /// Dedupers, from their publish, unless their action says otherwise.
    pub dedup_window: Duration,
    /// Audit log entries (`None`: forever).
    pub audit: Option<Duration>,
    /// Records per transaction of a sweep.
    pub batch: usize,
    /// Rest after each batch, as a multiple of the time the batch took
    /// (1.0: a sweep works at most half the time; 0: no rest).
    pub rest: f64,
    /// Time between sweeps (the server's).
    pub interval: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

impl Default for RetentionPolicy {
    /// Events 30 days, delivered gists 7, failed ones 30, dedupers a day.
    fn default() -> Self {
        Self {
            events: Some(DAY * 30),
            delivered: Some(DAY * 7),
            failed: Some(DAY * 30),
            dedup_window: DAY,
            audit: Some(DAY * 365),
            batch: 100,
            rest: 1.0,
            interval: Duration::from_secs(60),
        }
    }
}

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swept {
    /// Events.
    pub events: u64,
    /// Gists (delivered and failed).
    pub gists: u64,
    /// Dead letters of the failed gists removed.
    pub dead_letters: u64,
    /// Dedupers.
    pub dedupers: u64,
    /// Audit log entries.
    pub audit: u64,
    /// Queue messages and dedup ids the broker removed as their time came
    /// (`Broker::maintain`: idle queues too).
    pub queues: u64,
}

/// What `hub.expiring_dedupers` holds: the deduper and its event.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExpiringDeduper {
    pub(crate) deduper: String,
    pub(crate) event: String,
}

/// The key of a deduper in `hub.expiring_dedupers`: its expiry first.
pub(crate) fn expiring_key(expires_at: u64, event: &str) -> String {
    format!("{expires_at:016x}\n{event}")
}

/// The key of an event in `hub.events_by_action`.
pub(crate) fn by_action_key(action: &str, event: &str) -> String {
    format!("{action}\n{event}")
}

/// Paces a sweep's batches: each `rest` sleeps `ratio` times as long as
/// the work since the previous one.
struct Pace {
    since: tokio::time::Instant,
    ratio: f64,
}

impl Pace {
    fn new(ratio: f64) -> Self {
        Self {
            since: tokio::time::Instant::now(),
            ratio: if ratio.is_finite() {
                ratio.max(0.0)
            } else {
                0.0
            },
        }
    }

    async fn rest(&mut self) {
        let worked = self.since.elapsed();
        if self.ratio > 0.0 {
            tokio::time::sleep(worked.mul_f64(self.ratio)).await;
        }
        self.since = tokio::time::Instant::now();
    }
}

/// How often a sweep looks again at events that were held by an unsettled
/// delivery (by the hub's clock). Between, an event whose last delivery
/// settled while an older one is still unsettled waits: it goes at most this
/// long after it could have.
pub const HELD_RECHECK: Duration = Duration::from_secs(15 * 60);

/// What sweeps remember between runs. Lost at a restart, which costs the
/// first sweep a look at every held event.
#[derive(Debug, Default)]
pub(crate) struct SweepProgress {
    /// Per action, the first `hub.events_by_action` key not looked at yet:
    /// every one before it was removed or held at its last look.
    cursors: std::collections::HashMap<String, String>,
    /// When held events were last looked at (hub's clock, ms).
    held_checked_at: Option<u64>,
}

/// Lets the runtime's other tasks run before the next record of a batch:
/// an embedded store's reads never wait, so without it a batch would hold
/// its worker thread from its first read to its commit, and the publishes
/// and deliveries queued on that thread would wait as long.
async fn let_others_run() {
    tokio::task::yield_now().await;
}

/// `scan` from just after `after` (from the start without one): a sweep's
/// batches read on from the last one's end, never again over the records
/// the sweep removed (tombstones, until compacted, that every read from the
/// start would step over: a purge of a million would read a million per
/// batch).
fn resume(scan: RecordScan, after: Option<&str>) -> RecordScan {
    match after {
        Some(key) => scan.after(key),
        None => scan,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Hub {
    fn policy(&self) -> &RetentionPolicy {
        &self.inner.config.retention
    }

    /// How long `action`'s events are kept (`None`: forever).
    pub(crate) fn event_retention(&self, action: &str) -> Option<Duration> {
        self.catalog()
            .actions
            .get(action)
            .and_then(|a| a.action.retention_secs)
            .map(Duration::from_secs)
            .or(self.policy().events)
    }

    /// How long the dedupers of `action`'s events are remembered.
    pub(crate) fn dedup_window_of(&self, action: &crate::model::Action) -> Duration {
        action
            .dedup_window_secs
            .map_or(self.policy().dedup_window, Duration::from_secs)
    }

    /// Removes what the retention policy says is due, in batches.
    pub async fn sweep(&self) -> HubResult<Swept> {
        let now = self.now_ms();
        let pace = &mut Pace::new(self.policy().rest);
        let mut swept = Swept {
            dedupers: self.sweep_dedupers(now, pace).await?,
            ..Swept::default()
        };
        let (gists, dead_letters) = self.sweep_gists(now, pace).await?;
        swept.gists = gists;
        swept.dead_letters = dead_letters;
        swept.events = self.sweep_events(now, pace).await?;
        swept.audit = self.sweep_audit(now, pace).await?;
        swept.queues = self.broker().maintain().await?;
        let metrics = &self.inner.metrics;
        for (kind, n) in [
            ("events", swept.events),
            ("gists", swept.gists),
            ("dead_letters", swept.dead_letters),
            ("dedupers", swept.dedupers),
            ("audit", swept.audit),
            ("queues", swept.queues),
        ] {
            metrics
                .retention_removed
                .get_or_create(&crate::metrics::KindLabels { kind })
                .inc_by(n);
        }
        metrics
            .last_sweep_ms
            .store(self.now_ms(), std::sync::atomic::Ordering::Relaxed);
        Ok(swept)
    }

    /// Forgets dedupers whose window has passed.
    async fn sweep_dedupers(&self, now: u64, pace: &mut Pace) -> HubResult<u64> {
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let range = resume(RecordScan::all(), after.as_deref())
                .to(format!("{now:016x}\n\u{10ffff}"))
                .limit(self.policy().batch);
            let due = scan::<ExpiringDeduper>(broker, &tables.expiring_dedupers, range).await?;
            let Some((last, _)) = due.last() else {
                return Ok(removed);
            };
            after = Some(last.clone());
            let mut tx = Transaction::new();
            for (key, entry) in &due {
                let_others_run().await;
                tx.delete(tables.expiring_dedupers.clone(), key.clone());
                if self.deduper_of(&entry.deduper, &entry.event).await? {
                    tx.delete(tables.dedupers.clone(), entry.deduper.clone());
                    removed += 1;
                }
            }
            broker.commit(tx).await?;
            pace.rest().await;
        }
    }

    /// Removes audit entries older than their retention (their keys are
    /// time-ordered: a key range).
    async fn sweep_audit(&self, now: u64, pace: &mut Pace) -> HubResult<u64> {
        let Some(keep) = self.policy().audit else {
            return Ok(0);
        };
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        let horizon = row_key_at(now.saturating_sub(ms(keep)));
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let range = resume(RecordScan::all(), after.as_deref())
                .to(horizon.clone())
                .limit(self.policy().batch);
            let due = broker.scan_records(&tables.audit, range).await?;
            let Some(last) = due.last() else {
                return Ok(removed);
            };
            after = Some(last.key.clone());
            let mut tx = Transaction::new();
            for record in due {
                tx.delete(tables.audit.clone(), record.key);
                removed += 1;
            }
            broker.commit(tx).await?;
            pace.rest().await;
        }
    }

    /// Whether the deduper record `key` still points to `event`.
    async fn deduper_of(&self, key: &str, event: &str) -> HubResult<bool> {
        let record: Option<serde_json::Value> =
            get(&**self.broker(), &self.inner.tables.dedupers, key).await?;
        Ok(record.is_some_and(|r| r["event"] == event))
    }

    /// Removes delivered and failed gists past their retention (and the
    /// failed ones' dead letters), and the unsettled gists of removed
    /// subscriptions once as old as failed ones. Each is read from the index
    /// of its subscription and status, whose keys start with the event's
    /// time-ordered id: only gists of events older than the retention are
    /// looked at, and of those only the ones settled late stay to be looked
    /// at again.
    async fn sweep_gists(&self, now: u64, pace: &mut Pace) -> HubResult<(u64, u64)> {
        let policy = self.policy().clone();
        let counts = crate::indexes::Counts::read(&**self.broker(), &self.inner.tables).await?;
        let (mut removed, mut letters) = (0, 0);
        for sub in counts.gists.keys() {
            let removed_sub = !self.catalog().subscriptions.contains_key(sub);
            for status in crate::indexes::STATUSES {
                let keep = match status {
                    GistStatus::Delivered => policy.delivered,
                    GistStatus::Failed => policy.failed,
                    // Left unsettled by a removed subscription: nothing will
                    // deliver it, so it goes as a failed one would.
                    GistStatus::Pending | GistStatus::Retrying if removed_sub => policy.failed,
                    GistStatus::Pending | GistStatus::Retrying => None,
                };
                let Some(keep) = keep.filter(|_| counts.gists_of(sub, status) > 0) else {
                    continue;
                };
                let (r, l) = self.sweep_gists_in(sub, status, keep, now, pace).await?;
                removed += r;
                letters += l;
            }
        }
        Ok((removed, letters))
    }

    /// Removes `sub`'s gists in `status` that are due after `keep`.
    async fn sweep_gists_in(
        &self,
        sub: &str,
        status: GistStatus,
        keep: Duration,
        now: u64,
        pace: &mut Pace,
    ) -> HubResult<(u64, u64)> {
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        let due = |gist: &Gist| {
            let since = match gist.status {
                GistStatus::Delivered => gist.delivered_at,
                GistStatus::Failed => gist.dead_at,
                GistStatus::Pending | GistStatus::Retrying => Some(gist.created_at),
            };
            gist.status == status && since.is_some_and(|at| at.saturating_add(ms(keep)) <= now)
        };
        let prefix = crate::indexes::by_status_key(sub, status, "");
        let horizon = format!("{prefix}{}", row_key_at(now.saturating_sub(ms(keep))));
        let (mut removed, mut letters) = (0, 0);
        let mut from = prefix.clone();
        loop {
            let range = RecordScan::all()
                .from(from.clone())
                .to(horizon.clone())
                .limit(self.policy().batch);
            let entries = broker.scan_records(&tables.gists_by_status, range).await?;
            let Some(last) = entries.last().map(|r| r.key.clone()) else {
                return Ok((removed, letters));
            };
            let mut tx = Transaction::new();
            let mut dead = HashSet::new();
            let mut died_by = 0;
            let mut removing = 0;
            for entry in &entries {
                let_others_run().await;
                let key = entry.key.strip_prefix(&prefix).unwrap_or_default();
                let Some(stored) = crate::indexes::read_gist(broker, tables, key).await? else {
                    continue;
                };
                if due(&stored.gist) {
                    if status == GistStatus::Failed {
                        died_by = died_by.max(stored.gist.dead_at.unwrap_or(now));
                        dead.insert(stored.gist.event.clone());
                    }
                    delete_gist(&mut tx, tables, &stored);
                    removing += 1;
                }
            }
            let committed = broker.commit(tx).await;
            pace.rest().await;
            match committed {
                Ok(_) => removed += removing,
                // A gist of the batch changed meanwhile (a replay or a
                // requeue): the batch is read again.
                Err(tidings_core::Error::RecordChanged { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
            if !dead.is_empty() {
                letters += self.purge_dead_letters_of(sub, &dead, died_by).await?;
            }
            from = format!("{last}\0");
        }
    }

    /// Removes events past their action's retention whose deliveries are
    /// all settled (delivered, failed, or removed), with their index entry
    /// and their deduper.
    ///
    /// Events older than the oldest unsettled delivery are held by nothing
    /// and go unread. Younger ones are looked at one by one; those held stay
    /// behind the action's cursor, and later sweeps resume past them, looking
    /// at them again only every [`HELD_RECHECK`]: held events cost a sweep
    /// nothing, however many there are (a subscriber down for longer than
    /// the retention holds all of its events).
    async fn sweep_events(&self, now: u64, pace: &mut Pace) -> HubResult<u64> {
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        let oldest_unsettled = self.oldest_unsettled().await?;
        let recheck = {
            let progress = self.progress();
            progress
                .held_checked_at
                .is_none_or(|at| at.saturating_add(ms(HELD_RECHECK)) <= now)
        };
        let mut removed = 0;
        for action in self.indexed_actions().await? {
            let Some(keep) = self.event_retention(&action) else {
                continue;
            };
            let horizon = by_action_key(&action, &row_key_at(now.saturating_sub(ms(keep))));
            let cursor = if recheck {
                None
            } else {
                self.progress().cursors.get(&action).cloned()
            };
            // Events from `unsettled_from` on may be held; those before the
            // cursor were at the last look, and are skipped (unless it is
            // time to look at them again).
            let unsettled_from = oldest_unsettled
                .as_deref()
                .map(|event| by_action_key(&action, event));
            let skipped = match (&unsettled_from, cursor) {
                (Some(from), Some(to)) if *from < to => Some((from.clone(), to)),
                _ => None,
            };
            let mut from = format!("{action}\n");
            loop {
                let mut to = horizon.clone();
                if let Some((skip_from, skip_to)) = &skipped {
                    if from >= *skip_from && from < *skip_to {
                        from.clone_from(skip_to);
                    } else if from < *skip_from && *skip_from < to {
                        to.clone_from(skip_from);
                    }
                }
                let range = RecordScan::all()
                    .from(from.clone())
                    .to(to.clone())
                    .limit(self.policy().batch);
                let batch = broker.scan_records(&tables.events_by_action, range).await?;
                let Some(last) = batch.last().map(|r| r.key.clone()) else {
                    if to < horizon {
                        from = to;
                        continue;
                    }
                    break;
                };
                let mut tx = Transaction::new();
                let mut removing = 0;
                for record in &batch {
                    let_others_run().await;
                    let key = &record.key;
                    let id = key.rsplit('\n').next().unwrap_or_default();
                    let maybe_held = unsettled_from.as_ref().is_some_and(|u| key >= u);
                    if maybe_held && self.has_unsettled_delivery(id).await? {
                        continue;
                    }
                    tx.delete(tables.events_by_action.clone(), key.clone());
                    if let Some(event) = get::<Event>(broker, &tables.events, id).await? {
                        tx.delete(tables.events.clone(), id.to_owned());
                        crate::indexes::count_event(&mut tx, tables, &event.action, -1);
                        if let Some(deduper) = &event.deduper {
                            let key = deduper_key(&event.action, deduper);
                            if self.deduper_of(&key, id).await? {
                                tx.delete(tables.dedupers.clone(), key);
                            }
                        }
                        removing += 1;
                    }
                }
                if !tx.is_empty() {
                    broker.commit(tx).await?;
                    removed += removing;
                }
                pace.rest().await;
                from = format!("{last}\0");
                let mut progress = self.progress();
                let at = progress.cursors.entry(action.clone()).or_default();
                if *at < from {
                    at.clone_from(&from);
                }
            }
        }
        if recheck {
            self.progress().held_checked_at = Some(now);
        }
        Ok(removed)
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, SweepProgress> {
        self.inner
            .sweep_progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The id of the oldest event with a pending or retrying delivery to a
    /// subscription that still exists (`None`: none has one): one short read
    /// per subscription and unsettled status, from the status index (whose
    /// keys start with the event's time-ordered id).
    async fn oldest_unsettled(&self) -> HubResult<Option<String>> {
        let subs: Vec<String> = self.catalog().subscriptions.keys().cloned().collect();
        let mut oldest: Option<String> = None;
        for sub in subs {
            for status in [GistStatus::Pending, GistStatus::Retrying] {
                let prefix = crate::indexes::by_status_key(&sub, status, "");
                let first = self
                    .broker()
                    .scan_records(
                        &self.inner.tables.gists_by_status,
                        RecordScan::prefix(prefix.clone()).limit(1),
                    )
                    .await?;
                let Some(event) = first.first().and_then(|r| {
                    let gist = r.key.strip_prefix(&prefix)?;
                    gist.split('.').next().map(str::to_owned)
                }) else {
                    continue;
                };
                if oldest.as_ref().is_none_or(|o| event < *o) {
                    oldest = Some(event);
                }
            }
        }
        Ok(oldest)
    }

    /// Every action with events in `hub.events_by_action` (deleted ones
    /// too): one short read per action, each entry naming the next.
    pub(crate) async fn indexed_actions(&self) -> HubResult<Vec<String>> {
        let mut actions = Vec::new();
        let mut next = String::new();
        while let Some(first) = self
            .broker()
            .scan_records(
                &self.inner.tables.events_by_action,
                RecordScan::all().from(next.clone()).limit(1),
            )
            .await?
            .into_iter()
            .next()
        {
            let action = first.key.split('\n').next().unwrap_or_default().to_owned();
            // '\n' + 1: past every key of this action.
            next = format!("{action}\u{b}");
            actions.push(action);
        }
        Ok(actions)
    }

    /// Whether a delivery of `event` is pending or retrying (to a
    /// subscription that still exists).
    async fn has_unsettled_delivery(&self, event: &str) -> HubResult<bool> {
        // Gist keys are `{event}.{subscription}`; '/' follows '.'.
        let range = RecordScan::all()
            .from(format!("{event}."))
            .to(format!("{event}/"));
        let gists = scan::<Gist>(&**self.broker(), &self.inner.tables.gists, range).await?;
        let catalog = self.catalog();
        Ok(gists.iter().any(|(_, g)| {
            matches!(g.status, GistStatus::Pending | GistStatus::Retrying)
                && catalog.subscriptions.contains_key(&g.subscription)
        }))
    }

    /// Why event `id` is not there: a sentence for a 404.
    pub(crate) fn missing_event(&self, id: &str) -> String {
        let published = parse_event_row(id).map(row_time);
        let shortest = self
            .catalog()
            .actions
            .values()
            .filter_map(|a| a.action.retention_secs.map(Duration::from_secs))
            .chain(self.policy().events)
            .min();
        match (published, shortest) {
            (Some(at), Some(keep)) if at.saturating_add(ms(keep)) <= self.now_ms() => format!(
                "Event {id} does not exist: published {}, it is past the retention period and was \
                 removed by retention (on or after {})",
                crate::time::iso(at),
                crate::time::iso(at.saturating_add(ms(keep)))
            ),
            _ => format!("Event {id} does not exist"),
        }
    }

    /// Runs a sweep every `interval` for as long as the hub is open.
    pub(crate) fn start_retention(&self) {
        let hub = std::sync::Arc::downgrade(&self.inner);
        let interval = self.policy().interval;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(inner) = hub.upgrade() else { return };
                let hub = Hub { inner };
                match hub.sweep().await {
                    Ok(swept) if swept != Swept::default() => {
                        tracing::info!(?swept, "retention removed what was due");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "retention sweep failed; tried again later")
                    }
                }
            }
        });
    }

    /// Removes the dead letters of `events` from `sub`'s queue, the last of
    /// which died at `died_by` (hub's clock, ms). Letters are listed oldest
    /// first, so the reading stops once every event's letter is found or at
    /// a letter that died well after `died_by` (an hour: the broker's and the
    /// hub's clocks may differ), never reading the whole queue for a few.
    /// Returns how many were removed.
    pub(crate) async fn purge_dead_letters_of(
        &self,
        sub: &str,
        events: &HashSet<String>,
        died_by: u64,
    ) -> HubResult<u64> {
        const SLACK_MS: u64 = 3_600_000;
        let queue = crate::tables::subscription_queue(sub)?;
        let broker: &dyn Broker = &**self.broker();
        let mut after = None;
        let (mut found, mut purged) = (0, 0);
        while found < events.len() {
            let letters = match broker.dead_letters(&queue, after.as_ref(), 100).await {
                Ok(letters) => letters,
                Err(tidings_core::Error::QueueNotFound(_)) => return Ok(purged),
                Err(e) => return Err(e.into()),
            };
            let Some(last) = letters.last().map(|d| d.id.clone()) else {
                break;
            };
            let past = letters
                .iter()
                .any(|d| d.dead_lettered_at.as_millis() > died_by.saturating_add(SLACK_MS));
            let ids: Vec<_> = letters
                .into_iter()
                .filter(|d| {
                    d.payload
                        .json::<String>()
                        .is_ok_and(|e| events.contains(&e))
                })
                .map(|d| d.id)
                .collect();
            found += ids.len();
            if !ids.is_empty() {
                purged += broker
                    .purge_dead_letters(&queue, tidings_core::DeadLetterSelection::Ids(ids))
                    .await?;
            }
            if past {
                break;
            }
            after = Some(last);
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::Pace;
    use std::time::Duration;
    use tokio::time::Instant;

    /// On tokio's paused clock: work of 30 ms, then a rest of `ratio` times it.
    async fn rested_after_work(ratio: f64) -> Duration {
        let mut pace = Pace::new(ratio);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let rested = Instant::now();
        pace.rest().await;
        rested.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sweep_rests_in_proportion_to_its_work() {
        assert_eq!(rested_after_work(1.0).await, Duration::from_millis(30));
        assert_eq!(rested_after_work(0.5).await, Duration::from_millis(15));
        assert_eq!(rested_after_work(0.0).await, Duration::ZERO);
        assert_eq!(rested_after_work(f64::NAN).await, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rest_counts_the_work_since_the_previous_rest_only() {
        let mut pace = Pace::new(1.0);
        tokio::time::sleep(Duration::from_millis(40)).await;
        pace.rest().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let rested = Instant::now();
        pace.rest().await;
        assert_eq!(rested.elapsed(), Duration::from_millis(10));
    }
}
