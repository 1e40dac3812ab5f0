//! What the detectors share (`Ctx`): the flow graph, the thresholds,
//! which addresses each block saw first, and which clusters are exchanges.

use std::ops::Range;
use std::sync::Arc;

use bitcoin::BlockHash;
use rustc_hash::FxHashMap;
use satflow_indexer::cluster::{CoinJoin, Heuristics};
use satflow_indexer::flow::FlowView;
use satflow_indexer::labels::Category;
use satflow_schema::{AddrId, ClusterKey, Height};

use super::Params;
use crate::built;
use crate::error::Result;
use crate::index::Index;
use crate::label_index::{LabelIndex, Wanted};

const EXCHANGE: Wanted = Wanted::category(Category::Exchange);

/// What the detectors read, with the lookups they repeat remembered.
pub(super) struct Ctx<'a> {
    pub g: FlowView<'a>,
    pub params: Params,
    index: &'a Index,
    /// Per height: the first address number the block gave out. Numbers
    /// are given at first sight, in chain order, so an address below it
    /// was used before the block and one at or above it is fresh there.
    first_new: FxHashMap<u32, u64>,
    /// The labels, when exchanges are asked for and some cluster carries
    /// an exchange's: each address's cluster is asked of them, rather than
    /// every exchange cluster read into a set first.
    exchanges: Option<Arc<LabelIndex>>,
    holders: FxHashMap<AddrId, ClusterKey>,
    cover: AddrId,
}

impl<'a> Ctx<'a> {
    /// With the exchanges' clusters when `exchanges` (the
    /// CoinJoin-to-exchange detector needs them).
    pub fn new(index: &'a Index, g: FlowView<'a>, params: Params, exchanges: bool) -> Ctx<'a> {
        let labels = index.label_index();
        Ctx {
            g,
            params,
            index,
            first_new: FxHashMap::default(),
            exchanges: Some(Arc::clone(&labels))
                .filter(|l| exchanges && l.clusters_carrying(&EXCHANGE).next().is_some()),
            holders: FxHashMap::default(),
            cover: labels.cover(),
        }
    }

    /// The first address number block `height` gave out.
    pub fn first_new_addr(&mut self, height: u32) -> Result<u64> {
        if let Some(&n) = self.first_new.get(&height) {
            return Ok(n);
        }
        let n = self.index.block_row(Height(height))?.first_addr.0;
        self.first_new.insert(height, n);
        Ok(n)
    }

    /// The hash of the index's block at `height`, if it holds one.
    pub fn block_hash(&self, height: u32) -> Result<Option<BlockHash>> {
        Ok(self.index.store().block(Height(height))?.map(|b| b.hash))
    }

    /// The transactions from `blocks` blocks before `height` (or the
    /// graph's first block) up to `tx`, not included: where the detectors
    /// look for the recent transaction that made a coin.
    pub fn recent(&self, height: u32, blocks: u32, tx: u64) -> Range<u64> {
        let from = height.saturating_sub(blocks).max(self.g.base_height());
        self.g
            .block_txs(from)
            .map_or(tx..tx, |b| b.start.min(tx)..tx)
    }

    /// The CoinJoin detector that takes `tx` for a CoinJoin, if one does,
    /// and its equal outputs' value.
    pub fn coinjoin(&self, tx: u64) -> Option<(CoinJoin, u64)> {
        let (inputs, outputs) = (self.g.inputs(tx).len(), self.g.outputs(tx));
        // Every detector asks for at least three inputs and three equal outputs.
        if inputs < 3 || outputs.end - outputs.start < 3 {
            return None;
        }
        let values = outputs.map(|n| self.g.output(n).value);
        Heuristics::DEFAULT.coinjoin_of(inputs, values)
    }

    /// Whether some exchange is known (by imported labels).
    pub fn knows_exchanges(&self) -> bool {
        self.exchanges.is_some()
    }

    /// Whether address `a` is in a cluster labelled an exchange.
    pub fn is_exchange(&mut self, a: AddrId) -> Result<bool> {
        let holder = match self.holders.get(&a) {
            Some(&h) => h,
            None => {
                let h = built::cluster_or_self(self.index.store(), a, self.cover)?;
                self.holders.insert(a, h);
                h
            }
        };
        Ok(self
            .exchanges
            .as_ref()
            .is_some_and(|l| l.carries(holder, &EXCHANGE)))
    }
}
