//! Address clusters: which addresses one entity controls, by common-input
//! ownership refined by CoinJoin detectors and, optionally, change
//! heuristics (`heuristics`). Stored beside the index (`rows`, families
//! `cluster_*`), kept current block by block and across reorgs (`live`).
//!
//! A cluster's id is its lowest address number: when clusters merge, the
//! one holding the oldest address keeps its id.

mod build;
mod heuristics;
mod live;
pub mod rows;
mod unionfind;
pub mod view;

use anyhow::Result;
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rocksdb::WriteBatch;

pub use heuristics::Heuristics;
pub use live::forget_above;

use crate::progress::Progress;
use crate::schema::{cf, meta, Dec};
use crate::store::Store;

/// The heuristics the clusters were built with; None when never built.
pub fn heuristics(store: &Store) -> Result<Option<Heuristics>> {
    let Some(v) = store.get(cf::META, meta::CLUSTER_HEURISTICS)? else {
        return Ok(None);
    };
    String::from_utf8_lossy(&v)
        .parse()
        .map(Some)
        .map_err(|e: String| {
            anyhow::anyhow!("{}: recorded heuristics: {e}", store.path().display())
        })
}

/// Height and hash of the last block the clusters include.
pub fn tip(store: &Store) -> Result<Option<(u32, BlockHash)>> {
    let Some(v) = store.get(cf::META, meta::CLUSTER_TIP)? else {
        return Ok(None);
    };
    let mut d = Dec::new("cluster tip", &v);
    let tip = (d.u32()?, BlockHash::from_byte_array(d.take()?));
    d.done()?;
    Ok(Some(tip))
}

/// Brings the clusters up to the index tip with the heuristics in force:
/// block by block from the cluster tip, or a whole build when there is no
/// tip yet (never built, or a build that was interrupted; the default set
/// when none was ever chosen).
pub fn update(store: &Store, quiet: bool) -> Result<()> {
    match (heuristics(store)?, tip(store)?) {
        (Some(h), Some(_)) => catch_up(store, h, quiet),
        (h, _) => rebuild(store, h.unwrap_or(Heuristics::DEFAULT), quiet),
    }
}

/// Drops every cluster and builds them again from the index with `h`.
pub fn rebuild(store: &Store, h: Heuristics, quiet: bool) -> Result<()> {
    // No tip until the build is whole: an interrupted build is started
    // over (with the same heuristics) by the next run, never continued.
    let mut batch = WriteBatch::default();
    for family in [
        cf::CLUSTER_OF,
        cf::CLUSTER_MEMBERS,
        cf::CLUSTER_STATS,
        cf::CLUSTER_HISTORY,
        cf::CLUSTER_RANK,
    ] {
        batch.delete_range_cf(store.cf(family), &[][..], &[0xffu8; 40][..]);
    }
    batch.delete_cf(store.cf(cf::META), meta::CLUSTER_DIRTY);
    batch.put_cf(store.cf(cf::META), meta::CLUSTER_HEURISTICS, h.to_string());
    live::put_tip(store, &mut batch, None);
    store.write(batch)?;
    let mut progress = Progress::new(blk_bytes_above(store, None)?, quiet);
    build::build(store, h, &mut progress)?;
    progress.finish();
    let mut batch = WriteBatch::default();
    live::put_tip(store, &mut batch, store.tip()?);
    store.write(batch)?;
    store.flush()
}

/// Blk bytes of the indexed blocks above `height` (all when None): the
/// work left, for progress.
fn blk_bytes_above(store: &Store, height: Option<u32>) -> Result<u64> {
    let from = match height {
        Some(h) => h + 1,
        None => store.base_height()?,
    };
    match store.tip()? {
        Some((tip, _)) => (from..=tip)
            .map(|h| Ok(store.block(h)?.map_or(0, |b| u64::from(b.loc.len))))
            .sum(),
        None => Ok(0),
    }
}

fn catch_up(store: &Store, h: Heuristics, quiet: bool) -> Result<()> {
    let cluster_tip = tip(store)?.map(|(height, _)| height);
    let mut progress = Progress::new(blk_bytes_above(store, cluster_tip)?, quiet);
    live::catch_up(store, h, &mut progress)?;
    progress.finish();
    store.flush()
}
