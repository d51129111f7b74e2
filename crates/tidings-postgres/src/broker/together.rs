//! Group commit of transactions: concurrent commits share a PostgreSQL
//! transaction (see `lines`: up to 2 run at once, and the next carries
//! every one that waited, up to 2,000 operations), their statements
//! shared where they can be (see `commit::combine`), so that one commit
//! (and one flush of the write-ahead log) serves many. The outcome is that of committing them one after
//! another in that order. If any of them fails, the shared transaction
//! commits nothing and each is committed again alone, so that only the
//! failing one fails.

use tidings_core::{Error, Result, SendReceipt, TxOp};

use super::Shared;
use super::lines::{Lines, Share, same};

/// The operations of one transaction.
pub(crate) struct Ops(pub(crate) Vec<TxOp>);

impl Share for Ops {
    type Key = ();
    type Output = Vec<SendReceipt>;
    const IN_FLIGHT: usize = 2;
    const MOST: usize = 2_000;

    fn lines(shared: &Shared) -> &Lines<Self> {
        &shared.commits
    }

    fn size(&self) -> usize {
        self.0.len()
    }

    async fn alone(self, shared: &Shared, (): &()) -> Result<Vec<SendReceipt>> {
        shared.apply_alone(&self.0).await
    }

    async fn together(all: Vec<Self>, shared: &Shared, (): &()) -> Vec<Result<Vec<SendReceipt>>> {
        let members: Vec<Vec<TxOp>> = all.into_iter().map(|ops| ops.0).collect();
        match shared.apply_batch(&members).await {
            Ok(receipts) => receipts.into_iter().map(Ok).collect(),
            // Committed or not: nobody can tell, nor run them again.
            Err(e @ Error::OutcomeUnknown(_)) => members.iter().map(|_| Err(same(&e))).collect(),
            // Nothing was committed: each again, alone.
            Err(_) => {
                let mut answers = Vec::with_capacity(members.len());
                for ops in &members {
                    answers.push(shared.apply_alone(ops).await);
                }
                answers
            }
        }
    }
}
