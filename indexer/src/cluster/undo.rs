//! Per-block cluster undo records: while a block is clustered, every
//! cluster row it writes is noted as it was before (`Recorder`); a reorg
//! puts those rows back, newest block first (`undo_blocks`). The cost is
//! what the block wrote, however large the clusters it merged.
//!
//! Records are kept for the last `UNDO_DEPTH` blocks clustered one at a
//! time. A reorg deeper than that, or into blocks a whole build clustered
//! (which writes no records), dissolves and recomputes instead (`live`).

use std::collections::HashSet;

use anyhow::Result;
use satflow_schema::block::ChainPoint;
use satflow_schema::cf::{self, Family};
use satflow_schema::cluster::{Before, ClusterFamily, UndoRecord};
use satflow_schema::{Codec, Height};

use super::{heights, put_tip};
use crate::store::{Batch, Store};

/// Blocks whose records are kept: far deeper than any reorg the chain has
/// seen since 2013, at ~0.1 MB a block.
pub const UNDO_DEPTH: u32 = 288;

/// A cluster family whose rows undo records restore.
pub trait Undoable: Family {
    const FAMILY: ClusterFamily;
}

impl Undoable for cf::ClusterOf {
    const FAMILY: ClusterFamily = ClusterFamily::Of;
}
impl Undoable for cf::ClusterMembers {
    const FAMILY: ClusterFamily = ClusterFamily::Members;
}
impl Undoable for cf::ClusterStats {
    const FAMILY: ClusterFamily = ClusterFamily::Stats;
}
impl Undoable for cf::ClusterHistory {
    const FAMILY: ClusterFamily = ClusterFamily::History;
}
impl Undoable for cf::ClusterRank {
    const FAMILY: ClusterFamily = ClusterFamily::Rank;
}

fn family_name(f: ClusterFamily) -> &'static str {
    match f {
        ClusterFamily::Of => cf::ClusterOf::NAME,
        ClusterFamily::Members => cf::ClusterMembers::NAME,
        ClusterFamily::Stats => cf::ClusterStats::NAME,
        ClusterFamily::History => cf::ClusterHistory::NAME,
        ClusterFamily::Rank => cf::ClusterRank::NAME,
    }
}

/// The record of the block being clustered: each row's value before the
/// block's first write to it.
pub struct Recorder {
    height: Height,
    noted: HashSet<(ClusterFamily, Vec<u8>)>,
    record: UndoRecord,
}

impl Recorder {
    pub fn new(height: Height) -> Recorder {
        Recorder {
            height,
            noted: HashSet::new(),
            record: UndoRecord::default(),
        }
    }

    /// Notes row `key` of `F` as the store holds it, unless already noted.
    pub fn note<F: Undoable>(&mut self, store: &Store, key: &F::Key) -> Result<()> {
        let bytes = key.encode().as_ref().to_vec();
        if self.noted.insert((F::FAMILY, bytes.clone())) {
            let value = store.get_raw::<F>(key)?;
            self.record.rows.push(Before {
                family: F::FAMILY,
                key: bytes,
                value,
            });
        }
        Ok(())
    }

    /// Notes row `key` of `F` as `before` (None: absent), known without a
    /// read: a row of the block's own transactions, figures the step read
    /// already, rank rows that follow from them.
    pub fn note_known<F: Undoable>(&mut self, key: &F::Key, before: Option<&F::Value>) {
        let bytes = key.encode().as_ref().to_vec();
        if self.noted.insert((F::FAMILY, bytes.clone())) {
            self.record.rows.push(Before {
                family: F::FAMILY,
                key: bytes,
                value: before.map(|v| v.encode().as_ref().to_vec()),
            });
        }
    }

    /// Adds the record to `batch`, and drops the one that fell out of the
    /// kept depth.
    pub fn write(self, batch: &mut Batch) {
        batch.put::<cf::ClusterUndo>(&self.height, &self.record);
        if let Some(old) = self.height.0.checked_sub(UNDO_DEPTH) {
            batch.delete::<cf::ClusterUndo>(&Height(old));
        }
    }
}

/// Whether every block `first..=last` has a record.
pub fn recorded(store: &Store, first: Height, last: Height) -> Result<bool> {
    for h in heights(first, last).rev() {
        if store.get_raw::<cf::ClusterUndo>(&h)?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Undoes the clustering of blocks `first..=last`, newest first, each in
/// one batch that also moves the cluster tip below it: an interrupted undo
/// resumes where it stopped.
pub fn undo_blocks(store: &Store, first: Height, last: Height) -> Result<()> {
    let base = store.base_height()?;
    for h in heights(first, last).rev() {
        let record = store.need::<cf::ClusterUndo>(&h)?;
        let mut batch = store.batch();
        // A row written twice was noted once, at its first write: the
        // order of putting back does not matter.
        for row in &record.rows {
            let family = family_name(row.family);
            match &row.value {
                Some(value) => batch.put_raw(family, &row.key, value),
                None => batch.delete_raw(family, &row.key),
            }
        }
        batch.delete::<cf::ClusterUndo>(&h);
        let below = match h.0.checked_sub(1).map(Height).filter(|&b| b >= base) {
            Some(b) => Some(ChainPoint {
                height: b,
                hash: store.need_block(b)?.hash,
            }),
            None => None,
        };
        put_tip(&mut batch, below);
        store.write(batch)?;
    }
    Ok(())
}
