//! Several sends and acks, across queues, applied all or nothing.

use crate::{GroupName, MessageId, OutgoingMessage, QueueName};

/// One operation of a [`Transaction`].
#[derive(Debug, Clone, PartialEq)]
pub enum TxOp {
    /// Send a message.
    Send {
        /// Target queue.
        queue: QueueName,
        /// The message.
        message: OutgoingMessage,
    },
    /// Ack messages delivered to a group. Each must be pending in that group,
    /// or the whole transaction fails with [`crate::Error::NotPending`].
    Ack {
        /// The queue.
        queue: QueueName,
        /// The group.
        group: GroupName,
        /// The messages.
        ids: Vec<MessageId>,
    },
}

/// A list of sends and acks that a broker applies atomically: after
/// `commit` either all of them took effect or none did.
///
/// ```
/// use tidings_core::{GroupName, MessageId, OutgoingMessage, QueueName, Transaction};
/// let mut tx = Transaction::new();
/// tx.ack(QueueName::new("orders")?, GroupName::new("billing")?, [MessageId::from("42")])
///   .send(QueueName::new("invoices")?, OutgoingMessage::json(&1)?);
/// assert_eq!(tx.ops().len(), 2);
/// # Ok::<_, tidings_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Transaction {
    ops: Vec<TxOp>,
}

impl Transaction {
    /// An empty transaction.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a send.
    pub fn send(&mut self, queue: QueueName, message: OutgoingMessage) -> &mut Self {
        self.ops.push(TxOp::Send { queue, message });
        self
    }

    /// Adds an ack.
    pub fn ack(
        &mut self,
        queue: QueueName,
        group: GroupName,
        ids: impl IntoIterator<Item = MessageId>,
    ) -> &mut Self {
        self.ops.push(TxOp::Ack {
            queue,
            group,
            ids: ids.into_iter().collect(),
        });
        self
    }

    /// The operations, in order.
    pub fn ops(&self) -> &[TxOp] {
        &self.ops
    }

    /// Takes the operations out.
    pub fn into_ops(self) -> Vec<TxOp> {
        self.ops
    }
}
