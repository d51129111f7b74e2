//! Deliveries: listing them, requeueing failed ones, backfilling history.

use serde_json::Value;
use tidings_core::{
    Broker, DeadLetterSelection, OutgoingMessage, Payload, RecordScan, Transaction,
};

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::ids::row_key_at;
use crate::indexes::{
    Before, Counts, StoredGist, by_status_key, by_subscription_key, read_gist, write_gist,
};
use crate::model::{Event, Gist, GistStatus};
use crate::principal::Principal;
use crate::tables::{encode, get, page, subscription_queue};
use crate::views::{Backfilled, GistPage, GistView, Requeued, Stats};

/// `GET /v1/gists` filters.
#[derive(Debug, Default, Clone)]
pub struct GistFilter {
    /// Exact gist id.
    pub id: Option<String>,
    /// Exact event id.
    pub event: Option<String>,
    /// Exact subscription id.
    pub subscription: Option<String>,
    /// Substring of the action.
    pub action: Option<String>,
    /// Substring of the subscriber's name.
    pub subscriber: Option<String>,
    /// Status.
    pub status: Option<GistStatus>,
    /// Delivered (`true`) or not.
    pub completed: Option<bool>,
    /// Created at or after (ms).
    pub from: Option<u64>,
    /// Created before (ms).
    pub to: Option<u64>,
}

impl GistFilter {
    fn matches(&self, g: &Gist) -> bool {
        self.subscription
            .as_deref()
            .is_none_or(|s| g.subscription == s)
            && self.action.as_deref().is_none_or(|a| g.action.contains(a))
            && self
                .subscriber
                .as_deref()
                .is_none_or(|s| g.subscriber.contains(s))
            && self.status.is_none_or(|s| g.status == s)
            && self
                .completed
                .is_none_or(|c| c == (g.status == GistStatus::Delivered))
            && self.from.is_none_or(|t| g.created_at >= t)
            && self.to.is_none_or(|t| g.created_at < t)
    }

    fn range(&self) -> RecordScan {
        let range = match (&self.id, &self.event) {
            (Some(id), _) => RecordScan::prefix(id.clone()),
            (None, Some(event)) => RecordScan::prefix(format!("{event}.")),
            (None, None) => RecordScan::all(),
        };
        range.reverse()
    }
}

impl Hub {
    /// Deliveries, newest event first, with the total count of matches:
    /// those `who` may read (an application: of its own subscriptions).
    pub async fn list_gists(
        &self,
        who: &Principal,
        filter: &GistFilter,
        page_of: Page,
    ) -> HubResult<GistPage> {
        let (gists, total, total_exact) = if filter.id.is_some() || filter.event.is_some() {
            // One gist, or one event's (one per subscription).
            let (gists, total) = page(
                &**self.broker(),
                &self.inner.tables.gists,
                filter.range(),
                |g: &Gist| {
                    who.may_act_as(&g.subscriber)
                        && filter.matches(g)
                        && filter.id.as_deref().is_none_or(|id| g.key() == id)
                },
                page_of.skip(),
                page_of.size,
                true,
            )
            .await?;
            (gists, total, true)
        } else {
            self.indexed_gists(who, filter, page_of).await?
        };
        let mut data = Vec::with_capacity(gists.len());
        for gist in &gists {
            data.push(self.gist_with_event(gist, who.is_admin()).await?);
        }
        Ok(GistPage {
            data,
            total,
            total_exact,
            page: page_of.page,
            pagination: page_of.size,
            pages: total.div_ceil(page_of.size),
        })
    }

    /// A page of gists from the per-subscription indexes, newest event
    /// first, with the total from the counters (or, with a time window,
    /// counted in the indexes up to [`WINDOW_COUNT_CAP`]).
    async fn indexed_gists(
        &self,
        who: &Principal,
        filter: &GistFilter,
        page_of: Page,
    ) -> HubResult<(Vec<Gist>, usize, bool)> {
        let broker = &**self.broker();
        let sources = self.gist_sources(who, filter).await?;
        let keys = merged_keys(
            broker,
            sources.iter().map(|s| self.cursor(s, filter)).collect(),
            page_of.skip(),
            page_of.size,
        )
        .await?;
        let mut gists = Vec::with_capacity(keys.len());
        for key in keys {
            // Changed or removed since the index was read: left out.
            if let Some(gist) = get::<Gist>(broker, &self.inner.tables.gists, &key).await?
                && filter.matches(&gist)
            {
                gists.push(gist);
            }
        }
        let (total, exact) = if filter.from.is_none() && filter.to.is_none() {
            let total: u64 = sources.iter().map(|s| s.count).sum();
            (usize::try_from(total).unwrap_or(usize::MAX), true)
        } else {
            let mut counted = 0;
            for source in &sources {
                counted += self
                    .cursor(source, filter)
                    .count(broker, WINDOW_COUNT_CAP - counted)
                    .await?;
                if counted >= WINDOW_COUNT_CAP {
                    break;
                }
            }
            (counted, counted < WINDOW_COUNT_CAP)
        };
        Ok((gists, total, exact))
    }

    /// Which index ranges hold the gists `filter` (and `who`) may select:
    /// per subscription with gists, all of them or those of each status
    /// asked for, with how many there are.
    async fn gist_sources(&self, who: &Principal, filter: &GistFilter) -> HubResult<Vec<Source>> {
        let statuses: Option<Vec<GistStatus>> = match (filter.status, filter.completed) {
            (Some(s), Some(c)) if c != (s == GistStatus::Delivered) => return Ok(Vec::new()),
            (Some(s), _) => Some(vec![s]),
            (None, Some(true)) => Some(vec![GistStatus::Delivered]),
            (None, Some(false)) => Some(vec![
                GistStatus::Pending,
                GistStatus::Retrying,
                GistStatus::Failed,
            ]),
            (None, None) => None,
        };
        let counts = Counts::read(&**self.broker(), &self.inner.tables).await?;
        let mut sources = Vec::new();
        for (sub, by_status) in &counts.gists {
            if filter.subscription.as_deref().is_some_and(|s| s != sub)
                || by_status.iter().all(|&n| n == 0)
            {
                continue;
            }
            let Some((action, subscriber)) = self.subscription_of_gists(sub).await? else {
                continue;
            };
            let selected = who.may_act_as(&subscriber)
                && filter.action.as_deref().is_none_or(|a| action.contains(a))
                && filter
                    .subscriber
                    .as_deref()
                    .is_none_or(|s| subscriber.contains(s));
            if !selected {
                continue;
            }
            match &statuses {
                None => sources.push(Source {
                    sub: sub.clone(),
                    status: None,
                    count: by_status.iter().sum(),
                }),
                Some(statuses) => {
                    for &status in statuses {
                        let count = counts.gists_of(sub, status);
                        if count > 0 {
                            sources.push(Source {
                                sub: sub.clone(),
                                status: Some(status),
                                count,
                            });
                        }
                    }
                }
            }
        }
        Ok(sources)
    }

    /// The action and subscriber of a subscription's gists: from the
    /// catalog, or, for a removed subscription, from one of its gists.
    async fn subscription_of_gists(&self, sub: &str) -> HubResult<Option<(String, String)>> {
        if let Some(s) = self.catalog().subscriptions.get(sub) {
            return Ok(Some((s.action.clone(), s.application.clone())));
        }
        let broker = &**self.broker();
        let tables = &self.inner.tables;
        let first = broker
            .scan_records(
                &tables.gists_by_subscription,
                RecordScan::prefix(by_subscription_key(sub, "")).limit(1),
            )
            .await?;
        let Some(key) = first
            .first()
            .and_then(|r| r.key.split_once('\n'))
            .map(|(_, key)| key.to_owned())
        else {
            return Ok(None);
        };
        Ok(get::<Gist>(broker, &tables.gists, &key)
            .await?
            .map(|g| (g.action, g.subscriber)))
    }

    /// A cursor over one source's index range, newest first, within the
    /// filter's time window (the events' publish times).
    fn cursor(&self, source: &Source, filter: &GistFilter) -> IndexCursor {
        let tables = &self.inner.tables;
        let (table, prefix) = match source.status {
            None => (
                tables.gists_by_subscription.clone(),
                by_subscription_key(&source.sub, ""),
            ),
            Some(status) => (
                tables.gists_by_status.clone(),
                by_status_key(&source.sub, status, ""),
            ),
        };
        let mut scan = RecordScan::prefix(prefix.clone()).reverse();
        if let Some(from) = filter.from {
            scan = scan.from(format!("{prefix}{}", row_key_at(from)));
        }
        if let Some(to) = filter.to {
            scan = scan.to(format!("{prefix}{}", row_key_at(to)));
        }
        IndexCursor {
            table,
            strip: prefix.len(),
            scan,
            buffer: std::collections::VecDeque::new(),
            done: false,
        }
    }

    /// A gist's view with what Amebo's rows carry of its event: payload,
    /// metadata, `workspace` (= `metadata.workspace_id`), publisher and due time.
    async fn gist_with_event(&self, gist: &Gist, admin: bool) -> HubResult<GistView> {
        let view = gist.view(admin);
        let event: Option<Event> =
            get(&**self.broker(), &self.inner.tables.events, &gist.event).await?;
        let Some(event) = event else {
            return Ok(view);
        };
        let metadata: Value = serde_json::from_str(event.metadata.get()).unwrap_or(Value::Null);
        Ok(GistView {
            workspace: Some(metadata.get("workspace_id").cloned().unwrap_or(Value::Null)),
            metadata: Some(metadata),
            sleep_until: Some(crate::time::iso(event.due_at())),
            payload: Some(event.payload),
            publisher: Some(event.publisher),
            ..view
        })
    }

    /// One gist.
    pub async fn gist(&self, id: &str) -> HubResult<Gist> {
        get(&**self.broker(), &self.inner.tables.gists, id)
            .await?
            .ok_or_else(|| HubError::NotFound("Gist not found".to_owned()))
    }

    /// Sends failed deliveries matching `filter` again, from their first
    /// attempt. Returns how many.
    pub async fn requeue(&self, who: &Principal, filter: &GistFilter) -> HubResult<Requeued> {
        let by_sub = self.dead_gists(who, filter, "requeue").await?;
        let mut requeued = 0u64;
        for (sub, gists) in by_sub {
            requeued += self.requeue_subscription(&sub, gists).await?;
        }
        Ok(Requeued { requeued })
    }

    /// Discards failed deliveries matching `filter` (the admin): their dead
    /// letters leave the subscription's queue and their records are
    /// deleted, with their index entries and counts; the events stay.
    /// Returns how many records were deleted.
    pub async fn purge_dead_deliveries(
        &self,
        who: &Principal,
        filter: &GistFilter,
    ) -> HubResult<u64> {
        let by_sub = self.dead_gists(who, filter, "purge").await?;
        let tables = &self.inner.tables;
        let mut purged = 0u64;
        for (sub, gists) in by_sub {
            // The letters first: were it to stop between the two, what is
            // left is a failed record without a letter, which a purge
            // again removes (and a requeue skips).
            let events: std::collections::HashSet<String> =
                gists.iter().map(|g| g.gist.event.clone()).collect();
            let died_by = gists
                .iter()
                .filter_map(|g| g.gist.dead_at)
                .max()
                .unwrap_or_else(|| self.now_ms());
            self.purge_dead_letters_of(&sub, &events, died_by).await?;
            for stored in &gists {
                let mut tx = Transaction::new();
                crate::indexes::delete_gist(&mut tx, tables, stored);
                match self.broker().commit(tx).await {
                    Ok(_) => purged += 1,
                    // Written meanwhile (a replay delivered it): kept.
                    Err(tidings_core::Error::RecordChanged { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(purged)
    }

    /// The failed deliveries matching `filter`, by subscription (the admin
    /// only: `doing` names what for).
    async fn dead_gists(
        &self,
        who: &Principal,
        filter: &GistFilter,
        doing: &str,
    ) -> HubResult<std::collections::BTreeMap<String, Vec<StoredGist>>> {
        if !who.is_admin() {
            return Err(HubError::Forbidden(format!(
                "Only a superadmin can {doing} deliveries"
            )));
        }
        let filter = GistFilter {
            status: Some(filter.status.unwrap_or(GistStatus::Failed)),
            ..filter.clone()
        };
        if filter.status != Some(GistStatus::Failed) {
            return Err(HubError::unprocessable(format!(
                "only failed deliveries can be {doing}d"
            )));
        }
        let broker = &**self.broker();
        let keys = if filter.id.is_some() || filter.event.is_some() {
            let (gists, _) = page(
                broker,
                &self.inner.tables.gists,
                filter.range(),
                |g: &Gist| filter.matches(g) && filter.id.as_deref().is_none_or(|id| g.key() == id),
                0,
                usize::MAX,
                false,
            )
            .await?;
            gists.iter().map(Gist::key).collect()
        } else {
            let sources = self.gist_sources(who, &filter).await?;
            let cursors = sources.iter().map(|s| self.cursor(s, &filter)).collect();
            merged_keys(broker, cursors, 0, usize::MAX).await?
        };
        let mut by_sub: std::collections::BTreeMap<String, Vec<StoredGist>> = Default::default();
        for key in keys {
            if let Some(stored) = read_gist(broker, &self.inner.tables, &key).await?
                && filter.matches(&stored.gist)
            {
                by_sub
                    .entry(stored.gist.subscription.clone())
                    .or_default()
                    .push(stored);
            }
        }
        Ok(by_sub)
    }

    /// Requeues the dead letters of one subscription's failed gists.
    async fn requeue_subscription(&self, sub: &str, gists: Vec<StoredGist>) -> HubResult<u64> {
        let queue = subscription_queue(sub)?;
        let wanted: std::collections::HashSet<&str> =
            gists.iter().map(|g| g.gist.event.as_str()).collect();
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let letters = self
                .broker()
                .dead_letters(&queue, after.as_ref(), 500)
                .await?;
            let Some(last) = letters.last().map(|d| d.id.clone()) else {
                break;
            };
            for letter in letters {
                if let Ok(event) = letter.payload.json::<String>()
                    && wanted.contains(event.as_str())
                {
                    ids.push(letter.id);
                }
            }
            after = Some(last);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        // The gists first: a requeued delivery may be attempted (and its
        // gist written) before the requeue returns.
        let tables = &self.inner.tables;
        let mut tx = Transaction::new();
        let mut requeued = Vec::with_capacity(gists.len());
        for stored in &gists {
            let mut gist = stored.gist.clone();
            gist.status = GistStatus::Pending;
            gist.attempts = 0;
            gist.dead_at = None;
            gist.next_attempt_at = Some(self.now_ms());
            write_gist(&mut tx, tables, Before::Stored(stored), &gist)?;
            requeued.push(StoredGist {
                raw: encode(&gist)?,
                gist,
            });
        }
        self.broker().commit(tx).await?;
        match self
            .broker()
            .requeue_dead_letters(&queue, DeadLetterSelection::Ids(ids))
            .await
        {
            Ok(moved) => Ok(moved),
            Err(e) => {
                // Nothing, or only some, went back: the gists say failed
                // again (those no attempt has written since), so that a
                // later requeue finds them.
                for (failed, pending) in gists.iter().zip(&requeued) {
                    let mut undo = Transaction::new();
                    write_gist(&mut undo, tables, Before::Stored(pending), &failed.gist)?;
                    match self.broker().commit(undo).await {
                        Ok(_) | Err(tidings_core::Error::RecordChanged { .. }) => {}
                        Err(undone) => {
                            tracing::warn!(subscription = %sub, error = %undone, "cannot mark a requeued gist failed again");
                        }
                    }
                }
                Err(e.into())
            }
        }
    }

    /// Delivers the events of a subscription's action published at or after
    /// `since` (and before `until`) to that subscription. Returns how many.
    pub async fn backfill(
        &self,
        who: &Principal,
        subscription: &str,
        since: u64,
        until: Option<u64>,
        dry_run: bool,
    ) -> HubResult<Backfilled> {
        if !who.is_admin() {
            return Err(HubError::Forbidden(
                "Only a superadmin can backfill".to_owned(),
            ));
        }
        let sub = self.subscription(subscription)?;
        let now = self.now_ms();
        let removed_before = self.event_retention(&sub.action).and_then(|keep| {
            let horizon = now.saturating_sub(u64::try_from(keep.as_millis()).unwrap_or(u64::MAX));
            (since < horizon).then(|| crate::time::iso(horizon))
        });
        // The action's events of the window, from its index (not a scan of
        // the whole log).
        use super::retention::by_action_key;
        let range = RecordScan::all()
            .from(by_action_key(&sub.action, &row_key_at(since)))
            .to(until.map_or_else(
                || format!("{}\u{b}", sub.action),
                |t| by_action_key(&sub.action, &row_key_at(t)),
            ));
        let ids: Vec<String> = self
            .broker()
            .scan_records(&self.inner.tables.events_by_action, range)
            .await?
            .into_iter()
            .filter_map(|r| r.key.rsplit('\n').next().map(str::to_owned))
            .collect();
        if dry_run {
            return Ok(Backfilled {
                action: sub.action,
                subscription: sub.id,
                backfilled: None,
                count: Some(ids.len()),
                dry_run: true,
                removed_before,
            });
        }
        let mut events = Vec::with_capacity(ids.len());
        for id in &ids {
            // Gone meanwhile (retention): left out.
            if let Some(event) =
                get::<Event>(&**self.broker(), &self.inner.tables.events, id).await?
            {
                events.push(event);
            }
        }
        let queue = subscription_queue(&sub.id)?;
        for chunk in events.chunks(256) {
            let mut tx = Transaction::new();
            for event in chunk {
                let gist = Gist::pending(&event.id, &sub.action, &sub, Some(now), now);
                let stored = read_gist(&**self.broker(), &self.inner.tables, &gist.key()).await?;
                let before = stored.as_ref().map_or(Before::Absent, Before::Stored);
                write_gist(&mut tx, &self.inner.tables, before, &gist)?;
                tx.send(
                    queue.clone(),
                    OutgoingMessage::new(Payload::from_value(&event.id)?),
                );
            }
            let _fanout = self.inner.fanout.read().await;
            self.broker().commit(tx).await?;
        }
        Ok(Backfilled {
            action: sub.action,
            subscription: sub.id,
            backfilled: Some(events.len()),
            count: None,
            dry_run: false,
            removed_before,
        })
    }
}

/// The stored deliveries of one subscription, by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    /// Not yet attempted.
    pub pending: u64,
    /// Failed, to be tried again.
    pub retrying: u64,
    /// Delivered.
    pub delivered: u64,
    /// Dead-lettered.
    pub failed: u64,
    /// Attempts made.
    pub attempts: u64,
}

impl Hub {
    /// The stored deliveries of every subscription that has some, by
    /// status, from the counters kept with every write (one short read).
    pub async fn delivery_counts(
        &self,
    ) -> HubResult<std::collections::BTreeMap<String, DeliveryCounts>> {
        let counts = Counts::read(&**self.broker(), &self.inner.tables).await?;
        let mut all = std::collections::BTreeMap::new();
        for (sub, [pending, retrying, delivered, failed]) in counts.gists {
            let attempts = counts.attempts.get(&sub).copied().unwrap_or(0);
            all.insert(
                sub,
                DeliveryCounts {
                    pending,
                    retrying,
                    delivered,
                    failed,
                    attempts,
                },
            );
        }
        Ok(all)
    }

    /// Totals over the stored events and deliveries (Amebo's `/v1/stats`),
    /// from the counters kept with every write: one short read, however
    /// much is stored.
    pub async fn stats(&self) -> HubResult<Stats> {
        let counts = Counts::read(&**self.broker(), &self.inner.tables).await?;
        let mut by_status = [0u64; 4];
        for counted in counts.gists.values() {
            for (total, n) in by_status.iter_mut().zip(counted) {
                *total += n;
            }
        }
        let [pending, retrying, delivered, failed] = by_status;
        let events: u64 = counts.events.values().sum();
        let total: u64 = by_status.iter().sum();
        Ok(Stats {
            events: usize::try_from(events).unwrap_or(usize::MAX),
            delivered,
            pending,
            retrying,
            failed,
            total: usize::try_from(total).unwrap_or(usize::MAX),
            attempts: counts.attempts.values().sum(),
            attempts_ok: delivered,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }
}

/// Most index entries counted for the `total` of a listing with a time
/// window (beyond it, `total_exact` is false).
pub const WINDOW_COUNT_CAP: usize = 10_000;

/// One index range of gists: a subscription's, of one status or all.
struct Source {
    sub: String,
    status: Option<GistStatus>,
    count: u64,
}

/// Reads one index range newest first, a chunk at a time.
struct IndexCursor {
    table: tidings_core::TableName,
    /// The length of the range's key prefix (before the gist key).
    strip: usize,
    /// What is left to read.
    scan: RecordScan,
    buffer: std::collections::VecDeque<String>,
    done: bool,
}

impl IndexCursor {
    const CHUNK: usize = 256;

    /// The next gist key, without taking it.
    async fn peek(&mut self, broker: &dyn Broker) -> HubResult<Option<&String>> {
        if self.buffer.is_empty() && !self.done {
            let records = broker
                .scan_records(&self.table, self.scan.clone().limit(Self::CHUNK))
                .await?;
            self.done = records.len() < Self::CHUNK;
            if let Some(last) = records.last() {
                self.scan = self.scan.clone().to(last.key.clone());
            }
            self.buffer.extend(
                records
                    .into_iter()
                    .filter_map(|r| r.key.get(self.strip..).map(str::to_owned)),
            );
        }
        Ok(self.buffer.front())
    }

    /// Counts the entries left, up to `cap`.
    async fn count(mut self, broker: &dyn Broker, cap: usize) -> HubResult<usize> {
        let mut counted = 0;
        while counted < cap && self.peek(broker).await?.is_some() {
            let n = self.buffer.len().min(cap - counted);
            counted += n;
            self.buffer.clear();
        }
        Ok(counted)
    }
}

/// Merges index ranges newest first (gist keys start with their event's
/// time-ordered id): skips `skip` keys, returns up to `take`. Reads about
/// `skip + take` entries per range, never the whole index.
async fn merged_keys(
    broker: &dyn Broker,
    mut cursors: Vec<IndexCursor>,
    skip: usize,
    take: usize,
) -> HubResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut skipped = 0;
    while keys.len() < take {
        let mut newest: Option<(usize, String)> = None;
        for (i, cursor) in cursors.iter_mut().enumerate() {
            if let Some(key) = cursor.peek(broker).await?
                && newest.as_ref().is_none_or(|(_, k)| key > k)
            {
                newest = Some((i, key.clone()));
            }
        }
        let Some((i, key)) = newest else {
            break;
        };
        cursors[i].buffer.pop_front();
        if skipped < skip {
            skipped += 1;
        } else {
            keys.push(key);
        }
    }
    Ok(keys)
}
