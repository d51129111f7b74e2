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
    OutgoingMessage, Payload, PendingDelivery, QueueConfig, QueueInfo, QueueName, ReceiveOptions,
    Record, RecordScan, Result, SendReceipt, TableName, Transaction,
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

/// The trait's methods, each passed to the inner broker after the hook
/// (`about`: the queue the call names, for the hook).
macro_rules! after_hook {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty, about $about:expr;)*) => {
        #[async_trait]
        impl Broker for Hooked {
            fn exclusive(&self) -> bool {
                self.inner.exclusive()
            }

            $(
                async fn $name(&self, $($arg: $ty),*) -> $ret {
                    self.before(stringify!($name), $about).await?;
                    self.inner.$name($($arg),*).await
                }
            )*
        }
    };
}

after_hook! {
    fn create_queue(queue: &QueueName, config: QueueConfig) -> Result<bool>, about Some(queue);
    fn list_queues() -> Result<Vec<QueueName>>, about None;
    fn queue_info(queue: &QueueName) -> Result<QueueInfo>, about Some(queue);
    fn delete_queue(queue: &QueueName) -> Result<()>, about Some(queue);
    fn purge_queue(queue: &QueueName) -> Result<u64>, about Some(queue);
    fn send_batch(queue: &QueueName, messages: Vec<OutgoingMessage>) -> Result<Vec<SendReceipt>>, about Some(queue);
    fn receive(queue: &QueueName, group: &GroupName, consumer: &ConsumerName, options: ReceiveOptions) -> Result<Vec<Delivery>>, about Some(queue);
    fn ack(queue: &QueueName, group: &GroupName, ids: &[MessageId]) -> Result<u64>, about Some(queue);
    fn ack_and_receive(queue: &QueueName, group: &GroupName, consumer: &ConsumerName, ack: &[MessageId], options: ReceiveOptions) -> Result<(u64, Vec<Delivery>)>, about Some(queue);
    fn nack_many(queue: &QueueName, group: &GroupName, ids: &[MessageId], nack: Nack) -> Result<u64>, about Some(queue);
    fn pending(queue: &QueueName, group: &GroupName, limit: usize) -> Result<Vec<PendingDelivery>>, about Some(queue);
    fn forget_consumer(queue: &QueueName, group: &GroupName, consumer: &ConsumerName) -> Result<bool>, about Some(queue);
    fn delete_group(queue: &QueueName, group: &GroupName) -> Result<bool>, about Some(queue);
    fn dead_letter(queue: &QueueName, id: &MessageId) -> Result<Option<DeadLetter>>, about Some(queue);
    fn peek(queue: &QueueName, after: Option<&MessageId>, limit: usize) -> Result<Vec<Delivery>>, about Some(queue);
    fn dead_letters(queue: &QueueName, after: Option<&MessageId>, limit: usize) -> Result<Vec<DeadLetter>>, about Some(queue);
    fn requeue_dead_letters(queue: &QueueName, selection: DeadLetterSelection) -> Result<u64>, about Some(queue);
    fn purge_dead_letters(queue: &QueueName, selection: DeadLetterSelection) -> Result<u64>, about Some(queue);
    fn commit(transaction: Transaction) -> Result<Vec<SendReceipt>>, about None;
    fn get_record(table: &TableName, key: &str) -> Result<Option<Payload>>, about None;
    fn scan_records(table: &TableName, scan: RecordScan) -> Result<Vec<Record>>, about None;
}
