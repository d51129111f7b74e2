//! Indexes and counters built once, at open, for what a store held before
//! they existed (later writes keep them in their own transactions).

use serde::{Deserialize, Serialize};
use tidings_core::{RecordScan, Transaction};

use super::Hub;
use super::retention::by_action_key;
use crate::error::HubResult;
use crate::model::{Event, Gist};
use crate::tables::{decode, get, put, scan};

/// How far counting a store written before the counters existed has got
/// (kept in `hub.meta` with each batch it counts, so a crash neither loses
/// nor doubles a count).
#[derive(Debug, Default, Serialize, Deserialize)]
struct CountProgress {
    /// The last event counted.
    events_after: Option<String>,
    /// Every event is counted.
    events_done: bool,
    /// The last gist indexed and counted.
    gists_after: Option<String>,
    /// Every gist is indexed and counted.
    gists_done: bool,
}

impl Hub {
    /// Builds what stores written by earlier versions lack.
    pub(crate) async fn index_stored(&self) -> HubResult<()> {
        self.index_events_by_action().await?;
        self.count_stored().await
    }

    /// Lists every stored event in `hub.events_by_action`, once: events
    /// stored before the index existed (a marker in `hub.meta` says it
    /// was done).
    pub(crate) async fn index_events_by_action(&self) -> HubResult<()> {
        const MARKER: &str = "events_by_action";
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        if get::<serde_json::Value>(broker, &tables.meta, MARKER)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let mut from = String::new();
        let mut indexed = 0u64;
        loop {
            let range = RecordScan::all()
                .from(from.clone())
                .limit(self.inner.config.retention.batch);
            let batch = scan::<Event>(broker, &tables.events, range).await?;
            let Some(last) = batch.last().map(|(k, _)| k.clone()) else {
                break;
            };
            let mut tx = Transaction::new();
            for (id, event) in &batch {
                put(
                    &mut tx,
                    &tables.events_by_action,
                    by_action_key(&event.action, id),
                    &(),
                )?;
            }
            broker.commit(tx).await?;
            indexed += batch.len() as u64;
            from = format!("{last}\0");
        }
        let mut tx = Transaction::new();
        put(
            &mut tx,
            &tables.meta,
            MARKER,
            &serde_json::json!({"indexed": indexed}),
        )?;
        broker.commit(tx).await?;
        if indexed > 0 {
            tracing::info!(indexed, "stored events indexed by action (once)");
        }
        Ok(())
    }

    /// Counts the stored events and gists into `hub.counts`, and indexes
    /// the gists by subscription and status, once.
    async fn count_stored(&self) -> HubResult<()> {
        const MARKER: &str = "counts";
        let tables = &self.inner.tables;
        let broker = &**self.broker();
        let batch_size = self.inner.config.retention.batch;
        let mut counted = (0u64, 0u64);
        loop {
            // Each batch moves the progress from what was read: processes
            // starting together count every batch once (the others' moves
            // fail and they read the progress again).
            let stored = broker.get_record(&tables.meta, MARKER).await?;
            let mut progress: CountProgress = stored
                .as_ref()
                .map(|raw| decode(&tables.meta, MARKER, raw))
                .transpose()?
                .unwrap_or_default();
            let mut tx = Transaction::new();
            tx.expect(tables.meta.clone(), MARKER, stored);
            let (events, gists) = if !progress.events_done {
                let range = progress
                    .events_after
                    .as_deref()
                    .map_or_else(RecordScan::all, |after| RecordScan::all().after(after));
                let batch = scan::<Event>(broker, &tables.events, range.limit(batch_size)).await?;
                match batch.last() {
                    Some((last, _)) => progress.events_after = Some(last.clone()),
                    None => progress.events_done = true,
                }
                for (_, event) in &batch {
                    crate::indexes::count_event(&mut tx, tables, &event.action, 1);
                }
                (batch.len() as u64, 0)
            } else if !progress.gists_done {
                let range = progress
                    .gists_after
                    .as_deref()
                    .map_or_else(RecordScan::all, |after| RecordScan::all().after(after));
                let batch = scan::<Gist>(broker, &tables.gists, range.limit(batch_size)).await?;
                match batch.last() {
                    Some((last, _)) => progress.gists_after = Some(last.clone()),
                    None => progress.gists_done = true,
                }
                for (_, gist) in &batch {
                    crate::indexes::index_new_gist(&mut tx, tables, gist);
                }
                (0, batch.len() as u64)
            } else {
                break;
            };
            put(&mut tx, &tables.meta, MARKER, &progress)?;
            match broker.commit(tx).await {
                Ok(_) => {
                    counted.0 += events;
                    counted.1 += gists;
                }
                Err(tidings_core::Error::RecordChanged { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if counted != (0, 0) {
            tracing::info!(
                events = counted.0,
                gists = counted.1,
                "stored events and deliveries counted and indexed (once)"
            );
        }
        Ok(())
    }
}
