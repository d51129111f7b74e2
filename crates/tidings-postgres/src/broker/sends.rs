//! Group commit: concurrent sends to one queue share statements.
//!
//! A send goes out at once while fewer than [`IN_FLIGHT`] statements of its
//! queue are running; otherwise it waits, and the next statement to go
//! carries every send that waited (up to [`MOST`] messages), so that under
//! load each commit carries many messages. A single sender is never held
//! back. Each send still returns only after the commit that stored it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tidings_core::{Error, QueueName, Result, SendReceipt};
use tokio::sync::oneshot;

use super::Shared;
use super::messages::SendBatch;

/// Statements of one queue running at once before sends wait to share one.
const IN_FLIGHT: usize = 2;

/// Most messages one shared statement carries.
const MOST: usize = 1000;

struct Waiting {
    batch: SendBatch,
    reply: oneshot::Sender<Result<Vec<SendReceipt>>>,
}

#[derive(Default)]
struct Line {
    in_flight: usize,
    waiting: VecDeque<Waiting>,
}

/// The sends of every queue, in flight and waiting.
#[derive(Default)]
pub(crate) struct Sends {
    lines: Mutex<HashMap<QueueName, Line>>,
}

impl Sends {
    fn lines(&self) -> std::sync::MutexGuard<'_, HashMap<QueueName, Line>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running statement's place in its queue's line: given back when it
/// ends (or its caller goes away), and handed to a flusher if sends wait.
struct Slot {
    shared: Arc<Shared>,
    queue: QueueName,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut lines = self.shared.sends.lines();
        let Some(line) = lines.get_mut(&self.queue) else {
            return;
        };
        if line.waiting.is_empty() {
            line.in_flight -= 1;
            if line.in_flight == 0 {
                lines.remove(&self.queue);
            }
            return;
        }
        drop(lines);
        let slot = Slot {
            shared: self.shared.clone(),
            queue: self.queue.clone(),
        };
        tokio::spawn(slot.flush());
    }
}

impl Slot {
    /// Sends what waits, statement after statement, until nothing does.
    async fn flush(self) {
        loop {
            let taken = {
                let mut lines = self.shared.sends.lines();
                let Some(line) = lines.get_mut(&self.queue) else {
                    return;
                };
                let mut taken = Vec::new();
                let mut messages = 0;
                while let Some(next) = line.waiting.front() {
                    if messages > 0 && messages + next.batch.len() > MOST {
                        break;
                    }
                    messages += next.batch.len();
                    taken.extend(line.waiting.pop_front());
                }
                taken
            };
            if taken.is_empty() {
                // Drop gives the place back (nothing waits).
                return;
            }
            let mut combined = SendBatch::default();
            let mut counts = Vec::with_capacity(taken.len());
            let mut replies = Vec::with_capacity(taken.len());
            for waiting in taken {
                counts.push(waiting.batch.len());
                combined.append(waiting.batch);
                replies.push(waiting.reply);
            }
            match self.shared.send_now(&self.queue, &combined).await {
                Ok(receipts) => {
                    let mut receipts = receipts.into_iter();
                    for (reply, count) in replies.into_iter().zip(counts) {
                        let _ = reply.send(Ok(receipts.by_ref().take(count).collect()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(same(&e)));
                    }
                }
            }
        }
    }
}

/// The error again, for each sender of a shared statement: the same kind
/// and message (the server's own failures as their kind's code tells).
fn same(e: &Error) -> Error {
    Error::from_code(e.code(), &e.to_string(), &e.fields())
        .unwrap_or_else(|| Error::Unavailable(e.to_string()))
}

impl Shared {
    /// Sends `batch` to `queue`, sharing a statement with concurrent sends
    /// to it when enough are running already.
    pub(super) async fn send_together(
        self: &Arc<Self>,
        queue: &QueueName,
        batch: SendBatch,
    ) -> Result<Vec<SendReceipt>> {
        let answer = {
            let mut lines = self.sends.lines();
            let line = lines.entry(queue.clone()).or_default();
            if line.in_flight < IN_FLIGHT && line.waiting.is_empty() {
                line.in_flight += 1;
                Err(batch)
            } else {
                let (reply, answer) = oneshot::channel();
                line.waiting.push_back(Waiting { batch, reply });
                Ok(answer)
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(batch) => {
                let _slot = Slot {
                    shared: self.clone(),
                    queue: queue.clone(),
                };
                return self.send_now(queue, &batch).await;
            }
        };
        answer.await.unwrap_or(Err(Error::Closed))
    }
}
