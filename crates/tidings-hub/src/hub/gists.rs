//! Deliveries: listing them, requeueing failed ones, backfilling history.

use serde_json::Value;
use tidings_core::{DeadLetterSelection, OutgoingMessage, Payload, RecordScan, Transaction};

use super::{Hub, Page};
use crate::error::{HubError, HubResult};
use crate::ids::row_key_at;
use crate::model::{Event, Gist, GistStatus};
use crate::principal::Principal;
use crate::tables::{get, page, put, subscription_queue};
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
        let mut data = Vec::with_capacity(gists.len());
        for gist in &gists {
            data.push(self.gist_with_event(gist, who.is_admin()).await?);
        }
        Ok(GistPage {
            data,
            total,
            page: page_of.page,
            pagination: page_of.size,
            pages: total.div_ceil(page_of.size),
        })
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
        if !who.is_admin() {
            return Err(HubError::Forbidden(
                "Only a superadmin can requeue deliveries".to_owned(),
            ));
        }
        let filter = GistFilter {
            status: Some(filter.status.unwrap_or(GistStatus::Failed)),
            ..filter.clone()
        };
        if filter.status != Some(GistStatus::Failed) {
            return Err(HubError::unprocessable(
                "only failed deliveries can be requeued",
            ));
        }
        let (gists, _) = page(
            &**self.broker(),
            &self.inner.tables.gists,
            filter.range(),
            |g: &Gist| filter.matches(g),
            0,
            usize::MAX,
            false,
        )
        .await?;
        let mut by_sub: std::collections::BTreeMap<String, Vec<Gist>> = Default::default();
        for gist in gists {
            by_sub
                .entry(gist.subscription.clone())
                .or_default()
                .push(gist);
        }
        let mut requeued = 0u64;
        for (sub, gists) in by_sub {
            requeued += self.requeue_subscription(&sub, gists).await?;
        }
        Ok(Requeued { requeued })
    }

    /// Requeues the dead letters of one subscription's failed gists.
    async fn requeue_subscription(&self, sub: &str, gists: Vec<Gist>) -> HubResult<u64> {
        let queue = subscription_queue(sub)?;
        let wanted: std::collections::HashSet<&str> =
            gists.iter().map(|g| g.event.as_str()).collect();
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
        let mut tx = Transaction::new();
        let mut undo = Transaction::new();
        for mut gist in gists {
            put(&mut undo, &self.inner.tables.gists, gist.key(), &gist)?;
            gist.status = GistStatus::Pending;
            gist.attempts = 0;
            gist.dead_at = None;
            gist.next_attempt_at = Some(self.now_ms());
            put(&mut tx, &self.inner.tables.gists, gist.key(), &gist)?;
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
                // again, so that a later requeue finds them.
                if let Err(undone) = self.broker().commit(undo).await {
                    tracing::warn!(subscription = %sub, error = %undone, "cannot mark requeued gists failed again");
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
                put(&mut tx, &self.inner.tables.gists, gist.key(), &gist)?;
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

/// What `/v1/stats` needs of a gist.
#[derive(serde::Deserialize)]
struct GistCount {
    status: GistStatus,
    attempts: u32,
}

impl Hub {
    /// Totals over the stored events and deliveries (Amebo's `/v1/stats`).
    /// Reads every event and gist record: meant for occasional use; `/metrics`
    /// is the cheap, continuous view.
    pub async fn stats(&self) -> HubResult<Stats> {
        let broker = &**self.broker();
        let (_, events) = page(
            broker,
            &self.inner.tables.events,
            RecordScan::all(),
            |_: &serde::de::IgnoredAny| true,
            0,
            0,
            true,
        )
        .await?;
        let mut counts = [0u64; 4];
        let mut attempts = 0u64;
        let (_, total) = page(
            broker,
            &self.inner.tables.gists,
            RecordScan::all(),
            |g: &GistCount| {
                counts[g.status as usize] += 1;
                attempts += u64::from(g.attempts);
                true
            },
            0,
            0,
            true,
        )
        .await?;
        let [pending, retrying, delivered, failed] = counts;
        Ok(Stats {
            events,
            delivered,
            pending,
            retrying,
            failed,
            total,
            attempts,
            attempts_ok: delivered,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }
}
