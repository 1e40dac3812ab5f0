//! Fan-out then fan-in (structuring: one coin split over many fresh
//! addresses that are later swept together) and fan-in alone (many small
//! coins from many payers consolidated at once).

use super::ctx::Ctx;
use super::{Found, Kind};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FanOutInParams {
    /// Coins of one split a sweep spends, at least; they are also at
    /// least half the sweep's inputs.
    pub min_coins: u32,
    /// Blocks at most from the split to the sweep.
    pub max_blocks: u32,
    /// Coins the split spends, at most ("one coin", allowing a fee top-up).
    pub max_split_inputs: u32,
}

impl Default for FanOutInParams {
    fn default() -> FanOutInParams {
        FanOutInParams {
            min_coins: 5,
            max_blocks: 1_008,
            max_split_inputs: 2,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FanInParams {
    pub min_inputs: u32,
    /// Each input's largest value, in satoshis.
    pub max_value: u64,
    pub max_outputs: u32,
    /// The share of the inputs made by distinct transactions, at least.
    pub min_payers: f64,
}

impl Default for FanInParams {
    fn default() -> FanInParams {
        FanInParams {
            min_inputs: 20,
            max_value: 5_000_000,
            max_outputs: 2,
            min_payers: 0.8,
        }
    }
}

/// The split-and-sweep `tx` completes as the sweep.
pub fn fan_out_in(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Found>> {
    let p = c.params.fan_out_in;
    let g = c.g;
    let inputs = g.inputs(tx);
    let count = inputs.len();
    if count < p.min_coins as usize {
        return Ok(None);
    }
    let window = c.recent(height, p.max_blocks, tx);
    let mut made: Vec<(u64, u64, u64)> = inputs
        .filter_map(|i| {
            let maker = g.creator_among(i.output, window.clone())?;
            Some((maker, i.output, i.value.unwrap_or(0)))
        })
        .collect();
    made.sort_unstable();
    // The transaction that made the most of the coins (the earliest of equals).
    let Some(coins) = made
        .chunk_by(|a, b| a.0 == b.0)
        .max_by_key(|run| (run.len(), std::cmp::Reverse(run[0].0)))
    else {
        return Ok(None);
    };
    let split = coins[0].0;
    if coins.len() < p.min_coins as usize || coins.len() * 2 < count {
        return Ok(None);
    }
    let split_inputs = g.inputs(split).len();
    if split_inputs == 0
        || split_inputs > p.max_split_inputs as usize
        || c.coinjoin(split).is_some()
    {
        return Ok(None);
    }
    // Each swept coin went to its own address, fresh in the split's block.
    let fresh_from = c.first_new_addr(g.height(split))?;
    let mut addrs = Vec::with_capacity(coins.len());
    for &(_, n, _) in coins {
        match g.output(n).addr {
            Some(a) if a >= fresh_from => addrs.push(a),
            _ => return Ok(None),
        }
    }
    addrs.sort_unstable();
    addrs.dedup();
    if addrs.len() < coins.len() {
        return Ok(None);
    }
    Ok(Some(Found {
        kind: Kind::FanOutIn,
        height,
        txs: vec![split, tx],
        value: coins.iter().map(|&(_, _, v)| v).sum(),
        size: coins.len() as u32,
    }))
}

/// The consolidation `tx` is, if it is one.
pub fn fan_in(c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Found>> {
    let p = c.params.fan_in;
    let g = c.g;
    let inputs = g.inputs(tx);
    let count = inputs.len();
    let outputs = g.outputs(tx);
    if count < p.min_inputs as usize || outputs.end - outputs.start > u64::from(p.max_outputs) {
        return Ok(None);
    }
    let mut value = 0u64;
    let mut makers = Vec::with_capacity(count);
    for i in inputs {
        match i.value {
            Some(v) if v <= p.max_value => value += v,
            _ => return Ok(None),
        }
        // A coin from before the index's start counts as its own payer.
        makers.push(match g.has_output(i.output) {
            true => g.creator(i.output),
            false => i.output,
        });
    }
    makers.sort_unstable();
    makers.dedup();
    if (makers.len() as f64) < p.min_payers * count as f64 {
        return Ok(None);
    }
    Ok(Some(Found {
        kind: Kind::FanIn,
        height,
        txs: vec![tx],
        value,
        size: count as u32,
    }))
}
