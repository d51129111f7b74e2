//! Key names: LeanMQ's layout (`docs/redis.md` lists every key).
//!
//! A queue `N` under prefix `P` is the stream `P N`, with `P N:dlq`,
//! `P N:metadata`, `P N:dlq:metadata` and `P N:expiry` as LeanMQ writes them,
//! plus Tidings' own `P N:held:<group>`, `P N:delayed`, `P N:retained`,
//! `P N:dedup:<generation>:<id>` and the tombstone `P N:deleted`. With hash
//! tags on, `N` is written `{N}`, so every key of a queue lands in one Redis
//! Cluster slot (a Python LeanMQ client then names that queue `{N}`). A
//! prefix that itself holds a hash tag (`mq:{shop}:`) puts every queue and
//! table in one slot.

use tidings_core::{Error, QueueName, Result, TableName};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How names become keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
    hash_tags: bool,
}

impl Layout {
    /// A layout under `prefix`, tagging each queue's keys if `hash_tags`.
    pub fn new(prefix: impl Into<String>, hash_tags: bool) -> Self {
        Self {
            prefix: prefix.into(),
            hash_tags,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether queue keys carry a hash tag of their own (the prefix has none).
    fn tags_queues(&self) -> bool {
        self.hash_tags && hash_tag(&self.prefix).is_none()
    }

    /// LeanMQ's set of every stream key.
    pub fn registry(&self) -> String {
        format!("{}registry", self.prefix)
    }

    /// The name LeanMQ would give the queue (`N`, or `{N}` with hash tags).
    pub fn leanmq_name(&self, queue: &QueueName) -> String {
        if self.tags_queues() {
            format!("{{{queue}}}")
        } else {
            queue.to_string()
        }
    }

    /// The stream key of a queue, which every other key of it starts with
    /// (all the send, receive and ack paths need). Fails for names that
    /// would collide with LeanMQ's own keys.
    pub fn stream(&self, queue: &QueueName) -> Result<String> {
        if !self.tags_queues() && queue.as_str() == "registry" {
            return Err(Error::InvalidName {
                kind: "queue".into(),
                name: queue.to_string(),
                reason: "is LeanMQ's registry key on Redis".into(),
            });
        }
        Ok(format!("{}{}", self.prefix, self.leanmq_name(queue)))
    }

    /// Every key of a queue.
    pub fn queue(&self, queue: &QueueName) -> Result<QueueKeys> {
        let name = self.leanmq_name(queue);
        let stream = self.stream(queue)?;
        Ok(QueueKeys {
            dlq: format!("{stream}:dlq"),
            meta: format!("{stream}:metadata"),
            dlq_meta: format!("{stream}:dlq:metadata"),
            expiry: format!("{stream}:expiry"),
            dlq_expiry: format!("{stream}:dlq:expiry"),
            delayed: format!("{stream}:delayed"),
            retained: format!("{stream}:retained"),
            main_group: format!("{name}-group"),
            dlq_group: format!("{name}-group-dlq"),
            stream,
        })
    }

    /// The queue a registry member names, if it is a main stream of a queue
    /// Tidings can name.
    pub fn queue_of(&self, stream_key: &str) -> Option<QueueName> {
        let name = stream_key.strip_prefix(&self.prefix)?;
        if name.ends_with(":dlq") {
            return None;
        }
        let name = if self.tags_queues() {
            name.strip_prefix('{')?.strip_suffix('}')?
        } else {
            name
        };
        QueueName::new(name).ok()
    }

    /// The keys of a record table.
    pub fn table(&self, table: &TableName) -> TableKeys {
        let base = if self.tags_queues() {
            format!("{}{{records:{table}}}", self.prefix)
        } else {
            format!("{}records:{table}", self.prefix)
        };
        TableKeys {
            index: format!("{base}:keys"),
            values: base,
        }
    }
}

/// The keys of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// The stream of messages.
    pub stream: String,
    /// The dead-letter stream.
    pub dlq: String,
    /// LeanMQ's metadata hash (Tidings adds its settings and counters).
    pub meta: String,
    /// LeanMQ's metadata hash of the dead-letter queue.
    pub dlq_meta: String,
    /// LeanMQ's expiry index: stream id → expiry in epoch seconds.
    pub expiry: String,
    /// LeanMQ's expiry index of the dead-letter queue.
    pub dlq_expiry: String,
    /// Delayed sends: stream id → due time in ms.
    pub delayed: String,
    /// Messages every group acked, kept for retention: stream id → time in ms.
    pub retained: String,
    /// LeanMQ's consumer group of the queue.
    pub main_group: String,
    /// LeanMQ's consumer group of the dead-letter queue.
    pub dlq_group: String,
}

impl QueueKeys {
    /// Messages a group holds back (nack with delay, delayed sends): id → due ms.
    pub fn held(&self, group: &str) -> String {
        format!("{}:held:{group}", self.stream)
    }

    /// Left for a day by a deletion, so that a process that knew the queue
    /// tells it from a queue lost in a restart of Redis without its data.
    pub fn tombstone(&self) -> String {
        format!("{}:deleted", self.stream)
    }
}

/// The keys of a record table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableKeys {
    /// Hash: record key → JSON value.
    pub values: String,
    /// Sorted set of record keys (all score 0, ordered by bytes).
    pub index: String,
}

/// The hash tag of a key: the text between the first `{` and the next `}`,
/// if not empty.
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    (close > 0).then(|| &key[open + 1..open + 1 + close])
}

/// The Redis Cluster slot of a key.
pub fn slot(key: &str) -> u16 {
    let hashed = hash_tag(key).unwrap_or(key);
    crc16_xmodem(hashed.as_bytes()) % SLOTS
}

/// CRC-16/XMODEM (polynomial 0x1021, initial value 0), as Redis Cluster uses.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> QueueName {
        QueueName::new(name).unwrap()
    }

    #[test]
    fn leanmq_layout() {
        let keys = Layout::new("mq:", false).queue(&q("orders")).unwrap();
        assert_eq!(keys.stream, "mq:orders");
        assert_eq!(keys.dlq, "mq:orders:dlq");
        assert_eq!(keys.meta, "mq:orders:metadata");
        assert_eq!(keys.dlq_meta, "mq:orders:dlq:metadata");
        assert_eq!(keys.expiry, "mq:orders:expiry");
        assert_eq!(keys.main_group, "orders-group");
        assert_eq!(keys.dlq_group, "orders-group-dlq");
        assert!(Layout::new("mq:", false).queue(&q("registry")).is_err());
    }

    #[test]
    fn cluster_slots_match_redis() {
        // Values from CLUSTER KEYSLOT on a real Redis.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("123456789"), 12739);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(hash_tag("foo{}{bar}"), None);
        assert_eq!(hash_tag("foo{{bar}}zap"), Some("{bar"));
    }

    #[test]
    fn hash_tags_keep_a_queue_in_one_slot() {
        let layout = Layout::new("mq:", true);
        let keys = layout.queue(&q("orders")).unwrap();
        assert_eq!(keys.stream, "mq:{orders}");
        assert_eq!(keys.main_group, "{orders}-group");
        let slots: Vec<u16> = [
            &keys.stream,
            &keys.dlq,
            &keys.meta,
            &keys.dlq_meta,
            &keys.expiry,
            &keys.delayed,
            &keys.retained,
            &keys.held("billing"),
        ]
        .iter()
        .map(|k| slot(k))
        .collect();
        assert!(slots.iter().all(|s| *s == slots[0]), "{slots:?}");
        assert_ne!(slot(&layout.queue(&q("audit")).unwrap().stream), slots[0]);
        assert_eq!(layout.queue_of("mq:{orders}"), Some(q("orders")));
        assert_eq!(layout.queue_of("mq:{orders}:dlq"), None);
        // A namespace tag in the prefix puts every queue in one slot.
        let shop = Layout::new("mq:{shop}:", true);
        let a = shop.queue(&q("orders")).unwrap().stream;
        let b = shop.queue(&q("audit")).unwrap().stream;
        assert_eq!(a, "mq:{shop}:orders");
        assert_eq!(slot(&a), slot(&b));
        assert_eq!(
            slot(&shop.table(&TableName::new("t").unwrap()).index),
            slot(&a)
        );
    }
}
