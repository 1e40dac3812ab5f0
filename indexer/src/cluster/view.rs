//! Reading what clustering needs from the index: a transaction as the
//! heuristics see it, and a cluster's members, rows and figures.

use std::collections::BTreeMap;

use anyhow::Result;
use satflow_schema::address::HistoryRow;
use satflow_schema::cf;
use satflow_schema::cluster::ClusterStats;
use satflow_schema::tx::{OutputRow, TxRow};
use satflow_schema::{AddrId, ClusterId, OutNum, TxNum};

use super::heuristics::{Coin, Spent, TxView};
use crate::store::{Direction, Store};

pub fn tx_row(store: &Store, txnum: TxNum) -> Result<TxRow> {
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

/// The cluster `addr` belongs to: the one named after it when it is alone
/// or the oldest member.
pub fn cluster_of(store: &Store, addr: AddrId) -> Result<ClusterId> {
    Ok(store
        .get::<cf::ClusterOf>(&addr)?
        .unwrap_or(ClusterId::of(addr)))
}

/// Figures of a cluster of two or more addresses; None for a lone address.
pub fn stats(store: &Store, cluster: ClusterId) -> Result<Option<ClusterStats>> {
    store.get::<cf::ClusterStats>(&cluster)
}

/// A cluster's addresses, oldest first; a lone address has no member rows.
pub fn members(store: &Store, cluster: ClusterId) -> Result<Vec<AddrId>> {
    let found: Vec<AddrId> = store
        .pairs::<cf::ClusterMembers, _, _>(cluster, AddrId(0), Direction::Forward)
        .map(|r| r.map(|(m, ())| m))
        .collect::<Result<_>>()?;
    Ok(if found.is_empty() {
        vec![cluster.named_after()]
    } else {
        found
    })
}

/// A cluster's history rows with tx numbers below `before`: its own rows
/// when it has several addresses, the address's rows when it is alone.
pub fn history(
    store: &Store,
    cluster: ClusterId,
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
        let addr = cluster.named_after();
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
