//! Rows of one family that come in no order and may not fit in memory (a
//! bulk run's unspent outputs by address, mainnet's ~180 M): each writer
//! sorts what it holds into a run file every `SPILL_ROWS` rows, and the
//! runs are merged at once into last-level table files
//! (`Store::merge_runs`). Memory stays at one arena per writer, whatever
//! the family's size.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result};
use satflow_schema::cf::Family;
use satflow_schema::Codec;

use super::arena::{Arena, Op};
use super::Store;

/// Rows a writer holds before sorting them into a run: ~64 MB of arena
/// for rows of two ids and a value.
const SPILL_ROWS: usize = 1 << 20;

/// Run files of `F` being written by any number of `SpillWriter`s.
pub struct Spill<'s, F: Family> {
    store: &'s Store,
    /// The next run's name.
    runs: AtomicU32,
    // Not holding an F: Send and Sync whatever F is.
    family: PhantomData<fn() -> F>,
}

/// One worker's rows of a `Spill`, written as a run when there are enough.
pub struct SpillWriter<'p, 's, F: Family> {
    spill: &'p Spill<'s, F>,
    rows: Arena,
}

impl Store {
    /// Starts spilling rows of `F`, removing the runs an interrupted spill
    /// left: those rows are written again.
    pub fn spill<F: Family>(&self) -> Result<Spill<'_, F>> {
        let dir = self.runs_dir(F::NAME);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))?
            }
            _ => {}
        }
        Ok(Spill {
            store: self,
            runs: AtomicU32::new(0),
            family: PhantomData,
        })
    }
}

impl<'s, F: Family> Spill<'s, F> {
    pub fn writer(&self) -> SpillWriter<'_, 's, F> {
        SpillWriter {
            spill: self,
            rows: Arena::default(),
        }
    }

    /// Merges the runs that the (finished) writers left into `F`'s
    /// table files. The family must hold none of their keys.
    pub fn merge(self) -> Result<()> {
        let whole_keys = usize::MAX;
        let every_run = Some(u32::MAX);
        self.store
            .merge_runs(F::NAME, every_run, whole_keys, || (), |(), _, _| Ok(()), Ok)?;
        Ok(())
    }
}

impl<F: Family> SpillWriter<'_, '_, F> {
    /// Adds a row; no two may have the same key.
    pub fn put(&mut self, key: &F::Key, value: &F::Value) -> Result<()> {
        self.rows
            .push(key.encode().as_ref(), Op::Put, value.encode().as_ref());
        if self.rows.len() == SPILL_ROWS {
            self.write()?;
        }
        Ok(())
    }

    /// Writes the rows it still holds.
    pub fn finish(mut self) -> Result<()> {
        self.write()
    }

    fn write(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        self.rows.sort_stable();
        let tag = self.spill.runs.fetch_add(1, Ordering::Relaxed);
        self.spill.store.write_run(F::NAME, tag, &self.rows)?;
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

    #[test]
    fn rows_in_any_order_from_several_writers_land_sorted_and_a_second_spill_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let spend = |n: u64| InputRef {
            tx: TxNum(n),
            vin: 0,
        };
        // A spill interrupted before its merge leaves a run behind.
        {
            let killed = store.spill::<cf::Spends>().unwrap();
            let mut w = killed.writer();
            w.put(&OutNum(7), &spend(99)).unwrap();
            w.finish().unwrap();
        }

        let spill = store.spill::<cf::Spends>().unwrap();
        // Over a run's worth in one writer, interleaved with another's.
        let n = (SPILL_ROWS + SPILL_ROWS / 2) as u64;
        let (mut most, mut some) = (spill.writer(), spill.writer());
        for k in (0..n).rev() {
            let w = if k % 8 == 0 { &mut some } else { &mut most };
            w.put(&OutNum(k), &spend(k)).unwrap();
        }
        most.finish().unwrap();
        some.finish().unwrap();
        assert_eq!(spill.runs.load(Ordering::Relaxed), 3);
        spill.merge().unwrap();

        let rows: Vec<(OutNum, InputRef)> =
            store.scan_all::<cf::Spends>().map(Result::unwrap).collect();
        assert_eq!(rows.len() as u64, n);
        assert!(rows
            .iter()
            .enumerate()
            .all(|(i, (k, v))| k.0 == i as u64 && v.tx.0 == k.0));
        assert!(!dir.path().join("runs").join(cf::Spends::NAME).exists());
    }
}
