//! Where partitions begin and end, and where each table resumes.

use anyhow::{bail, Result};
use satflow_indexer::store::Direction;
use satflow_indexer::Store;
use satflow_schema::{cf, Height};

use crate::manifest::Manifest;
use crate::tables::Table;

/// Transactions read and converted at once, which bounds the rows an
/// export holds in memory besides the row groups being built.
const CHUNK_TXS: u64 = 50_000;

/// A partition to write: consecutive blocks of the best chain.
pub(super) struct Planned {
    pub(super) from: Height,
    pub(super) to: Height,
    pub(super) last_hash: String,
    pub(super) blk_bytes: u64,
    /// Tx count of each block, to cut the partition into chunks.
    txs: Vec<u32>,
}

/// Partitions of `[start, to]`: consecutive blocks, each closed once its
/// blocks reach `bytes` of blk data. Cut the same way from the same first
/// height, the boundaries of a chain never move, so a table exported
/// earlier resumes at one of them.
pub(super) fn plan(store: &Store, start: Height, to: Height, bytes: u64) -> Result<Vec<Planned>> {
    let mut plan: Vec<Planned> = Vec::new();
    let mut open: Option<Planned> = None;
    for row in store.scan::<cf::Blocks>(&start, Direction::Forward) {
        let (height, row) = row?;
        if height > to {
            break;
        }
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

impl Planned {
    pub(super) fn complete(&self, target: u64) -> bool {
        self.blk_bytes >= target
    }

    /// Height ranges of at most `CHUNK_TXS` transactions (or one block),
    /// first and last height.
    pub(super) fn chunks(&self) -> Vec<(Height, Height)> {
        let mut out = Vec::new();
        let (mut first, mut txs) = (self.from.0, 0u64);
        for (h, &n) in (self.from.0..=self.to.0).zip(&self.txs) {
            if txs > 0 && txs + u64::from(n) > CHUNK_TXS {
                out.push((Height(first), Height(h - 1)));
                (first, txs) = (h, 0);
            }
            txs += u64::from(n);
        }
        out.push((Height(first), self.to));
        out
    }
}

/// Where `table` resumes: after its last complete partition, or at its
/// incomplete last one when there are blocks to add to it. None when it
/// is exported up to `to` already.
pub(super) fn resume(m: &Manifest, table: Table, to: Height) -> Option<Height> {
    match m.partitions.get(table.name()).and_then(|p| p.last()) {
        None => Some(Height(m.from)),
        Some(p) if p.height_to >= to.0 => None,
        Some(p) if p.complete => Some(Height(p.height_to + 1)),
        Some(p) => Some(Height(p.height_from)),
    }
}
