//! What a bulk run leaves to its end: `addr_utxos` (the outputs no input
//! spends, by address) and `addr_stats` (each address's history summed,
//! and its count of unspent outputs). Each is one pass over sorted rows,
//! split into ranges of ids on every worker, and ingested as table files.

use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;
use satflow_schema::address::AddrStats;
use satflow_schema::cf::{self, Family};
use satflow_schema::{meta, AddrId, OutNum, TxNum};

use crate::ranges;
use crate::store::{Landing, SortedBatch, Store};

/// The families whose table files a bulk run adds with overlapping keys,
/// compacted only at its end: all but `meta` and the appended ones, whose
/// files land on the last level.
pub(super) fn compacted() -> impl Iterator<Item = &'static str> {
    cf::ALL
        .into_iter()
        .filter(|f| *f != cf::Meta::NAME && !cf::APPENDED.contains(f))
}

/// Builds the totals of an unfinished bulk run, if there is one (then
/// returns true), and marks it finished. Call with no rows above the tip
/// (`recover`).
pub fn finish(store: &Store, pool: &rayon::ThreadPool) -> Result<bool> {
    if store.meta(meta::Bulk)?.is_none() {
        return Ok(false);
    }
    let started = Instant::now();
    // One merge of each family's table files, before reading them.
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
    batch.clear::<cf::AddrUtxos>();
    batch.clear::<cf::AddrStats>();
    store.write(batch)?;
    let mut rows = pool.install(|| -> Result<SortedBatch> {
        let utxos = unspent_by_address(store, next.output)?;
        let mut parts = stats(store, next.addr, &utxos)?;
        parts.extend(utxo_rows(&utxos));
        Ok(SortedBatch::concat(parts))
    })?;
    rows.delete_meta(meta::Bulk);
    pool.install(|| rows.ingest_all(store, |_| Landing::Bottom))?;
    store.flush()?;
    tracing::info!(
        "{}: table files compacted in {:.1} s, address totals built in {:.1} s",
        store.path().display(),
        compacted.as_secs_f64(),
        (started.elapsed() - compacted).as_secs_f64()
    );
    Ok(true)
}

/// Every output below `end` that has an address and no spender, as
/// (address, output, value), sorted: `outputs` and `spends` read side by
/// side in output order.
fn unspent_by_address(store: &Store, end: OutNum) -> Result<Vec<(AddrId, OutNum, u64)>> {
    let parts = ranges::split(end.0)
        .map(|(from, to)| {
            let (from, to) = (OutNum(from), OutNum(to));
            let mut spends = store.scan_range::<cf::Spends>(&from, &to).peekable();
            let mut found = Vec::new();
            for row in store.scan_range::<cf::Outputs>(&from, &to) {
                let (output, out) = row?;
                let mut spent = false;
                while let Some(next) = spends.peek() {
                    match next {
                        Ok((s, _)) if *s < output => {
                            spends.next();
                        }
                        Ok((s, _)) => {
                            spent = *s == output;
                            break;
                        }
                        Err(_) => return Err(spends.next().expect("peeked").unwrap_err()),
                    }
                }
                if let (Some(addr), false) = (out.addr, spent) {
                    found.push((addr, output, out.value));
                }
            }
            Ok(found)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut all = parts.concat();
    all.par_sort_unstable();
    Ok(all)
}

fn utxo_rows(utxos: &[(AddrId, OutNum, u64)]) -> Vec<SortedBatch> {
    utxos
        .par_chunks(1 << 16)
        .map(|part| {
            let mut batch = SortedBatch::default();
            for &(addr, output, value) in part {
                batch.put::<cf::AddrUtxos>(&(addr, output), &value);
            }
            batch
        })
        .collect()
}

/// `addr_stats` of every address below `end`: its `history` rows summed,
/// in address order, and its count in `utxos`.
fn stats(store: &Store, end: AddrId, utxos: &[(AddrId, OutNum, u64)]) -> Result<Vec<SortedBatch>> {
    ranges::split(end.0)
        .map(|(from, to)| {
            let mut batch = SortedBatch::default();
            let mut current: Option<(AddrId, AddrStats)> = None;
            let mut put = |(addr, mut s): (AddrId, AddrStats)| {
                let first = utxos.partition_point(|u| u.0 < addr);
                let past = utxos.partition_point(|u| u.0 <= addr);
                s.utxo_count = (past - first) as i64;
                batch.put::<cf::AddrStats>(&addr, &s);
            };
            let (from, to) = ((AddrId(from), TxNum(0)), (AddrId(to), TxNum(0)));
            for row in store.scan_range::<cf::History>(&from, &to) {
                let ((addr, _), h) = row?;
                if current.as_ref().is_some_and(|(a, _)| *a != addr) {
                    put(current.take().expect("checked"));
                }
                let (_, s) = current.get_or_insert((addr, AddrStats::default()));
                s.tx_count += 1;
                s.received += h.credited() as i64;
                s.sent += h.sent as i64;
            }
            if let Some(last) = current {
                put(last);
            }
            Ok(batch)
        })
        .collect()
}
