//! Reading records (writes go through transactions, see `operations`).

use tidings_core::{Error, Payload, Record, RecordScan, Result, TableName};

use super::EmbeddedBroker;
use crate::records::{prefix_end, record_key};
use crate::store::{KeyRange, Space};

fn text(table: &TableName, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| Error::Corrupt {
        location: format!("table {table}"),
        detail: e.to_string(),
    })
}

impl EmbeddedBroker {
    pub(super) fn read_record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        let Some(bytes) = self
            .inner
            .store()
            .get(Space::Records, &record_key(table.as_str(), key))?
        else {
            return Ok(None);
        };
        Ok(Some(Payload::from_trusted(text(table, &bytes)?)))
    }

    pub(super) fn read_records(&self, table: &TableName, scan: &RecordScan) -> Result<Vec<Record>> {
        let table_prefix = record_key(table.as_str(), "");
        let prefix = record_key(table.as_str(), &scan.prefix);
        let start = match &scan.from {
            Some(from) if from.as_str() > scan.prefix.as_str() => record_key(table.as_str(), from),
            _ => prefix.clone(),
        };
        let mut end = prefix_end(&prefix);
        if let Some(to) = &scan.to {
            let to = record_key(table.as_str(), to);
            end = Some(end.map_or(to.clone(), |e| e.min(to)));
        }
        let mut out = Vec::new();
        if scan.limit == 0 || end.as_ref().is_some_and(|e| *e <= start) {
            return Ok(out);
        }
        let keys = KeyRange {
            start: &start,
            end: end.as_deref(),
            reverse: scan.reverse,
        };
        self.inner
            .store()
            .range(Space::Records, keys, &mut |k, v| {
                let key = text(table, &k[table_prefix.len()..])?;
                out.push(Record {
                    key,
                    value: Payload::from_trusted(text(table, v)?),
                });
                Ok(out.len() < scan.limit)
            })?;
        Ok(out)
    }
}
