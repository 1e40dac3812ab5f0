//! The detectors run over blocks in height order.

use satflow_indexer::flow::FlowView;

use super::ctx::Ctx;
use super::to_exchange::Trails;
use super::{dusting, fan, layering, peel, reunion, Found, Kind, Params};
use crate::error::{QueryError, Result};
use crate::index::Index;

/// Runs the chosen detectors over blocks. Blocks are best given in
/// height order: the CoinJoin-to-exchange detector carries state from
/// one block to the next, and rebuilds it from the blocks before (its
/// window) whenever it is given a block out of turn.
pub struct Scanner<'a> {
    ctx: Ctx<'a>,
    on: [bool; Kind::ALL.len()],
    trails: Trails,
    /// The height the carried state expects next.
    next: Option<u32>,
}

impl<'a> Scanner<'a> {
    /// A scanner for the detectors of `kinds` (all when empty).
    pub fn new(
        index: &'a Index,
        g: FlowView<'a>,
        params: Params,
        kinds: &[Kind],
    ) -> Result<Scanner<'a>> {
        let mut on = [kinds.is_empty(); Kind::ALL.len()];
        for &k in kinds {
            on[k as usize] = true;
        }
        Ok(Scanner {
            ctx: Ctx::new(index, g, params, on[Kind::CoinJoinToExchange as usize]),
            on,
            trails: Trails::default(),
            next: None,
        })
    }

    pub fn view(&self) -> FlowView<'a> {
        self.ctx.g
    }

    /// Extends a reported peel chain with its steps since (see `peel::follow`).
    pub fn follow(&mut self, found: &mut Found) -> Result<()> {
        peel::follow(&mut self.ctx, found)
    }

    /// The patterns block `height` completes, in transaction order, and
    /// by kind within a transaction.
    pub fn block(&mut self, height: u32) -> Result<Vec<Found>> {
        let txs = self.ctx.g.block_txs(height).ok_or_else(|| {
            QueryError::NotFound(format!(
                "block {height} is not in the flow graph, which holds {} to {}",
                self.ctx.g.base_height(),
                self.ctx.g.tip_height()
            ))
        })?;
        let carry = self.on[Kind::CoinJoinToExchange as usize] && self.ctx.knows_exchanges();
        if carry && self.next != Some(height) {
            self.trails = Trails::default();
            let window = self.ctx.params.to_exchange.max_blocks;
            let from = height.saturating_sub(window).max(self.ctx.g.base_height());
            for h in from..height {
                self.carry(h, &mut Vec::new())?;
            }
        }
        let mut found = Vec::new();
        // The first transaction is the coinbase: it spends nothing.
        for tx in txs.start + 1..txs.end {
            self.transaction(tx, height, &mut found)?;
        }
        if carry {
            self.carry(height, &mut found)?;
        }
        // The carried detector's finds join the others in transaction order.
        found.sort_by_key(|f| (f.last(), f.kind));
        self.next = Some(height + 1);
        Ok(found)
    }

    fn transaction(&mut self, tx: u64, height: u32, found: &mut Vec<Found>) -> Result<()> {
        let c = &mut self.ctx;
        let detectors: [(Kind, Detector); 6] = [
            (Kind::PeelChain, peel::at),
            (Kind::Layering, layering::at),
            (Kind::FanOutIn, fan::fan_out_in),
            (Kind::FanIn, fan::fan_in),
            (Kind::CoinJoinReunion, reunion::at),
            (Kind::Dusting, dusting::at),
        ];
        for (kind, detect) in detectors {
            if self.on[kind as usize] {
                found.extend(detect(c, tx, height)?);
            }
        }
        Ok(())
    }

    /// Moves the CoinJoin trails through block `height`, adding what
    /// reached an exchange to `found`.
    fn carry(&mut self, height: u32, found: &mut Vec<Found>) -> Result<()> {
        let txs = self.ctx.g.block_txs(height).unwrap_or(0..0);
        self.trails
            .forget_before(height.saturating_sub(self.ctx.params.to_exchange.max_blocks));
        for tx in txs.start.saturating_add(1)..txs.end {
            found.extend(self.trails.transaction(&mut self.ctx, tx, height)?);
        }
        Ok(())
    }
}

/// A detector: what transaction `tx` of block `height` completes.
type Detector = fn(&mut Ctx, u64, u32) -> Result<Option<Found>>;
