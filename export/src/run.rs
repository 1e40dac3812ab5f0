//! One export run: reconcile the export directory with the index (drop what
//! a reorg replaced, what a crash left half-written), plan height
//! partitions from the first block not yet exported, write them, then the
//! snapshot tables, recording each step in the manifest.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use parquet::file::metadata::KeyValue;
use rayon::prelude::*;
use rocksdb::{Direction, IteratorMode};
use satflow_indexer::progress::Progress;
use satflow_indexer::schema::{cf, key_u32, BlockRow, Dec};
use satflow_indexer::{Access, Network, Store};

use crate::batches::batch;
use crate::files::{FileEntry, FileSet};
use crate::manifest::{self, Manifest, Partition, Snapshot, Tip};
use crate::read::{Chunk, Recent};
use crate::snapshot;
use crate::tables::Table;

/// Where partitions and snapshots are written before they are moved into
/// place: outside the table directories, so no engine reading a table
/// meets a half-written file (and `_` makes engines skip it).
const STAGING: &str = "_staging";

/// Default partition size in blk data: a recent partition's outputs and
/// inputs files then come to roughly 100–300 MB each.
const DEFAULT_PARTITION_MB: f64 = 1024.0;
/// Transactions read and converted at once, which bounds the rows an
/// export holds in memory besides the row groups being built.
const CHUNK_TXS: u64 = 50_000;

pub struct ExportOptions {
    pub db: PathBuf,
    pub out: PathBuf,
    /// First height, on the first export only (default: the index's first block).
    pub from: Option<u32>,
    /// Last height (default: the index tip).
    pub to: Option<u32>,
    /// None: every table the index can fill (`address_clusters` only when
    /// it has clusters).
    pub tables: Option<Vec<Table>>,
    /// Partition size in MB of blk data, on the first export only.
    pub partition_mb: Option<f64>,
    pub quiet: bool,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub tip: Option<Tip>,
    pub partitions_written: u64,
    /// Partitions dropped because a reorg replaced their blocks or a crash
    /// left them unfinished.
    pub partitions_dropped: u64,
    /// Blk data read to write the chain tables.
    pub blk_bytes: u64,
    /// What this run wrote, by table.
    pub tables: BTreeMap<Table, Written>,
    /// What the export holds after it, by table.
    pub exported: BTreeMap<Table, Written>,
    pub elapsed: Duration,
}

/// What one run wrote of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
}

impl Written {
    fn add(&mut self, files: &[FileEntry]) {
        for f in files {
            self.rows += f.rows;
            self.files += 1;
            self.bytes += f.bytes;
        }
    }
}

pub fn export(opts: &ExportOptions) -> Result<Summary> {
    let started = Instant::now();
    let store = Store::open(&opts.db, Access::ReadOnly)?;
    let (network, (tip_height, tip_hash)) = match (store.network()?, store.tip()?) {
        (Some(n), Some(t)) => (n, t),
        _ => bail!(
            "{} holds no blocks yet: run `satflow index` first",
            opts.db.display()
        ),
    };
    let base = store.base_height()?;
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let _lock = lock(&opts.out)?;

    if let Some(mb) = opts
        .partition_mb
        .filter(|mb| !(mb.is_finite() && *mb > 0.0))
    {
        bail!("--partition-mb {mb}: a positive number of MB");
    }
    let mut m = match Manifest::load(&opts.out)? {
        Some(m) => check(m, opts, network)?,
        None => {
            refuse_foreign(&opts.out)?;
            new_manifest(opts, network, base)
        }
    };
    if m.from < base || m.from > tip_height {
        bail!(
            "--from {}: the index holds heights {base} to {tip_height}",
            m.from
        );
    }
    let to = opts.to.map_or(tip_height, |t| t.min(tip_height));
    let tables = tables(&store, opts)?;
    if to < m.from {
        bail!("--to {to} is below the export's first height {}", m.from);
    }

    let mut summary = Summary {
        partitions_dropped: reconcile(&store, &opts.out, &mut m)?,
        ..Summary::default()
    };
    let w = Writer {
        store: &store,
        network,
        out: &opts.out,
        quiet: opts.quiet,
        metadata: vec![
            KeyValue::new("satflow.network".into(), network.to_string()),
            KeyValue::new(
                "satflow.layout_version".into(),
                manifest::LAYOUT_VERSION.to_string(),
            ),
        ],
    };
    let chain: Vec<Table> = tables.iter().copied().filter(|t| t.by_height()).collect();
    w.chain_tables(&mut m, &chain, to, &mut summary)?;
    for &table in tables.iter().filter(|t| !t.by_height()) {
        let written = w.snapshot_table(&mut m, table)?;
        summary.tables.entry(table).or_default().add(&written);
    }
    m.tip = Some(Tip {
        height: tip_height,
        hash: tip_hash.to_string(),
    });
    m.save(&opts.out)?;
    for (name, parts) in &m.partitions {
        let table: Table = name.parse().map_err(anyhow::Error::msg)?;
        let total = summary.exported.entry(table).or_default();
        for p in parts {
            total.add(&p.files);
        }
    }
    for (name, snap) in &m.snapshots {
        let table: Table = name.parse().map_err(anyhow::Error::msg)?;
        summary.exported.entry(table).or_default().add(&snap.files);
    }
    summary.tip = m.tip.clone();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// An existing export must be of the same network, first height and
/// partition size: its partitions could not line up with new ones otherwise.
fn check(m: Manifest, opts: &ExportOptions, network: Network) -> Result<Manifest> {
    let out = opts.out.display();
    if m.network != network.to_string() {
        bail!(
            "{out} holds an export of the {} network, the index is {network}",
            m.network
        );
    }
    if let Some(from) = opts.from.filter(|&f| f != m.from) {
        bail!(
            "{out} is an export from height {}, not --from {from}: export into a new --out",
            m.from
        );
    }
    if let Some(mb) = opts.partition_mb {
        let bytes = (mb * 1e6) as u64;
        if bytes != m.partition_bytes {
            bail!(
                "{out} has partitions of {} MB, not --partition-mb {mb}: export into a new --out",
                m.partition_bytes as f64 / 1e6
            );
        }
    }
    Ok(m)
}

fn new_manifest(opts: &ExportOptions, network: Network, base: u32) -> Manifest {
    Manifest {
        layout_version: manifest::LAYOUT_VERSION,
        network: network.to_string(),
        from: opts.from.unwrap_or(base),
        partition_bytes: (opts.partition_mb.unwrap_or(DEFAULT_PARTITION_MB) * 1e6) as u64,
        tip: None,
        partitions: BTreeMap::new(),
        snapshots: BTreeMap::new(),
    }
}

/// A first export goes into an empty directory: cleaning up after an
/// interrupted run removes what the manifest does not name.
fn refuse_foreign(out: &Path) -> Result<()> {
    for e in fs::read_dir(out).with_context(|| format!("listing {}", out.display()))? {
        let name = e?.file_name();
        if name != LOCK && name != STAGING {
            bail!(
                "{} holds files but no export manifest: export into an empty or new --out",
                out.display()
            );
        }
    }
    Ok(())
}

/// The tables to export, each once. Without `--tables`, those the index
/// can fill; a snapshot asked for by name must be ready.
fn tables(store: &Store, opts: &ExportOptions) -> Result<Vec<Table>> {
    let mut tables = opts.tables.clone().unwrap_or_else(|| Table::ALL.to_vec());
    tables.sort();
    tables.dedup();
    let mut ready = Vec::new();
    for t in tables {
        if t.by_height() || snapshot::source(store, t)?.is_some() {
            ready.push(t);
        } else if opts.tables.is_some() {
            bail!("{t}: {}", snapshot::NOT_READY);
        } else {
            tracing::warn!("{t} not exported: {}", snapshot::NOT_READY);
        }
    }
    Ok(ready)
}

const LOCK: &str = "_satflow_export.lock";

/// One export at a time per directory; the lock goes with the process.
fn lock(out: &Path) -> Result<fs::File> {
    let path = out.join(LOCK);
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            bail!("another satflow export is writing {}", out.display())
        }
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// Drops, from the manifest and then from disk, every partition whose last
/// block left the best chain or whose files are missing (and all after it),
/// and removes whatever the manifest does not name (unfinished partitions
/// of an interrupted run). Returns how many height ranges were dropped.
fn reconcile(store: &Store, out: &Path, m: &mut Manifest) -> Result<u64> {
    let mut dropped = std::collections::BTreeSet::new();
    for (name, parts) in m.partitions.iter_mut() {
        let dir = out.join(name);
        let mut keep = 0;
        for p in parts.iter() {
            let on_chain = store
                .block(p.height_to)?
                .is_some_and(|b| b.hash.to_string() == p.last_hash);
            let pdir = dir.join(Partition::dir_name(p.height_from));
            if !on_chain || !intact(&pdir, &p.files) {
                break;
            }
            keep += 1;
        }
        dropped.extend(parts.drain(keep..).map(|p| p.height_from));
    }
    // A snapshot with files missing is forgotten: its table's next export
    // rewrites it whole.
    m.snapshots
        .retain(|name, snap| intact(&out.join(name), &snap.files));
    m.save(out)?;

    let staging = out.join(STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }

    for table in Table::ALL.into_iter().filter(|t| t.by_height()) {
        let dir = out.join(table.name());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let named: Vec<String> = m
            .partitions
            .get(table.name())
            .into_iter()
            .flatten()
            .map(|p| Partition::dir_name(p.height_from))
            .collect();
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let name = e.file_name();
            let ours = name.to_string_lossy().starts_with("height_from=");
            if ours && !named.iter().any(|n| name == n.as_str()) {
                fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    Ok(dropped.len() as u64)
}

/// Whether every file is there with the size it was written with.
fn intact(dir: &Path, files: &[FileEntry]) -> bool {
    files
        .iter()
        .all(|f| fs::metadata(dir.join(&f.name)).is_ok_and(|meta| meta.len() == f.bytes))
}

/// Partitions of `[start, to]`: consecutive blocks, each closed once its
/// blocks reach `bytes` of blk data. Cut the same way from the same first
/// height, the boundaries of a chain never move, so a table exported
/// earlier resumes at one of them.
fn plan(store: &Store, start: u32, to: u32, bytes: u64) -> Result<Vec<Planned>> {
    let mut plan: Vec<Planned> = Vec::new();
    let mut open: Option<Planned> = None;
    let begin = key_u32(start);
    for item in store.db().iterator_cf(
        store.cf(cf::BLOCKS),
        IteratorMode::From(&begin, Direction::Forward),
    ) {
        let (k, v) = item.context("reading blocks")?;
        let height = Dec::new("blocks key", &k).u32()?;
        if height > to {
            break;
        }
        let row = BlockRow::decode(&v).with_context(|| format!("block at height {height}"))?;
        let p = open.get_or_insert(Planned {
            from: height,
            to: height,
            last_hash: String::new(),
            blk_bytes: 0,
            txs: Vec::new(),
        });
        p.to = height;
        p.last_hash = row.hash.to_string();
        p.blk_bytes += u64::from(row.loc.len);
        p.txs.push(row.tx_count);
        if p.blk_bytes >= bytes {
            plan.extend(open.take());
        }
    }
    plan.extend(open);
    match plan.last() {
        Some(p) if p.to == to => Ok(plan),
        _ => bail!("the index has no block rows up to height {to}"),
    }
}

struct Planned {
    from: u32,
    to: u32,
    last_hash: String,
    blk_bytes: u64,
    /// Tx count of each block, to cut the partition into chunks.
    txs: Vec<u32>,
}

impl Planned {
    fn complete(&self, target: u64) -> bool {
        self.blk_bytes >= target
    }

    /// Height ranges of at most `CHUNK_TXS` transactions (or one block).
    fn chunks(&self) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        let (mut first, mut txs) = (self.from, 0u64);
        for (h, &n) in (self.from..=self.to).zip(&self.txs) {
            if txs > 0 && txs + u64::from(n) > CHUNK_TXS {
                out.push((first, h - 1));
                (first, txs) = (h, 0);
            }
            txs += u64::from(n);
        }
        out.push((first, self.to));
        out
    }
}

/// Where `table` resumes: after its last complete partition, or at its
/// incomplete last one when there are blocks to add to it. None when it
/// is exported up to `to` already.
fn resume(m: &Manifest, table: Table, to: u32) -> Option<u32> {
    match m.partitions.get(table.name()).and_then(|p| p.last()) {
        None => Some(m.from),
        Some(p) if p.height_to >= to => None,
        Some(p) if p.complete => Some(p.height_to + 1),
        Some(p) => Some(p.height_from),
    }
}

/// What every step of a run writes with.
struct Writer<'a> {
    store: &'a Store,
    network: Network,
    out: &'a Path,
    quiet: bool,
    /// Key-value metadata of every file.
    metadata: Vec<KeyValue>,
}

impl Writer<'_> {
    fn chain_tables(
        &self,
        m: &mut Manifest,
        tables: &[Table],
        to: u32,
        summary: &mut Summary,
    ) -> Result<()> {
        let resumes: Vec<(Table, u32)> = tables
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
                list.retain(|q| q.height_from < p.from);
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
                    height_from: p.from,
                    height_to: p.to,
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
        let name = Partition::dir_name(p.from);
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
                for (first, last) in p.chunks() {
                    let chunk = Chunk::read(store, network, first..=last, recent);
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
                progress.advance(u64::from(last - first + 1), bytes, last);
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
    fn snapshot_table(&self, m: &mut Manifest, table: Table) -> Result<Vec<FileEntry>> {
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
