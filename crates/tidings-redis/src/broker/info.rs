//! Queue counts, read in one script run.

use std::time::Duration;

use serde::Deserialize;
use tidings_core::{
    ConsumerInfo, Error, GroupInfo, GroupName, QueueConfig, QueueInfo, QueueName, Result, Timestamp,
};

use super::RedisBroker;
use crate::scripts;
use crate::wire::entry::id_millis;

#[derive(Deserialize)]
struct RawInfo {
    now: u64,
    length: u64,
    retained: u64,
    dead_letters: u64,
    expired_total: u64,
    dead_lettered_total: u64,
    config: String,
    created_at: String,
    first: String,
    #[serde(deserialize_with = "list")]
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
struct RawGroup {
    name: String,
    ready: u64,
    delayed: u64,
    pending: u64,
    #[serde(deserialize_with = "list")]
    consumers: Vec<RawConsumer>,
}

#[derive(Deserialize)]
struct RawConsumer {
    name: String,
    pending: u64,
    idle: u64,
}

/// A list, which Lua's cjson writes as `{}` when empty.
fn list<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrEmpty<T> {
        List(Vec<T>),
        Empty(serde::de::IgnoredAny),
    }
    Ok(match ListOrEmpty::deserialize(d)? {
        ListOrEmpty::List(items) => items,
        ListOrEmpty::Empty(_) => Vec::new(),
    })
}

impl RedisBroker {
    pub(super) async fn info(&self, queue: &QueueName) -> Result<QueueInfo> {
        let config = self.config(queue).await?;
        let keys = self.keys(queue)?;
        let [max_len, max_age] = Self::retention_args(&config);
        let reply = self
            .script(
                &scripts::INFO,
                &[&keys.stream],
                vec![queue.as_str().as_bytes().to_vec(), max_len, max_age],
            )
            .await?;
        let json = crate::value::text(&reply).unwrap_or_default();
        let raw: RawInfo = serde_json::from_str(&json).map_err(|e| Error::Corrupt {
            location: keys.meta.clone(),
            detail: format!("queue info: {e}"),
        })?;
        let config = if raw.config.is_empty() {
            QueueConfig::default()
        } else {
            serde_json::from_str(&raw.config).unwrap_or(config)
        };
        let mut groups: Vec<GroupInfo> = raw
            .groups
            .into_iter()
            .filter_map(|g| {
                let mut consumers: Vec<ConsumerInfo> = g
                    .consumers
                    .into_iter()
                    .map(|c| ConsumerInfo {
                        name: c.name,
                        pending: c.pending,
                        last_seen: Timestamp(raw.now.saturating_sub(c.idle)),
                    })
                    .collect();
                consumers.sort_by(|a, b| a.name.cmp(&b.name));
                Some(GroupInfo {
                    // LeanMQ's groups of tagged queues ({name}-group) cannot be named here.
                    name: GroupName::new(g.name).ok()?,
                    ready: g.ready,
                    delayed: g.delayed,
                    pending: g.pending,
                    consumers,
                })
            })
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name));
        let created_ms = raw
            .created_at
            .parse::<f64>()
            .map(|s| (s * 1000.0) as u64)
            .unwrap_or(0);
        Ok(QueueInfo {
            name: queue.clone(),
            config,
            created_at: Timestamp(created_ms),
            length: raw.length,
            retained: raw.retained,
            oldest_message_age: (!raw.first.is_empty())
                .then(|| Duration::from_millis(raw.now.saturating_sub(id_millis(&raw.first)))),
            groups,
            dead_letters: raw.dead_letters,
            expired_total: raw.expired_total,
            dead_lettered_total: raw.dead_lettered_total,
        })
    }
}
