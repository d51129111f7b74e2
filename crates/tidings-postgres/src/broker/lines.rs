//! Sharing: concurrent work of one kind (sends to a queue, transactions)
//! shares statements or transactions when enough is running already.
//!
//! Work goes out at once, alone, while fewer than [`Share::IN_FLIGHT`] of
//! its line are running; otherwise it waits, and the next to go carries
//! everything that waited (up to [`Share::MOST`], counted by
//! [`Share::size`]), so that under load one statement or commit serves
//! many. A single caller is never held back, and each still returns only
//! after the commit that stored its work.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tidings_core::{Error, Result};
use tokio::sync::oneshot;

use super::Shared;

/// A kind of work that can share.
pub(super) trait Share: Sized + Send + 'static {
    /// What separates lines (a queue; `()`: one line).
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    /// What comes back to each caller.
    type Output: Send + 'static;
    /// Running at once before work waits to share.
    const IN_FLIGHT: usize;
    /// Most [`Share::size`] one shared run carries.
    const MOST: usize;

    /// The broker's lines of this kind.
    fn lines(shared: &Shared) -> &Lines<Self>;
    /// How much it counts against [`Share::MOST`].
    fn size(&self) -> usize;
    /// Runs it alone.
    fn alone(
        self,
        shared: &Shared,
        key: &Self::Key,
    ) -> impl Future<Output = Result<Self::Output>> + Send;
    /// Runs several (more than one) together: an answer for each, in order.
    fn together(
        all: Vec<Self>,
        shared: &Shared,
        key: &Self::Key,
    ) -> impl Future<Output = Vec<Result<Self::Output>>> + Send;
}

struct Waiting<W: Share> {
    work: W,
    reply: oneshot::Sender<Result<W::Output>>,
}

struct Line<W: Share> {
    in_flight: usize,
    waiting: VecDeque<Waiting<W>>,
}

/// The lines of one kind of work: what runs and what waits, by key.
pub(crate) struct Lines<W: Share> {
    lines: Mutex<HashMap<W::Key, Line<W>>>,
}

impl<W: Share> Default for Lines<W> {
    fn default() -> Self {
        Self {
            lines: Mutex::new(HashMap::new()),
        }
    }
}

impl<W: Share> Lines<W> {
    fn lock(&self) -> MutexGuard<'_, HashMap<W::Key, Line<W>>> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running place in a line: given back when it ends (or its caller goes
/// away), and handed to a flusher if work waits.
struct Place<W: Share> {
    shared: Arc<Shared>,
    key: W::Key,
}

impl<W: Share> Drop for Place<W> {
    fn drop(&mut self) {
        let mut lines = W::lines(&self.shared).lock();
        let Some(line) = lines.get_mut(&self.key) else {
            return;
        };
        if line.waiting.is_empty() {
            line.in_flight -= 1;
            if line.in_flight == 0 {
                lines.remove(&self.key);
            }
            return;
        }
        drop(lines);
        let place = Place::<W> {
            shared: self.shared.clone(),
            key: self.key.clone(),
        };
        tokio::spawn(place.flush());
    }
}

impl<W: Share> Place<W> {
    /// Runs what waits, together, until nothing does.
    async fn flush(self) {
        loop {
            let taken: Vec<Waiting<W>> = {
                let mut lines = W::lines(&self.shared).lock();
                let Some(line) = lines.get_mut(&self.key) else {
                    return;
                };
                let mut taken = Vec::new();
                let mut size = 0;
                while let Some(next) = line.waiting.front() {
                    if size > 0 && size + next.work.size() > W::MOST {
                        break;
                    }
                    size += next.work.size();
                    taken.extend(line.waiting.pop_front());
                }
                taken
            };
            let (mut all, replies): (Vec<W>, Vec<_>) =
                taken.into_iter().map(|w| (w.work, w.reply)).unzip();
            let answers = match all.len() {
                // Drop gives the place back (nothing waits).
                0 => return,
                1 => match all.pop() {
                    Some(work) => vec![work.alone(&self.shared, &self.key).await],
                    None => return,
                },
                _ => W::together(all, &self.shared, &self.key).await,
            };
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(answer);
            }
        }
    }
}

impl Shared {
    /// Runs `work` in its line: at once, or shared with work that waited.
    pub(super) async fn in_line<W: Share>(
        self: &Arc<Self>,
        key: &W::Key,
        work: W,
    ) -> Result<W::Output> {
        let answer = {
            let mut lines = W::lines(self).lock();
            let line = lines.entry(key.clone()).or_insert_with(|| Line {
                in_flight: 0,
                waiting: VecDeque::new(),
            });
            if line.in_flight < W::IN_FLIGHT && line.waiting.is_empty() {
                line.in_flight += 1;
                Err(work)
            } else {
                let (reply, answer) = oneshot::channel();
                line.waiting.push_back(Waiting { work, reply });
                Ok(answer)
            }
        };
        match answer {
            Ok(answer) => answer.await.unwrap_or(Err(Error::Closed)),
            Err(work) => {
                let _place = Place::<W> {
                    shared: self.clone(),
                    key: key.clone(),
                };
                work.alone(self, key).await
            }
        }
    }
}

/// What one shared statement answered, split among its sharers: each the
/// next `count` items, or the error again.
pub(super) fn split<T>(answer: Result<Vec<T>>, counts: &[usize]) -> Vec<Result<Vec<T>>> {
    match answer {
        Ok(items) => {
            let mut items = items.into_iter();
            counts
                .iter()
                .map(|&count| Ok(items.by_ref().take(count).collect()))
                .collect()
        }
        Err(e) => counts.iter().map(|_| Err(same(&e))).collect(),
    }
}

/// The error again, for each sharer of a statement or transaction: the
/// same kind and message (the server's own failures as their kind's code
/// tells).
pub(super) fn same(e: &Error) -> Error {
    Error::from_code(e.code(), &e.to_string(), &e.fields())
        .unwrap_or_else(|| Error::Unavailable(e.to_string()))
}
