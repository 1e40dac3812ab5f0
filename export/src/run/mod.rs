//! One export run: reconcile the export directory with the index (drop what
//! a reorg replaced, what a crash left half-written), plan height
//! partitions from the first block not yet exported, write them, then the
//! snapshot tables, recording each step in the manifest.
//!
//! `outdir` keeps the export directory (its lock, staging area and
//! reconciliation with the index), `plan` cuts the chain into partitions,
//! `write` writes partitions and snapshots and moves them into place.

mod outdir;
mod plan;
mod write;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use satflow_indexer::{Access, Network, Store};
use satflow_schema::Height;

use crate::files::FileEntry;
use crate::manifest::{self, Manifest, Tip};
use crate::snapshot;
use crate::tables::Table;

use write::Writer;

/// Default partition size in blk data: a recent partition's outputs and
/// inputs files then come to roughly 100–300 MB each.
const DEFAULT_PARTITION_MB: f64 = 1024.0;

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
    let (network, tip) = match (store.network()?, store.tip()?) {
        (Some(n), Some(t)) => (n, t),
        _ => bail!(
            "{} holds no blocks yet: run `satflow index` first",
            opts.db.display()
        ),
    };
    let base = store.base_height()?;
    fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let _lock = outdir::lock(&opts.out)?;

    if let Some(mb) = opts
        .partition_mb
        .filter(|mb| !(mb.is_finite() && *mb > 0.0))
    {
        bail!("--partition-mb {mb}: a positive number of MB");
    }
    let mut m = match Manifest::load(&opts.out)? {
        Some(m) => check(m, opts, network)?,
        None => {
            outdir::refuse_foreign(&opts.out)?;
            new_manifest(opts, network, base)
        }
    };
    let from = Height(m.from);
    if from < base || from > tip.height {
        bail!(
            "--from {from}: the index holds heights {base} to {}",
            tip.height
        );
    }
    let to = opts.to.map_or(tip.height, |t| Height(t).min(tip.height));
    let tables = tables(&store, opts)?;
    if to < from {
        bail!("--to {to} is below the export's first height {from}");
    }

    let mut summary = Summary {
        partitions_dropped: outdir::reconcile(&store, &opts.out, &mut m)?,
        ..Summary::default()
    };
    let w = Writer::new(&store, network, &opts.out, opts.quiet);
    let chain: Vec<Table> = tables.iter().copied().filter(|t| t.by_height()).collect();
    w.chain_tables(&mut m, &chain, to, &mut summary)?;
    for &table in tables.iter().filter(|t| !t.by_height()) {
        let written = w.snapshot_table(&mut m, table)?;
        summary.tables.entry(table).or_default().add(&written);
    }
    m.tip = Some(Tip {
        height: tip.height.0,
        hash: tip.hash.to_string(),
    });
    m.save(&opts.out)?;
    summary.exported = exported(&m)?;
    summary.tip = m.tip.clone();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// What the export holds, by table.
fn exported(m: &Manifest) -> Result<BTreeMap<Table, Written>> {
    let mut exported = BTreeMap::<Table, Written>::new();
    for (name, parts) in &m.partitions {
        let table: Table = name.parse().map_err(anyhow::Error::msg)?;
        let total = exported.entry(table).or_default();
        for p in parts {
            total.add(&p.files);
        }
    }
    for (name, snap) in &m.snapshots {
        let table: Table = name.parse().map_err(anyhow::Error::msg)?;
        exported.entry(table).or_default().add(&snap.files);
    }
    Ok(exported)
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

fn new_manifest(opts: &ExportOptions, network: Network, base: Height) -> Manifest {
    Manifest {
        layout_version: manifest::LAYOUT_VERSION,
        network: network.to_string(),
        from: opts.from.unwrap_or(base.0),
        partition_bytes: (opts.partition_mb.unwrap_or(DEFAULT_PARTITION_MB) * 1e6) as u64,
        tip: None,
        partitions: BTreeMap::new(),
        snapshots: BTreeMap::new(),
    }
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
