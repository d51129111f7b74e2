//! Records are kept on disk: they survive closing and reopening.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tidings_core::{Broker, Payload, RecordScan, TableName, Transaction};
use tidings_embedded::EmbeddedBroker;

#[tokio::test]
async fn records_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let table = TableName::new("catalog").unwrap();
    {
        let broker = EmbeddedBroker::open(dir.path()).unwrap();
        let mut tx = Transaction::new();
        for n in 0..100 {
            tx.put(
                table.clone(),
                format!("k{n:03}"),
                Payload::from_value(&n).unwrap(),
            );
        }
        tx.delete(table.clone(), "k050");
        broker.commit(tx).await.unwrap();
        broker.close();
    }
    let broker = EmbeddedBroker::open(dir.path()).unwrap();
    let all = broker
        .scan_records(&table, RecordScan::all())
        .await
        .unwrap();
    assert_eq!(all.len(), 99);
    assert_eq!(all[0].key, "k000");
    assert_eq!(all[98].value.as_str(), "99");
    assert!(broker.get_record(&table, "k050").await.unwrap().is_none());
}
