//! Label rows on their way into the index, in write batches of bounded
//! size: an import or removal of millions of labels holds one batch in
//! memory, not the file. Batches skip the WAL (see `Store::write`) and
//! `finish` flushes, so an import that fails part way has stored the
//! batches before the failure, which a rerun writes again unchanged.

use anyhow::Result;
use satflow_schema::{cf, meta};

use super::{Label, PoolTag};
use crate::store::{Batch, Store};

/// Rows per write batch: ~10 MB of keys and values.
const BATCH_ROWS: usize = 100_000;

pub(super) struct Writer<'s> {
    store: &'s Store,
    batch: Batch<'s>,
    /// `meta::LabelsVersion` as of the last batch written; each batch
    /// moves it on, so a reader never takes a half-written import for
    /// the labels it already has.
    version: u64,
}

impl<'s> Writer<'s> {
    pub fn new(store: &'s Store) -> Result<Writer<'s>> {
        Ok(Writer {
            store,
            batch: store.batch(),
            version: store.meta(meta::LabelsVersion)?.unwrap_or(0),
        })
    }

    pub fn put(&mut self, l: &Label) -> Result<()> {
        self.batch.put::<cf::Labels>(&l.key(), &l.value());
        self.write_if_full()
    }

    pub fn delete(&mut self, l: &Label) -> Result<()> {
        self.batch.delete::<cf::Labels>(&l.key());
        self.write_if_full()
    }

    pub fn put_tag(&mut self, t: &PoolTag) -> Result<()> {
        self.batch.put::<cf::PoolTags>(&t.tag, &t.value());
        self.write_if_full()
    }

    pub fn delete_tag(&mut self, t: &PoolTag) -> Result<()> {
        self.batch.delete::<cf::PoolTags>(&t.tag);
        self.write_if_full()
    }

    fn write_if_full(&mut self) -> Result<()> {
        if self.batch.len() >= BATCH_ROWS {
            let full = std::mem::replace(&mut self.batch, self.store.batch());
            self.write(full)?;
        }
        Ok(())
    }

    fn write(&mut self, mut batch: Batch<'s>) -> Result<()> {
        self.version += 1;
        batch.put_meta(meta::LabelsVersion, &self.version);
        self.store.write(batch)
    }

    /// Writes what is left and flushes.
    pub fn finish(mut self) -> Result<()> {
        let last = std::mem::replace(&mut self.batch, self.store.batch());
        self.write(last)?;
        self.store.flush()
    }
}
