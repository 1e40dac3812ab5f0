//! Peel chains: a large coin pays out a small amount per step and moves
//! the rest to a fresh address, which the next step spends soon after.

use super::ctx::Ctx;
use super::{Found, Kind};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeelParams {
    /// Steps a chain has when it is reported.
    pub min_steps: u32,
    /// The largest share of the coin a step spends that its payment may be.
    pub max_share: f64,
    /// Blocks at most from one step to the next.
    pub max_gap: u32,
}

impl Default for PeelParams {
    fn default() -> PeelParams {
        PeelParams {
            min_steps: 5,
            max_share: 0.25,
            max_gap: 6,
        }
    }
}

/// Chains are followed forward at most this many steps in a listing.
pub const MAX_FOLLOWED: usize = 1_000;

/// One step: a transaction spending one coin into a small payment and a
/// larger remainder at an address first seen in its block.
struct Step {
    spends: u64,
    value: u64,
    remainder: u64,
}

fn step(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Step>> {
    let g = c.g;
    let mut inputs = g.inputs(tx);
    let (Some(input), None) = (inputs.next(), inputs.next()) else {
        return Ok(None);
    };
    let outputs = g.outputs(tx);
    let (Some(value), 2) = (input.value, outputs.end - outputs.start) else {
        return Ok(None);
    };
    let (first, second) = (g.output(outputs.start), g.output(outputs.start + 1));
    let (payment, (remainder, rest)) = match first.value.cmp(&second.value) {
        std::cmp::Ordering::Less => (first, (outputs.start + 1, second)),
        std::cmp::Ordering::Greater => (second, (outputs.start, first)),
        std::cmp::Ordering::Equal => return Ok(None),
    };
    if payment.addr.is_none() || payment.value as f64 > c.params.peel.max_share * value as f64 {
        return Ok(None);
    }
    match rest.addr {
        Some(a) if a >= c.first_new_addr(height)? => Ok(Some(Step {
            spends: input.output,
            value,
            remainder,
        })),
        _ => Ok(None),
    }
}

/// The chain `tx` completes: reported at its `min_steps`th step, so once
/// per chain (and again after a pause longer than `max_gap`).
pub fn at(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Found>> {
    let p = c.params.peel;
    let Some(last) = step(c, tx, height)? else {
        return Ok(None);
    };
    let (mut chain, mut spends, mut value, mut at_height) =
        (vec![tx], last.spends, last.value, height);
    // One step further back than needed tells whether the chain was
    // already long enough before `tx`.
    while chain.len() <= p.min_steps as usize {
        let after = *chain.last().expect("a step");
        let Some(prev) =
            c.g.creator_among(spends, c.recent(at_height, p.max_gap, after))
        else {
            break;
        };
        let h = c.g.height(prev);
        match step(c, prev, h)? {
            Some(s) if s.remainder == spends => {
                chain.push(prev);
                (spends, value, at_height) = (s.spends, s.value, h);
            }
            _ => break,
        }
    }
    if chain.len() != p.min_steps as usize {
        return Ok(None);
    }
    chain.reverse();
    Ok(Some(Found {
        kind: Kind::PeelChain,
        height,
        size: chain.len() as u32,
        txs: chain,
        value,
    }))
}

/// Extends a reported chain with the steps after it on the chain as the
/// view holds it, up to `MAX_FOLLOWED` steps in all.
pub fn follow(c: &mut Ctx, found: &mut Found) -> Result<()> {
    let g = c.g;
    let (mut tx, mut height) = (found.last(), found.height);
    while found.txs.len() < MAX_FOLLOWED {
        let Some(s) = step(c, tx, height)? else {
            break;
        };
        let Some((next, _)) = g.output(s.remainder).spender else {
            break;
        };
        let h = g.height(next);
        match step(c, next, h)? {
            Some(n) if n.spends == s.remainder && h - height <= c.params.peel.max_gap => {
                found.txs.push(next);
                (tx, height) = (next, h);
            }
            _ => break,
        }
    }
    found.size = found.txs.len() as u32;
    Ok(())
}
