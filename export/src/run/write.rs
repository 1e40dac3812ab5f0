//! Writing: the partitions of the chain tables, chunk by chunk, and the
//! snapshot tables, each staged beside its place and moved in when whole,
//! with the manifest saved after every step.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use parquet::file::metadata::KeyValue;
use rayon::prelude::*;
use satflow_indexer::progress::Progress;
use satflow_indexer::{Network, Store};
use satflow_schema::Height;

use crate::batches::batch;
use crate::files::{FileEntry, FileSet};
use crate::manifest::{self, Manifest, Partition, Snapshot};
use crate::read::{Chunk, Recent};
use crate::snapshot;
use crate::tables::Table;

use super::outdir::STAGING;
use super::plan::{plan, resume, Planned};
use super::Summary;

/// What every step of a run writes with.
pub(super) struct Writer<'a> {
    store: &'a Store,
    network: Network,
    out: &'a Path,
    quiet: bool,
    /// Key-value metadata of every file.
    metadata: Vec<KeyValue>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(store: &'a Store, network: Network, out: &'a Path, quiet: bool) -> Self {
        Writer {
            store,
            network,
            out,
            quiet,
            metadata: vec![
                KeyValue::new("satflow.network".into(), network.to_string()),
                KeyValue::new(
                    "satflow.layout_version".into(),
                    manifest::LAYOUT_VERSION.to_string(),
                ),
            ],
        }
    }

    /// Brings each of `tables` up to height `to`, partition by partition.
    pub(super) fn chain_tables(
        &self,
        m: &mut Manifest,
        tables: &[Table],
        to: Height,
        summary: &mut Summary,
    ) -> Result<()> {
        let resumes: Vec<(Table, Height)> = tables
            .iter()
            .filter_map(|&t| resume(m, t, to).map(|h| (t, h)))
            .collect();
        let Some(start) = resumes.iter().map(|(_, h)| *h).min() else {
            return Ok(());
        };
        let plan = plan(self.store, start, to, m.partition_bytes)?;
        for (t, h) in &resumes {
            if !plan.iter().any(|p| p.from == *h) {
                bail!(
                "{}: {t} resumes at height {h}, which is not a partition boundary; export into a new --out",
                self.out.display()
            );
            }
        }
        let total: u64 = plan.iter().map(|p| p.blk_bytes).sum();
        let mut progress = Progress::new(total, self.quiet);
        let mut recent = Recent::default();
        for p in &plan {
            let due: Vec<Table> = resumes
                .iter()
                .filter(|(_, h)| *h <= p.from)
                .map(|(t, _)| *t)
                .collect();
            // A partition written before (an unfinished last one) leaves
            // the manifest before its files are replaced.
            let mut forgot = false;
            for t in &due {
                let list = m.partitions.entry(t.name().to_owned()).or_default();
                let before = list.len();
                list.retain(|q| q.height_from < p.from.0);
                forgot |= list.len() != before;
            }
            if forgot {
                m.save(self.out)?;
            }
            let parts = self.write_partition(p, &due, &mut progress, &mut recent)?;
            for (table, files) in due.iter().zip(parts) {
                summary.tables.entry(*table).or_default().add(&files);
                let list = m.partitions.entry(table.name().to_owned()).or_default();
                list.push(Partition {
                    height_from: p.from.0,
                    height_to: p.to.0,
                    last_hash: p.last_hash.clone(),
                    blk_bytes: p.blk_bytes,
                    complete: p.complete(m.partition_bytes),
                    files,
                });
            }
            m.save(self.out)?;
            summary.partitions_written += 1;
            summary.blk_bytes += p.blk_bytes;
        }
        progress.finish();
        Ok(())
    }

    /// Writes partition `p` of each of `tables` beside its final directory,
    /// then moves it into place (replacing an incomplete earlier version).
    fn write_partition(
        &self,
        p: &Planned,
        tables: &[Table],
        progress: &mut Progress,
        recent: &mut Recent,
    ) -> Result<Vec<Vec<FileEntry>>> {
        let (store, network, out) = (self.store, self.network, self.out);
        let name = Partition::dir_name(p.from.0);
        let staging = |t: Table| out.join(STAGING).join(t.name()).join(&name);
        let mut sets = tables
            .iter()
            .map(|&t| {
                let dir = staging(t);
                if dir.exists() {
                    fs::remove_dir_all(&dir)?;
                }
                FileSet::create(&dir, t, self.metadata.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        // One thread reads the next chunk while the tables of this one are
        // encoded and compressed.
        std::thread::scope(|scope| -> Result<()> {
            let (send, chunks) = std::sync::mpsc::sync_channel::<Result<Chunk>>(1);
            scope.spawn(move || {
                for heights in p.chunks() {
                    let chunk = Chunk::read(store, network, heights, recent);
                    let failed = chunk.is_err();
                    // A closed channel: the writer stopped on an error.
                    if send.send(chunk).is_err() || failed {
                        break;
                    }
                }
            });
            for chunk in chunks {
                let chunk = chunk?;
                sets.par_iter_mut()
                    .zip(tables)
                    .try_for_each(|(set, &t)| set.write(&batch(t, &chunk)?))?;
                let (first, last) = match (chunk.blocks.first(), chunk.blocks.last()) {
                    (Some((f, _)), Some((l, _))) => (*f, *l),
                    _ => continue,
                };
                let bytes = chunk.blocks.iter().map(|(_, b)| u64::from(b.loc.len)).sum();
                progress.advance(u64::from(last.0 - first.0 + 1), bytes, last.0);
            }
            Ok(())
        })?;
        let mut written = Vec::new();
        for (set, &t) in sets.into_iter().zip(tables) {
            written.push(set.finish()?);
            let table_dir = out.join(t.name());
            fs::create_dir_all(&table_dir)
                .with_context(|| format!("creating {}", table_dir.display()))?;
            let final_dir = table_dir.join(&name);
            if final_dir.exists() {
                fs::remove_dir_all(&final_dir)
                    .with_context(|| format!("removing {}", final_dir.display()))?;
            }
            fs::rename(staging(t), &final_dir)
                .with_context(|| format!("moving {} into place", final_dir.display()))?;
            manifest::sync_dir(&table_dir)?;
        }
        Ok(written)
    }

    /// Rewrites a snapshot table when what it reflects changed.
    pub(super) fn snapshot_table(&self, m: &mut Manifest, table: Table) -> Result<Vec<FileEntry>> {
        let (store, out) = (self.store, self.out);
        let source = snapshot::source(store, table)?
            .with_context(|| format!("{table}: {}", snapshot::NOT_READY))?;
        if m.snapshots
            .get(table.name())
            .is_some_and(|s| s.source == source)
        {
            return Ok(Vec::new());
        }
        let dir = out.join(table.name());
        let staging = out.join(STAGING).join(table.name());
        let old = out.join(STAGING).join(format!("{table}.old"));
        for d in [&staging, &old] {
            if d.exists() {
                fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
            }
        }
        let files = snapshot::write(store, self.network, table, &staging, self.metadata.clone())?;
        // The manifest stops naming the old files before they go.
        m.snapshots.remove(table.name());
        m.save(out)?;
        if dir.exists() {
            fs::rename(&dir, &old)?;
        }
        fs::rename(&staging, &dir)
            .with_context(|| format!("moving {} into place", dir.display()))?;
        manifest::sync_dir(out)?;
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        m.snapshots.insert(
            table.name().to_owned(),
            Snapshot {
                source,
                files: files.clone(),
            },
        );
        m.save(out)?;
        Ok(files)
    }
}
