//! Dusting: many tiny outputs to addresses already in use, each a
//! different one, sent in the hope that their owners spend the dust
//! together with their other coins and so link them.

use super::ctx::Ctx;
use super::{Found, Kind};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DustingParams {
    /// Tiny outputs to distinct addresses, at least.
    pub min_outputs: u32,
    /// A tiny output's largest value, in satoshis.
    pub max_value: u64,
    /// The share of those addresses used before the block, at least.
    pub min_used: f64,
}

impl Default for DustingParams {
    fn default() -> DustingParams {
        DustingParams {
            min_outputs: 10,
            max_value: 1_000,
            min_used: 0.8,
        }
    }
}

/// The dusting `tx` is, if it is one.
pub fn at(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Found>> {
    let p = c.params.dusting;
    let g = c.g;
    let outputs = g.outputs(tx);
    if outputs.end - outputs.start < u64::from(p.min_outputs) {
        return Ok(None);
    }
    let (mut addrs, mut value) = (Vec::new(), 0u64);
    for n in outputs {
        let o = g.output(n);
        if let (Some(a), true) = (o.addr, o.value <= p.max_value) {
            addrs.push(a);
            value += o.value;
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.len() < p.min_outputs as usize {
        return Ok(None);
    }
    let fresh_from = c.first_new_addr(height)?;
    let used = addrs.iter().filter(|&&a| a < fresh_from).count();
    if (used as f64) < p.min_used * addrs.len() as f64 {
        return Ok(None);
    }
    Ok(Some(Found {
        kind: Kind::Dusting,
        height,
        size: addrs.len() as u32,
        txs: vec![tx],
        value,
    }))
}
