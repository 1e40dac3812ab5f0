//! Rapid layering: value moved on whole, transaction after transaction,
//! within a few blocks, with next to nothing left behind at each hop.

use super::ctx::Ctx;
use super::{Found, Kind};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LayeringParams {
    /// Hops a run has when it is reported.
    pub min_hops: u32,
    /// Blocks at most from its first hop to its last.
    pub max_blocks: u32,
    /// The share of what a hop spends that it moves on in one output.
    pub min_forward: f64,
}

impl Default for LayeringParams {
    fn default() -> LayeringParams {
        LayeringParams {
            min_hops: 4,
            max_blocks: 6,
            min_forward: 0.98,
        }
    }
}

/// One hop: a transaction of one or two inputs and one or two outputs,
/// one of which carries on nearly all it spent to an address first seen
/// in its block (layering moves value through new addresses).
struct Hop {
    /// The largest coin it spends: the one the run follows back.
    follows: u64,
    /// What it spends.
    value: u64,
    forward: u64,
}

fn hop(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Hop>> {
    let g = c.g;
    let inputs = g.inputs(tx);
    let outputs = g.outputs(tx);
    if !(1..=2).contains(&inputs.len()) || !(1..=2).contains(&(outputs.end - outputs.start)) {
        return Ok(None);
    }
    let (mut value, mut follows) = (0u64, (0u64, 0u64));
    for i in inputs {
        let Some(v) = i.value else {
            return Ok(None);
        };
        value += v;
        if v >= follows.0 {
            follows = (v, i.output);
        }
    }
    let Some(forward) = outputs.max_by_key(|&n| g.output(n).value) else {
        return Ok(None);
    };
    let o = g.output(forward);
    if (o.value as f64) < c.params.layering.min_forward * value as f64 {
        return Ok(None);
    }
    Ok(match o.addr {
        Some(a) if a >= c.first_new_addr(height)? => Some(Hop {
            follows: follows.1,
            value,
            forward,
        }),
        _ => None,
    })
}

/// The run `tx` completes: reported at the hop where `min_hops` hops
/// first fit within `max_blocks`, so once per run.
pub fn at(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Found>> {
    let p = c.params.layering;
    let n = p.min_hops as usize;
    let Some(last) = hop(c, tx, height)? else {
        return Ok(None);
    };
    let mut hops = vec![(tx, height, last)];
    // Hop n+1 back is looked for within the window of `tx`'s predecessor:
    // found there, the run was already reported at the predecessor.
    while hops.len() <= n {
        let anchor = hops[usize::from(hops.len() >= n).min(hops.len() - 1)].1;
        let (after, _, h) = hops.last().expect("a hop");
        let Some(prev) =
            c.g.creator_among(h.follows, c.recent(anchor, p.max_blocks, *after))
        else {
            break;
        };
        let at = c.g.height(prev);
        match hop(c, prev, at)? {
            Some(ph) if ph.forward == h.follows => hops.push((prev, at, ph)),
            _ => break,
        }
    }
    if hops.len() != n {
        return Ok(None);
    }
    let value = hops.last().expect("a hop").2.value;
    Ok(Some(Found {
        kind: Kind::Layering,
        height,
        txs: hops.iter().rev().map(|(t, _, _)| *t).collect(),
        value,
        size: p.min_hops,
    }))
}
