//! Clustering a whole index in sequential passes, for `satflow cluster` and
//! a first run: one pass over the transactions unites addresses, one over
//! the addresses writes membership, one over `history` writes the clusters'
//! history, one over that writes their figures. Reads are range scans, not
//! point lookups; the per-address and per-output arrays live in scratch
//! files (see `unionfind`), indexed by the ids' numbers.

use anyhow::{Context, Result};
use rayon::prelude::*;
use satflow_schema::address::HistoryRow;
use satflow_schema::cf::{self, Family};
use satflow_schema::cluster::{ClusterStats, Rank, RankKey};
use satflow_schema::script::ScriptType;
use satflow_schema::tx::OutputRow;
use satflow_schema::{AddrId, ClusterId, ClusterKey, Height, OutNum, TxNum};

use super::heights;
use super::heuristics::{Coin, Heuristics, Spent, TxView};
use super::unionfind::{MappedArray, UnionFind, SCRATCH_PREFIX};
use super::view::{coin, spent};
use crate::progress::Progress;
use crate::store::{Batch, Landing, SortedBatch, Store};

/// Rows per write batch while building.
const CHUNK: usize = 100_000;

/// Rows per sorted run of passes 2 and 3: bounded memory (~40 bytes a
/// row) whatever the index's size.
const RUN_ROWS: usize = 4 << 20;

/// Where pass 1 gets the links that unite addresses.
pub enum Links<'a> {
    /// Found from the index's rows with these heuristics.
    FromRows(Heuristics),
    /// Already found, in chain order, with the heuristics the build records
    /// (the bulk path finds them from each epoch in memory).
    Found(&'a [(AddrId, AddrId)]),
}

/// Writes every cluster of the index as of its tip. The caller records the
/// heuristics and the tip only afterwards, so an interrupted build is
/// started over rather than continued.
pub fn build(store: &Store, links: Links, progress: &mut Progress) -> Result<()> {
    let Some(tip) = store.tip()? else {
        return Ok(());
    };
    let next = store.need_block(tip.height)?.next_ids();
    remove_stale_scratch(store);
    let mut sets = UnionFind::new(store.path(), next.addr.0)?;
    match links {
        Links::FromRows(h) => unite(store, h, tip.height, next.output, &mut sets, progress)?,
        Links::Found(pairs) => {
            for &(a, b) in pairs {
                sets.union(a.0, b.0);
            }
        }
    }
    let sizes = write_members(store, &mut sets)?;
    write_history(store, &mut sets, &sizes)?;
    write_stats(store, tip.height, &sizes)
}

/// Scratch files of a build that was killed (a finished one deletes its own).
fn remove_stale_scratch(store: &Store) {
    let Ok(entries) = std::fs::read_dir(store.path()) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Pass 1: every transaction's links, in chain order. `txs`, `outputs` and
/// `inputs` are read side by side, each as one scan: the blocks say how
/// many rows of each a tx has.
fn unite(
    store: &Store,
    h: Heuristics,
    tip: Height,
    end_output: OutNum,
    sets: &mut UnionFind,
    progress: &mut Progress,
) -> Result<()> {
    let mut pass = Pass1 {
        packed: MappedArray::zeroed(store.path(), end_output.0 as usize * 2)?,
        next_addr: AddrId(0),
    };
    let mut txs = store.scan_all::<cf::Txs>();
    let mut outs = store.scan_all::<cf::Outputs>();
    let mut ins = store.scan_all::<cf::Inputs>();
    for height in heights(store.base_height()?, tip) {
        let block = store.need_block(height)?;
        for _ in 0..block.tx_count {
            let (_, tx) = txs.next().context("txs ended early")??;
            let outputs = pass.outputs(&mut outs, tx.output_count)?;
            let inputs = match tx.is_coinbase() {
                true => Vec::new(),
                false => {
                    let (_, spent) = ins.next().context("inputs ended early")??;
                    pass.inputs(store, spent)?
                }
            };
            let (linked, _) = h.links(&TxView { inputs, outputs });
            for pair in linked.windows(2) {
                sets.union(pair[0].0, pair[1].0);
            }
        }
        progress.advance(1, u64::from(block.loc.len), height.0);
    }
    Ok(())
}

/// What pass 1 carries from one transaction to the next.
struct Pass1 {
    /// Per output number: `pack`ed.
    packed: MappedArray,
    /// Ids are given at first sight, in output order: an output's address
    /// is fresh when its id is at least this, as it stood before the tx.
    next_addr: AddrId,
}

impl Pass1 {
    /// The next `count` outputs of the scan, kept for their spenders.
    fn outputs(
        &mut self,
        rows: &mut impl Iterator<Item = Result<(OutNum, OutputRow)>>,
        count: u32,
    ) -> Result<Vec<(Coin, bool)>> {
        let watermark = self.next_addr;
        (0..count)
            .map(|_| {
                let (n, o) = rows.next().context("outputs ended early")??;
                self.packed.set_u64(n.0 as usize, pack(&o));
                self.saw(o.addr);
                Ok((coin(&o), o.addr.is_some_and(|a| a >= watermark)))
            })
            .collect()
    }

    /// The coins a tx's inputs spend, from the outputs kept so far.
    fn inputs(&mut self, store: &Store, spends: Vec<OutNum>) -> Result<Vec<Spent>> {
        spends
            .into_iter()
            .map(|n| {
                if !n.is_outside() {
                    return unpack(self.packed.get_u64(n.0 as usize));
                }
                // A coin from before the index's first block: its address
                // got its id when this tx spent it, so later payments to it
                // are not to a fresh address.
                let o = store.need::<cf::Outputs>(&n)?;
                self.saw(o.addr);
                Ok(spent(&o))
            })
            .collect()
    }

    fn saw(&mut self, addr: Option<AddrId>) {
        if let Some(a) = addr {
            self.next_addr = self.next_addr.max(a + 1);
        }
    }
}

/// An output as pass 1 keeps it: address + 1 (0: none) in the low 56 bits,
/// script type above.
fn pack(o: &OutputRow) -> u64 {
    o.addr.map_or(0, |a| a.0 + 1) | ((o.script_type as u64) << 56)
}

fn unpack(packed: u64) -> Result<Spent> {
    let addr = packed & ((1 << 56) - 1);
    Ok(Spent {
        addr: addr.checked_sub(1).map(AddrId),
        script: ScriptType::from_u8((packed >> 56) as u8).context("script type")?,
    })
}

/// Pass 2: `cluster_of` and `cluster_members`, ingested as table files a
/// run of rows at a time; returns each root's size (0 for addresses that
/// are not a root of two or more).
fn write_members(store: &Store, sets: &mut UnionFind) -> Result<MappedArray> {
    let mut sizes = MappedArray::zeroed(store.path(), sets.len() as usize)?;
    let mut run = SortedBatch::default();
    let mut rows = 0;
    for a in 0..sets.len() {
        let root = sets.find(a);
        if root != a {
            let cluster = ClusterKey::of(AddrId(root));
            run.put::<cf::ClusterOf>(&AddrId(a), &cluster);
            run.put::<cf::ClusterMembers>(&(cluster, AddrId(a)), &());
            rows += 2;
            if sizes.get(root as usize) == 0 {
                // The root's own row, written once when its first member shows up.
                run.put::<cf::ClusterMembers>(&(cluster, cluster.holder()), &());
                sizes.set(root as usize, 1);
                rows += 1;
            }
            sizes.set(root as usize, sizes.get(root as usize) + 1);
        }
        if rows >= RUN_ROWS {
            ingest_members(store, std::mem::take(&mut run))?;
            rows = 0;
        }
    }
    ingest_members(store, run)?;
    Ok(sizes)
}

/// `cluster_of` rows come in address order, each run above the last; a
/// run's `cluster_members` rows overlap every other run's.
fn ingest_members(store: &Store, run: SortedBatch) -> Result<()> {
    run.ingest_all(store, |family| match family {
        cf::ClusterOf::NAME => Landing::Bottom,
        _ => Landing::Compacted,
    })
}

/// Pass 3: each member's history rows, summed per cluster and tx. A run of
/// rows is summed in memory, sorted, and ingested as merge operands, which
/// the `cluster_history` merge operator adds to other runs' for the same
/// cluster and tx.
fn write_history(store: &Store, sets: &mut UnionFind, sizes: &MappedArray) -> Result<()> {
    let mut run: Vec<((ClusterKey, TxNum), HistoryRow)> = Vec::new();
    for item in store.scan_all::<cf::History>() {
        let ((addr, txnum), row) = item?;
        let root = sets.find(addr.0);
        if sizes.get(root as usize) > 0 {
            run.push(((ClusterKey::of(AddrId(root)), txnum), row));
        }
        if run.len() >= RUN_ROWS {
            ingest_history(store, &mut run)?;
        }
    }
    ingest_history(store, &mut run)
}

fn ingest_history(store: &Store, run: &mut Vec<((ClusterKey, TxNum), HistoryRow)>) -> Result<()> {
    run.par_sort_unstable_by_key(|(key, _)| *key);
    let mut batch = SortedBatch::default();
    for same in run.chunk_by(|a, b| a.0 == b.0) {
        let mut sum = HistoryRow::default();
        same.iter().for_each(|(_, row)| sum.add(row));
        batch.merge::<cf::ClusterHistory>(&same[0].0, &sum);
    }
    run.clear();
    batch.ingest_all(store, |_| Landing::Compacted)
}

/// Pass 4: `cluster_stats` and `cluster_rank` from `cluster_history`.
fn write_stats(store: &Store, tip: Height, sizes: &MappedArray) -> Result<()> {
    let height_of = height_finder(store, tip)?;
    let mut batch = store.batch();
    let mut current: Option<(ClusterKey, ClusterStats)> = None;
    for item in store.scan_all::<cf::ClusterHistory>() {
        let ((c, txnum), row) = item?;
        if current.as_ref().is_some_and(|(cur, _)| *cur != c) {
            put_stats(&mut batch, current.take().expect("checked"));
        }
        let (_, s) = current.get_or_insert_with(|| {
            let size = sizes.get(c.holder().0 as usize);
            // Roots are the lowest member: the key is the oldest address.
            let s = ClusterStats {
                id: ClusterId::of(c.holder()),
                size: u64::from(size),
                ..Default::default()
            };
            (c, s)
        });
        s.add_tx(height_of(txnum).0, row.credited(), row.sent);
        write_if_full(store, &mut batch)?;
    }
    if let Some(last) = current {
        put_stats(&mut batch, last);
    }
    store.write(batch)
}

/// The height of an indexed tx, by its number.
fn height_finder(store: &Store, tip: Height) -> Result<impl Fn(TxNum) -> Height> {
    let base = store.base_height()?;
    let first_txs = heights(base, tip)
        .map(|h| Ok(store.need_block(h)?.first_tx))
        .collect::<Result<Vec<TxNum>>>()?;
    Ok(move |txnum| Height(base.0 + (first_txs.partition_point(|&f| f <= txnum) - 1) as u32))
}

fn put_stats(batch: &mut Batch, (c, s): (ClusterKey, ClusterStats)) {
    batch.put::<cf::ClusterStats>(&c, &s);
    for rank in [Rank::Size, Rank::Balance] {
        batch.put::<cf::ClusterRank>(&RankKey::new(rank, &s, c), &());
    }
}

/// Writes the batch once it holds `CHUNK` rows, and starts a new one.
fn write_if_full<'s>(store: &'s Store, batch: &mut Batch<'s>) -> Result<()> {
    if batch.len() >= CHUNK {
        store.write(std::mem::replace(batch, store.batch()))?;
    }
    Ok(())
}
