//! Table files written as rows come: rows of one family in ascending key
//! order, produced by a fold over other rows (the address totals at the
//! end of a bulk run), go to last-level table files `ROWS_PER_FILE` at a
//! time, so no more than that is held whatever the family's size. The
//! files of several such writers are handed to RocksDB together.

use std::marker::PhantomData;
use std::path::PathBuf;

use anyhow::Result;
use rayon::prelude::*;
use satflow_schema::cf::Family;
use satflow_schema::Codec;

use super::arena::{Arena, Op};
use super::write::{Landing, ROWS_PER_FILE};
use super::Store;

/// Rows of `F` on their way to table files; see the module.
pub struct Tables<'s, F: Family> {
    store: &'s Store,
    /// Tells this writer's files from those of the others.
    name: String,
    rows: Arena,
    files: Vec<PathBuf>,
    written: usize,
    // Not holding an F: Send whatever F is.
    family: PhantomData<fn() -> F>,
}

impl Store {
    /// A writer of table files of `F`, `name` telling its files apart
    /// from other writers' until `ingest_tables`.
    pub fn tables<F: Family>(&self, name: impl std::fmt::Display) -> Tables<'_, F> {
        Tables {
            store: self,
            name: name.to_string(),
            rows: Arena::default(),
            files: Vec::new(),
            written: 0,
            family: PhantomData,
        }
    }

    /// Writes what the writers still hold and adds all their files to
    /// `F` at once. Their keys must not overlap one another's, nor any
    /// the family holds.
    pub fn ingest_tables<F: Family>(&self, mut writers: Vec<Tables<'_, F>>) -> Result<()> {
        // What each still holds, written on every worker.
        writers.par_iter_mut().try_for_each(Tables::write)?;
        let (mut files, mut rows) = (Vec::new(), 0);
        for mut w in writers {
            rows += w.written;
            files.append(&mut w.files);
        }
        if files.is_empty() {
            return Ok(());
        }
        self.ingest_files(F::NAME, rows, files)
    }
}

impl<F: Family> Tables<'_, F> {
    /// Adds a row; keys must come in ascending order.
    pub fn put(&mut self, key: &F::Key, value: &F::Value) -> Result<()> {
        self.rows
            .push(key.encode().as_ref(), Op::Put, value.encode().as_ref());
        if self.rows.len() == ROWS_PER_FILE {
            self.write()?;
        }
        Ok(())
    }

    /// Writes the rows it still holds and lets their buffer go: a writer
    /// done with its rows holds only its files' names until
    /// `ingest_tables`.
    pub fn finish(mut self) -> Result<Self> {
        self.write()?;
        self.rows = Arena::default();
        Ok(self)
    }

    fn write(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let part = format!("{}.{}", self.name, self.files.len());
        let file = self.store.ingest_file(F::NAME, part)?;
        let rows = self.rows.ops(&self.rows.entries);
        self.store
            .write_table(F::NAME, &file, rows, Landing::Bottom)?;
        self.files.push(file);
        self.written += self.rows.len();
        self.rows.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use satflow_schema::cf;
    use satflow_schema::tx::InputRef;
    use satflow_schema::{OutNum, TxNum};

    use crate::store::Access;

    use super::*;

    fn spend(n: u64) -> InputRef {
        InputRef {
            tx: TxNum(n),
            vin: 0,
        }
    }

    #[test]
    fn several_writers_land_together_and_keys_out_of_order_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let (mut a, mut b) = (store.tables("a"), store.tables("b"));
        for n in 0..3 {
            a.put(&OutNum(n), &spend(n)).unwrap();
            b.put(&OutNum(10 + n), &spend(n)).unwrap();
        }
        store.ingest_tables::<cf::Spends>(vec![b, a]).unwrap();
        let keys: Vec<u64> = store
            .scan_all::<cf::Spends>()
            .map(|r| r.unwrap().0 .0)
            .collect();
        assert_eq!(keys, [0, 1, 2, 10, 11, 12]);

        let mut c = store.tables::<cf::Spends>("c");
        c.put(&OutNum(30), &spend(0)).unwrap();
        c.put(&OutNum(20), &spend(0)).unwrap();
        let err = format!("{:#}", store.ingest_tables(vec![c]).unwrap_err());
        assert!(err.contains("spends.c.0.sst"), "{err}");
    }

    #[test]
    fn files_a_killed_writer_left_are_removed_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let mut a = store.tables::<cf::Spends>("a");
        a.put(&OutNum(1), &spend(1)).unwrap();
        // Written, never handed to RocksDB: the writer stops here.
        drop(a.finish().unwrap());
        drop(store);
        let left = dir.path().join("ingest/spends.a.0.sst");
        assert!(left.exists());
        let store = Store::open(dir.path(), Access::Write).unwrap();
        assert!(!left.exists());
        assert_eq!(store.scan_all::<cf::Spends>().count(), 0);
    }
}
