//! Several sends, acks, nacks and record writes, across queues and tables,
//! applied all or nothing.

use crate::{GroupName, MessageId, Nack, OutgoingMessage, Payload, QueueName, TableName};

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
    /// Give a delivered message back, as [`crate::Broker::nack`] does: to be
    /// retried after a delay, or dead-lettered. It must be pending in that
    /// group, or the whole transaction fails with
    /// [`crate::Error::NotPending`]. With a record write beside it, what a
    /// consumer records about an attempt and the message's next step change
    /// together.
    Nack {
        /// The queue.
        queue: QueueName,
        /// The group.
        group: GroupName,
        /// The message.
        id: MessageId,
        /// Retry or dead-letter.
        nack: Nack,
    },
    /// Write a record. With `only_if_absent`, the whole transaction fails with
    /// [`crate::Error::RecordExists`] if the key is already taken.
    Put {
        /// The table.
        table: TableName,
        /// The key.
        key: String,
        /// The value.
        value: Payload,
        /// Refuse to overwrite.
        only_if_absent: bool,
    },
    /// Delete a record (nothing happens if it does not exist).
    Delete {
        /// The table.
        table: TableName,
        /// The key.
        key: String,
    },
    /// Add `delta` to the integer a record holds (an absent record counts
    /// as 0): counters kept in the same transaction as the writes they
    /// count. The record holds the sum as decimal text (a JSON number). If
    /// it holds anything else, the whole transaction fails with
    /// [`crate::Error::InvalidArgument`].
    Add {
        /// The table.
        table: TableName,
        /// The key.
        key: String,
        /// What to add (negative: subtract).
        delta: i64,
    },
    /// Require a record to hold `value` (`None`: to be absent) when the
    /// transaction starts, or the whole transaction fails with
    /// [`crate::Error::RecordChanged`]: compare-and-set for leases, versions
    /// and state machines kept in records.
    Expect {
        /// The table.
        table: TableName,
        /// The key.
        key: String,
        /// The value it must have, exactly as stored (`None`: absent).
        value: Option<Payload>,
    },
}

/// A list of sends, acks and record writes that a broker applies atomically: after
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

    /// Adds a nack.
    pub fn nack(
        &mut self,
        queue: QueueName,
        group: GroupName,
        id: MessageId,
        nack: Nack,
    ) -> &mut Self {
        self.ops.push(TxOp::Nack {
            queue,
            group,
            id,
            nack,
        });
        self
    }

    /// Adds a record write (overwriting any record with that key).
    pub fn put(&mut self, table: TableName, key: impl Into<String>, value: Payload) -> &mut Self {
        self.ops.push(TxOp::Put {
            table,
            key: key.into(),
            value,
            only_if_absent: false,
        });
        self
    }

    /// Adds a record write that fails the transaction if the key is taken.
    pub fn insert(
        &mut self,
        table: TableName,
        key: impl Into<String>,
        value: Payload,
    ) -> &mut Self {
        self.ops.push(TxOp::Put {
            table,
            key: key.into(),
            value,
            only_if_absent: true,
        });
        self
    }

    /// Adds a record deletion.
    pub fn delete(&mut self, table: TableName, key: impl Into<String>) -> &mut Self {
        self.ops.push(TxOp::Delete {
            table,
            key: key.into(),
        });
        self
    }

    /// Adds a precondition: the record must hold `value` (or be absent, for
    /// `None`) before anything is applied.
    ///
    /// ```
    /// use tidings_core::{Payload, TableName, Transaction};
    /// let leases = TableName::new("leases")?;
    /// let mine = Payload::from_value(&serde_json::json!({"owner": "w-1"}))?;
    /// let mut tx = Transaction::new();
    /// // Take the lease only if nobody holds it.
    /// tx.expect(leases.clone(), "orders/0", None).put(leases, "orders/0", mine);
    /// # Ok::<_, tidings_core::Error>(())
    /// ```
    pub fn expect(
        &mut self,
        table: TableName,
        key: impl Into<String>,
        value: Option<Payload>,
    ) -> &mut Self {
        self.ops.push(TxOp::Expect {
            table,
            key: key.into(),
            value,
        });
        self
    }

    /// Adds `delta` to a counter record (absent: 0), see [`TxOp::Add`].
    ///
    /// ```
    /// use tidings_core::{TableName, Transaction};
    /// let counts = TableName::new("counts")?;
    /// let mut tx = Transaction::new();
    /// tx.add(counts.clone(), "orders", 1).add(counts, "pending", -1);
    /// assert_eq!(tx.ops().len(), 2);
    /// # Ok::<_, tidings_core::Error>(())
    /// ```
    pub fn add(&mut self, table: TableName, key: impl Into<String>, delta: i64) -> &mut Self {
        self.ops.push(TxOp::Add {
            table,
            key: key.into(),
            delta,
        });
        self
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Checks what can be checked without a broker: payloads and record keys.
    pub fn validate(&self) -> crate::Result<()> {
        for op in &self.ops {
            match op {
                TxOp::Send { message, .. } => message.validate()?,
                TxOp::Put { key, .. }
                | TxOp::Delete { key, .. }
                | TxOp::Expect { key, .. }
                | TxOp::Add { key, .. } => {
                    crate::record::validate_key(key)?;
                }
                TxOp::Ack { .. } | TxOp::Nack { .. } => {}
            }
        }
        Ok(())
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
