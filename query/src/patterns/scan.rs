//! The detectors run over blocks in height order.

use bitcoin::BlockHash;
use satflow_indexer::flow::FlowView;

use super::ctx::Ctx;
use super::to_exchange::Trails;
use super::{dusting, fan, layering, peel, reunion, Found, Kind, Params};
use crate::error::{QueryError, Result};
use crate::index::Index;

/// What a scanner carries from one block to the next (the CoinJoin
/// trails), for a caller that scans a growing chain a few blocks at a
/// time (the alert monitor): the next scanner takes it up instead of
/// rebuilding it from the blocks before. The trails are as the labels of
/// their time made them.
pub struct Carry {
    trails: Trails,
    /// The height it goes on at, and the hash of the block before it.
    next: u32,
    after: BlockHash,
}

/// Runs the chosen detectors over blocks. Blocks are best given in
/// height order: the CoinJoin-to-exchange detector carries state from
/// one block to the next, and rebuilds it from the blocks before (its
/// window) whenever it is given a block out of turn.
pub struct Scanner<'a> {
    ctx: Ctx<'a>,
    on: [bool; Kind::ALL.len()],
    trails: Trails,
    /// The next block the trails are to be moved through; None when they
    /// were not kept (the detector is off, or no exchange is known).
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

    /// Takes up what an earlier scanner carried (see `Carry`), when it
    /// ended at the block the index still holds before `carry.next`; else
    /// the carried state is rebuilt as usual.
    pub fn resume(&mut self, carry: Carry) -> Result<()> {
        let Some(before) = carry.next.checked_sub(1) else {
            return Ok(());
        };
        if self.ctx.block_hash(before)? == Some(carry.after) {
            self.trails = carry.trails;
            self.next = Some(carry.next);
        }
        Ok(())
    }

    /// What a later scanner may take up; None before any block.
    pub fn into_carry(self) -> Result<Option<Carry>> {
        let Some(next) = self.next else {
            return Ok(None);
        };
        let after = self.ctx.block_hash(next - 1)?;
        Ok(after.map(|after| Carry {
            trails: self.trails,
            next,
            after,
        }))
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
                self.move_trails(h, &mut Vec::new())?;
            }
        }
        let mut found = Vec::new();
        // The first transaction is the coinbase: it spends nothing.
        for tx in txs.start + 1..txs.end {
            self.transaction(tx, height, &mut found)?;
        }
        if carry {
            self.move_trails(height, &mut found)?;
        }
        // The carried detector's finds join the others in transaction order.
        found.sort_by_key(|f| (f.last(), f.kind));
        // Only trails moved through this block can be carried on from it.
        self.next = carry.then_some(height + 1);
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
    fn move_trails(&mut self, height: u32, found: &mut Vec<Found>) -> Result<()> {
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
