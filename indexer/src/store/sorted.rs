//! A write batch sorted by key within each column family before it reaches
//! RocksDB. Memtable inserts in key order reuse the skiplist position of the
//! previous insert instead of searching from the top: unsorted, indexing
//! spent over half its time in that search.
//!
//! Rows of the append-only families (`cf::Appended`, keyed by ids that only
//! grow) skip the memtable altogether: each family's rows become one table
//! file, ingested below everything else (see `Store::ingest`).

use anyhow::Result;
use rayon::prelude::*;
use rocksdb::WriteBatch;
use satflow_schema::cf::{self, Appended, Family};
use satflow_schema::codec::Raw;
use satflow_schema::meta;
use satflow_schema::Codec;

use super::arena::{Arena, Op};
use super::write::Landing;
use super::Store;

pub struct SortedBatch {
    families: Vec<Arena>,
    /// Per family of `cf::APPENDED`: new rows, in ascending key order.
    appended: Vec<Arena>,
}

impl Default for SortedBatch {
    fn default() -> Self {
        SortedBatch {
            families: cf::ALL.iter().map(|_| Arena::default()).collect(),
            appended: cf::APPENDED.iter().map(|_| Arena::default()).collect(),
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
                    store.ingest(name, f.ops(&f.entries))?;
                    f.clear();
                }
                Ok(())
            });
            let batch = write_batch(&mut self.families, store);
            (ingest.join().expect("the ingest thread panicked"), batch)
        });
        self.families.iter_mut().for_each(Arena::clear);
        ingested?;
        store.write_raw(batch)
    }
}

impl SortedBatch {
    /// Empties every family, keeping the allocations for the next rows.
    pub fn clear(&mut self) {
        self.families.iter_mut().for_each(Arena::clear);
        self.appended.iter_mut().for_each(Arena::clear);
    }

    /// Replaces this batch's operations with those of `parts`, in their
    /// order: batches built in parallel, each of consecutive blocks, joined
    /// in chain order. Each family is copied once, on every worker, into
    /// this batch's arenas, whose allocations (like the parts', which are
    /// left empty) serve epoch after epoch: grown afresh each time, they
    /// cost a copy at each doubling and a page fault at each new page.
    pub fn concat_from(&mut self, parts: &mut [SortedBatch]) {
        fn columns(
            into: &mut [Arena],
            parts: &mut [SortedBatch],
            column: impl Fn(&mut SortedBatch) -> &mut Vec<Arena>,
        ) {
            let mut sources: Vec<Vec<&mut Arena>> = into.iter().map(|_| Vec::new()).collect();
            for part in parts {
                for (source, arena) in sources.iter_mut().zip(column(part).iter_mut()) {
                    source.push(arena);
                }
            }
            into.par_iter_mut()
                .zip(sources)
                .for_each(|(arena, mut parts)| arena.concat_from(&mut parts));
        }
        columns(&mut self.families, parts, |p| &mut p.families);
        columns(&mut self.appended, parts, |p| &mut p.appended);
    }

    /// Writes a batch of operations on distinct keys (the bulk path's)
    /// without a memtable: every family's rows as table files, sorted and
    /// written on every worker, the appended families first; then `meta`
    /// (the tip) in one write, as `commit` does. A crash before that write
    /// leaves rows above the tip, which the next run removes (`recover`).
    /// `landing` says where each family's rows will end up (a run file's
    /// too come before the tip); the appended families' always land on the
    /// last level. The batch is left empty, its allocations kept for the
    /// next epoch's rows.
    pub fn ingest_all(
        &mut self,
        store: &Store,
        landing: impl Fn(&str) -> Landing + Sync,
    ) -> Result<()> {
        let ingest = |names: &[&'static str], arenas: &mut [Arena], appended: bool| -> Result<()> {
            names
                .par_iter()
                .zip(arenas.par_iter_mut())
                .filter(|(name, _)| **name != cf::Meta::NAME)
                .try_for_each(|(name, rows)| {
                    rows.par_sort();
                    let lands = match appended {
                        true => Landing::Bottom,
                        false => landing(name),
                    };
                    store.ingest_rows(name, rows, lands)?;
                    rows.clear();
                    Ok(())
                })
        };
        ingest(&cf::APPENDED, &mut self.appended, true)?;
        ingest(&cf::ALL, &mut self.families, false)?;
        let batch = write_batch(&mut self.families, store);
        self.clear();
        store.write_raw(batch)
    }
}

/// The RocksDB batch, each family's operations in key order. The sort is
/// stable: operations on one key keep the order they were made in.
fn write_batch(families: &mut [Arena], store: &Store) -> WriteBatch {
    // Roughly the encoded size, so the batch is not regrown and copied.
    let bytes: usize = families.iter().map(|f| f.byte_len() + f.len() * 8).sum();
    let mut batch = WriteBatch::with_capacity_bytes(bytes);
    for (name, f) in cf::ALL.iter().zip(families) {
        f.sort_stable();
        let handle = store.cf_named(name);
        for e in &f.entries {
            let (key, value) = (f.key(e), f.value(e));
            match e.op {
                Op::Put => batch.put_cf(handle, key, value),
                Op::Delete => batch.delete_cf(handle, key),
                Op::Merge => batch.merge_cf(handle, key, value),
            }
        }
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
