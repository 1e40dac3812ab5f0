//! A write batch sorted by key within each column family before it reaches
//! RocksDB. Memtable inserts in key order reuse the skiplist position of the
//! previous insert instead of searching from the top: unsorted, indexing
//! spent over half its time in that search.
//!
//! Rows of the append-only families (`cf::Appended`, keyed by ids that only
//! grow) skip the memtable altogether: each family's rows become one table
//! file, ingested below everything else (see `Store::ingest`).

use anyhow::Result;
use rocksdb::WriteBatch;
use satflow_schema::cf::{self, Appended};
use satflow_schema::codec::Raw;
use satflow_schema::meta;
use satflow_schema::Codec;

use super::Store;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Put,
    Delete,
    Merge,
}

/// One operation; key and value live in the family's byte arena.
#[derive(Clone, Copy)]
struct Entry {
    /// The key's first 16 bytes, big-endian: decides nearly every
    /// comparison of the sort without a trip to the arena.
    prefix: u128,
    start: usize,
    key_len: u32,
    value_len: u32,
    op: Op,
}

/// The operations of one column family: an arena instead of a heap
/// allocation per key and value.
#[derive(Default)]
struct Family {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Family {
    fn push(&mut self, key: &[u8], op: Op, value: &[u8]) {
        let mut head = [0u8; 16];
        let n = key.len().min(16);
        head[..n].copy_from_slice(&key[..n]);
        self.entries.push(Entry {
            prefix: u128::from_be_bytes(head),
            start: self.bytes.len(),
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            op,
        });
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
    }

    /// Empties the family, keeping its allocations for the next batch.
    fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    fn key(&self, e: &Entry) -> &[u8] {
        &self.bytes[e.start..e.start + e.key_len as usize]
    }

    fn value(&self, e: &Entry) -> &[u8] {
        let from = e.start + e.key_len as usize;
        &self.bytes[from..from + e.value_len as usize]
    }
}

pub struct SortedBatch {
    families: Vec<Family>,
    /// Per family of `cf::APPENDED`: new rows, in ascending key order.
    appended: Vec<Family>,
}

impl Default for SortedBatch {
    fn default() -> Self {
        SortedBatch {
            families: cf::ALL.iter().map(|_| Family::default()).collect(),
            appended: cf::APPENDED.iter().map(|_| Family::default()).collect(),
        }
    }
}

impl SortedBatch {
    pub fn put<F: cf::Family>(&mut self, key: &F::Key, value: &F::Value) {
        self.push::<F>(key.encode().as_ref(), Op::Put, value.encode().as_ref());
    }

    pub fn delete<F: cf::Family>(&mut self, key: &F::Key) {
        self.push::<F>(key.encode().as_ref(), Op::Delete, &[]);
    }

    pub fn merge<F: cf::Family>(&mut self, key: &F::Key, delta: &F::Value) {
        self.push::<F>(key.encode().as_ref(), Op::Merge, delta.encode().as_ref());
    }

    pub fn put_meta<E: meta::Entry>(&mut self, entry: E, value: &E::Value) {
        self.put::<cf::Meta>(&entry.key(), &Raw(value.encode().as_ref().to_vec()));
    }

    pub fn delete_meta<E: meta::Entry>(&mut self, entry: E) {
        self.delete::<cf::Meta>(&entry.key());
    }

    /// A new row of an append-only family: its key lies above every key
    /// the family holds and every key appended to it before.
    pub fn append<F: Appended>(&mut self, key: &F::Key, value: &F::Value) {
        let i = cf::APPENDED
            .iter()
            .position(|n| *n == F::NAME)
            .expect("an append-only column family");
        self.appended[i].push(key.encode().as_ref(), Op::Put, value.encode().as_ref());
    }

    fn push<F: cf::Family>(&mut self, key: &[u8], op: Op, value: &[u8]) {
        let i = cf::ALL
            .iter()
            .position(|n| *n == F::NAME)
            .expect("a known column family");
        self.families[i].push(key, op, value);
    }

    /// Writes the batch and empties it, keeping its allocations for reuse:
    /// the appended rows first, as table files, then the rest with the tip
    /// in one write. A crash in between leaves appended rows above the tip,
    /// which the next writer removes; the other order could persist a tip
    /// whose rows are missing.
    pub fn commit(&mut self, store: &Store) -> Result<()> {
        let appended = &mut self.appended;
        // The table files are built while the write batch is sorted.
        let (ingested, batch) = std::thread::scope(|s| {
            let ingest = s.spawn(|| -> Result<()> {
                for (name, f) in cf::APPENDED.iter().zip(appended.iter_mut()) {
                    store.ingest(name, f.entries.iter().map(|e| (f.key(e), f.value(e))))?;
                    f.clear();
                }
                Ok(())
            });
            let batch = write_batch(&mut self.families, store);
            (ingest.join().expect("the ingest thread panicked"), batch)
        });
        self.families.iter_mut().for_each(Family::clear);
        ingested?;
        store.write_raw(batch)
    }
}

/// The RocksDB batch, each family's operations in key order. The sort is
/// stable: operations on one key keep the order they were made in.
fn write_batch(families: &mut [Family], store: &Store) -> WriteBatch {
    // Roughly the encoded size, so the batch is not regrown and copied.
    let bytes: usize = families
        .iter()
        .map(|f| f.bytes.len() + f.entries.len() * 8)
        .sum();
    let mut batch = WriteBatch::with_capacity_bytes(bytes);
    for (name, f) in cf::ALL.iter().zip(families) {
        let mut entries = std::mem::take(&mut f.entries);
        entries.sort_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| f.key(a).cmp(f.key(b))));
        let handle = store.cf_named(name);
        for e in &entries {
            let (key, value) = (f.key(e), f.value(e));
            match e.op {
                Op::Put => batch.put_cf(handle, key, value),
                Op::Delete => batch.delete_cf(handle, key),
                Op::Merge => batch.merge_cf(handle, key, value),
            }
        }
        f.entries = entries;
    }
    batch
}

#[cfg(test)]
mod tests {
    use satflow_schema::script::ScriptType;
    use satflow_schema::tx::OutputRow;
    use satflow_schema::{AddrId, OutNum, TxNum};

    use super::*;
    use crate::store::{Access, Direction};

    fn output(value: u64) -> OutputRow {
        OutputRow {
            tx: Some(TxNum(0)),
            vout: 0,
            value,
            script_type: ScriptType::P2wpkh,
            addr: Some(AddrId(0)),
        }
    }

    #[test]
    fn sorts_keys_but_keeps_the_order_of_operations_on_one_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let mut b = SortedBatch::default();
        // Out of key order, and several operations on keys 3 and 5: after
        // the sort, each key's last operation must still be the one that wins.
        b.put::<cf::Spends>(
            &OutNum(9),
            &satflow_schema::tx::InputRef {
                tx: TxNum(1),
                vin: 0,
            },
        );
        b.put::<cf::Outputs>(&OutNum(3), &output(1));
        b.put::<cf::Outputs>(&OutNum(1), &output(1));
        b.put::<cf::Outputs>(&OutNum(3), &output(2));
        b.delete::<cf::Outputs>(&OutNum(3));
        b.delete::<cf::Outputs>(&OutNum(5));
        b.put::<cf::Outputs>(&OutNum(5), &output(7));
        b.commit(&store).unwrap();
        let rows: Vec<(OutNum, u64)> = store
            .scan_all::<cf::Outputs>()
            .map(|r| r.map(|(n, o)| (n, o.value)))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(rows, [(OutNum(1), 1), (OutNum(5), 7)]);
        assert!(store.get::<cf::Spends>(&OutNum(9)).unwrap().is_some());
        // The batch is empty after a commit and can be reused.
        b.commit(&store).unwrap();
        let last = store
            .scan::<cf::Outputs>(&OutNum(u64::MAX), Direction::Reverse)
            .next();
        assert_eq!(last.unwrap().unwrap().0, OutNum(5));
    }

    #[test]
    fn appended_rows_are_ingested_beside_the_written_ones() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let mut b = SortedBatch::default();
        for n in 0..3 {
            b.append::<cf::Outputs>(&OutNum(n), &output(n * 10));
        }
        b.put::<cf::Outputs>(&OutNum::FIRST_OUTSIDE, &output(99));
        b.commit(&store).unwrap();
        let values: Vec<u64> = store
            .scan_all::<cf::Outputs>()
            .map(|r| r.map(|(_, o)| o.value))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(values, [0, 10, 20, 99]);
    }
}
