//! Shared reads of records by key: concurrent reads share a statement (see
//! `lines`): one runs at a time, and the next carries every read that
//! waited, up to 1,000 keys. Each caller gets its keys' records as one
//! statement read them (one snapshot).

use tidings_core::{Payload, Result, TableName};

use super::Shared;
use super::lines::{Lines, Share, split};

/// The keys of one read.
pub(crate) struct Keys(pub(crate) Vec<(TableName, String)>);

impl Share for Keys {
    type Key = ();
    type Output = Vec<Option<Payload>>;
    const IN_FLIGHT: usize = 1;
    const MOST: usize = 1000;

    fn lines(shared: &Shared) -> &Lines<Self> {
        &shared.reads
    }

    fn size(&self) -> usize {
        self.0.len()
    }

    async fn alone(self, shared: &Shared, (): &()) -> Result<Vec<Option<Payload>>> {
        shared.records_now(&self.0).await
    }

    async fn together(
        all: Vec<Self>,
        shared: &Shared,
        (): &(),
    ) -> Vec<Result<Vec<Option<Payload>>>> {
        let counts: Vec<usize> = all.iter().map(Share::size).collect();
        let combined: Vec<(TableName, String)> = all.into_iter().flat_map(|keys| keys.0).collect();
        split(shared.records_now(&combined).await, &counts)
    }
}
