//! CoinJoin reunions: equal outputs of CoinJoins spent together again by
//! a transaction that is no CoinJoin itself, which links the coins the mix
//! was to separate.

use satflow_indexer::cluster::is_mixing_denomination;

use super::ctx::Ctx;
use super::{Found, Kind};
use crate::error::Result;

/// The reunion `tx` is, if it is one.
pub fn at(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Found>> {
    let g = c.g;
    if g.inputs(tx).len() < 2 {
        return Ok(None);
    }
    // Only coins whose value another input shares, or that a known mixer
    // pays, are looked up: a CoinJoin's equal outputs share one value.
    let mut values: Vec<u64> = g.inputs(tx).filter_map(|i| i.value).collect();
    values.sort_unstable();
    let shared =
        |v: u64| values.partition_point(|&x| x < v) + 1 < values.partition_point(|&x| x <= v);
    let candidates: Vec<(u64, u64)> = g
        .inputs(tx)
        .filter_map(|i| Some((i.output, i.value?)))
        .filter(|&(n, v)| g.has_output(n) && (shared(v) || is_mixing_denomination(v)))
        .collect();
    if candidates.len() < 2 || c.coinjoin(tx).is_some() {
        return Ok(None);
    }
    let (mut joins, mut value, mut coins) = (Vec::new(), 0u64, 0u32);
    for (n, v) in candidates {
        let maker = g.creator(n);
        let equal = || g.outputs(maker).filter(|&o| g.output(o).value == v).count() >= 2;
        if c.coinjoin(maker).is_some() && equal() {
            joins.push(maker);
            value += v;
            coins += 1;
        }
    }
    if coins < 2 {
        return Ok(None);
    }
    joins.sort_unstable();
    joins.dedup();
    joins.push(tx);
    Ok(Some(Found {
        kind: Kind::CoinJoinReunion,
        height,
        txs: joins,
        value,
        size: coins,
    }))
}
