//! The queue workload on fjall and redb, side by side in one run.
//!
//! Each engine gets the same operations on 1 KiB values with 16-byte keys:
//! - send: batches of 100 inserts, each batch made durable (fsync);
//! - send one: single inserts, each made durable;
//! - receive + ack: read 100 stored messages, write 100 delivery marks, then
//!   delete the 100 messages and their marks (not synced, as acks are);
//! - steady: a durable batch of 100 sends followed by its receive + ack,
//!   the shape of a queue that keeps up with its producers.

use std::time::Instant;

use redb::ReadableDatabase;

const N: u64 = 100_000;
const BATCH: u64 = 100;
const ONE_AT_A_TIME: u64 = 2_000;

trait Engine {
    fn name(&self) -> &'static str;
    fn send(&mut self, seqs: std::ops::Range<u64>, value: &[u8], durable: bool);
    fn receive_ack(&mut self, seqs: std::ops::Range<u64>);
    fn disk_bytes(&self) -> u64;
}

fn key(prefix: u8, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[0] = prefix;
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

struct Fjall {
    db: fjall::Database,
    messages: fjall::Keyspace,
    marks: fjall::Keyspace,
    dir: tempfile::TempDir,
}

impl Engine for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3"
    }
    fn send(&mut self, seqs: std::ops::Range<u64>, value: &[u8], durable: bool) {
        let mut b = self.db.batch();
        for s in seqs {
            b.insert(&self.messages, key(1, s), value);
        }
        b.commit().unwrap();
        if durable {
            self.db.persist(fjall::PersistMode::SyncData).unwrap();
        }
    }
    fn receive_ack(&mut self, seqs: std::ops::Range<u64>) {
        let mut b = self.db.batch();
        for s in seqs.clone() {
            assert!(self.messages.get(key(1, s)).unwrap().is_some());
            b.insert(&self.marks, key(2, s), [1u8]);
        }
        b.commit().unwrap();
        let mut b = self.db.batch();
        for s in seqs {
            b.remove(&self.messages, key(1, s));
            b.remove(&self.marks, key(2, s));
        }
        b.commit().unwrap();
    }
    fn disk_bytes(&self) -> u64 {
        dir_size(self.dir.path())
    }
}

const MESSAGES: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("messages");
const MARKS: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("marks");

struct Redb {
    db: redb::Database,
    dir: tempfile::TempDir,
}

impl Redb {
    fn write(&self, durable: bool, f: impl FnOnce(&redb::WriteTransaction)) {
        let mut tx = self.db.begin_write().unwrap();
        let level = if durable { redb::Durability::Immediate } else { redb::Durability::None };
        tx.set_durability(level).unwrap();
        f(&tx);
        tx.commit().unwrap();
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb 4"
    }
    fn send(&mut self, seqs: std::ops::Range<u64>, value: &[u8], durable: bool) {
        self.write(durable, |tx| {
            let mut t = tx.open_table(MESSAGES).unwrap();
            for s in seqs {
                t.insert(key(1, s).as_slice(), value).unwrap();
            }
        });
    }
    fn receive_ack(&mut self, seqs: std::ops::Range<u64>) {
        {
            let rx = self.db.begin_read().unwrap();
            let t = rx.open_table(MESSAGES).unwrap();
            for s in seqs.clone() {
                assert!(t.get(key(1, s).as_slice()).unwrap().is_some());
            }
        }
        self.write(false, |tx| {
            let mut marks = tx.open_table(MARKS).unwrap();
            for s in seqs.clone() {
                marks.insert(key(2, s).as_slice(), [1u8].as_slice()).unwrap();
            }
        });
        self.write(false, |tx| {
            let mut messages = tx.open_table(MESSAGES).unwrap();
            let mut marks = tx.open_table(MARKS).unwrap();
            for s in seqs {
                messages.remove(key(1, s).as_slice()).unwrap();
                marks.remove(key(2, s).as_slice()).unwrap();
            }
        });
    }
    fn disk_bytes(&self) -> u64 {
        dir_size(self.dir.path())
    }
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn engines() -> Vec<Box<dyn Engine>> {
    let fdir = tempfile::tempdir_in(".").unwrap();
    let db = fjall::Database::builder(fdir.path()).open().unwrap();
    let messages = db.keyspace("messages", fjall::KeyspaceCreateOptions::default).unwrap();
    let marks = db.keyspace("marks", fjall::KeyspaceCreateOptions::default).unwrap();
    let rdir = tempfile::tempdir_in(".").unwrap();
    let rdb = redb::Database::create(rdir.path().join("db")).unwrap();
    vec![
        Box::new(Fjall { db, messages, marks, dir: fdir }),
        Box::new(Redb { db: rdb, dir: rdir }),
    ]
}

fn rate(n: u64, started: Instant) -> f64 {
    n as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let value: Vec<u8> = (0..1024u32).map(|i| b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26).collect();
    println!("| engine | send, batches of 100, fsync each | send one, fsync each | receive + ack, batches of 100 | steady send + receive + ack | disk after |");
    println!("|---|---|---|---|---|---|");
    for mut e in engines() {
        let t = Instant::now();
        for b in 0..N / BATCH {
            e.send(b * BATCH..(b + 1) * BATCH, &value, true);
        }
        let send = rate(N, t);
        let t = Instant::now();
        for s in N..N + ONE_AT_A_TIME {
            e.send(s..s + 1, &value, true);
        }
        let one = rate(ONE_AT_A_TIME, t);
        let t = Instant::now();
        for b in 0..N / BATCH {
            e.receive_ack(b * BATCH..(b + 1) * BATCH);
        }
        let ack = rate(N, t);
        let base = 2 * N;
        let t = Instant::now();
        for b in 0..N / BATCH {
            let r = base + b * BATCH..base + (b + 1) * BATCH;
            e.send(r.clone(), &value, true);
            e.receive_ack(r);
        }
        let steady = rate(N, t);
        println!(
            "| {} | {send:.0}/s | {one:.0}/s | {ack:.0}/s | {steady:.0}/s | {:.1} MB |",
            e.name(),
            e.disk_bytes() as f64 / 1e6
        );
    }
}
