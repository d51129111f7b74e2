//! [`Hooked`]: another broker with a test's hook run before each call, to
//! fail the call or hold it until the test lets it go ([`Gate`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use tokio::sync::{Semaphore, watch};

use crate::{
    Broker, ConsumerName, DeadLetter, DeadLetterSelection, Delivery, GroupName, MessageId, Nack,
    OutgoingMessage, Payload, QueueConfig, QueueInfo, QueueName, ReceiveOptions, Record,
    RecordScan, Result, SendReceipt, TableName, Transaction,
};

/// Which call a hook is asked about: the operation's name (the trait
/// method's, e.g. `"queue_info"`) and the queue it is about, if any.
#[derive(Debug, Clone)]
pub struct Call {
    /// The [`Broker`] method.
    pub op: &'static str,
    /// The queue it names.
    pub queue: Option<QueueName>,
}

/// What a hook returns: `Ok` lets the call through to the inner broker, an
/// error is the call's answer.
pub type HookFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A test's hook.
pub type Hook = Arc<dyn Fn(Call) -> HookFuture + Send + Sync>;

/// Another broker, with a hook run before each of its calls.
pub struct Hooked {
    inner: Arc<dyn Broker>,
    hook: Hook,
}

impl Hooked {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn Broker>,
        hook: impl Fn(Call) -> HookFuture + Send + Sync + 'static,
    ) -> Self {
        Self {
            inner,
            hook: Arc::new(hook),
        }
    }

    async fn before(&self, op: &'static str, queue: Option<&QueueName>) -> Result<()> {
        (self.hook)(Call {
            op,
            queue: queue.cloned(),
        })
        .await
    }
}

/// Holds the calls of one operation, once armed, until the test lets them
/// go, in the order they came; counts those that came.
pub struct Gate {
    op: &'static str,
    armed: AtomicBool,
    permits: Semaphore,
    arrived: watch::Sender<usize>,
}

impl Gate {
    /// Holds the operation's calls from now on.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Lets the operation's calls through again (those held stay held
    /// until released).
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::SeqCst);
    }

    /// Waits until `n` calls have been held in all.
    pub async fn arrived(&self, n: usize) {
        let mut arrived = self.arrived.subscribe();
        // The sender lives as long as the gate.
        let _ = arrived.wait_for(|&k| k >= n).await;
    }

    /// Lets `n` held calls (or calls yet to come) through, first come first.
    pub fn release(&self, n: usize) {
        self.permits.add_permits(n);
    }

    async fn pass(&self, call: &Call) {
        if call.op != self.op || !self.armed.load(Ordering::SeqCst) {
            return;
        }
        self.arrived.send_modify(|k| *k += 1);
        // Never closed, so acquiring cannot fail.
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }
}

impl Hooked {
    /// `inner`, with the calls of `op` held by the returned [`Gate`] once
    /// it is armed.
    pub fn gated(inner: Arc<dyn Broker>, op: &'static str) -> (Self, Arc<Gate>) {
        let gate = Arc::new(Gate {
            op,
            armed: AtomicBool::new(false),
            permits: Semaphore::new(0),
            arrived: watch::channel(0).0,
        });
        let held = gate.clone();
        let hooked = Self::new(inner, move |call| {
            let gate = held.clone();
            Box::pin(async move {
                gate.pass(&call).await;
                Ok(())
            })
        });
        (hooked, gate)
    }
}

#[async_trait]
impl Broker for Hooked {
    async fn create_queue(&self, queue: &QueueName, config: QueueConfig) -> Result<bool> {
        self.before("create_queue", Some(queue)).await?;
        self.inner.create_queue(queue, config).await
    }

    async fn list_queues(&self) -> Result<Vec<QueueName>> {
        self.before("list_queues", None).await?;
        self.inner.list_queues().await
    }

    async fn queue_info(&self, queue: &QueueName) -> Result<QueueInfo> {
        self.before("queue_info", Some(queue)).await?;
        self.inner.queue_info(queue).await
    }

    async fn delete_queue(&self, queue: &QueueName) -> Result<()> {
        self.before("delete_queue", Some(queue)).await?;
        self.inner.delete_queue(queue).await
    }

    async fn purge_queue(&self, queue: &QueueName) -> Result<u64> {
        self.before("purge_queue", Some(queue)).await?;
        self.inner.purge_queue(queue).await
    }

    async fn send_batch(
        &self,
        queue: &QueueName,
        messages: Vec<OutgoingMessage>,
    ) -> Result<Vec<SendReceipt>> {
        self.before("send_batch", Some(queue)).await?;
        self.inner.send_batch(queue, messages).await
    }

    async fn receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        options: ReceiveOptions,
    ) -> Result<Vec<Delivery>> {
        self.before("receive", Some(queue)).await?;
        self.inner.receive(queue, group, consumer, options).await
    }

    async fn ack(&self, queue: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64> {
        self.before("ack", Some(queue)).await?;
        self.inner.ack(queue, group, ids).await
    }

    async fn ack_and_receive(
        &self,
        queue: &QueueName,
        group: &GroupName,
        consumer: &ConsumerName,
        ack: &[MessageId],
        options: ReceiveOptions,
    ) -> Result<(u64, Vec<Delivery>)> {
        self.before("ack_and_receive", Some(queue)).await?;
        self.inner
            .ack_and_receive(queue, group, consumer, ack, options)
            .await
    }

    async fn nack_many(
        &self,
        queue: &QueueName,
        group: &GroupName,
        ids: &[MessageId],
        nack: Nack,
    ) -> Result<u64> {
        self.before("nack_many", Some(queue)).await?;
        self.inner.nack_many(queue, group, ids, nack).await
    }

    async fn dead_letter(&self, queue: &QueueName, id: &MessageId) -> Result<Option<DeadLetter>> {
        self.before("dead_letter", Some(queue)).await?;
        self.inner.dead_letter(queue, id).await
    }

    async fn dead_letters(
        &self,
        queue: &QueueName,
        after: Option<&MessageId>,
        limit: usize,
    ) -> Result<Vec<DeadLetter>> {
        self.before("dead_letters", Some(queue)).await?;
        self.inner.dead_letters(queue, after, limit).await
    }

    async fn requeue_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        self.before("requeue_dead_letters", Some(queue)).await?;
        self.inner.requeue_dead_letters(queue, selection).await
    }

    async fn purge_dead_letters(
        &self,
        queue: &QueueName,
        selection: DeadLetterSelection,
    ) -> Result<u64> {
        self.before("purge_dead_letters", Some(queue)).await?;
        self.inner.purge_dead_letters(queue, selection).await
    }

    async fn commit(&self, transaction: Transaction) -> Result<Vec<SendReceipt>> {
        self.before("commit", None).await?;
        self.inner.commit(transaction).await
    }

    async fn get_record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        self.before("get_record", None).await?;
        self.inner.get_record(table, key).await
    }

    async fn scan_records(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>> {
        self.before("scan_records", None).await?;
        self.inner.scan_records(table, scan).await
    }
}
