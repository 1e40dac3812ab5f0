//! CoinJoin outputs that reach an exchange within a few hops and blocks of
//! their mix. Carried forward rather than searched back: a scan keeps the
//! trails of the mixed coins of the last `max_blocks` blocks, so that only
//! the few transactions spending one of them need their payees' clusters.

use rustc_hash::FxHashMap;
use satflow_schema::AddrId;

use super::ctx::Ctx;
use super::{Found, Kind};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ToExchangeParams {
    /// Transactions at most from the CoinJoin to the payment to the
    /// exchange, that payment included.
    pub max_hops: u32,
    /// Blocks at most from the CoinJoin to that payment.
    pub max_blocks: u32,
}

impl Default for ToExchangeParams {
    fn default() -> ToExchangeParams {
        ToExchangeParams {
            max_hops: 3,
            max_blocks: 144,
        }
    }
}

/// How a coin descends from a CoinJoin's equal output.
#[derive(Clone, Debug)]
struct Trail {
    join: u64,
    height: u32,
    /// The transactions from the CoinJoin to the coin.
    hops: Vec<u64>,
}

/// The unspent coins descending from recent CoinJoins, by output number.
#[derive(Default)]
pub struct Trails(FxHashMap<u64, Trail>);

impl Trails {
    /// Drops trails from CoinJoins before `height`, which can no longer
    /// lead to a find.
    pub fn forget_before(&mut self, height: u32) {
        self.0.retain(|_, t| t.height >= height);
    }

    /// Moves the trails through `tx` of block `height`: a CoinJoin starts
    /// trails at its equal outputs, a transaction spending a trailed coin
    /// either pays an exchange (a find) or carries the trail on.
    pub fn transaction(&mut self, c: &mut Ctx, tx: u64, height: u32) -> Result<Option<Found>> {
        let g = c.g;
        let p = c.params.to_exchange;
        // The shortest trail among the coins it spends (then the earliest mix).
        let mut trail: Option<Trail> = None;
        for i in g.inputs(tx) {
            if let Some(t) = self.0.remove(&i.output) {
                if height - t.height <= p.max_blocks
                    && trail
                        .as_ref()
                        .is_none_or(|b| (t.hops.len(), t.join) < (b.hops.len(), b.join))
                {
                    trail = Some(t);
                }
            }
        }
        if let Some((_, denomination)) = c.coinjoin(tx) {
            for n in g.outputs(tx).filter(|&n| g.output(n).value == denomination) {
                let t = Trail {
                    join: tx,
                    height,
                    hops: Vec::new(),
                };
                self.0.insert(n, t);
            }
            return Ok(None);
        }
        let Some(mut trail) = trail else {
            return Ok(None);
        };
        let mut paid = 0u64;
        for n in g.outputs(tx) {
            let o = g.output(n);
            if let Some(a) = o.addr {
                if c.is_exchange(AddrId(a))? {
                    paid += o.value;
                }
            }
        }
        trail.hops.push(tx);
        if paid > 0 {
            let size = trail.hops.len() as u32;
            let mut txs = vec![trail.join];
            txs.extend(trail.hops);
            return Ok(Some(Found {
                kind: Kind::CoinJoinToExchange,
                height,
                txs,
                value: paid,
                size,
            }));
        }
        if trail.hops.len() < p.max_hops as usize {
            for n in g.outputs(tx).filter(|&n| g.output(n).addr.is_some()) {
                self.0.insert(n, trail.clone());
            }
        }
        Ok(None)
    }
}
