//! The [`Broker`] trait: everything a storage backend offers.

use async_trait::async_trait;

use crate::{
    ConsumerName, DeadLetter, DeadLetterSelection, Delivery, GroupName, MessageId, Nack,
    OutgoingMessage, Payload, PendingDelivery, QueueConfig, QueueInfo, QueueName, ReceiveOptions,
    Record, RecordScan, Result, SendReceipt, TableName, Transaction,
};

/// Bytes a broker's storage occupies and has left.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageUsage {
    /// Bytes its data takes (`None`: cannot be told).
    pub used_bytes: Option<u64>,
    /// Bytes left where it stores (`None`: cannot be told).
    pub free_bytes: Option<u64>,
}

/// A message broker: durable named queues with consumer groups, redelivery,
/// dead letters, TTL, delays and transactions.
///
/// The trait is object safe (`Arc<dyn Broker>`), so a backend can be chosen at
/// run time from a URL; see `docs/decisions/0002-object-safe-broker.md`.
///
/// Semantics every backend honours (the conformance suite checks them):
///
/// - Each consumer group sees every message of the queue; consumers within a
///   group share them. A group created after messages were sent sees every
///   message still stored.
/// - A delivered message not acked within the queue's visibility timeout is
///   delivered again with `delivery_count + 1`; after `max_deliveries` it goes
///   to the dead-letter queue instead.
/// - A message leaves the queue only when every group has acked it, it
///   expired, or it was dead-lettered (and is then in the dead-letter queue).
#[async_trait]
pub trait Broker: Send + Sync {
    /// Creates a queue (and its dead-letter queue). Returns `true` if it was
    /// created, `false` if it already existed with the same settings.
    async fn create_queue(&self, queue: &QueueName, config: QueueConfig) -> Result<bool>;

    /// Names of all queues, sorted.
    async fn list_queues(&self) -> Result<Vec<QueueName>>;

    /// Whether this process holds the storage alone: no other process can
    /// open it at the same time (the embedded engine locks its directory).
    /// Shared storages (Redis, PostgreSQL, a server over HTTP) say `false`,
    /// the default: what one process caches, another may change.
    fn exclusive(&self) -> bool {
        false
    }

    /// Whether it can take work now: its storage answers and accepts
    /// writes (a broker whose storage failed says so here, after trying to
    /// recover). By default, whether it can list its queues.
    async fn ready(&self) -> Result<()> {
        self.list_queues().await.map(|_| ())
    }

    /// Applies time to every queue now, in bounded steps: expired messages
    /// dropped or dead-lettered, retention trimmed, dedup ids forgotten
    /// (what otherwise happens when a queue is next used). Returns how
    /// many messages and dedup ids it removed (expiries that dead-letter
    /// are applied too, not counted). By default nothing.
    async fn maintain(&self) -> Result<u64> {
        Ok(0)
    }

    /// What its storage occupies and has left, where the backend can tell
    /// (the embedded engine: its data directory and that disk's free
    /// space). By default nothing is known.
    async fn storage_usage(&self) -> Result<StorageUsage> {
        Ok(StorageUsage::default())
    }

    /// Counts, groups and settings of a queue.
    async fn queue_info(&self, queue: &QueueName) -> Result<QueueInfo>;

    /// Deletes a queue with its messages, groups and dead letters.
    async fn delete_queue(&self, queue: &QueueName) -> Result<()>;

    /// Deletes every message of a queue (not its dead letters). Returns how many.
    async fn purge_queue(&self, queue: &QueueName) -> Result<u64>;

    /// Sends one message.
    async fn send(&self, queue: &QueueName, message: OutgoingMessage) -> Result<SendReceipt> {
        let mut receipts = self.send_batch(queue, vec![message]).await?;
        receipts.pop().ok_or(crate::Error::Closed)
    }

    /// Sends several messages to one queue, atomically, in order.
    async fn send_batch(
        &self,
        queue: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>>;

    /// Takes up to `options.max_messages` messages for `consumer` of `group`,
    /// waiting up to `options.wait` for the first one. The group is created on
    /// first use.
    async fn receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>>;

    /// Acknowledges messages delivered to `group`. Ids not pending in the
    /// group (already acked, or unknown) are skipped. Returns how many were acked.
    async fn ack(&self, queue: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64>;

    /// Acknowledges `ack` (as [`Broker::ack`]), then receives (as
    /// [`Broker::receive`]): the loop of a consumer that handles a batch and
    /// takes the next. Backends over a network make it one round trip; the
    /// embedded engine does not wait for the acks' log write before
    /// receiving (a crash just after may deliver them again; use `ack` when
    /// an ack must be on disk when the call returns). Returns how many were
    /// acked and the new deliveries.
    async fn ack_and_receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        ack: &[MessageId],
        options: ReceiveOptions,
    ) -> Result<(u64, Vec<Delivery>)> {
        options.validate()?;
        let acked = if ack.is_empty() {
            0
        } else {
            self.ack(queue, group, ack).await?
        };
        let deliveries = self.receive(queue, group, consumer, options).await?;
        Ok((acked, deliveries))
    }

    /// Gives a delivered message back: to be retried after a delay, or dead-lettered now.
    /// Returns `false` if the message was not pending in the group.
    async fn nack(
        &self,
        queue: &QueueName,
        group: &GroupName,
        id: &MessageId,
        nack: Nack,
    ) -> Result<bool> {
        let given_back = self
            .nack_many(queue, group, std::slice::from_ref(id), nack)
            .await?;
        Ok(given_back > 0)
    }

    /// Gives several delivered messages back the same way, in one atomic
    /// step: after an error none of them was given back. Ids not pending in
    /// the group are skipped (as with [`Broker::ack`]). Returns how many
    /// were given back.
    async fn nack_many(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        nack: Nack,
    ) -> Result<u64>;

    /// Deliveries of `group` handed out and neither acked nor given back,
    /// oldest message first, at most `limit`: who holds each and when its
    /// visibility timeout ends. Empty for a group the queue does not have.
    async fn pending(
        &self,
        queue: &QueueName,
        group: &GroupName,
        limit: usize,
    ) -> Result<Vec<PendingDelivery>>;

    /// Removes `consumer` from `group`'s consumers, if it holds no delivery.
    /// Returns whether it was removed: `false` when the group does not know
    /// it, or when it still holds deliveries (they come back to the group
    /// when their visibility timeout ends, taken by another consumer; then
    /// it can be forgotten).
    async fn forget_consumer(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
    ) -> Result<bool>;

    /// Deletes a consumer group with what it owes: messages that no other
    /// group owes any more leave the queue (or are kept by its retention),
    /// as if this group had acked them. Returns `false` if the queue had no
    /// such group. A receive for the group afterwards creates it anew (it
    /// then owes every message stored).
    async fn delete_group(&self, queue: &QueueName, group: &GroupName) -> Result<bool>;

    /// The messages stored in a queue, oldest first, at most `limit`,
    /// starting after the message `after` (an id from an earlier page) if
    /// given: what waits for its groups (delayed ones included) and what
    /// retention keeps after the acks. Nothing is taken or changed; each
    /// comes with a `delivery_count` of 0.
    async fn peek(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<Delivery>>;

    /// One dead letter by its [`DeadLetter::id`], or `None` if the queue
    /// has no such letter (an id of another backend's format included).
    async fn dead_letter(&self, queue: &QueueName, id: &MessageId) -> Result<Option<DeadLetter>>;

    /// Dead letters of a queue, oldest first, at most `limit`, starting after
    /// the entry `after` (a [`DeadLetter::id`] from an earlier page) if given.
    async fn dead_letters(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>>;

    /// Moves dead letters back to their queue (to the group that gave up on
    /// them, or to every group for expired ones). Returns how many.
    async fn requeue_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64>;

    /// Deletes dead letters. Returns how many.
    async fn purge_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64>;

    /// Applies the transaction's sends, acks and record writes atomically.
    /// Returns the receipts of its sends, in order.
    async fn commit(&self, transaction: Transaction) -> Result<Vec<SendReceipt>>;

    /// Reads one record (tables need no creation; an unknown table is empty).
    async fn get_record(&self, table: &TableName, key: &str) -> Result<Option<Payload>>;

    /// Reads several records, of any tables, in one snapshot where the
    /// backend has one: each key's record in the order asked (`None` where
    /// there is none). Backends that can, read them in one request; the
    /// default reads them one after another.
    async fn get_records(&self, keys: &[(TableName, String)]) -> Result<Vec<Option<Payload>>> {
        let mut found = Vec::with_capacity(keys.len());
        for (table, key) in keys {
            found.push(self.get_record(table, key).await?);
        }
        Ok(found)
    }

    /// Reads the records of a key range, in key order or reverse key order.
    async fn scan_records(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>>;
}
