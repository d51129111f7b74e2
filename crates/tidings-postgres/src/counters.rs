//! Folding counters' deltas into their records, in the background.
//!
//! An add inserts a delta (migration 0002) and reads sum a counter's
//! deltas, so deltas are folded soon after they are written: a task wakes
//! after a transaction of this process added to a counter, waits a moment
//! so that one fold takes many, and folds until none are left. Any
//! process's fold takes every counter's deltas, so a process that stopped
//! leaves nothing behind for long; `Broker::maintain` folds too.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// How long the task waits after an add before it folds.
const PAUSE: Duration = Duration::from_millis(200);

/// Counters folded per transaction.
const KEYS_PER_FOLD: i32 = 1_000;

/// Transactions per fold at most (the rest waits for the next).
const FOLDS: usize = 16;

/// Folds counters' deltas, a transaction per [`KEYS_PER_FOLD`] counters
/// (at most [`FOLDS`]), without waiting for the disk (a fold lost in a crash only
/// leaves the deltas where they were). Returns the deltas removed.
pub(crate) async fn fold(
    client: &mut deadpool_postgres::Client,
    sql: &str,
) -> Result<u64, tokio_postgres::Error> {
    let statement = client.prepare_cached(sql).await?;
    let mut removed = 0u64;
    for _ in 0..FOLDS {
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await?;
        let row = tx.query_one(&statement, &[&KEYS_PER_FOLD]).await?;
        tx.commit().await?;
        let n = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
        removed += n;
        if n == 0 {
            break;
        }
    }
    Ok(removed)
}

/// Starts the task that folds after adds are announced on `added`; it
/// stops when the handle is aborted.
pub(crate) fn start(pool: Pool, sql: String, added: Arc<Notify>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            added.notified().await;
            tokio::time::sleep(PAUSE).await;
            let folded = match pool.get().await {
                Ok(mut client) => fold(&mut client, &sql).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(error) = folded {
                // The next add, or the next maintain, tries again.
                tracing::debug!(%error, "folding counters failed");
            }
        }
    })
}
