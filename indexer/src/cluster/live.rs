//! Keeping clusters current as blocks come and go: each new block merges
//! the clusters its transactions link and adds its transactions to the
//! clusters they touch, noting every row it changes (`undo`); a reorg puts
//! the departing blocks' rows back. Merges go by size: the largest cluster
//! of a merge keeps its rows and the others' move into it, so a block costs
//! what it links, not the size of the clusters it joins.
//!
//! Where no records cover a reorg (blocks a whole build clustered, or a
//! reorg deeper than `undo::UNDO_DEPTH`), the clusters the departing blocks
//! touched are dissolved and recomputed from the blocks that remain.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use satflow_schema::address::HistoryRow;
use satflow_schema::block::ChainPoint;
use satflow_schema::cf;
use satflow_schema::cluster::{ClusterStats, Rank, RankKey};
use satflow_schema::{meta, AddrId, ClusterId, ClusterKey, Height, TxNum};

use super::heuristics::{Heuristics, TxView};
use super::undo::{self, Recorder, Undoable};
use super::view::{self, cluster_of, load_tx, members, stats};
use super::{after, heights, put_tip, tip};
use crate::progress::Progress;
use crate::store::{Batch, Direction, Store};

/// Clusters block by block from the cluster tip to the index tip, after
/// recomputing what a reorg dissolved.
pub fn catch_up(store: &Store, h: Heuristics, progress: &mut Progress) -> Result<()> {
    recompute_dirty(store, h)?;
    let Some(index_tip) = store.tip()? else {
        return Ok(());
    };
    let from = match tip(store)? {
        Some(p) => after(p.height),
        None => store.base_height()?,
    };
    for height in heights(from, index_tip.height) {
        let mut step = Step::new(store, Some(height));
        apply_block(&mut step, h, height)?;
        let block = store.need_block(height)?;
        step.finish(Some(ChainPoint {
            height,
            hash: block.hash,
        }))?;
        progress.advance(1, u64::from(block.loc.len), height.0);
    }
    Ok(())
}

/// Before the index rolls back the blocks above `fork` (all of them when
/// None): undoes their clustering from their records, or where a block has
/// none, dissolves every cluster those blocks touched, noting its members
/// for `recompute_dirty`.
pub fn forget_above(store: &Store, fork: Option<Height>) -> Result<()> {
    let Some(cluster_tip) = tip(store)? else {
        return Ok(());
    };
    let first = match fork {
        Some(f) => after(f),
        None => store.base_height()?,
    };
    if cluster_tip.height < first {
        return Ok(());
    }
    if undo::recorded(store, first, cluster_tip.height)? {
        tracing::info!(
            "reorg: undoing the clustering of {} block(s) from their records",
            cluster_tip.height.0 - first.0 + 1
        );
        return undo::undo_blocks(store, first, cluster_tip.height);
    }
    let dissolved = touched_clusters(store, first, cluster_tip.height)?;
    let mut batch = store.batch();
    // The records below describe rows this rewrites: none may be replayed.
    batch.clear::<cf::ClusterUndo>();
    let mut dirty = store.meta(meta::ClusterDirty)?.unwrap_or_default();
    for (&c, s) in &dissolved {
        dirty.extend(dissolve(store, &mut batch, c, s)?);
    }
    dirty.sort_unstable();
    dirty.dedup();
    batch.put_meta(meta::ClusterDirty, &dirty);
    let fork_tip = fork
        .map(|height| -> Result<ChainPoint> {
            let hash = store.need_block(height)?.hash;
            Ok(ChainPoint { height, hash })
        })
        .transpose()?;
    put_tip(&mut batch, fork_tip);
    tracing::info!(
        "reorg: {} cluster(s) touched by the departing blocks will be recomputed",
        dissolved.len()
    );
    store.write(batch)
}

/// The clusters of two or more that the txs of blocks `first..=last`
/// touch, with their figures.
fn touched_clusters(
    store: &Store,
    first: Height,
    last: Height,
) -> Result<BTreeMap<ClusterKey, ClusterStats>> {
    let mut touched = BTreeMap::new();
    for height in heights(first, last) {
        for tx in view::load_block(store, &store.need_block(height)?)? {
            for addr in touched_addresses(&tx) {
                let c = cluster_of(store, addr)?;
                if let Some(s) = stats(store, c)? {
                    touched.insert(c, s);
                }
            }
        }
    }
    Ok(touched)
}

/// Deletes cluster `c`'s rows (`s` its figures, for its rank rows) and
/// returns its members, each now a lone address again.
fn dissolve(
    store: &Store,
    batch: &mut Batch,
    c: ClusterKey,
    s: &ClusterStats,
) -> Result<Vec<AddrId>> {
    let members = members(store, c)?;
    for &m in &members {
        batch.delete::<cf::ClusterMembers>(&(c, m));
        batch.delete::<cf::ClusterOf>(&m);
    }
    // A range delete leaves its end out: the last possible key goes alone.
    let last = (c, TxNum(u64::MAX));
    batch.delete_range::<cf::ClusterHistory>(&(c, TxNum(0)), &last);
    batch.delete::<cf::ClusterHistory>(&last);
    batch.delete::<cf::ClusterStats>(&c);
    for rank in [Rank::Size, Rank::Balance] {
        batch.delete::<cf::ClusterRank>(&RankKey::new(rank, s, c));
    }
    Ok(members)
}

/// Regroups the addresses of dissolved clusters using the blocks up to the
/// cluster tip, as a fresh build would.
fn recompute_dirty(store: &Store, h: Heuristics) -> Result<()> {
    let Some(dirty) = store.meta(meta::ClusterDirty)? else {
        return Ok(());
    };
    let cluster_tip = tip(store)?;
    let next = match cluster_tip {
        Some(p) => store.need_block(p.height)?.next_ids(),
        None => Default::default(),
    };
    // Addresses first seen above the tip were rolled back with their blocks.
    let addrs: Vec<AddrId> = dirty.into_iter().filter(|&a| a < next.addr).collect();
    let groups = regroup(store, h, &addrs, next.tx)?;
    let mut step = Step::new(store, None);
    step.before_tx = next.tx;
    for group in groups.groups() {
        step.merge(&group)?;
    }
    step.writes.delete_meta(meta::ClusterDirty);
    step.finish(cluster_tip)
}

/// Unites the lone addresses `addrs` as the txs below `end` link them.
/// Every address such a tx links to one of them was in its dissolved
/// cluster, so it is lone too, keyed by its own number.
fn regroup(store: &Store, h: Heuristics, addrs: &[AddrId], end: TxNum) -> Result<LocalUnion> {
    let mut groups = LocalUnion::default();
    let mut links: HashMap<TxNum, Vec<AddrId>> = HashMap::new();
    for &a in addrs {
        groups.add(ClusterKey::of(a));
        for r in store.pairs::<cf::History, _, _>(a, TxNum(0), Direction::Forward) {
            let (txnum, _) = r?;
            if txnum >= end {
                break;
            }
            let linked = match links.entry(txnum) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(h.links(&load_tx(store, txnum)?).0),
            };
            // A tx that only pays `a` links other clusters, not `a`'s.
            if linked.contains(&a) {
                groups.union_all(linked.iter().map(|&l| ClusterKey::of(l)));
            }
        }
    }
    Ok(groups)
}

/// Addresses a tx pays to or spends from, each once.
fn touched_addresses(tx: &TxView) -> Vec<AddrId> {
    let mut addrs: Vec<AddrId> = tx
        .inputs
        .iter()
        .filter_map(|s| s.addr)
        .chain(tx.outputs.iter().filter_map(|(c, _)| c.addr))
        .collect();
    addrs.sort_unstable();
    addrs.dedup();
    addrs
}

fn apply_block(step: &mut Step, h: Heuristics, height: Height) -> Result<()> {
    let store = step.store;
    let block = store.need_block(height)?;
    step.before_tx = block.first_tx;
    let txs: Vec<(TxNum, TxView)> = block
        .txs()
        .map(TxNum)
        .zip(view::load_block(store, &block)?)
        .collect();
    let touched: Vec<Vec<AddrId>> = txs.iter().map(|(_, tx)| touched_addresses(tx)).collect();
    step.prefetch(touched.iter().flatten().copied())?;
    // Which clusters the block's links join, from the clusters as they
    // stood before it.
    let mut groups = LocalUnion::default();
    for (_, tx) in &txs {
        let (linked, _) = h.links(tx);
        let clusters = linked
            .iter()
            .map(|&a| step.cluster_of(a))
            .collect::<Result<Vec<_>>>()?;
        for &c in &clusters {
            groups.add(c);
        }
        groups.union_all(clusters);
    }
    for group in groups.groups() {
        step.merge(&group)?;
    }
    // Then the block's own transactions join the clusters they touch: the
    // history rows of their addresses in clusters of two or more, read at
    // once.
    let mut wanted: Vec<(usize, ClusterKey, (AddrId, TxNum))> = Vec::new();
    for (i, ((txnum, _), addrs)) in txs.iter().zip(&touched).enumerate() {
        for &a in addrs {
            let c = step.cluster_of(a)?;
            if step.stats(c)?.is_some() {
                wanted.push((i, c, (a, *txnum)));
            }
        }
    }
    let keys: Vec<(AddrId, TxNum)> = wanted.iter().map(|(_, _, key)| *key).collect();
    let rows = store.multi_get::<cf::History>(&keys)?;
    let mut per_cluster: BTreeMap<(usize, ClusterKey), HistoryRow> = BTreeMap::new();
    for ((i, c, key), row) in wanted.into_iter().zip(rows) {
        let row = row.with_context(|| format!("index is inconsistent: no history row {key:?}"))?;
        per_cluster.entry((i, c)).or_default().add(&row);
    }
    for ((i, c), row) in per_cluster {
        step.add_row(c, txs[i].0, height, row)?;
    }
    Ok(())
}

/// The writes of one step (a block, or a recompute), with what they change
/// visible to the step's own reads.
struct Step<'s> {
    store: &'s Store,
    writes: Batch<'s>,
    /// A block's rows as they were before it; None for a recompute.
    undo: Option<Recorder>,
    /// History rows at or above this tx are not the clusters' yet.
    before_tx: TxNum,
    cluster_of: HashMap<AddrId, ClusterKey>,
    /// Figures of every cluster the step touched (None: a lone address),
    /// with the figures it started with, to move its rank rows.
    stats: HashMap<ClusterKey, (Option<ClusterStats>, Option<ClusterStats>)>,
    rows: HashMap<(ClusterKey, TxNum), HistoryRow>,
}

impl<'s> Step<'s> {
    /// A step that records its rows for undoing when it clusters the block
    /// at `height`.
    fn new(store: &'s Store, height: Option<Height>) -> Step<'s> {
        Step {
            store,
            writes: store.batch(),
            undo: height.map(Recorder::new),
            before_tx: TxNum(0),
            cluster_of: HashMap::new(),
            stats: HashMap::new(),
            rows: HashMap::new(),
        }
    }

    /// Reads the clusters of `addrs` and their figures at once, for the
    /// lookups to come.
    fn prefetch(&mut self, addrs: impl Iterator<Item = AddrId>) -> Result<()> {
        let mut addrs: Vec<AddrId> = addrs.filter(|a| !self.cluster_of.contains_key(a)).collect();
        addrs.sort_unstable();
        addrs.dedup();
        let rows = self.store.multi_get::<cf::ClusterOf>(&addrs)?;
        let mut keys = Vec::with_capacity(addrs.len());
        for (&a, row) in addrs.iter().zip(rows) {
            let key = row.unwrap_or(ClusterKey::of(a));
            self.cluster_of.insert(a, key);
            keys.push(key);
        }
        keys.retain(|k| !self.stats.contains_key(k));
        keys.sort_unstable();
        keys.dedup();
        let stats = self.store.multi_get::<cf::ClusterStats>(&keys)?;
        for (key, s) in keys.into_iter().zip(stats) {
            self.stats.insert(key, (s, s));
        }
        Ok(())
    }

    fn cluster_of(&mut self, addr: AddrId) -> Result<ClusterKey> {
        if let Some(&c) = self.cluster_of.get(&addr) {
            return Ok(c);
        }
        let c = cluster_of(self.store, addr)?;
        self.cluster_of.insert(addr, c);
        Ok(c)
    }

    fn stats(&mut self, c: ClusterKey) -> Result<Option<ClusterStats>> {
        if let Some((_, now)) = self.stats.get(&c) {
            return Ok(*now);
        }
        let s = stats(self.store, c)?;
        self.stats.insert(c, (s, s));
        Ok(s)
    }

    fn set_stats(&mut self, c: ClusterKey, s: Option<ClusterStats>) -> Result<()> {
        self.stats(c)?;
        self.stats.get_mut(&c).expect("loaded").1 = s;
        Ok(())
    }

    /// The id callers know cluster `c` by.
    fn id(&mut self, c: ClusterKey) -> Result<ClusterId> {
        Ok(self.stats(c)?.map_or(ClusterId::of(c.holder()), |s| s.id))
    }

    fn row(&self, c: ClusterKey, txnum: TxNum) -> Result<Option<HistoryRow>> {
        if let Some(r) = self.rows.get(&(c, txnum)) {
            return Ok(Some(*r));
        }
        if txnum >= self.before_tx {
            // A tx of the step's own block: no cluster has its row yet.
            return Ok(None);
        }
        self.store.get::<cf::ClusterHistory>(&(c, txnum))
    }

    /// Puts a row whose value before the step is known to be `before`.
    fn put_known<F: Undoable>(
        &mut self,
        key: &F::Key,
        value: &F::Value,
        before: Option<&F::Value>,
    ) {
        if let Some(undo) = &mut self.undo {
            undo.note_known::<F>(key, before);
        }
        self.writes.put::<F>(key, value);
    }

    /// Deletes a row whose value before the step is known to be `before`.
    fn delete_known<F: Undoable>(&mut self, key: &F::Key, before: &F::Value) {
        if let Some(undo) = &mut self.undo {
            undo.note_known::<F>(key, Some(before));
        }
        self.writes.delete::<F>(key);
    }

    /// Deletes a row, reading what it was for the undo record.
    fn delete<F: Undoable>(&mut self, key: &F::Key) -> Result<()> {
        if let Some(undo) = &mut self.undo {
            undo.note::<F>(self.store, key)?;
        }
        self.writes.delete::<F>(key);
        Ok(())
    }

    /// Adds `row` to cluster `c`'s history at `txnum`, and to its figures.
    fn add_row(
        &mut self,
        c: ClusterKey,
        txnum: TxNum,
        height: Height,
        row: HistoryRow,
    ) -> Result<()> {
        let mut s = self.stats(c)?.context("adding a row to a lone address")?;
        match self.row(c, txnum)? {
            Some(mut sum) => {
                s.received += row.credited();
                s.sent += row.sent;
                sum.add(&row);
                self.rows.insert((c, txnum), sum);
            }
            None => {
                s.add_tx(height.0, row.credited(), row.sent);
                self.rows.insert((c, txnum), row);
            }
        }
        self.set_stats(c, Some(s))
    }

    /// Makes one cluster of `group` (two or more keys). The largest keeps
    /// its rows and the others move into it, so the merge costs the smaller
    /// ones' size; the result is known by the oldest address of them all.
    fn merge(&mut self, group: &[ClusterKey]) -> Result<()> {
        let mut largest = None;
        for &c in group {
            let size = self.stats(c)?.map_or(1, |s| s.size);
            // Ties go to the lowest key, so a recompute is deterministic.
            largest = largest.max(Some((size, Reverse(c))));
        }
        let Some((_, Reverse(target))) = largest else {
            return Ok(());
        };
        let mut id = self.id(target)?;
        for &c in group {
            id = id.min(self.id(c)?);
        }
        if self.stats(target)?.is_none() {
            // A lone address becomes a cluster: its history becomes the cluster's.
            let one = ClusterStats {
                id: ClusterId::of(target.holder()),
                size: 1,
                ..Default::default()
            };
            self.set_stats(target, Some(one))?;
            self.put_known::<cf::ClusterMembers>(&(target, target.holder()), &(), None);
            self.absorb_rows(target, target, false)?;
        }
        for &other in group {
            if other != target {
                self.absorb(target, other)?;
            }
        }
        let s = self.stats(target)?.expect("target is a cluster");
        self.set_stats(target, Some(ClusterStats { id, ..s }))
    }

    /// Moves cluster `other`'s members and rows into `target`.
    fn absorb(&mut self, target: ClusterKey, other: ClusterKey) -> Result<()> {
        let multi = self.stats(other)?.is_some();
        let moved = match multi {
            true => members(self.store, other)?,
            false => vec![other.holder()],
        };
        for &m in &moved {
            // Every member but the holder had a row naming `other`.
            let was = (m != other.holder()).then_some(other);
            self.put_known::<cf::ClusterOf>(&m, &target, was.as_ref());
            self.put_known::<cf::ClusterMembers>(&(target, m), &(), None);
            if multi {
                self.delete_known::<cf::ClusterMembers>(&(other, m), &());
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
        Ok(())
    }

    /// Adds `source`'s history rows (before `before_tx`) to `target`'s.
    fn absorb_rows(&mut self, target: ClusterKey, source: ClusterKey, multi: bool) -> Result<()> {
        let mut rows = view::history(self.store, source, multi, self.before_tx)?;
        if multi {
            // Only a cluster of two or more has rows the step changed.
            for ((c, txnum), row) in &self.rows {
                if *c == source {
                    rows.insert(*txnum, *row);
                }
            }
        }
        let txnums: Vec<TxNum> = rows.keys().copied().collect();
        let heights = view::heights_of(self.store, &txnums)?;
        for ((txnum, row), height) in rows.into_iter().zip(heights) {
            self.add_row(target, txnum, height, row)?;
            if multi {
                self.rows.remove(&(source, txnum));
                self.delete::<cf::ClusterHistory>(&(source, txnum))?;
            }
        }
        Ok(())
    }

    fn finish(mut self, new_tip: Option<ChainPoint>) -> Result<()> {
        for (key, row) in std::mem::take(&mut self.rows) {
            match (&mut self.undo, key.1 >= self.before_tx) {
                // A row of the step's own block: there was none before.
                (Some(undo), true) => undo.note_known::<cf::ClusterHistory>(&key, None),
                (Some(undo), false) => undo.note::<cf::ClusterHistory>(self.store, &key)?,
                (None, _) => {}
            }
            self.writes.put::<cf::ClusterHistory>(&key, &row);
        }
        for (c, (before, after)) in std::mem::take(&mut self.stats) {
            if before == after {
                continue;
            }
            // What stood before is known: the figures the step started
            // from, and the rank rows they place.
            if let Some(undo) = &mut self.undo {
                undo.note_known::<cf::ClusterStats>(&c, before.as_ref());
                for rank in [Rank::Size, Rank::Balance] {
                    if let Some(s) = before {
                        undo.note_known::<cf::ClusterRank>(&RankKey::new(rank, &s, c), Some(&()));
                    }
                    if let Some(s) = after {
                        undo.note_known::<cf::ClusterRank>(&RankKey::new(rank, &s, c), None);
                    }
                }
            }
            for rank in [Rank::Size, Rank::Balance] {
                if let Some(s) = before {
                    self.writes
                        .delete::<cf::ClusterRank>(&RankKey::new(rank, &s, c));
                }
                if let Some(s) = after {
                    self.writes
                        .put::<cf::ClusterRank>(&RankKey::new(rank, &s, c), &());
                }
            }
            match after {
                Some(s) => self.writes.put::<cf::ClusterStats>(&c, &s),
                None => self.writes.delete::<cf::ClusterStats>(&c),
            }
        }
        if let Some(undo) = self.undo.take() {
            undo.write(&mut self.writes);
        }
        put_tip(&mut self.writes, new_tip);
        self.store.write(self.writes)
    }
}

/// A small union-find over the clusters one step involves.
#[derive(Default)]
struct LocalUnion {
    parent: BTreeMap<ClusterKey, ClusterKey>,
}

impl LocalUnion {
    fn add(&mut self, x: ClusterKey) {
        self.parent.entry(x).or_insert(x);
    }

    fn find(&mut self, x: ClusterKey) -> ClusterKey {
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

    /// Puts `ids` in one set (adding them, unless there is only one).
    fn union_all(&mut self, ids: impl IntoIterator<Item = ClusterKey>) {
        let mut ids = ids.into_iter();
        let Some(first) = ids.next() else {
            return;
        };
        for other in ids {
            let (a, b) = (self.find(first), self.find(other));
            if a != b {
                self.parent.insert(a.max(b), a.min(b));
            }
        }
    }

    /// Each set of two or more, in the order of their lowest key.
    fn groups(mut self) -> Vec<Vec<ClusterKey>> {
        let ids: Vec<ClusterKey> = self.parent.keys().copied().collect();
        let mut by_root: BTreeMap<ClusterKey, Vec<ClusterKey>> = BTreeMap::new();
        for id in ids {
            let root = self.find(id);
            by_root.entry(root).or_default().push(id);
        }
        by_root.into_values().filter(|g| g.len() > 1).collect()
    }
}
