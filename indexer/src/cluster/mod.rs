//! Address clusters: which addresses one entity controls, by common-input
//! ownership refined by CoinJoin detectors and, optionally, change
//! heuristics (`heuristics`). Stored beside the index (the `cluster_*`
//! families, rows in `satflow_schema::cluster`), kept current block by block
//! and across reorgs (`live`).
//!
//! A cluster's id is its lowest address number (`ClusterId::of`): when
//! clusters merge, the result is known by the oldest address of them all.
//! Its rows are keyed apart from that id (`ClusterKey`), by the member of
//! the largest side, so that a merge moves the smaller side's rows only.

mod build;
mod heuristics;
mod live;
mod runs;
mod undo;
mod unionfind;
pub mod view;

use anyhow::Result;
use satflow_schema::block::ChainPoint;
use satflow_schema::cf;
use satflow_schema::{meta, Height};

pub use build::{Build, Links, MemberRows};
pub use heuristics::{is_mixing_denomination, Coin, CoinJoin, Heuristics, Spent, TxView};
pub use live::forget_above;
pub use unionfind::UnionFind;

use crate::progress::Progress;
use crate::store::{Batch, Store};

/// The heuristics the clusters were built with; None when never built.
pub fn heuristics(store: &Store) -> Result<Option<Heuristics>> {
    let Some(names) = store.meta(meta::ClusterHeuristics)? else {
        return Ok(None);
    };
    names.parse().map(Some).map_err(|e: String| {
        anyhow::anyhow!("{}: recorded heuristics: {e}", store.path().display())
    })
}

/// The last block the clusters include.
pub fn tip(store: &Store) -> Result<Option<ChainPoint>> {
    store.meta(meta::ClusterTip)
}

/// Records `tip` as the last block the clusters include; None: no block
/// (a build under way).
fn put_tip(batch: &mut Batch, tip: Option<ChainPoint>) {
    match tip {
        Some(point) => batch.put_meta(meta::ClusterTip, &point),
        None => batch.delete_meta(meta::ClusterTip),
    }
}

/// The heuristics a build uses: those recorded, or the default set when
/// none was ever chosen.
pub fn heuristics_in_force(store: &Store) -> Result<Heuristics> {
    Ok(heuristics(store)?.unwrap_or(Heuristics::DEFAULT))
}

/// Brings the clusters up to the index tip with the heuristics in force:
/// block by block from the cluster tip, or a whole build when there is no
/// tip yet (never built, or a build that was interrupted). `found`: the
/// sets the links of the blocks below a height form, when the caller has
/// them (the bulk path), for a whole build that need not read those
/// blocks' rows.
pub fn update(store: &Store, found: Option<(UnionFind, Height)>, quiet: bool) -> Result<()> {
    match (heuristics(store)?, tip(store)?) {
        (Some(h), Some(_)) => catch_up(store, h, quiet),
        (h, _) => {
            let h = h.unwrap_or(Heuristics::DEFAULT);
            match found {
                Some((found, rows_from)) => {
                    let links = Links {
                        found,
                        rows_from,
                        heuristics: h,
                    };
                    rebuild_with(store, links, quiet)
                }
                None => rebuild(store, h, quiet),
            }
        }
    }
}

/// Drops every cluster and builds them again from the index with `h`.
pub fn rebuild(store: &Store, h: Heuristics, quiet: bool) -> Result<()> {
    let links = Links {
        found: UnionFind::new(store.path(), 0)?,
        rows_from: store.base_height()?,
        heuristics: h,
    };
    rebuild_with(store, links, quiet)
}

fn rebuild_with(store: &Store, links: Links, quiet: bool) -> Result<()> {
    let build = begin(store, links, quiet)?;
    finish_build(store, build)
}

/// The first two passes of the whole build `update` would make from
/// `found` (taken then), for a caller that reads `history` itself before
/// `finish_build` (see `Build::member_rows`); None when `update` would not
/// build (no sets, clusters to catch up, an empty index).
pub fn start_build<'s>(
    store: &'s Store,
    found: &mut Option<(UnionFind, Height)>,
    quiet: bool,
) -> Result<Option<Build<'s>>> {
    if found.is_none() || store.tip()?.is_none() {
        return Ok(None);
    }
    let h = match (heuristics(store)?, tip(store)?) {
        (Some(_), Some(_)) => return Ok(None),
        (h, _) => h.unwrap_or(Heuristics::DEFAULT),
    };
    let (found, rows_from) = found.take().expect("checked above");
    let links = Links {
        found,
        rows_from,
        heuristics: h,
    };
    begin(store, links, quiet)
}

/// Clears the clusters and starts a whole build; None for an empty index.
/// No tip until the build is whole: an interrupted build is started over
/// (with the same heuristics) by the next run, never continued.
fn begin<'s>(store: &'s Store, links: Links, quiet: bool) -> Result<Option<Build<'s>>> {
    let mut batch = store.batch();
    clear_clusters(&mut batch)?;
    batch.delete_meta(meta::ClusterDirty);
    batch.put_meta(meta::ClusterHeuristics, &links.heuristics.to_string());
    put_tip(&mut batch, None);
    store.write(batch)?;
    let mut progress = Progress::new(blk_bytes_above(store, None)?, quiet);
    let build = build::start(store, links, &mut progress)?;
    progress.finish();
    Ok(build)
}

/// Ends a whole build with its third pass, and records its tip.
pub fn finish_build(store: &Store, build: Option<Build>) -> Result<()> {
    if let Some(build) = build {
        build.finish()?;
    }
    let mut batch = store.batch();
    put_tip(&mut batch, store.tip()?);
    store.write(batch)?;
    store.flush()
}

/// Deletes every row of the cluster families (those that hold any: a
/// first build's table files then go straight to the last level).
fn clear_clusters(batch: &mut Batch) -> Result<()> {
    batch.clear_stored::<cf::ClusterOf>()?;
    batch.clear_stored::<cf::ClusterMembers>()?;
    batch.clear_stored::<cf::ClusterStats>()?;
    batch.clear_stored::<cf::ClusterHistory>()?;
    batch.clear_stored::<cf::ClusterRank>()?;
    batch.clear_stored::<cf::ClusterUndo>()
}

/// Blk bytes of the indexed blocks above `height` (all when None): the
/// work left, for progress.
fn blk_bytes_above(store: &Store, height: Option<Height>) -> Result<u64> {
    let from = match height {
        Some(h) => after(h),
        None => store.base_height()?,
    };
    match store.tip()? {
        Some(tip) => heights(from, tip.height)
            .map(|h| Ok(store.block(h)?.map_or(0, |b| u64::from(b.loc.len))))
            .sum(),
        None => Ok(0),
    }
}

fn catch_up(store: &Store, h: Heuristics, quiet: bool) -> Result<()> {
    let cluster_tip = tip(store)?.map(|p| p.height);
    let mut progress = Progress::new(blk_bytes_above(store, cluster_tip)?, quiet);
    live::catch_up(store, h, &mut progress)?;
    progress.finish();
    store.flush()
}

/// The heights `first..=last`, none when `last` is below `first`.
fn heights(first: Height, last: Height) -> impl DoubleEndedIterator<Item = Height> {
    (first.0..=last.0).map(Height)
}

/// The height of the block after `h`.
fn after(h: Height) -> Height {
    Height(h.0 + 1)
}
