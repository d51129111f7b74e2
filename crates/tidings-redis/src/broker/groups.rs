//! What a group's consumers hold, and letting go of consumers and groups.

use std::time::Duration;

use tidings_core::{ConsumerName, GroupName, MessageId, PendingDelivery, QueueName, Result};

use super::{RedisBroker, millis};
use crate::{scripts, value};

impl RedisBroker {
    /// See `lua/pending.lua`.
    pub(super) async fn pending_of(
        &self,
        queue: &QueueName,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>> {
        let config = self.config(queue).await?;
        let stream = self.layout.stream(queue)?;
        let reply = self
            .script(
                &scripts::PENDING,
                &[&stream],
                vec![
                    queue.as_str().as_bytes().to_vec(),
                    group.as_str().as_bytes().to_vec(),
                    limit.to_string().into_bytes(),
                    millis(config.visibility_timeout).to_string().into_bytes(),
                ],
            )
            .await?;
        Ok(value::items(&reply)
            .iter()
            .filter_map(|p| {
                let [id, consumer, count, visible_in] = value::items(p) else {
                    return None;
                };
                Some(PendingDelivery {
                    id: MessageId(value::text(id)?),
                    consumer: value::text(consumer)?,
                    delivery_count: u32::try_from(value::int(count)?).unwrap_or(u32::MAX),
                    visible_in: Duration::from_millis(
                        u64::try_from(value::int(visible_in)?).unwrap_or(0),
                    ),
                })
            })
            .collect())
    }

    /// See `lua/forget.lua`.
    pub(super) async fn forget_consumer_of(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool> {
        let stream = self.layout.stream(queue)?;
        let reply = self
            .script(
                &scripts::FORGET,
                &[&stream],
                vec![
                    queue.as_str().as_bytes().to_vec(),
                    group.as_str().as_bytes().to_vec(),
                    consumer.as_str().as_bytes().to_vec(),
                ],
            )
            .await?;
        Ok(value::count(&reply) == 1)
    }

    /// See `lua/ungroup.lua`.
    pub(super) async fn ungroup(&self, queue: &QueueName, group: &GroupName) -> Result<bool> {
        let config = self.config(queue).await?;
        let stream = self.layout.stream(queue)?;
        let [max_len, max_age] = Self::retention_args(&config);
        let reply = self
            .script(
                &scripts::UNGROUP,
                &[&stream],
                vec![
                    queue.as_str().as_bytes().to_vec(),
                    group.as_str().as_bytes().to_vec(),
                    max_len,
                    max_age,
                ],
            )
            .await?;
        // A receive of this process makes it anew (it owes what is stored then).
        self.mark_group(queue, group, false);
        Ok(value::count(&reply) == 1)
    }
}
