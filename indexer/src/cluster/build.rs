//! Clustering a whole index in sequential passes, for `satflow cluster` and
//! a first run: one pass over the transactions unites addresses, one over
//! the addresses writes membership, one over `history` writes the clusters'
//! history, one over that writes their figures. Reads are range scans, not
//! point lookups; the per-address and per-output arrays live in scratch
//! files (see `unionfind`).

use anyhow::{Context, Result};
use rocksdb::{IteratorMode, WriteBatch};

use super::heuristics::{Coin, Heuristics, Spent, TxView};
use super::rows::{rank_key, ClusterStats, Rank};
use super::unionfind::{MappedArray, UnionFind, SCRATCH_PREFIX};
use crate::progress::Progress;
use crate::schema::{
    cf, decode_inputs, key_pair, key_u64, split_pair, Dec, HistoryRow, OutputRow, TxRow,
    FIRST_OUTSIDE_OUTPUT,
};
use crate::script::ScriptType;
use crate::store::Store;

/// Rows per write batch while building.
const CHUNK: usize = 100_000;

/// Writes every cluster of the index as of its tip. The caller records the
/// heuristics and the tip only afterwards, so an interrupted build is
/// started over rather than continued.
pub fn build(store: &Store, h: Heuristics, progress: &mut Progress) -> Result<()> {
    let Some((tip, _)) = store.tip()? else {
        return Ok(());
    };
    let next = store.block(tip)?.context("tip block row")?.next_ids();
    remove_stale_scratch(store);
    let mut sets = UnionFind::new(store.path(), next.addr)?;
    unite(store, h, tip, next.output, &mut sets, progress)?;
    let sizes = write_members(store, &mut sets)?;
    write_history(store, &mut sets, &sizes)?;
    write_stats(store, tip, &sizes)
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

/// Pass 1: every transaction's links, in chain order.
fn unite(
    store: &Store,
    h: Heuristics,
    tip: u32,
    output_count: u64,
    sets: &mut UnionFind,
    progress: &mut Progress,
) -> Result<()> {
    // Per output number: `pack`ed.
    let mut outputs = MappedArray::zeroed(store.path(), output_count as usize * 2)?;
    let mut txs = store
        .db()
        .iterator_cf(store.cf(cf::TXS), IteratorMode::Start);
    let mut outs = store
        .db()
        .iterator_cf(store.cf(cf::OUTPUTS), IteratorMode::Start);
    let mut ins = store
        .db()
        .iterator_cf(store.cf(cf::INPUTS), IteratorMode::Start);
    // Ids are given at first sight, in output order: an output's address is
    // fresh when its id is at least the next id before the tx.
    let mut next_addr = 0u64;
    for height in store.base_height()?..=tip {
        let block = store.block(height)?.context("block row")?;
        for _ in 0..block.tx_count {
            let (_, v) = txs.next().context("txs ended early")??;
            let tx = TxRow::decode(&v)?;
            let mut view = TxView::default();
            let watermark = next_addr;
            for _ in 0..tx.output_count {
                let (k, v) = outs.next().context("outputs ended early")??;
                let n = Dec::new("output key", &k).u64()?;
                let o = OutputRow::decode(&v)?;
                outputs.set_u64(n as usize, pack(&o));
                if let Some(a) = o.addr {
                    next_addr = next_addr.max(a + 1);
                }
                let coin = Coin {
                    addr: o.addr,
                    value: o.value,
                    script: o.script_type,
                };
                view.outputs
                    .push((coin, o.addr.is_some_and(|a| a >= watermark)));
            }
            if !tx.is_coinbase() {
                let (_, v) = ins.next().context("inputs ended early")??;
                for n in decode_inputs(&v)? {
                    let packed = match n >= FIRST_OUTSIDE_OUTPUT {
                        // A coin from before the index's first block: its
                        // address got its id when this tx spent it, so later
                        // payments to it are not to a fresh address.
                        true => {
                            let o = OutputRow::decode(&store.need(cf::OUTPUTS, &key_u64(n))?)?;
                            if let Some(a) = o.addr {
                                next_addr = next_addr.max(a + 1);
                            }
                            pack(&o)
                        }
                        false => outputs.get_u64(n as usize),
                    };
                    let addr = packed & ((1 << 56) - 1);
                    view.inputs.push(Spent {
                        addr: addr.checked_sub(1),
                        script: ScriptType::from_u8((packed >> 56) as u8).context("script type")?,
                    });
                }
            }
            let (linked, _) = h.links(&view);
            for pair in linked.windows(2) {
                sets.union(pair[0], pair[1]);
            }
        }
        progress.advance(1, u64::from(block.loc.len), height);
    }
    Ok(())
}

/// An output as pass 1 keeps it: address + 1 (0: none) in the low 56 bits,
/// script type above.
fn pack(o: &OutputRow) -> u64 {
    o.addr.map_or(0, |a| a + 1) | ((o.script_type as u64) << 56)
}

/// Pass 2: `cluster_of` and `cluster_members`; returns each root's size
/// (0 for addresses that are not a root of two or more).
fn write_members(store: &Store, sets: &mut UnionFind) -> Result<MappedArray> {
    let mut sizes = MappedArray::zeroed(store.path(), sets.len() as usize)?;
    let mut batch = WriteBatch::default();
    for a in 0..sets.len() {
        let root = sets.find(a);
        if root != a {
            batch.put_cf(store.cf(cf::CLUSTER_OF), key_u64(a), key_u64(root));
            batch.put_cf(store.cf(cf::CLUSTER_MEMBERS), key_pair(root, a), []);
            if sizes.get(root as usize) == 0 {
                // The root's own row, written once when its first member shows up.
                batch.put_cf(store.cf(cf::CLUSTER_MEMBERS), key_pair(root, root), []);
                sizes.set(root as usize, 1);
            }
            sizes.set(root as usize, sizes.get(root as usize) + 1);
        }
        if batch.len() >= CHUNK {
            store.write(std::mem::take(&mut batch))?;
        }
    }
    store.write(batch)?;
    Ok(sizes)
}

/// Pass 3: each member's history rows, summed per cluster and tx by the
/// `cluster_history` merge operator.
fn write_history(store: &Store, sets: &mut UnionFind, sizes: &MappedArray) -> Result<()> {
    let mut batch = WriteBatch::default();
    for item in store
        .db()
        .iterator_cf(store.cf(cf::HISTORY), IteratorMode::Start)
    {
        let (k, v) = item.context("reading history")?;
        let (addr, txnum) = split_pair(&k)?;
        let root = sets.find(addr);
        if sizes.get(root as usize) > 0 {
            batch.merge_cf(store.cf(cf::CLUSTER_HISTORY), key_pair(root, txnum), v);
        }
        if batch.len() >= CHUNK {
            store.write(std::mem::take(&mut batch))?;
        }
    }
    store.write(batch)
}

/// Pass 4: `cluster_stats` and `cluster_rank` from `cluster_history`.
fn write_stats(store: &Store, tip: u32, sizes: &MappedArray) -> Result<()> {
    let base = store.base_height()?;
    let first_txs = (base..=tip)
        .map(|h| Ok(store.block(h)?.context("block row")?.first_tx))
        .collect::<Result<Vec<u64>>>()?;
    let height_of = |txnum: u64| base + (first_txs.partition_point(|&f| f <= txnum) - 1) as u32;
    let mut batch = WriteBatch::default();
    let mut current: Option<(u64, ClusterStats)> = None;
    let finish = |batch: &mut WriteBatch, (c, s): (u64, ClusterStats)| {
        batch.put_cf(store.cf(cf::CLUSTER_STATS), key_u64(c), s.encode());
        for rank in [Rank::Size, Rank::Balance] {
            batch.put_cf(store.cf(cf::CLUSTER_RANK), rank_key(rank, &s, c), []);
        }
    };
    for item in store
        .db()
        .iterator_cf(store.cf(cf::CLUSTER_HISTORY), IteratorMode::Start)
    {
        let (k, v) = item.context("reading cluster_history")?;
        let (c, txnum) = split_pair(&k)?;
        let row = HistoryRow::decode(&v)?;
        if current.as_ref().is_some_and(|(cur, _)| *cur != c) {
            finish(&mut batch, current.take().expect("checked"));
        }
        let (_, s) = current.get_or_insert_with(|| {
            (
                c,
                ClusterStats {
                    size: u64::from(sizes.get(c as usize)),
                    ..Default::default()
                },
            )
        });
        s.add_tx(height_of(txnum), row.credited(), row.sent);
        if batch.len() >= CHUNK {
            store.write(std::mem::take(&mut batch))?;
        }
    }
    if let Some(last) = current {
        finish(&mut batch, last);
    }
    store.write(batch)
}
