//! Keeping clusters current as blocks come and go: each new block merges
//! the clusters its transactions link and adds its transactions to the
//! clusters they touch; a reorg dissolves the clusters the departing blocks
//! touched, and they are recomputed from the blocks that remain.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rocksdb::WriteBatch;

use super::heuristics::{Heuristics, TxView};
use super::rows::{decode_ids, encode_ids, rank_key, ClusterStats, Rank};
use super::tip;
use super::view::{self, cluster_of, load_tx, members, pairs, stats, tx_row};
use crate::progress::Progress;
use crate::schema::{cf, key_pair, key_u64, meta, HistoryRow};
use crate::store::Store;

/// Clusters block by block from the cluster tip to the index tip, after
/// recomputing what a reorg dissolved.
pub fn catch_up(store: &Store, h: Heuristics, progress: &mut Progress) -> Result<()> {
    recompute_dirty(store, h)?;
    let Some((index_tip, _)) = store.tip()? else {
        return Ok(());
    };
    let from = match tip(store)? {
        Some((height, _)) => height + 1,
        None => store.base_height()?,
    };
    for height in from..=index_tip {
        let mut batch = Batch::new(store);
        apply_block(&mut batch, h, height)?;
        let block = store.block(height)?.context("block row")?;
        batch.finish(Some((height, block.hash)))?;
        progress.advance(1, u64::from(block.loc.len), height);
    }
    Ok(())
}

/// Before the index rolls back the blocks above `fork`: dissolves every
/// cluster those blocks touched, noting its members for `recompute_dirty`.
pub fn forget_above(store: &Store, fork: Option<u32>) -> Result<()> {
    let Some((cluster_tip, _)) = tip(store)? else {
        return Ok(());
    };
    let first = match fork {
        Some(f) => f + 1,
        None => store.base_height()?,
    };
    if cluster_tip < first {
        return Ok(());
    }
    let mut dissolved = BTreeMap::new();
    for height in first..=cluster_tip {
        let block = store.block(height)?.context("block row")?;
        let next = block.next_ids();
        for txnum in block.first_tx..next.tx {
            for addr in touched_addresses(&load_tx(store, txnum)?) {
                let c = cluster_of(store, addr)?;
                if let Some(s) = stats(store, c)? {
                    dissolved.insert(c, s);
                }
            }
        }
    }
    let mut batch = WriteBatch::default();
    let mut dirty = match store.get(cf::META, meta::CLUSTER_DIRTY)? {
        Some(v) => decode_ids(&v)?,
        None => Vec::new(),
    };
    for (c, s) in &dissolved {
        for m in members(store, *c)? {
            batch.delete_cf(store.cf(cf::CLUSTER_MEMBERS), key_pair(*c, m));
            batch.delete_cf(store.cf(cf::CLUSTER_OF), key_u64(m));
            dirty.push(m);
        }
        batch.delete_range_cf(
            store.cf(cf::CLUSTER_HISTORY),
            key_pair(*c, 0),
            key_pair(*c, u64::MAX),
        );
        batch.delete_cf(store.cf(cf::CLUSTER_HISTORY), key_pair(*c, u64::MAX));
        batch.delete_cf(store.cf(cf::CLUSTER_STATS), key_u64(*c));
        for rank in [Rank::Size, Rank::Balance] {
            batch.delete_cf(store.cf(cf::CLUSTER_RANK), rank_key(rank, s, *c));
        }
    }
    dirty.sort_unstable();
    dirty.dedup();
    batch.put_cf(store.cf(cf::META), meta::CLUSTER_DIRTY, encode_ids(&dirty));
    let fork_tip = fork
        .map(|f| Ok::<_, anyhow::Error>((f, store.block(f)?.context("block row")?.hash)))
        .transpose()?;
    put_tip(store, &mut batch, fork_tip);
    tracing::info!(
        "reorg: {} cluster(s) touched by the departing blocks will be recomputed",
        dissolved.len()
    );
    store.write(batch)
}

/// Regroups the addresses of dissolved clusters using the blocks up to the
/// cluster tip, as a fresh build would.
fn recompute_dirty(store: &Store, h: Heuristics) -> Result<()> {
    let Some(v) = store.get(cf::META, meta::CLUSTER_DIRTY)? else {
        return Ok(());
    };
    let next = match tip(store)? {
        Some((height, _)) => store.block(height)?.context("block row")?.next_ids(),
        None => Default::default(),
    };
    // Addresses first seen above the tip were rolled back with their blocks.
    let ids: Vec<u64> = decode_ids(&v)?
        .into_iter()
        .filter(|&a| a < next.addr)
        .collect();
    let mut groups = LocalUnion::default();
    let mut links: HashMap<u64, Vec<u64>> = HashMap::new();
    for &a in &ids {
        groups.add(a);
        for r in pairs(store, cf::HISTORY, a, 0) {
            let (txnum, _) = r?;
            if txnum >= next.tx {
                break;
            }
            let linked = match links.entry(txnum) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(h.links(&load_tx(store, txnum)?).0),
            };
            // A tx that only pays `a` links other clusters, not `a`'s.
            if linked.contains(&a) {
                groups.union_all(linked);
            }
        }
    }
    let mut batch = Batch::new(store);
    batch.before_tx = next.tx;
    for (root, rest) in groups.groups() {
        if !rest.is_empty() {
            batch.merge(root, &rest)?;
        }
    }
    batch
        .writes
        .delete_cf(store.cf(cf::META), meta::CLUSTER_DIRTY);
    batch.finish(tip(store)?)
}

/// Addresses a tx pays to or spends from, each once.
fn touched_addresses(tx: &TxView) -> Vec<u64> {
    let mut addrs: Vec<u64> = tx
        .inputs
        .iter()
        .filter_map(|s| s.addr)
        .chain(tx.outputs.iter().filter_map(|(c, _)| c.addr))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

fn apply_block(batch: &mut Batch, h: Heuristics, height: u32) -> Result<()> {
    let store = batch.store;
    let block = store.block(height)?.context("block row")?;
    let end = block.next_ids().tx;
    batch.before_tx = block.first_tx;
    // Which clusters the block's links join, from the clusters as they
    // stood before it.
    let mut groups = LocalUnion::default();
    let mut views = Vec::new();
    for txnum in block.first_tx..end {
        let tx = load_tx(store, txnum)?;
        let (linked, _) = h.links(&tx);
        let clusters = linked
            .iter()
            .map(|&a| batch.cluster_of(a))
            .collect::<Result<Vec<_>>>()?;
        for &c in &clusters {
            groups.add(c);
        }
        groups.union_all(&clusters);
        views.push((txnum, tx));
    }
    for (root, rest) in groups.groups() {
        if !rest.is_empty() {
            batch.merge(root, &rest)?;
        }
    }
    // Then the block's own transactions join the clusters they touch.
    for (txnum, tx) in views {
        let mut per_cluster: BTreeMap<u64, HistoryRow> = BTreeMap::new();
        for a in touched_addresses(&tx) {
            let c = batch.cluster_of(a)?;
            if batch.stats(c)?.is_none() {
                continue;
            }
            let row = HistoryRow::decode(&store.need(cf::HISTORY, &key_pair(a, txnum))?)?;
            per_cluster.entry(c).or_default().add(&row);
        }
        for (c, row) in per_cluster {
            batch.add_row(c, txnum, height, row)?;
        }
    }
    Ok(())
}

/// The writes of one step (a block, or a recompute), with what they change
/// visible to the step's own reads.
struct Batch<'s> {
    store: &'s Store,
    writes: WriteBatch,
    /// History rows at or above this tx are not the clusters' yet.
    before_tx: u64,
    cluster_of: HashMap<u64, u64>,
    /// Figures of every cluster the step touched (None: a lone address),
    /// with the figures it started with, to move its rank rows.
    stats: HashMap<u64, (Option<ClusterStats>, Option<ClusterStats>)>,
    rows: HashMap<(u64, u64), HistoryRow>,
}

impl<'s> Batch<'s> {
    fn new(store: &'s Store) -> Batch<'s> {
        Batch {
            store,
            writes: WriteBatch::default(),
            before_tx: 0,
            cluster_of: HashMap::new(),
            stats: HashMap::new(),
            rows: HashMap::new(),
        }
    }

    fn cluster_of(&mut self, addr: u64) -> Result<u64> {
        if let Some(&c) = self.cluster_of.get(&addr) {
            return Ok(c);
        }
        let c = cluster_of(self.store, addr)?;
        self.cluster_of.insert(addr, c);
        Ok(c)
    }

    fn stats(&mut self, c: u64) -> Result<Option<ClusterStats>> {
        if let Some((_, now)) = self.stats.get(&c) {
            return Ok(*now);
        }
        let s = stats(self.store, c)?;
        self.stats.insert(c, (s, s));
        Ok(s)
    }

    fn set_stats(&mut self, c: u64, s: Option<ClusterStats>) -> Result<()> {
        self.stats(c)?;
        self.stats.get_mut(&c).expect("loaded").1 = s;
        Ok(())
    }

    fn row(&self, c: u64, txnum: u64) -> Result<Option<HistoryRow>> {
        if let Some(r) = self.rows.get(&(c, txnum)) {
            return Ok(Some(*r));
        }
        self.store
            .get(cf::CLUSTER_HISTORY, &key_pair(c, txnum))?
            .map(|v| Ok(HistoryRow::decode(&v)?))
            .transpose()
    }

    /// Adds `row` to cluster `c`'s history at `txnum`, and to its figures.
    fn add_row(&mut self, c: u64, txnum: u64, height: u32, row: HistoryRow) -> Result<()> {
        let mut s = self.stats(c)?.context("adding a row to a lone address")?;
        match self.row(c, txnum)? {
            Some(mut sum) => {
                s.received += row.credited();
                s.sent += row.sent;
                sum.add(&row);
                self.rows.insert((c, txnum), sum);
            }
            None => {
                s.add_tx(height, row.credited(), row.sent);
                self.rows.insert((c, txnum), row);
            }
        }
        self.set_stats(c, Some(s))
    }

    /// Folds clusters `rest` into `target`, the lowest id of them all.
    fn merge(&mut self, target: u64, rest: &[u64]) -> Result<()> {
        let store = self.store;
        if self.stats(target)?.is_none() {
            // A lone address becomes a cluster: its history becomes the cluster's.
            self.set_stats(
                target,
                Some(ClusterStats {
                    size: 1,
                    ..Default::default()
                }),
            )?;
            self.writes
                .put_cf(store.cf(cf::CLUSTER_MEMBERS), key_pair(target, target), []);
            self.absorb_rows(target, target, false)?;
        }
        for &other in rest {
            let multi = self.stats(other)?.is_some();
            let moved = members(store, other)?;
            for &m in &moved {
                self.writes
                    .put_cf(store.cf(cf::CLUSTER_OF), key_u64(m), key_u64(target));
                self.writes
                    .put_cf(store.cf(cf::CLUSTER_MEMBERS), key_pair(target, m), []);
                if multi {
                    self.writes
                        .delete_cf(store.cf(cf::CLUSTER_MEMBERS), key_pair(other, m));
                }
                self.cluster_of.insert(m, target);
            }
            self.absorb_rows(target, other, multi)?;
            let mut s = self.stats(target)?.expect("target is a cluster");
            s.size += moved.len() as u64;
            self.set_stats(target, Some(s))?;
            if multi {
                self.set_stats(other, None)?;
            }
        }
        Ok(())
    }

    /// Adds `source`'s history rows (before `before_tx`) to `target`'s.
    fn absorb_rows(&mut self, target: u64, source: u64, multi: bool) -> Result<()> {
        let mut rows: BTreeMap<u64, HistoryRow> =
            view::history(self.store, source, multi, self.before_tx)?;
        for ((c, txnum), row) in &self.rows {
            if *c == source {
                rows.insert(*txnum, *row);
            }
        }
        for (txnum, row) in rows {
            let height = tx_row(self.store, txnum)?.height;
            self.add_row(target, txnum, height, row)?;
            if multi {
                self.rows.remove(&(source, txnum));
                self.writes
                    .delete_cf(self.store.cf(cf::CLUSTER_HISTORY), key_pair(source, txnum));
            }
        }
        Ok(())
    }

    fn finish(mut self, new_tip: Option<(u32, BlockHash)>) -> Result<()> {
        let store = self.store;
        for ((c, txnum), row) in &self.rows {
            self.writes.put_cf(
                store.cf(cf::CLUSTER_HISTORY),
                key_pair(*c, *txnum),
                row.encode(),
            );
        }
        for (c, (before, after)) in &self.stats {
            if before == after {
                continue;
            }
            for rank in [Rank::Size, Rank::Balance] {
                if let Some(s) = before {
                    self.writes
                        .delete_cf(store.cf(cf::CLUSTER_RANK), rank_key(rank, s, *c));
                }
                if let Some(s) = after {
                    self.writes
                        .put_cf(store.cf(cf::CLUSTER_RANK), rank_key(rank, s, *c), []);
                }
            }
            match after {
                Some(s) => self
                    .writes
                    .put_cf(store.cf(cf::CLUSTER_STATS), key_u64(*c), s.encode()),
                None => self
                    .writes
                    .delete_cf(store.cf(cf::CLUSTER_STATS), key_u64(*c)),
            }
        }
        put_tip(store, &mut self.writes, new_tip);
        store.write(self.writes)
    }
}

pub(super) fn put_tip(store: &Store, batch: &mut WriteBatch, tip: Option<(u32, BlockHash)>) {
    match tip {
        Some((height, hash)) => {
            let mut v = height.to_be_bytes().to_vec();
            v.extend_from_slice(hash.as_byte_array());
            batch.put_cf(store.cf(cf::META), meta::CLUSTER_TIP, v);
        }
        None => batch.delete_cf(store.cf(cf::META), meta::CLUSTER_TIP),
    }
}

/// A small union-find over the ids one step involves; roots are the lowest id.
#[derive(Default)]
struct LocalUnion {
    parent: BTreeMap<u64, u64>,
}

impl LocalUnion {
    fn add(&mut self, x: u64) {
        self.parent.entry(x).or_insert(x);
    }

    fn find(&mut self, x: u64) -> u64 {
        self.add(x);
        let mut root = x;
        while self.parent[&root] != root {
            root = self.parent[&root];
        }
        let mut cur = x;
        while cur != root {
            let next = self.parent[&cur];
            self.parent.insert(cur, root);
            cur = next;
        }
        root
    }

    fn union_all(&mut self, ids: &[u64]) {
        let Some((&first, rest)) = ids.split_first() else {
            return;
        };
        for &other in rest {
            let (a, b) = (self.find(first), self.find(other));
            if a != b {
                self.parent.insert(a.max(b), a.min(b));
            }
        }
    }

    /// Each set as (root, the other members), in root order.
    fn groups(mut self) -> Vec<(u64, Vec<u64>)> {
        let ids: Vec<u64> = self.parent.keys().copied().collect();
        let mut by_root: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for id in ids {
            let root = self.find(id);
            let rest = by_root.entry(root).or_default();
            if id != root {
                rest.push(id);
            }
        }
        by_root.into_iter().collect()
    }
}
