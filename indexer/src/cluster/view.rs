//! Reading what clustering needs from the index: a transaction as the
//! heuristics see it, and a cluster's members, rows and figures.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use satflow_schema::address::HistoryRow;
use satflow_schema::block::BlockRow;
use satflow_schema::cf::{self, Family};
use satflow_schema::cluster::ClusterStats;
use satflow_schema::tx::{OutputRow, TxRow};
use satflow_schema::{AddrId, ClusterId, ClusterKey, Height, OutNum, TxNum};

use super::heuristics::{Coin, Spent, TxView};
use crate::store::{Direction, Store};

fn tx_row(store: &Store, txnum: TxNum) -> Result<TxRow> {
    store.need::<cf::Txs>(&txnum)
}

fn output(store: &Store, n: OutNum) -> Result<OutputRow> {
    store.need::<cf::Outputs>(&n)
}

/// Tx `txnum` as the heuristics see it. An output's address is fresh when
/// this tx is the first in its history (ids are given at first sight, so
/// this is the same test as "allocated by this tx").
pub fn load_tx(store: &Store, txnum: TxNum) -> Result<TxView> {
    let tx = tx_row(store, txnum)?;
    let inputs = match tx.is_coinbase() {
        true => Vec::new(),
        false => store
            .need::<cf::Inputs>(&txnum)?
            .into_iter()
            .map(|n| Ok(spent(&output(store, n)?)))
            .collect::<Result<_>>()?,
    };
    let outputs = tx
        .outputs()
        .map(|n| {
            let o = output(store, n)?;
            let fresh = match o.addr {
                Some(a) => first_tx_of(store, a)? == Some(txnum),
                None => false,
            };
            Ok((coin(&o), fresh))
        })
        .collect::<Result<_>>()?;
    Ok(TxView { inputs, outputs })
}

/// The transactions of `block` as the heuristics see them, in block order,
/// read with a few batched lookups and one scan of its outputs rather than
/// row by row. An output's address is fresh when its id is at least the
/// next id as it stood before the tx (ids are given at first sight, and a
/// coin from before the index's start gives its address an id when it is
/// spent): the rule a whole build applies.
pub fn load_block(store: &Store, block: &BlockRow) -> Result<Vec<TxView>> {
    let txnums: Vec<TxNum> = block.txs().map(TxNum).collect();
    let txs = need_all::<cf::Txs>(store, &txnums)?;
    let spenders: Vec<TxNum> = txnums
        .iter()
        .zip(&txs)
        .filter(|(_, tx)| !tx.is_coinbase())
        .map(|(&n, _)| n)
        .collect();
    let inputs = need_all::<cf::Inputs>(store, &spenders)?;
    let spent_nums: Vec<OutNum> = inputs.iter().flatten().copied().collect();
    let mut spent_rows = need_all::<cf::Outputs>(store, &spent_nums)?.into_iter();
    let mut own = store
        .scan::<cf::Outputs>(&block.first_output, Direction::Forward)
        .take(block.output_count as usize);
    let mut inputs = inputs.into_iter();
    let mut next_addr = block.first_addr;
    txs.iter()
        .map(|tx| {
            let watermark = next_addr;
            let outputs = (0..tx.output_count)
                .map(|_| {
                    let (_, o) = own.next().context("the block's outputs ended early")??;
                    saw(&mut next_addr, o.addr);
                    Ok((coin(&o), o.addr.is_some_and(|a| a >= watermark)))
                })
                .collect::<Result<_>>()?;
            let inputs = match tx.is_coinbase() {
                true => Vec::new(),
                false => inputs
                    .next()
                    .context("inputs ended early")?
                    .iter()
                    .map(|n| {
                        let o = spent_rows.next().context("spent outputs ended early")?;
                        if n.is_outside() {
                            saw(&mut next_addr, o.addr);
                        }
                        Ok(spent(&o))
                    })
                    .collect::<Result<_>>()?,
            };
            Ok(TxView { inputs, outputs })
        })
        .collect()
}

/// The heights of the txs `txnums`, read at once.
pub fn heights_of(store: &Store, txnums: &[TxNum]) -> Result<Vec<Height>> {
    Ok(need_all::<cf::Txs>(store, txnums)?
        .into_iter()
        .map(|tx| tx.height)
        .collect())
}

/// Moves `next` past `addr`, an address just seen.
fn saw(next: &mut AddrId, addr: Option<AddrId>) {
    if let Some(a) = addr {
        *next = (*next).max(a + 1);
    }
}

/// The rows of `keys`, each of which must exist.
fn need_all<F: Family>(store: &Store, keys: &[F::Key]) -> Result<Vec<F::Value>>
where
    F::Key: std::fmt::Debug,
{
    store
        .multi_get::<F>(keys)?
        .into_iter()
        .zip(keys)
        .map(|(row, key)| {
            row.with_context(|| {
                format!(
                    "index is inconsistent: {} row {key:?} is missing from {}",
                    F::NAME,
                    store.path().display()
                )
            })
        })
        .collect()
}

/// An output as the heuristics see it.
pub(super) fn coin(o: &OutputRow) -> Coin {
    Coin {
        addr: o.addr,
        value: o.value,
        script: o.script_type,
    }
}

/// An input spending output `o`, as the heuristics see it.
pub(super) fn spent(o: &OutputRow) -> Spent {
    Spent {
        addr: o.addr,
        script: o.script_type,
    }
}

fn first_tx_of(store: &Store, addr: AddrId) -> Result<Option<TxNum>> {
    store
        .pairs::<cf::History, _, _>(addr, TxNum(0), Direction::Forward)
        .next()
        .transpose()
        .map(|r| r.map(|(txnum, _)| txnum))
}

/// The key of the cluster `addr` belongs to: its own number when it is
/// alone or holds its cluster's rows.
pub fn cluster_of(store: &Store, addr: AddrId) -> Result<ClusterKey> {
    Ok(store
        .get::<cf::ClusterOf>(&addr)?
        .unwrap_or(ClusterKey::of(addr)))
}

/// Figures of a cluster of two or more addresses; None for a lone address.
pub fn stats(store: &Store, cluster: ClusterKey) -> Result<Option<ClusterStats>> {
    store.get::<cf::ClusterStats>(&cluster)
}

/// The id callers know cluster `key` by: its oldest address's number.
pub fn id_of(store: &Store, key: ClusterKey) -> Result<ClusterId> {
    Ok(stats(store, key)?.map_or(ClusterId::of(key.holder()), |s| s.id))
}

/// The key of the cluster callers know as `id`; None when `id` is no
/// cluster's id (its address belongs to a cluster with an older one).
pub fn key_of(store: &Store, id: ClusterId) -> Result<Option<ClusterKey>> {
    let key = cluster_of(store, id.named_after())?;
    Ok((id_of(store, key)? == id).then_some(key))
}

/// A cluster's addresses, oldest first; a lone address has no member rows.
pub fn members(store: &Store, cluster: ClusterKey) -> Result<Vec<AddrId>> {
    let found: Vec<AddrId> = store
        .pairs::<cf::ClusterMembers, _, _>(cluster, AddrId(0), Direction::Forward)
        .map(|r| r.map(|(m, ())| m))
        .collect::<Result<_>>()?;
    Ok(if found.is_empty() {
        vec![cluster.holder()]
    } else {
        found
    })
}

/// A cluster's history rows with tx numbers below `before`: its own rows
/// when it has several addresses, the address's rows when it is alone.
pub fn history(
    store: &Store,
    cluster: ClusterKey,
    multi: bool,
    before: TxNum,
) -> Result<BTreeMap<TxNum, HistoryRow>> {
    let (from, dir) = (TxNum(0), Direction::Forward);
    if multi {
        below(
            store.pairs::<cf::ClusterHistory, _, _>(cluster, from, dir),
            before,
        )
    } else {
        let addr = cluster.holder();
        below(store.pairs::<cf::History, _, _>(addr, from, dir), before)
    }
}

/// The rows of a tx-ordered history whose tx numbers are below `before`.
fn below(
    rows: impl Iterator<Item = Result<(TxNum, HistoryRow)>>,
    before: TxNum,
) -> Result<BTreeMap<TxNum, HistoryRow>> {
    rows.take_while(|r| !matches!(r, Ok((txnum, _)) if *txnum >= before))
        .collect()
}
