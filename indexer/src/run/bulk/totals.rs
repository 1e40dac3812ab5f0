//! What a bulk run leaves to its end: the families kept in run files,
//! merged into the index; then `addr_utxos` (the outputs no input spends,
//! by address: from the flow graph as its spenders are marked, or from the
//! rows without one) and `addr_stats` (each address's history summed, and
//! its count of unspent outputs, as the history merge passes the rows on
//! to a waiting cluster build). Each is one pass over sorted rows, split
//! into ranges of ids on every worker, and ingested as table files.

use std::iter::Peekable;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;
use satflow_schema::address::{AddrStats, HistoryRow};
use satflow_schema::cf::{self, Family};
use satflow_schema::{meta, AddrId, Codec, OutNum, TxNum};

use crate::cluster::{self, MemberRows};
use crate::ranges;
use crate::store::{Spill, Store, Tables};

/// The families a bulk run keeps in sorted run files (`Landing::Run`)
/// until its end: the large ones whose keys from one epoch fall among
/// those of every other.
pub(super) const IN_RUNS: [&str; 4] = [
    cf::Txids::NAME,
    cf::AddrIds::NAME,
    cf::Spends::NAME,
    cf::History::NAME,
];

/// The families whose table files a bulk run adds with overlapping keys,
/// compacted only at its end: all but `meta`, the appended ones, whose
/// files land on the last level, and those in run files.
pub(super) fn compacted() -> impl Iterator<Item = &'static str> {
    cf::ALL
        .into_iter()
        .filter(|f| *f != cf::Meta::NAME && !cf::APPENDED.contains(f) && !IN_RUNS.contains(f))
}

/// Builds the totals of an unfinished bulk run, if there is one (then
/// returns true), and marks it finished. Call with no rows above the tip
/// (`recover`). The `history` rows it sums go on to `clusters` too, a
/// whole cluster build waiting for them (see `cluster::Build`), which then
/// need not read them again.
pub fn finish(
    store: &Store,
    pool: &rayon::ThreadPool,
    clusters: Option<&cluster::Build>,
) -> Result<bool> {
    if store.meta(meta::Bulk)?.is_none() {
        return Ok(false);
    }
    let started = Instant::now();
    // Runs of epochs whose tip never landed are left out.
    let tip = store.tip()?.map(|t| t.height.0);
    pool.install(|| {
        IN_RUNS
            .par_iter()
            .filter(|f| **f != cf::History::NAME)
            .try_for_each(|f| {
                let whole_keys = usize::MAX;
                store.merge_runs(f, tip, whole_keys, || (), |(), _, _| Ok(()), Ok)?;
                anyhow::Ok(())
            })
    })?;
    // The flow graph's epochs left their spenders to mark from `spends`;
    // marked, it holds the unspent outputs with their addresses.
    let unspent = store.spill::<cf::AddrUtxos>()?;
    let from_graph = pool.install(|| crate::flow::set_spenders(store, &unspent))?;
    // One merge of each other family's table files, before reading them.
    let families: Vec<&str> = compacted().collect();
    families.par_iter().try_for_each(|family| {
        store.pause_compactions(family, false)?;
        store.compact(family);
        anyhow::Ok(())
    })?;
    let compacted = started.elapsed();
    let next = store.tip_block()?.map(|b| b.next_ids()).unwrap_or_default();
    // Whatever an interrupted run left: a reorg's block-by-block undo
    // merges into addr_stats.
    let mut batch = store.batch();
    batch.clear_stored::<cf::AddrUtxos>()?;
    batch.clear_stored::<cf::AddrStats>()?;
    if !batch.is_empty() {
        store.write(batch)?;
    }
    if !from_graph {
        pool.install(|| unspent_by_address(store, next.output, &unspent))?;
    }
    unspent.merge()?;
    // History is summed per address on its way through the merge, each
    // address's rows in one key range (its id is the key's first bytes).
    let address = std::mem::size_of::<u64>();
    let ranges = AtomicUsize::new(0);
    let init = || {
        let members = clusters.map(cluster::Build::member_rows);
        Stats::new(store, ranges.fetch_add(1, Ordering::Relaxed), members)
    };
    let merge = || {
        let family = cf::History::NAME;
        store.merge_runs(family, tip, address, init, Stats::tap, Stats::finish)
    };
    let stats = match pool.install(merge)? {
        Some(stats) => stats,
        // Without runs (what a killed run of an older satflow left),
        // history is read from the index.
        None => pool.install(|| scan_history(store, next.addr, clusters))?,
    };
    store.ingest_tables::<cf::AddrStats>(stats)?;
    let mut batch = store.batch();
    batch.delete_meta(meta::Bulk);
    store.write(batch)?;
    store.flush()?;
    tracing::info!(
        "{}: runs and table files merged in {:.1} s, history merged and address totals built in {:.1} s",
        store.path().display(),
        compacted.as_secs_f64(),
        (started.elapsed() - compacted).as_secs_f64()
    );
    Ok(true)
}

/// `addr_utxos` without a flow graph: every output below `end` that has
/// an address and no spender, found by reading `outputs` and `spends` side
/// by side in output order, in ranges on every worker, into `spill`'s run
/// files (mainnet has ~180 M).
fn unspent_by_address(store: &Store, end: OutNum, spill: &Spill<'_, cf::AddrUtxos>) -> Result<()> {
    ranges::split(end.0).try_for_each(|(from, to)| {
        let (from, to) = (OutNum(from), OutNum(to));
        let mut spends = store.scan_range::<cf::Spends>(&from, &to).peekable();
        let mut unspent = spill.writer();
        for row in store.scan_range::<cf::Outputs>(&from, &to) {
            let (output, out) = row?;
            let spent = count_at(&mut spends, |s| *s, output)? > 0;
            if let (Some(addr), false) = (out.addr, spent) {
                unspent.put(&(addr, output), &out.value)?;
            }
        }
        unspent.finish()
    })
}

/// How many of the next rows of `rows`, in key order, have `of(key) ==
/// at`, once those below it are passed over; the rows after them are left.
fn count_at<K, V, T: Ord>(
    rows: &mut Peekable<impl Iterator<Item = Result<(K, V)>>>,
    of: impl Fn(&K) -> T,
    at: T,
) -> Result<i64> {
    let mut n = 0;
    loop {
        match rows.peek() {
            None => return Ok(n),
            Some(Ok((k, _))) => match of(k).cmp(&at) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => n += 1,
                std::cmp::Ordering::Greater => return Ok(n),
            },
            // Taken below, to be returned.
            Some(Err(_)) => {}
        }
        rows.next().transpose()?;
    }
}

/// `addr_utxos` rows, read in key order.
type UtxoRows<'s> = Box<dyn Iterator<Item = Result<((AddrId, OutNum), u64)>> + Send + 's>;

/// `addr_stats` rows of consecutive addresses, each summed from its
/// `history` rows in turn, its unspent outputs counted in `addr_utxos`
/// (read alongside), written as they are done.
struct Stats<'s, 'c> {
    store: &'s Store,
    /// Where the rows go on to, for a cluster build.
    members: Option<MemberRows<'c, 's>>,
    /// From the first address summed on; None before it.
    utxos: Option<Peekable<UtxoRows<'s>>>,
    rows: Tables<'s, cf::AddrStats>,
    /// The address whose history rows are being summed.
    current: Option<(AddrId, AddrStats)>,
}

impl<'s, 'c> Stats<'s, 'c> {
    /// Its files are told apart from other `Stats`' by `part`.
    fn new(store: &'s Store, part: usize, members: Option<MemberRows<'c, 's>>) -> Stats<'s, 'c> {
        Stats {
            store,
            members,
            utxos: None,
            rows: store.tables(format!("stats{part}")),
            current: None,
        }
    }

    /// Adds a history row; an address's rows come one after another.
    fn add(&mut self, (addr, tx): (AddrId, TxNum), h: HistoryRow) -> Result<()> {
        if let Some(members) = &mut self.members {
            members.add(addr, tx, h)?;
        }
        if self.current.as_ref().is_some_and(|(a, _)| *a != addr) {
            self.put()?;
        }
        let (_, s) = self.current.get_or_insert((addr, AddrStats::default()));
        s.add(&AddrStats::of_tx(&h));
        Ok(())
    }

    /// A `history` row on its way from the run files.
    fn tap(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let key = <cf::History as Family>::Key::decode(key)?;
        self.add(key, HistoryRow::decode(value)?)
    }

    fn put(&mut self) -> Result<()> {
        if let Some((addr, mut s)) = self.current.take() {
            let store = self.store;
            let utxos = self.utxos.get_or_insert_with(|| {
                let past = (AddrId(u64::MAX), OutNum(u64::MAX));
                let rows: UtxoRows =
                    Box::new(store.scan_range::<cf::AddrUtxos>(&(addr, OutNum(0)), &past));
                rows.peekable()
            });
            s.utxo_count = count_at(utxos, |(a, _)| *a, addr)?;
            self.rows.put(&addr, &s)?;
        }
        Ok(())
    }

    /// Its table files; the rows it passed on, to their cluster build.
    fn finish(mut self) -> Result<Tables<'s, cf::AddrStats>> {
        self.put()?;
        if let Some(members) = self.members {
            members.finish()?;
        }
        Ok(self.rows)
    }
}

/// `addr_stats` of every address below `end` from `history` in the index,
/// in address ranges on every worker.
fn scan_history<'s>(
    store: &'s Store,
    end: AddrId,
    clusters: Option<&cluster::Build<'s>>,
) -> Result<Vec<Tables<'s, cf::AddrStats>>> {
    ranges::split(end.0)
        .map(|(from, to)| {
            // Its first address tells its files apart.
            let members = clusters.map(cluster::Build::member_rows);
            let mut stats = Stats::new(store, from as usize, members);
            let (from, to) = ((AddrId(from), TxNum(0)), (AddrId(to), TxNum(0)));
            for row in store.scan_range::<cf::History>(&from, &to) {
                let (key, h) = row?;
                stats.add(key, h)?;
            }
            stats.finish()
        })
        .collect()
}
