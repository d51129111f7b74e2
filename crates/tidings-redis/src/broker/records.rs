//! Records: a hash of values and a sorted set of keys per table.

use tidings_core::record::validate_key;
use tidings_core::{Payload, Record, RecordScan, Result, TableName};

use super::RedisBroker;
use crate::{scripts, value};

impl RedisBroker {
    pub(super) async fn record(&self, table: &TableName, key: &str) -> Result<Option<Payload>> {
        validate_key(key)?;
        let keys = self.layout.table(table);
        let reply = self
            .command(redis::cmd("HGET").arg(&keys.values).arg(key))
            .await?;
        Ok(value::text(&reply).map(Payload::from_trusted))
    }

    pub(super) async fn scan(&self, table: &TableName, scan: RecordScan) -> Result<Vec<Record>> {
        if scan.limit == 0 {
            return Ok(Vec::new());
        }
        let keys = self.layout.table(table);
        let (min, max) = lex_bounds(&scan);
        let limit = if scan.limit == usize::MAX {
            -1
        } else {
            i64::try_from(scan.limit).unwrap_or(-1)
        };
        let reply = self
            .script(
                &scripts::SCAN,
                &[&keys.values],
                vec![
                    min,
                    max,
                    if scan.reverse {
                        b"1".to_vec()
                    } else {
                        b"0".to_vec()
                    },
                    limit.to_string().into_bytes(),
                ],
            )
            .await?;
        Ok(value::items(&reply)
            .chunks_exact(2)
            .filter_map(|kv| {
                Some(Record {
                    key: value::text(&kv[0])?,
                    value: Payload::from_trusted(value::text(&kv[1])?),
                })
            })
            .collect())
    }
}

/// ZRANGEBYLEX bounds for a scan: from the larger of prefix and `from`
/// (inclusive) to the smaller of the end of the prefix and `to` (exclusive).
fn lex_bounds(scan: &RecordScan) -> (Vec<u8>, Vec<u8>) {
    let lower = match &scan.from {
        Some(from) if from.as_str() > scan.prefix.as_str() => from.as_bytes(),
        _ => scan.prefix.as_bytes(),
    };
    let min = if lower.is_empty() {
        b"-".to_vec()
    } else {
        [b"[".as_slice(), lower].concat()
    };
    // No UTF-8 text contains 0xFF, so prefix + 0xFF is past every key with the prefix.
    let prefix_end = (!scan.prefix.is_empty()).then(|| [scan.prefix.as_bytes(), &[0xFF]].concat());
    let upper = match (prefix_end, &scan.to) {
        (Some(end), Some(to)) => Some(if to.as_bytes() < end.as_slice() {
            to.as_bytes().to_vec()
        } else {
            end
        }),
        (Some(end), None) => Some(end),
        (None, Some(to)) => Some(to.as_bytes().to_vec()),
        (None, None) => None,
    };
    let max = match upper {
        Some(upper) => [b"(".as_slice(), &upper].concat(),
        None => b"+".to_vec(),
    };
    (min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_combine_prefix_and_range() {
        let (min, max) = lex_bounds(&RecordScan::all());
        assert_eq!(
            (min.as_slice(), max.as_slice()),
            (b"-".as_slice(), b"+".as_slice())
        );
        let (min, max) = lex_bounds(&RecordScan::prefix("e.").from("e.2").to("f"));
        assert_eq!(min, b"[e.2");
        assert_eq!(max, b"(e.\xFF");
        let (min, max) = lex_bounds(&RecordScan::prefix("e.").to("e.5"));
        assert_eq!(min, b"[e.");
        assert_eq!(max, b"(e.5");
    }
}
