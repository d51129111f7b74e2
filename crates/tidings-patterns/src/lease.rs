//! One process at a time: a lease kept as a record, taken and renewed with
//! compare-and-set (`Transaction::expect`). The event bus holds one per
//! subscription; the hub, one per ordered subscription.
//!
//! Expiry is judged without comparing clocks between machines: the holder
//! rewrites the record on every renewal; a standby that sees the same value
//! for longer than the lease's time to live takes it over.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tidings_core::{Broker, Error, Payload, TableName, Transaction};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a lease was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Nobody held it (or its holder let it go).
    Free,
    /// Its holder stopped renewing it: it may have died with events in flight.
    TakenOver,
}

/// What a lease's record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Who holds it.
    pub owner: String,
    /// How many times it renewed it.
    pub renewal: u64,
}

/// A lease on `key` in a table of leases, for one owner.
pub struct Lease {
    broker: Arc<dyn Broker>,
    table: TableName,
    key: String,
    owner: String,
    ttl: Duration,
    /// The value this process last wrote.
    held: tokio::sync::Mutex<Option<(Payload, u64)>>,
}

impl Lease {
    /// The lease on `key` of `table`, for `owner`, lost when not renewed
    /// for `ttl`.
    pub fn new(
        broker: Arc<dyn Broker>,
        table: TableName,
        key: &str,
        owner: &str,
        ttl: Duration,
    ) -> Self {
        Self {
            broker,
            table,
            key: key.to_owned(),
            owner: owner.to_owned(),
            ttl,
            held: tokio::sync::Mutex::new(None),
        }
    }

    /// Runs `work` each time this owner holds the lease, until `stop` is
    /// cancelled: `work` is told how the lease was taken and given a token
    /// cancelled when the lease is lost (or at `stop`); it should return
    /// soon after. While `work` runs, the lease is renewed; when it returns,
    /// the lease is let go (a standby takes it at once).
    pub async fn run_while_held<F, Fut>(&self, stop: &CancellationToken, mut work: F)
    where
        F: FnMut(Taken, CancellationToken) -> Fut,
        Fut: Future<Output = ()>,
    {
        while let Some(taken) = self.acquire(stop).await {
            let holding = stop.child_token();
            let (done, lost) = (CancellationToken::new(), CancellationToken::new());
            let keeping = {
                let (done, lost, holding) = (done.clone(), lost.clone(), holding.clone());
                async move {
                    self.keep(&done, &lost).await;
                    if lost.is_cancelled() {
                        holding.cancel();
                    }
                }
            };
            // Renewed beside the work (not spawned: it borrows the lease).
            let ((), ()) = tokio::join!(keeping, async {
                work(taken, holding.clone()).await;
                done.cancel();
            });
            if !lost.is_cancelled() {
                self.release().await;
            }
        }
    }

    fn value(&self, renewal: u64) -> tidings_core::Result<Payload> {
        Payload::from_value(&Holder {
            owner: self.owner.clone(),
            renewal,
        })
    }

    /// Waits until this owner holds the lease, or `stop` is cancelled.
    pub async fn acquire(&self, stop: &CancellationToken) -> Option<Taken> {
        let check_every = (self.ttl / 3).min(Duration::from_secs(1));
        let mut seen: Option<(Payload, Instant)> = None;
        while !stop.is_cancelled() {
            match self.try_acquire(&mut seen).await {
                Ok(Some(taken)) => return Some(taken),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(lease = %self.key, error = %e, "cannot read the subscription's lease")
                }
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(check_every) => {}
            }
        }
        None
    }

    async fn try_acquire(
        &self,
        seen: &mut Option<(Payload, Instant)>,
    ) -> tidings_core::Result<Option<Taken>> {
        let stored = self.broker.get_record(&self.table, &self.key).await?;
        let taken = match &stored {
            None => Taken::Free,
            Some(value) => match seen {
                Some((v, since)) if v == value && since.elapsed() >= self.ttl => Taken::TakenOver,
                Some((v, _)) if v == value => return Ok(None),
                _ => {
                    *seen = Some((value.clone(), Instant::now()));
                    return Ok(None);
                }
            },
        };
        let mine = self.value(0)?;
        let mut tx = Transaction::new();
        tx.expect(self.table.clone(), self.key.clone(), stored).put(
            self.table.clone(),
            self.key.clone(),
            mine.clone(),
        );
        match self.broker.commit(tx).await {
            Ok(_) => {
                *self.held.lock().await = Some((mine, 0));
                Ok(Some(taken))
            }
            // Someone else was quicker.
            Err(Error::RecordChanged { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renews the lease every third of its time to live until `done` is
    /// cancelled; cancels `lost` and returns if it was taken, or could not be
    /// renewed in time (another process may take it over then).
    pub async fn keep(&self, done: &CancellationToken, lost: &CancellationToken) {
        let every = self.ttl / 3;
        let mut renewed = Instant::now();
        loop {
            tokio::select! {
                () = done.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.renew().await {
                Ok(()) => renewed = Instant::now(),
                Err(Error::RecordChanged { .. }) => {
                    tracing::warn!(lease = %self.key, "the subscription's lease was taken over; standing by");
                    lost.cancel();
                    return;
                }
                Err(e) if renewed.elapsed() >= self.ttl * 2 / 3 => {
                    tracing::warn!(lease = %self.key, error = %e, "cannot renew the subscription's lease; standing by");
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    tracing::debug!(lease = %self.key, error = %e, "lease renewal failed; retrying");
                }
            }
        }
    }

    async fn renew(&self) -> tidings_core::Result<()> {
        let mut held = self.held.lock().await;
        let Some((current, renewal)) = held.clone() else {
            return Err(Error::RecordChanged {
                table: self.table.to_string(),
                key: self.key.clone(),
            });
        };
        let next = self.value(renewal + 1)?;
        let mut tx = Transaction::new();
        tx.expect(self.table.clone(), self.key.clone(), Some(current))
            .put(self.table.clone(), self.key.clone(), next.clone());
        self.broker.commit(tx).await?;
        *held = Some((next, renewal + 1));
        Ok(())
    }

    /// Lets the lease go, if this owner still holds it.
    pub async fn release(&self) {
        let Some((current, _)) = self.held.lock().await.take() else {
            return;
        };
        let mut tx = Transaction::new();
        tx.expect(self.table.clone(), self.key.clone(), Some(current))
            .delete(self.table.clone(), self.key.clone());
        if let Err(e) = self.broker.commit(tx).await
            && !matches!(e, Error::RecordChanged { .. })
        {
            tracing::warn!(lease = %self.key, error = %e, "cannot release the subscription's lease; it expires instead");
        }
    }
}

/// Waited beyond the end of the visibility timeouts of what a group has in
/// flight at a takeover: the store brings those deliveries back at the next
/// receive after it, which it may first need to notice (a reclaim or a
/// tending).
const TAKEOVER_MARGIN: Duration = Duration::from_millis(250);

/// Most deliveries in flight looked at (a leased subscription has a few at
/// most: what its last holder had taken ahead).
const IN_FLIGHT_LOOK: usize = 1000;

/// How long a new holder of a lease waits before it receives from `group`:
/// until every delivery still held by a consumer (left in flight by a
/// holder that died or lost the lease) has come back to the group, so that
/// nothing published after it overtakes it. What is left of their
/// visibility timeouts, by the store's clock, plus a small margin; zero
/// when nothing is in flight.
pub async fn in_flight_wait(
    broker: &dyn Broker,
    queue: &tidings_core::QueueName,
    group: &tidings_core::GroupName,
) -> tidings_core::Result<Duration> {
    let pending = broker.pending(queue, group, IN_FLIGHT_LOOK).await?;
    Ok(pending
        .iter()
        .map(|p| p.visible_in + TAKEOVER_MARGIN)
        .max()
        .unwrap_or_default())
}
