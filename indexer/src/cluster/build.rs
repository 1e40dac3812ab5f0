//! Clustering a whole index in passes over its rows, for `satflow cluster` and
//! a first run: one pass over the transactions unites addresses, one over
//! the addresses writes membership, one over `history` writes the clusters'
//! history and figures (the end of a bulk run hands those rows over from
//! its own pass over `history`: see `Build`). Reads are range scans, not
//! point lookups; the per-address and per-output arrays live in scratch
//! files (see `unionfind`), indexed by the ids' numbers, and so do the
//! sorted runs of cluster history beyond a memory budget (`runs`).

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use satflow_schema::address::HistoryRow;
use satflow_schema::cf;
use satflow_schema::cluster::{ClusterStats, Rank, RankKey};
use satflow_schema::script::ScriptType;
use satflow_schema::tx::OutputRow;
use satflow_schema::{AddrId, ClusterId, ClusterKey, Height, NextIds, OutNum, TxNum};

use super::heights;
use super::heuristics::{Coin, Heuristics, Spent, TxView};
use super::runs::{self, Key, Merged, Run, Spill};
use super::unionfind::{Roots, UnionFind, SCRATCH_PREFIX};
use super::view::{coin, spent};
use crate::progress::Progress;
use crate::ranges;
use crate::scratch::MappedArray;
use crate::store::{SpillWriter, Store, Tables};

/// Where pass 1 gets the links that unite addresses: the sets they already
/// formed in the blocks below `rows_from` (the bulk path unites them from
/// each epoch as it goes; the build goes on with them), then the index's
/// rows from that block on, read with `heuristics` (the heuristics the
/// build records).
pub struct Links {
    pub found: UnionFind,
    pub rows_from: Height,
    pub heuristics: Heuristics,
}

/// A whole build whose first two passes are done (addresses united,
/// members written), waiting for its third: the members' `history` rows,
/// which it reads from the index unless the caller hands them over
/// (`member_rows`) on a pass of its own over `history`, as the end of a
/// bulk run does. The caller records the heuristics and the tip only after
/// `finish`, so an interrupted build is started over rather than continued.
pub struct Build<'s> {
    store: &'s Store,
    tip: Height,
    roots: Roots,
    /// Per root, its cluster's size (see `write_members`).
    sizes: MappedArray,
    spill: Spill<'s>,
    /// The runs handed over; None when none were.
    fed: Mutex<Option<Vec<Run>>>,
    united: Duration,
    members: Duration,
}

/// Unites the addresses and writes the members of every cluster of the
/// index as of its tip; None when the index is empty.
pub fn start<'s>(
    store: &'s Store,
    links: Links,
    progress: &mut Progress,
) -> Result<Option<Build<'s>>> {
    let Some(tip) = store.tip()? else {
        return Ok(None);
    };
    let next = store.need_block(tip.height)?.next_ids();
    remove_stale_scratch(store);
    let started = Instant::now();
    let mut sets = links.found;
    if sets.len() > next.addr.0 {
        bail!(
            "links found over {} addresses, for a build of {}",
            sets.len(),
            next.addr.0
        );
    }
    sets.grow(next.addr.0)?;
    if links.rows_from <= tip.height {
        let rows = (links.rows_from, tip.height);
        unite(store, links.heuristics, rows, next, &mut sets, progress)?;
    }
    let roots = sets.flatten();
    let united = started.elapsed();
    let sizes = write_members(store, &roots)?;
    Ok(Some(Build {
        store,
        tip: tip.height,
        roots,
        sizes,
        spill: Spill::new(store.path(), MEMORY_ENTRIES),
        fed: Mutex::new(None),
        united,
        members: started.elapsed() - united,
    }))
}

impl<'s> Build<'s> {
    /// Where the caller puts the `history` rows of a range of addresses,
    /// in key order. Every row must reach one, and every one be finished,
    /// before `finish`.
    pub fn member_rows(&self) -> MemberRows<'_, 's> {
        MemberRows {
            build: self,
            entries: Vec::new(),
            runs: Vec::new(),
            last: None,
        }
    }

    /// Pass 3, then the build is whole.
    pub fn finish(self) -> Result<()> {
        let started = Instant::now();
        let fed = self
            .fed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let (read, runs) = match fed {
            Some(runs) => ("handed over", runs),
            None => ("read", self.read_member_rows()?),
        };
        write_history(self.store, self.tip, runs, &self.spill, &self.sizes)?;
        tracing::info!(
            "{}: clusters built: addresses united in {:.1} s, members written in {:.1} s, history ({read}) and figures in {:.1} s",
            self.store.path().display(),
            self.united.as_secs_f64(),
            self.members.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    /// The members' `history` rows from the index, in address ranges on
    /// every worker, when no caller handed them over.
    fn read_member_rows(&self) -> Result<Vec<Run>> {
        let runs = ranges::split(self.roots.len())
            .map(|(from, to)| {
                let mut rows = self.member_rows();
                let (from, to) = ((AddrId(from), TxNum(0)), (AddrId(to), TxNum(0)));
                for item in self.store.scan_range::<cf::History>(&from, &to) {
                    let ((addr, txnum), row) = item?;
                    rows.add(addr, txnum, row)?;
                }
                rows.into_runs()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(runs.into_iter().flatten().collect())
    }
}

/// The `history` rows of a range of addresses, those of clustered ones
/// kept keyed by their cluster's root, as sorted runs.
pub struct MemberRows<'b, 's> {
    build: &'b Build<'s>,
    entries: Vec<(Key, HistoryRow)>,
    runs: Vec<Run>,
    /// The address of the last row, and its cluster's root if it has
    /// other members: an address's rows come one after another, and each
    /// lookup is two reads far apart in the sets' arrays.
    last: Option<(AddrId, Option<u64>)>,
}

impl MemberRows<'_, '_> {
    pub fn add(&mut self, addr: AddrId, txnum: TxNum, row: HistoryRow) -> Result<()> {
        let b = self.build;
        let clustered = match self.last {
            Some((a, root)) if a == addr => root,
            _ => {
                let root = b.roots.get(addr.0);
                let root = (b.sizes.get(root as usize) > 0).then_some(root);
                self.last = Some((addr, root));
                root
            }
        };
        if let Some(root) = clustered {
            if self.entries.capacity() == 0 {
                self.entries.reserve_exact(RANGE_RUN);
            }
            self.entries.push(((root as u32, txnum.0), row));
            if self.entries.len() >= RANGE_RUN {
                let full = std::mem::take(&mut self.entries);
                self.runs.push(b.spill.run(full)?);
            }
        }
        Ok(())
    }

    /// Hands the range's runs to the build.
    pub fn finish(self) -> Result<()> {
        let build = self.build;
        let runs = self.into_runs()?;
        let mut fed = build.fed.lock().unwrap_or_else(PoisonError::into_inner);
        fed.get_or_insert_with(Vec::new).extend(runs);
        Ok(())
    }

    fn into_runs(mut self) -> Result<Vec<Run>> {
        if !self.entries.is_empty() {
            let last = std::mem::take(&mut self.entries);
            self.runs.push(self.build.spill.run(last)?);
        }
        Ok(self.runs)
    }
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

/// Pass 1: the links of every transaction of blocks `from` to `to`, in
/// chain order. `txs`, `outputs` and `inputs` are read side by side, each
/// as one scan: the blocks say how many rows of each a tx has. The outputs
/// before `from` are read first, for the inputs that spend them.
fn unite(
    store: &Store,
    h: Heuristics,
    (from, to): (Height, Height),
    next: NextIds,
    sets: &mut UnionFind,
    progress: &mut Progress,
) -> Result<()> {
    let first = store.need_block(from)?;
    let mut pass = Pass1 {
        packed: MappedArray::zeroed(store.path(), next.output.0 as usize * 2)?,
        next_addr: first.first_addr,
    };
    for row in store.scan_range::<cf::Outputs>(&OutNum(0), &first.first_output) {
        let (n, o) = row?;
        pass.packed.set_u64(n.0 as usize, pack(&o));
    }
    let mut txs = store.scan_range::<cf::Txs>(&first.first_tx, &next.tx);
    let mut outs = store.scan_range::<cf::Outputs>(&first.first_output, &next.output);
    let mut ins = store.scan_range::<cf::Inputs>(&first.first_tx, &next.tx);
    for height in heights(from, to) {
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

/// Pass 2: `cluster_of` and `cluster_members`; returns each root's size
/// (0 for addresses that are not a root of two or more). Members are put
/// in cluster order by a counting sort: the sizes give each cluster its
/// stretch of a scratch array, filled in address order.
fn write_members(store: &Store, roots: &Roots) -> Result<MappedArray> {
    let n = roots.len() as usize;
    let mut sizes = MappedArray::zeroed(store.path(), n)?;
    for a in 0..n {
        let root = roots.get(a as u64) as usize;
        if root != a {
            // A root counts itself once its first member shows up.
            sizes.set(root, sizes.get(root).max(1) + 1);
        }
    }
    let of = ranges::split(n as u64)
        .map(|(from, to)| {
            let mut rows = store.tables::<cf::ClusterOf>(format!("of{from}"));
            for a in from..to {
                let root = roots.get(a);
                if root != a {
                    rows.put(&AddrId(a), &ClusterKey::of(AddrId(root)))?;
                }
            }
            Ok(rows)
        })
        .collect::<Result<_>>()?;
    store.ingest_tables(of)?;
    // Each cluster's next free slot, starting at its first.
    let mut next = MappedArray::zeroed(store.path(), n)?;
    let mut members = 0;
    for root in 0..n {
        if sizes.get(root) > 0 {
            next.set(root, members);
            members += sizes.get(root);
        }
    }
    let mut slots = MappedArray::zeroed(store.path(), members as usize)?;
    for a in 0..n {
        let root = roots.get(a as u64) as usize;
        if sizes.get(root) > 0 {
            let at = next.get(root);
            slots.set(at as usize, a as u32);
            next.set(root, at + 1);
        }
    }
    // Slots are in cluster order: each range of them is a range of keys.
    let rows = ranges::split(u64::from(members))
        .map(|(from, to)| {
            let mut rows = store.tables::<cf::ClusterMembers>(format!("members{from}"));
            for i in from..to {
                let a = AddrId(u64::from(slots.get(i as usize)));
                let cluster = ClusterKey::of(AddrId(roots.get(a.0)));
                rows.put(&(cluster, a), &())?;
            }
            Ok(rows)
        })
        .collect::<Result<_>>()?;
    store.ingest_tables(rows)?;
    Ok(sizes)
}

/// Pass 3: `cluster_history`, `cluster_stats` and `cluster_rank`. The
/// members' `history` rows, in address ranges on every worker, became
/// sorted runs keyed by cluster and tx (`MemberRows`). The runs are merged
/// a range of cluster roots at a time, on every worker: each cluster's rows
/// come out once, in tx order, and its figures are summed on the way. A
/// range's history and figures are written in key order, and no two
/// ranges' keys overlap, so their table files all go straight to the last
/// level. Rankings follow the figures, not the clusters: they are sorted
/// through run files (`Store::spill`) and land on the last level too.
fn write_history(
    store: &Store,
    tip: Height,
    runs: Vec<Run>,
    spill: &Spill,
    sizes: &MappedArray,
) -> Result<()> {
    let fan_in = store.merge_fan_in()?.min(runs::FAN_IN);
    let runs = runs::narrow(spill, runs, fan_in)?;
    let height_of = height_finder(store, tip)?;
    let ranks = store.spill::<cf::ClusterRank>()?;
    let written = runs::split(&runs, ranges::parts())?
        .into_par_iter()
        .map(|range| {
            let merged = Merged::range(&runs, range)?;
            let out = Written {
                history: store.tables(format!("h{}", range.0)),
                stats: store.tables(format!("s{}", range.0)),
                ranks: ranks.writer(),
            };
            write_clusters(merged, &height_of, sizes, out)
        })
        .collect::<Result<Vec<_>>>()?;
    let (history, stats) = written.into_iter().unzip();
    store.ingest_tables(history)?;
    store.ingest_tables(stats)?;
    ranks.merge()
}

/// Where a root range's cluster rows go.
struct Written<'s, 'r> {
    history: Tables<'s, cf::ClusterHistory>,
    stats: Tables<'s, cf::ClusterStats>,
    ranks: SpillWriter<'r, 's, cf::ClusterRank>,
}

/// History, figures and rankings of the clusters `merged` holds; the
/// table files of the first two are returned, for `ingest_tables`.
fn write_clusters<'s>(
    mut merged: Merged,
    height_of: &impl Fn(TxNum) -> Height,
    sizes: &MappedArray,
    mut out: Written<'s, '_>,
) -> Result<(Tables<'s, cf::ClusterHistory>, Tables<'s, cf::ClusterStats>)> {
    let mut current: Option<(ClusterKey, ClusterStats)> = None;
    while let Some(((root, txnum), row)) = merged.next()? {
        let c = ClusterKey::of(AddrId(u64::from(root)));
        if current.as_ref().is_some_and(|(cur, _)| *cur != c) {
            out.figures(current.take().expect("checked"))?;
        }
        let (_, s) = current.get_or_insert_with(|| {
            // Roots are the lowest member: the key is the oldest address.
            let s = ClusterStats {
                id: ClusterId::of(c.holder()),
                size: u64::from(sizes.get(root as usize)),
                ..Default::default()
            };
            (c, s)
        });
        s.add_tx(height_of(TxNum(txnum)).0, row.credited(), row.sent);
        out.history.put(&(c, TxNum(txnum)), &row)?;
    }
    if let Some(last) = current {
        out.figures(last)?;
    }
    out.ranks.finish()?;
    Ok((out.history.finish()?, out.stats.finish()?))
}

impl Written<'_, '_> {
    /// A cluster's figures, and its place in each ranking.
    fn figures(&mut self, (c, s): (ClusterKey, ClusterStats)) -> Result<()> {
        self.stats.put(&c, &s)?;
        for rank in [Rank::Size, Rank::Balance] {
            self.ranks.put(&RankKey::new(rank, &s, c), &())?;
        }
        Ok(())
    }
}

/// Member rows per sorted run of one range (~40 bytes each), and in the
/// runs held in memory (beyond, runs go to scratch files).
const RANGE_RUN: usize = 1 << 20;
const MEMORY_ENTRIES: usize = 8 << 20;

/// The height of an indexed tx, by its number.
fn height_finder(store: &Store, tip: Height) -> Result<impl Fn(TxNum) -> Height + Sync> {
    let base = store.base_height()?;
    let first_txs = heights(base, tip)
        .map(|h| Ok(store.need_block(h)?.first_tx))
        .collect::<Result<Vec<TxNum>>>()?;
    Ok(move |txnum| Height(base.0 + (first_txs.partition_point(|&f| f <= txnum) - 1) as u32))
}
