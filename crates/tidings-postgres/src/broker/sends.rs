//! Group commit of sends: concurrent sends to one queue share statements
//! (see `lines`): up to 2 statements of a queue run at once, and the next
//! carries every send that waited, up to 1,000 messages.

use tidings_core::{QueueName, Result, SendReceipt};

use super::Shared;
use super::lines::{Lines, Share, split};
use super::messages::SendBatch;

impl Share for SendBatch {
    type Key = QueueName;
    type Output = Vec<SendReceipt>;
    const IN_FLIGHT: usize = 2;
    const MOST: usize = 1000;

    fn lines(shared: &Shared) -> &Lines<Self> {
        &shared.sends
    }

    fn size(&self) -> usize {
        self.len()
    }

    async fn alone(self, shared: &Shared, queue: &QueueName) -> Result<Vec<SendReceipt>> {
        shared.send_now(queue, &self).await
    }

    async fn together(
        all: Vec<Self>,
        shared: &Shared,
        queue: &QueueName,
    ) -> Vec<Result<Vec<SendReceipt>>> {
        let counts: Vec<usize> = all.iter().map(SendBatch::len).collect();
        let mut combined = SendBatch::default();
        for batch in all {
            combined.append(batch);
        }
        split(shared.send_now(queue, &combined).await, &counts)
    }
}
