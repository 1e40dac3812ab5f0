//! Rolling back indexed blocks that left the best chain.

use anyhow::Result;
use satflow_schema::Height;

use super::Summary;
use crate::chain::BestChain;
use crate::store::{SortedBatch, Store};
use crate::writer::Writer;

/// Rolls back indexed blocks that are not on the best chain; returns the
/// height of the first block to apply.
pub(super) fn undo_to_fork(
    store: &Store,
    writer: &mut Writer,
    best: &BestChain,
    summary: &mut Summary,
) -> Result<u32> {
    let Some(tip) = store.tip()? else {
        return Ok(best.base);
    };
    let tip = tip.height.0;
    let fork = fork_height(store, best, tip)?;
    let first_gone = fork.map_or(best.base, |f| f + 1);
    if first_gone > tip {
        return Ok(first_gone);
    }
    // The clusters learn what is leaving while its rows are still there.
    crate::cluster::forget_above(store, fork.map(Height))?;
    for height in (first_gone..=tip).rev() {
        let hash = store.need_block(Height(height))?.hash;
        tracing::info!("rolling back block {hash} at height {height}: no longer on the best chain");
        let mut batch = SortedBatch::default();
        writer.undo_tip(&mut batch)?;
        batch.commit(store)?;
        summary.blocks_undone += 1;
    }
    // The undone rows' deletions must not wait in a memtable: ingesting
    // new rows over them would make RocksDB flush that family alone,
    // persisting it apart from the tip.
    store.flush()?;
    Ok(first_gone)
}

/// The highest indexed height still on the best chain; None if even the
/// index's first block is not.
fn fork_height(store: &Store, best: &BestChain, tip: u32) -> Result<Option<u32>> {
    for height in (best.base..=tip).rev() {
        let row = store.need_block(Height(height))?;
        if best
            .blocks
            .get((height - best.base) as usize)
            .map(|n| n.hash)
            == Some(row.hash)
        {
            return Ok(Some(height));
        }
    }
    Ok(None)
}
