//! Reading what clustering needs from the index: a transaction as the
//! heuristics see it, and a cluster's members, rows and figures.

use std::collections::BTreeMap;

use anyhow::Result;
use rocksdb::{Direction, IteratorMode};

use super::heuristics::{Coin, Spent, TxView};
use super::rows::ClusterStats;
use crate::schema::{
    cf, decode_inputs, key_pair, key_u64, split_pair, Dec, HistoryRow, OutputRow, TxRow,
};
use crate::store::Store;

pub fn tx_row(store: &Store, txnum: u64) -> Result<TxRow> {
    Ok(TxRow::decode(&store.need(cf::TXS, &key_u64(txnum))?)?)
}

fn output(store: &Store, n: u64) -> Result<OutputRow> {
    Ok(OutputRow::decode(&store.need(cf::OUTPUTS, &key_u64(n))?)?)
}

/// Tx `txnum` as the heuristics see it. An output's address is fresh when
/// this tx is the first in its history (ids are given at first sight, so
/// this is the same test as "allocated by this tx").
pub fn load_tx(store: &Store, txnum: u64) -> Result<TxView> {
    let tx = tx_row(store, txnum)?;
    let inputs = match tx.is_coinbase() {
        true => Vec::new(),
        false => decode_inputs(&store.need(cf::INPUTS, &key_u64(txnum))?)?
            .into_iter()
            .map(|n| {
                let o = output(store, n)?;
                Ok(Spent {
                    addr: o.addr,
                    script: o.script_type,
                })
            })
            .collect::<Result<_>>()?,
    };
    let outputs = (tx.first_output..tx.first_output + u64::from(tx.output_count))
        .map(|n| {
            let o = output(store, n)?;
            let fresh = match o.addr {
                Some(a) => first_tx_of(store, a)? == Some(txnum),
                None => false,
            };
            let coin = Coin {
                addr: o.addr,
                value: o.value,
                script: o.script_type,
            };
            Ok((coin, fresh))
        })
        .collect::<Result<_>>()?;
    Ok(TxView { inputs, outputs })
}

/// The `(first, second)`-keyed rows of `family` whose first id is `first`,
/// from second id `from` on: one seek, however far in.
pub fn pairs<'s>(
    store: &'s Store,
    family: &str,
    first: u64,
    from: u64,
) -> impl Iterator<Item = Result<(u64, Box<[u8]>)>> + 's {
    store
        .db()
        .iterator_cf(
            store.cf(family),
            IteratorMode::From(&key_pair(first, from), Direction::Forward),
        )
        .map(|item| -> Result<(u64, u64, Box<[u8]>)> {
            let (k, v) = item?;
            let (a, b) = split_pair(&k)?;
            Ok((a, b, v))
        })
        .take_while(move |r| !matches!(r, Ok((a, _, _)) if *a != first))
        .map(|r| r.map(|(_, b, v)| (b, v)))
}

fn first_tx_of(store: &Store, addr: u64) -> Result<Option<u64>> {
    pairs(store, cf::HISTORY, addr, 0)
        .next()
        .transpose()
        .map(|r| r.map(|(txnum, _)| txnum))
}

/// The cluster `addr` belongs to: its own id when it is alone or the root.
pub fn cluster_of(store: &Store, addr: u64) -> Result<u64> {
    match store.get(cf::CLUSTER_OF, &key_u64(addr))? {
        Some(v) => Ok(Dec::new("cluster id", &v).u64()?),
        None => Ok(addr),
    }
}

/// Figures of a cluster of two or more addresses; None for a lone address.
pub fn stats(store: &Store, cluster: u64) -> Result<Option<ClusterStats>> {
    store
        .get(cf::CLUSTER_STATS, &key_u64(cluster))?
        .map(|v| Ok(ClusterStats::decode(&v)?))
        .transpose()
}

pub fn members(store: &Store, cluster: u64) -> Result<Vec<u64>> {
    let found: Vec<u64> = pairs(store, cf::CLUSTER_MEMBERS, cluster, 0)
        .map(|r| r.map(|(m, _)| m))
        .collect::<Result<_>>()?;
    Ok(if found.is_empty() {
        vec![cluster]
    } else {
        found
    })
}

/// A cluster's history rows with tx numbers below `before`: its own rows
/// when it has several addresses, the address's rows when it is alone.
pub fn history(
    store: &Store,
    cluster: u64,
    multi: bool,
    before: u64,
) -> Result<BTreeMap<u64, HistoryRow>> {
    let family = if multi {
        cf::CLUSTER_HISTORY
    } else {
        cf::HISTORY
    };
    let mut rows = BTreeMap::new();
    for r in pairs(store, family, cluster, 0) {
        let (txnum, v) = r?;
        if txnum >= before {
            break;
        }
        rows.insert(txnum, HistoryRow::decode(&v)?);
    }
    Ok(rows)
}
