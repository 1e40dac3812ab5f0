//! Keeping clusters current as blocks come and go: each new block merges
//! the clusters its transactions link and adds its transactions to the
//! clusters they touch; a reorg dissolves the clusters the departing blocks
//! touched, and they are recomputed from the blocks that remain.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use satflow_schema::address::HistoryRow;
use satflow_schema::block::ChainPoint;
use satflow_schema::cf;
use satflow_schema::cluster::{ClusterStats, Rank, RankKey};
use satflow_schema::{meta, AddrId, ClusterId, Height, TxNum};

use super::heuristics::{Heuristics, TxView};
use super::view::{self, cluster_of, load_tx, members, stats, tx_row};
use super::{after, heights, tip};
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
        let mut step = Step::new(store);
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
/// None): dissolves every cluster those blocks touched, noting its members
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
    let dissolved = touched_clusters(store, first, cluster_tip.height)?;
    let mut batch = store.batch();
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
) -> Result<BTreeMap<ClusterId, ClusterStats>> {
    let mut touched = BTreeMap::new();
    for height in heights(first, last) {
        for txnum in store.need_block(height)?.txs().map(TxNum) {
            for addr in touched_addresses(&load_tx(store, txnum)?) {
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
    c: ClusterId,
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
    let mut step = Step::new(store);
    step.before_tx = next.tx;
    for (root, rest) in groups.groups() {
        if !rest.is_empty() {
            step.merge(root, &rest)?;
        }
    }
    step.writes.delete_meta(meta::ClusterDirty);
    step.finish(cluster_tip)
}

/// Unites the lone addresses `addrs` as the txs below `end` link them.
/// Every address such a tx links to one of them was in its dissolved
/// cluster, so it is lone too, a cluster named after itself.
fn regroup(store: &Store, h: Heuristics, addrs: &[AddrId], end: TxNum) -> Result<LocalUnion> {
    let mut groups = LocalUnion::default();
    let mut links: HashMap<TxNum, Vec<AddrId>> = HashMap::new();
    for &a in addrs {
        groups.add(ClusterId::of(a));
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
                groups.union_all(linked.iter().map(|&l| ClusterId::of(l)));
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
    // Which clusters the block's links join, from the clusters as they
    // stood before it.
    let mut groups = LocalUnion::default();
    let mut views = Vec::new();
    for txnum in block.txs().map(TxNum) {
        let tx = load_tx(store, txnum)?;
        let (linked, _) = h.links(&tx);
        let clusters = linked
            .iter()
            .map(|&a| step.cluster_of(a))
            .collect::<Result<Vec<_>>>()?;
        for &c in &clusters {
            groups.add(c);
        }
        groups.union_all(clusters);
        views.push((txnum, tx));
    }
    for (root, rest) in groups.groups() {
        if !rest.is_empty() {
            step.merge(root, &rest)?;
        }
    }
    // Then the block's own transactions join the clusters they touch.
    for (txnum, tx) in views {
        join_tx(step, txnum, height, &tx)?;
    }
    Ok(())
}

/// Adds tx `txnum`'s history rows to the clusters of two or more it touches.
fn join_tx(step: &mut Step, txnum: TxNum, height: Height, tx: &TxView) -> Result<()> {
    let mut per_cluster: BTreeMap<ClusterId, HistoryRow> = BTreeMap::new();
    for a in touched_addresses(tx) {
        let c = step.cluster_of(a)?;
        if step.stats(c)?.is_none() {
            continue;
        }
        let row = step.store.need::<cf::History>(&(a, txnum))?;
        per_cluster.entry(c).or_default().add(&row);
    }
    for (c, row) in per_cluster {
        step.add_row(c, txnum, height, row)?;
    }
    Ok(())
}

/// The writes of one step (a block, or a recompute), with what they change
/// visible to the step's own reads.
struct Step<'s> {
    store: &'s Store,
    writes: Batch<'s>,
    /// History rows at or above this tx are not the clusters' yet.
    before_tx: TxNum,
    cluster_of: HashMap<AddrId, ClusterId>,
    /// Figures of every cluster the step touched (None: a lone address),
    /// with the figures it started with, to move its rank rows.
    stats: HashMap<ClusterId, (Option<ClusterStats>, Option<ClusterStats>)>,
    rows: HashMap<(ClusterId, TxNum), HistoryRow>,
}

impl<'s> Step<'s> {
    fn new(store: &'s Store) -> Step<'s> {
        Step {
            store,
            writes: store.batch(),
            before_tx: TxNum(0),
            cluster_of: HashMap::new(),
            stats: HashMap::new(),
            rows: HashMap::new(),
        }
    }

    fn cluster_of(&mut self, addr: AddrId) -> Result<ClusterId> {
        if let Some(&c) = self.cluster_of.get(&addr) {
            return Ok(c);
        }
        let c = cluster_of(self.store, addr)?;
        self.cluster_of.insert(addr, c);
        Ok(c)
    }

    fn stats(&mut self, c: ClusterId) -> Result<Option<ClusterStats>> {
        if let Some((_, now)) = self.stats.get(&c) {
            return Ok(*now);
        }
        let s = stats(self.store, c)?;
        self.stats.insert(c, (s, s));
        Ok(s)
    }

    fn set_stats(&mut self, c: ClusterId, s: Option<ClusterStats>) -> Result<()> {
        self.stats(c)?;
        self.stats.get_mut(&c).expect("loaded").1 = s;
        Ok(())
    }

    fn row(&self, c: ClusterId, txnum: TxNum) -> Result<Option<HistoryRow>> {
        if let Some(r) = self.rows.get(&(c, txnum)) {
            return Ok(Some(*r));
        }
        self.store.get::<cf::ClusterHistory>(&(c, txnum))
    }

    /// Adds `row` to cluster `c`'s history at `txnum`, and to its figures.
    fn add_row(
        &mut self,
        c: ClusterId,
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

    /// Folds clusters `rest` into `target`, the lowest id of them all.
    fn merge(&mut self, target: ClusterId, rest: &[ClusterId]) -> Result<()> {
        if self.stats(target)?.is_none() {
            // A lone address becomes a cluster: its history becomes the cluster's.
            let one = ClusterStats {
                size: 1,
                ..Default::default()
            };
            self.set_stats(target, Some(one))?;
            let member = (target, target.named_after());
            self.writes.put::<cf::ClusterMembers>(&member, &());
            self.absorb_rows(target, target, false)?;
        }
        for &other in rest {
            self.absorb(target, other)?;
        }
        Ok(())
    }

    /// Moves cluster `other`'s members and rows into `target`.
    fn absorb(&mut self, target: ClusterId, other: ClusterId) -> Result<()> {
        let multi = self.stats(other)?.is_some();
        let moved = members(self.store, other)?;
        for &m in &moved {
            self.writes.put::<cf::ClusterOf>(&m, &target);
            self.writes.put::<cf::ClusterMembers>(&(target, m), &());
            if multi {
                self.writes.delete::<cf::ClusterMembers>(&(other, m));
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
    fn absorb_rows(&mut self, target: ClusterId, source: ClusterId, multi: bool) -> Result<()> {
        let mut rows = view::history(self.store, source, multi, self.before_tx)?;
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
                self.writes.delete::<cf::ClusterHistory>(&(source, txnum));
            }
        }
        Ok(())
    }

    fn finish(mut self, new_tip: Option<ChainPoint>) -> Result<()> {
        for (&key, row) in &self.rows {
            self.writes.put::<cf::ClusterHistory>(&key, row);
        }
        for (&c, (before, after)) in &self.stats {
            if before == after {
                continue;
            }
            for rank in [Rank::Size, Rank::Balance] {
                if let Some(s) = before {
                    self.writes
                        .delete::<cf::ClusterRank>(&RankKey::new(rank, s, c));
                }
                if let Some(s) = after {
                    self.writes
                        .put::<cf::ClusterRank>(&RankKey::new(rank, s, c), &());
                }
            }
            match after {
                Some(s) => self.writes.put::<cf::ClusterStats>(&c, s),
                None => self.writes.delete::<cf::ClusterStats>(&c),
            }
        }
        put_tip(&mut self.writes, new_tip);
        self.store.write(self.writes)
    }
}

/// Records `tip` as the last block the clusters include; None: no block
/// (a build under way).
pub(super) fn put_tip(batch: &mut Batch, tip: Option<ChainPoint>) {
    match tip {
        Some(point) => batch.put_meta(meta::ClusterTip, &point),
        None => batch.delete_meta(meta::ClusterTip),
    }
}

/// A small union-find over the clusters one step involves; roots are the
/// lowest id.
#[derive(Default)]
struct LocalUnion {
    parent: BTreeMap<ClusterId, ClusterId>,
}

impl LocalUnion {
    fn add(&mut self, x: ClusterId) {
        self.parent.entry(x).or_insert(x);
    }

    fn find(&mut self, x: ClusterId) -> ClusterId {
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
    fn union_all(&mut self, ids: impl IntoIterator<Item = ClusterId>) {
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

    /// Each set as (root, the other members), in root order.
    fn groups(mut self) -> Vec<(ClusterId, Vec<ClusterId>)> {
        let ids: Vec<ClusterId> = self.parent.keys().copied().collect();
        let mut by_root: BTreeMap<ClusterId, Vec<ClusterId>> = BTreeMap::new();
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
