//! Typed writes: `Batch`, a RocksDB write batch that takes the schema's
//! keys and rows; table-file ingestion of sorted rows; range
//! removal after a crash.

use std::fmt::Display;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;
use rocksdb::{IngestExternalFileOptions, Options, SstFileWriter, WriteBatch, WriteOptions};
use satflow_schema::cf::{Family, Meta};
use satflow_schema::codec::Raw;
use satflow_schema::meta::Entry;
use satflow_schema::Codec;

use super::arena::{Arena, Op};
use super::options::cf_options;
use super::Store;

/// Writes to apply at once (`Store::write`): all or nothing.
pub struct Batch<'s> {
    store: &'s Store,
    inner: WriteBatch,
}

impl<'s> Batch<'s> {
    pub fn put<F: Family>(&mut self, key: &F::Key, value: &F::Value) {
        self.inner
            .put_cf(self.store.cf::<F>(), key.encode(), value.encode());
    }

    pub fn delete<F: Family>(&mut self, key: &F::Key) {
        self.inner.delete_cf(self.store.cf::<F>(), key.encode());
    }

    /// Adds `delta` to the row through the family's merge operator.
    pub fn merge<F: Family>(&mut self, key: &F::Key, delta: &F::Value) {
        self.inner
            .merge_cf(self.store.cf::<F>(), key.encode(), delta.encode());
    }

    /// Deletes the keys in `[from, to)`.
    pub fn delete_range<F: Family>(&mut self, from: &F::Key, to: &F::Key) {
        self.inner
            .delete_range_cf(self.store.cf::<F>(), from.encode(), to.encode());
    }

    /// Deletes every row of `F`, a family whose keys are ids or pairs of
    /// ids: one range from the empty key to past the longest such key.
    pub fn clear<F: Family>(&mut self) {
        const PAST_ID_KEYS: [u8; 40] = [0xff; 40];
        self.inner
            .delete_range_cf(self.store.cf::<F>(), &[][..], &PAST_ID_KEYS[..]);
    }

    /// `clear`, only where `F` holds rows: a range deletion, even over
    /// nothing, holds the table files ingested into `F` next above it, off
    /// the last level, for a compaction to rewrite them all.
    pub fn clear_stored<F: Family>(&mut self) -> Result<()> {
        if self.store.last::<F>()?.is_some() {
            self.clear::<F>();
        }
        Ok(())
    }

    /// Puts back a row of the family named `family` as bytes an undo
    /// record kept.
    pub fn put_raw(&mut self, family: &str, key: &[u8], value: &[u8]) {
        self.inner.put_cf(self.store.cf_named(family), key, value);
    }

    pub fn delete_raw(&mut self, family: &str, key: &[u8]) {
        self.inner.delete_cf(self.store.cf_named(family), key);
    }

    pub fn put_meta<E: Entry>(&mut self, entry: E, value: &E::Value) {
        self.put::<Meta>(&entry.key(), &Raw(value.encode().as_ref().to_vec()));
    }

    pub fn delete_meta<E: Entry>(&mut self, entry: E) {
        self.delete::<Meta>(&entry.key());
    }

    /// Operations so far.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl Store {
    pub fn batch(&self) -> Batch<'_> {
        Batch {
            store: self,
            inner: WriteBatch::default(),
        }
    }

    /// Writes a batch without the WAL: durable at the next `flush` (or the
    /// next automatic memtable flush), all or nothing.
    pub fn write(&self, batch: Batch) -> Result<()> {
        self.write_raw(batch.inner)
    }

    pub(super) fn write_raw(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db
            .write_opt(batch, &opts)
            .with_context(|| format!("writing to {}", self.path.display()))
    }

    /// Adds rows to `F` as a table file, without a memtable. Their keys
    /// ascend and lie above every key the family holds, so RocksDB puts the
    /// file on the last level, where no compaction ever rewrites it. Unlike
    /// `write`, durable at once, so a caller writes them before the rows
    /// that refer to them.
    pub(super) fn ingest<'r>(
        &self,
        family: &'static str,
        rows: impl ExactSizeIterator<Item = (Op, &'r [u8], &'r [u8])>,
    ) -> Result<()> {
        let count = rows.len();
        if count == 0 {
            return Ok(());
        }
        let file = self.ingest_file(family, 0)?;
        self.write_table(family, &file, rows, Landing::Bottom)?;
        self.ingest_files(family, count, vec![file])
    }

    /// Adds a sorted arena of distinct keys to `family` as table files,
    /// written on every worker, one per slice of the key range, and handed
    /// to RocksDB at once. Keys may lie anywhere: RocksDB files them on the
    /// lowest level they overlap nothing on, and compaction merges them
    /// with the rest (merge operands included). Durable at once, like
    /// `ingest`. Rows bound for a run file (`Landing::Run`) go there
    /// instead, in one file.
    pub fn ingest_rows(&self, family: &'static str, rows: &Arena, landing: Landing) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if let Landing::Run(tag) = landing {
            return self.write_run(family, tag, rows);
        }
        let parts: Vec<_> = rows.entries.chunks(ROWS_PER_FILE).collect();
        let files = parts
            .par_iter()
            .enumerate()
            .map(|(i, part)| {
                let file = self.ingest_file(family, i)?;
                let part = rows.gather(part);
                self.write_table(family, &file, part.ops(&part.entries), landing)?;
                Ok(file)
            })
            .collect::<Result<Vec<_>>>()?;
        self.ingest_files(family, rows.len(), files)
    }

    /// Removes the table files a killed writer left before handing them
    /// to RocksDB (a large pass keeps its files until its end). Only the
    /// writer, which holds the database's lock, builds files there, so
    /// whatever a writer finds there at open is stale; a name that is a
    /// second link to a live table file goes, the table stays.
    pub(super) fn clear_ingest_dir(&self) -> Result<()> {
        let dir = self.path.join(INGEST_DIR);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// A fresh path for the `part`th table file of `family`. A run killed
    /// after RocksDB linked a file in may have left the name behind as a
    /// second link to a live table file: writing through it would truncate
    /// that table, so it is removed first.
    pub(super) fn ingest_file(&self, family: &str, part: impl Display) -> Result<PathBuf> {
        let dir = self.path.join(INGEST_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let file = dir.join(format!("{family}.{part}.sst"));
        remove_if_present(&file)?;
        Ok(file)
    }

    pub(super) fn write_table<'r>(
        &self,
        family: &str,
        file: &Path,
        rows: impl Iterator<Item = (Op, &'r [u8], &'r [u8])>,
        landing: Landing,
    ) -> Result<()> {
        let options = self.table_options(family, landing);
        let mut table = Table::create(&options, file, family)?;
        for (op, key, value) in rows {
            table.add(op, key, value)?;
        }
        table.finish()
    }

    /// The options a table file of `family` is written with.
    pub(super) fn table_options(&self, family: &str, landing: Landing) -> Options {
        let mut options = cf_options(family, &self.cache);
        if landing == Landing::Compacted {
            // A table file takes the bottom level's compression.
            options.set_bottommost_compression_type(rocksdb::DBCompressionType::None);
        }
        options
    }

    pub(super) fn ingest_files(
        &self,
        family: &str,
        count: usize,
        files: Vec<PathBuf>,
    ) -> Result<()> {
        let mut ingest = IngestExternalFileOptions::default();
        // A hard link instead of a copy: the files are ours to give away.
        ingest.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf_named(family), &ingest, files.clone())
            .with_context(|| {
                format!(
                    "ingesting {count} rows into {family} of {}",
                    self.path.display()
                )
            })?;
        // RocksDB removes a moved file itself; this covers the versions that
        // leave the link behind.
        files.iter().try_for_each(|f| remove_if_present(f))
    }

    /// Stops or restarts `family`'s background compactions. A bulk run
    /// adds table files of overlapping keys and reads none of them: merging
    /// them as they come would rewrite the growing family again and again,
    /// where one compaction at the end (`compact`) writes it once. Not
    /// persisted: the next open compacts as usual.
    pub fn pause_compactions(&self, family: &str, paused: bool) -> Result<()> {
        let value = if paused { "true" } else { "false" };
        self.db
            .set_options_cf(
                self.cf_named(family),
                &[("disable_auto_compactions", value)],
            )
            .with_context(|| {
                format!(
                    "setting the compactions of {family} of {}",
                    self.path.display()
                )
            })
    }

    /// Compacts the whole of `family` down to its last level, its files
    /// merged once, split among the compaction threads.
    pub fn compact(&self, family: &str) {
        self.db
            .compact_range_cf(self.cf_named(family), None::<&[u8]>, None::<&[u8]>);
    }

    /// Deletes the keys of `F` in `[from, to)`, if there are any, and
    /// persists the deletion; returns whether there were.
    pub fn remove_range<F: Family>(&self, from: &F::Key, to: &F::Key) -> Result<bool> {
        let to_bytes = to.encode();
        let mut iter = self.db.raw_iterator_cf(self.cf::<F>());
        iter.seek(from.encode());
        let found = iter.key().is_some_and(|k| k < to_bytes.as_ref());
        iter.status()
            .with_context(|| format!("reading {} of {}", F::NAME, self.path.display()))?;
        drop(iter);
        if found {
            let mut batch = self.batch();
            batch.delete_range::<F>(from, to);
            self.write(batch)?;
            self.flush()?;
        }
        Ok(found)
    }
}

/// Where ingested rows are expected to end up, which decides whether their
/// table files are compressed, or whether they wait in a run file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Landing {
    /// On the last level, for good: compressed as that level is.
    Bottom,
    /// Among overlapping files that compaction will merge and rewrite (and
    /// compress then): not compressed, which would be work thrown away.
    Compacted,
    /// Not in RocksDB yet: a sorted run file, of the epoch that ends at
    /// this height, merged onto the last level when the bulk run ends
    /// (`Store::merge_runs`).
    Run(u32),
}

/// Rows per table file: large enough that a file's fixed costs do not
/// show, small enough to spread a family over the workers.
pub(super) const ROWS_PER_FILE: usize = 1 << 20;

/// A table file being written with `options` (`Store::table_options`).
pub(super) struct Table<'o> {
    writer: SstFileWriter<'o>,
    context: String,
}

impl<'o> Table<'o> {
    pub(super) fn create(options: &'o Options, file: &Path, family: &str) -> Result<Table<'o>> {
        let table = Table {
            writer: SstFileWriter::create(options),
            context: format!("writing {} for {family}", file.display()),
        };
        table
            .writer
            .open(file)
            .with_context(|| table.context.clone())?;
        Ok(table)
    }

    pub(super) fn add(&mut self, op: Op, key: &[u8], value: &[u8]) -> Result<()> {
        match op {
            Op::Put => self.writer.put(key, value),
            Op::Merge => self.writer.merge(key, value),
            Op::Delete => self.writer.delete(key),
        }
        .with_context(|| self.context.clone())
    }

    pub(super) fn finish(mut self) -> Result<()> {
        self.writer.finish().with_context(|| self.context.clone())
    }
}

/// Where `ingest` builds its table files, inside the database directory so
/// that handing one to RocksDB is a hard link.
const INGEST_DIR: &str = "ingest";

fn remove_if_present(file: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", file.display()))
        }
        _ => Ok(()),
    }
}
