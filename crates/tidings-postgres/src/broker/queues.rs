//! Creating, describing, tidying and deleting queues.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tidings_core::{
    ConsumerInfo, ConsumerName, Error, ExpiryAction, GroupInfo, GroupName, MessageId,
    PendingDelivery, QueueConfig, QueueInfo, QueueName, Result, StorageUsage, Timestamp,
};

use super::{QueueMeta, Shared, millis, parse_config};

/// Messages a look at a queue expires or trims at most.
const TIDY_BATCH: i32 = 1000;

impl Shared {
    pub(super) async fn create(&self, queue: &QueueName, config: QueueConfig) -> Result<bool> {
        config.validate()?;
        let text = serde_json::to_string(&config).map_err(Error::storage)?;
        let opt_ms = |d: Option<Duration>| d.map(millis);
        let max_len = config
            .retention
            .max_len
            .map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        let (text, visibility, max_deliveries) = (
            &text,
            millis(config.visibility_timeout),
            i32::try_from(config.max_deliveries).unwrap_or(i32::MAX),
        );
        let (ttl, dead_letter, window, max_age) = (
            opt_ms(config.default_ttl),
            config.on_expiry == ExpiryAction::DeadLetter,
            millis(config.dedup_window),
            opt_ms(config.retention.max_age),
        );
        let created = self
            .attempt(false, move |client| async move {
                let statement = client.prepare_cached(&self.sql.create_queue).await?;
                let row = client
                    .query_opt(
                        &statement,
                        &[
                            &queue.as_str(),
                            text,
                            &visibility,
                            &max_deliveries,
                            &ttl,
                            &dead_letter,
                            &window,
                            &max_len,
                            &max_age,
                        ],
                    )
                    .await?;
                Ok(row.map(|r| r.get::<_, i64>(0)))
            })
            .await
            .map_err(|f| f.into_error(false))?;
        if let Some(id) = created {
            self.queues
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(queue.clone(), Arc::new(QueueMeta { id, config }));
            return Ok(true);
        }
        self.forget(queue);
        let existing = self.queue_meta(queue).await?;
        if existing.config == config {
            Ok(false)
        } else {
            Err(Error::QueueConfigConflict(queue.to_string()))
        }
    }

    pub(super) async fn list(&self) -> Result<Vec<QueueName>> {
        let rows = self
            .attempt(false, move |client| async move {
                let statement = client.prepare_cached(&self.sql.list_queues).await?;
                Ok(client.query(&statement, &[]).await?)
            })
            .await
            .map_err(|f| f.into_error(false))?;
        rows.iter()
            .map(|row| QueueName::new(row.get::<_, String>(0)))
            .collect()
    }

    pub(super) async fn info(&self, queue: &QueueName) -> Result<QueueInfo> {
        let (counts, groups, consumers) = self
            .on_queue(queue, false, move |client, meta| async move {
                let tidy = client.prepare_cached(&self.sql.tidy).await?;
                client.execute(&tidy, &[&meta.id, &TIDY_BATCH]).await?;
                let statement = client.prepare_cached(&self.sql.queue_counts).await?;
                let Some(counts) = client.query_opt(&statement, &[&meta.id]).await? else {
                    return Err(crate::error::Failure::Domain(Error::QueueNotFound(
                        queue.to_string(),
                    )));
                };
                let now: i64 = counts.get(8);
                let statement = client.prepare_cached(&self.sql.group_counts).await?;
                let groups = client.query(&statement, &[&meta.id, &now]).await?;
                let statement = client.prepare_cached(&self.sql.consumer_counts).await?;
                let consumers = client.query(&statement, &[&meta.id]).await?;
                Ok((counts, groups, consumers))
            })
            .await?;
        let count = |i: usize| u64::try_from(counts.get::<_, i64>(i)).unwrap_or(0);
        let now: i64 = counts.get(8);
        let oldest: Option<i64> = counts.get(6);
        let mut infos = Vec::with_capacity(groups.len());
        for row in &groups {
            let id: i64 = row.get(0);
            let group_count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
            infos.push(GroupInfo {
                name: GroupName::new(row.get::<_, String>(1))?,
                ready: group_count(2),
                delayed: group_count(3),
                pending: group_count(4),
                consumers: consumers
                    .iter()
                    .filter(|c| c.get::<_, i64>(0) == id)
                    .map(|c| ConsumerInfo {
                        name: c.get(1),
                        last_seen: timestamp(c.get(2)),
                        pending: u64::try_from(c.get::<_, i64>(3)).unwrap_or(0),
                    })
                    .collect(),
            });
        }
        Ok(QueueInfo {
            name: queue.clone(),
            config: parse_config(queue, counts.get(0))?,
            created_at: timestamp(counts.get(1)),
            length: count(4),
            retained: count(5),
            oldest_message_age: oldest
                .map(|t| Duration::from_millis(u64::try_from(now.saturating_sub(t)).unwrap_or(0))),
            groups: infos,
            dead_letters: count(7),
            expired_total: count(2),
            dead_lettered_total: count(3),
        })
    }

    pub(super) async fn delete(&self, queue: &QueueName) -> Result<()> {
        let deleted = self
            .on_queue(queue, false, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.drop_queue).await?;
                client.execute(&statement, &[&meta.id]).await?;
                Ok(())
            })
            .await;
        self.forget(queue);
        deleted
    }

    pub(super) async fn purge(&self, queue: &QueueName) -> Result<u64> {
        self.on_queue(queue, false, move |client, meta| async move {
            let statement = client.prepare_cached(&self.sql.purge).await?;
            let row = client.query_one(&statement, &[&meta.id]).await?;
            Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
        })
        .await
    }

    pub(super) async fn pending(
        &self,
        queue: &QueueName,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .on_queue(queue, false, move |client, meta| async move {
                let statement = client.prepare_cached(&self.sql.pending).await?;
                Ok(client
                    .query(&statement, &[&meta.id, &group.as_str(), &limit])
                    .await?)
            })
            .await?;
        Ok(rows
            .iter()
            .map(|row| PendingDelivery {
                id: MessageId(row.get::<_, i64>(0).to_string()),
                consumer: row.get(1),
                delivery_count: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
                visible_in: Duration::from_millis(u64::try_from(row.get::<_, i64>(3)).unwrap_or(0)),
            })
            .collect())
    }

    pub(super) async fn forget_consumer(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        self.on_queue(queue, true, move |client, meta| async move {
            let statement = client.prepare_cached(&self.sql.forget_consumer).await?;
            let removed = client
                .execute(&statement, &[&meta.id, &group.as_str(), &consumer.as_str()])
                .await?;
            Ok(removed > 0)
        })
        .await
    }

    pub(super) async fn delete_group(&self, queue: &QueueName, group: &GroupName) -> Result<bool> {
        self.on_queue(queue, true, move |client, meta| async move {
            let statement = client.prepare_cached(&self.sql.delete_group).await?;
            let row = client
                .query_one(&statement, &[&meta.id, &group.as_str()])
                .await?;
            Ok(row.get::<_, bool>(0))
        })
        .await
    }

    /// Expires, trims and forgets dedup ids, queue by queue, in bounded steps.
    pub(super) async fn tidy_all(&self) -> Result<u64> {
        self.attempt(false, move |mut client| async move {
            let statement = client.prepare_cached(&self.sql.queue_ids).await?;
            let ids: Vec<i64> = client
                .query(&statement, &[])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let tidy = client.prepare_cached(&self.sql.tidy).await?;
            let mut removed = 0u64;
            for id in ids {
                let row = client.query_one(&tidy, &[&id, &TIDY_BATCH]).await?;
                removed += u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            }
            let forget = client.prepare_cached(&self.sql.forget_dedup).await?;
            removed += client.execute(&forget, &[&i64::from(TIDY_BATCH)]).await?;
            // Counters' deltas are not messages: folded, not counted.
            crate::counters::fold(&mut client, &self.sql.fold_counters).await?;
            Ok(removed)
        })
        .await
        .map_err(|f| f.into_error(false))
    }

    pub(super) async fn usage(&self) -> Result<StorageUsage> {
        let used = self
            .attempt(false, move |client| async move {
                let statement = client.prepare_cached(&self.sql.usage).await?;
                let row = client
                    .query_one(&statement, &[&self.options.schema.as_str()])
                    .await?;
                Ok(row.get::<_, i64>(0))
            })
            .await
            .map_err(|f| f.into_error(false))?;
        Ok(StorageUsage {
            used_bytes: u64::try_from(used).ok(),
            free_bytes: None,
        })
    }
}

/// A time the functions wrote.
pub(super) fn timestamp(ms: i64) -> Timestamp {
    Timestamp(u64::try_from(ms).unwrap_or(0))
}
