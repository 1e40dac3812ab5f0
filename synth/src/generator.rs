//! The chain: one main-chain block after another (planned by the economy, materialised in
//! parallel, assembled), plus the stale fork blocks planted along the way.

use bitcoin::consensus::serialize;
use bitcoin::BlockHash;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::actors::ActorId;
use crate::chain::{self, Assembled, ChainParams, HeaderFields};
use crate::economy::{Economy, COINBASE_WEIGHT};
use crate::keys::{mix64, Keyring};
use crate::txbuild::{self, BuiltTx, TxPlan};

/// Blocks weigh between these (mainnet blocks are nearly all within a few kWU of 4 MWU).
const MIN_BLOCK_WEIGHT: u64 = 3_990_000;
const MAX_BLOCK_WEIGHT: u64 = 3_999_000;
/// Rough size of a full block, to place the forks before the expected end.
const TYPICAL_BLOCK_BYTES: u64 = 1_600_000;
/// Share of the main block's transactions a competing stale block also has.
const STALE_TX_SHARE: f64 = 0.9;

pub struct MainBlock {
    pub height: u32,
    pub prev: BlockHash,
    pub time: u32,
    pub pool: ActorId,
    pub plans: Vec<TxPlan>,
    pub built: Vec<BuiltTx>,
    pub coinbase: TxPlan,
    pub assembled: Assembled,
}

/// A stale block as written: its height and hash go to the summary.
pub struct StaleBlock {
    pub height: u32,
    /// Position in its stale branch (1 for the block right after the fork point).
    pub depth: u32,
    pub hash: BlockHash,
    pub bytes: Vec<u8>,
}

/// Where forks happen: single stale blocks, and deeper forks (start height, depth).
struct ForkPlan {
    singles: Vec<u32>,
    deep: Vec<(u32, u32)>,
    /// The deep fork being built: its tip, the height it forked at, blocks made, blocks to make.
    active: Option<(BlockHash, u32, u32, u32)>,
}

impl ForkPlan {
    /// A few single stale blocks and at least one fork of 3-5 blocks, spread over the
    /// expected chain (more of each for bigger outputs).
    fn new(size: u64, rng: &mut impl Rng) -> Self {
        const FIRST: u32 = 105;
        let expected_tip = 100 + (size / TYPICAL_BLOCK_BYTES) as u32;
        let span = expected_tip.saturating_sub(FIRST + 5).max(10);
        let at = |fraction: f64| FIRST + (span as f64 * fraction) as u32;
        let n_singles = 3 + span / 400;
        let n_deep = 1 + span / 1500;
        ForkPlan {
            singles: (0..n_singles)
                .map(|i| at((i as f64 + 0.5) / n_singles as f64))
                .collect(),
            deep: (0..n_deep)
                .map(|i| (at((i as f64 + 0.45) / n_deep as f64), rng.gen_range(3..=5)))
                .collect(),
            active: None,
        }
    }

    fn last_height(&self) -> u32 {
        let singles = self.singles.iter().copied();
        singles
            .chain(self.deep.iter().map(|&(start, depth)| start + depth - 1))
            .max()
            .unwrap_or(0)
    }
}

pub struct Generator {
    pub params: ChainParams,
    ring: Keyring,
    pub economy: Economy,
    rng: ChaCha8Rng,
    tip: (BlockHash, u32, u32),
    forks: ForkPlan,
    /// Transactions of the block after the tip, planned while the tip's were materialised;
    /// so coins become spendable two blocks after the one that creates them.
    next_plans: Option<Vec<TxPlan>>,
}

impl Generator {
    /// `whale_share`, `plant_patterns`, `plant_services`: see `SynthArgs`.
    pub fn new(
        params: ChainParams,
        seed: u64,
        size: u64,
        whale_share: f64,
        plant_patterns: bool,
        plant_services: bool,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0xc4a1));
        let genesis = params.genesis();
        Generator {
            ring: Keyring {
                salt: mix64(seed ^ 0x4b),
                network: params.network,
            },
            economy: Economy::new(seed, whale_share, plant_patterns, plant_services),
            forks: ForkPlan::new(size, &mut rng),
            tip: (genesis.block_hash(), 0, genesis.header.time),
            next_plans: None,
            rng,
            params,
        }
    }

    pub fn genesis_bytes(&self) -> Vec<u8> {
        serialize(&self.params.genesis())
    }

    pub fn tip_height(&self) -> u32 {
        self.tip.1
    }

    /// Stale blocks must stay below the main tip in work, so the chain runs past the last one.
    pub fn forks_pending(&self) -> bool {
        self.tip.1 <= self.forks.last_height()
    }

    /// Plans, materialises and assembles the next main-chain block (not yet committed).
    pub fn next_block(&mut self) -> MainBlock {
        let (prev, tip_height, tip_time) = self.tip;
        let height = tip_height + 1;
        let interval = (-600.0 * self.rng.gen_range(f64::EPSILON..1.0).ln()).round() as u32;
        let time = tip_time + interval.max(1);
        let pool = self.economy.actors().random_pool(&mut self.rng);
        let plans = match self.next_plans.take() {
            Some(plans) => plans,
            None => {
                let budget = self.budget();
                self.economy.plan_block(height, budget)
            }
        };
        // Planning the next block (sequential) overlaps materialising this one (parallel).
        let budget = self.budget();
        let (economy, ring) = (&mut self.economy, self.ring);
        let (next_plans, built) = rayon::join(
            || economy.plan_block(height + 1, budget),
            || {
                plans
                    .par_iter()
                    .map(|plan| txbuild::build(plan, &ring))
                    .collect::<Vec<BuiltTx>>()
            },
        );
        self.next_plans = Some(next_plans);
        let fees: u64 = plans.iter().map(TxPlan::fee).sum();
        let coinbase =
            self.economy
                .coinbase_outputs(pool, self.params.subsidy(height) + fees, height);
        let fields = HeaderFields {
            prev,
            height,
            time,
            pool_tag: self.pool_tag(pool),
        };
        let refs: Vec<&BuiltTx> = built.iter().collect();
        let assembled = chain::assemble(
            &self.params,
            &fields,
            &coinbase,
            &refs,
            &self.ring,
            &mut self.rng,
        );
        MainBlock {
            height,
            prev,
            time,
            pool,
            plans,
            built,
            coinbase,
            assembled,
        }
    }

    /// Weight left for transactions in a block of random mainnet-like total weight.
    fn budget(&mut self) -> u64 {
        self.rng.gen_range(MIN_BLOCK_WEIGHT..=MAX_BLOCK_WEIGHT) - COINBASE_WEIGHT - 4 * 90
    }

    fn pool_tag(&self, pool: ActorId) -> String {
        format!("/{}/", self.economy.actors().get(pool).name)
    }

    /// Makes `block` the tip and hands its coins to their owners.
    pub fn commit(&mut self, block: &MainBlock) {
        self.economy.commit(
            &block.coinbase,
            block.assembled.coinbase.txid,
            block.height,
            true,
        );
        for (plan, tx) in block.plans.iter().zip(&block.built) {
            self.economy.commit(plan, tx.txid, block.height, false);
        }
        self.tip = (block.assembled.hash, block.height, block.time);
    }

    /// The stale blocks that compete with `main` at its height, if any are planned there.
    pub fn stale_blocks(&mut self, main: &MainBlock) -> Vec<StaleBlock> {
        let mut stale = Vec::new();
        if self.forks.singles.contains(&main.height) {
            stale.push(self.stale_block(main, main.prev, main.height, 1));
        }
        if let Some(&(_, depth)) = self.forks.deep.iter().find(|d| d.0 == main.height) {
            self.forks.active = Some((main.prev, main.height, 0, depth));
        }
        if let Some((parent, fork_height, made, left)) = self.forks.active {
            let block = self.stale_block(main, parent, fork_height, made + 1);
            self.forks.active = (left > 1).then_some((block.hash, fork_height, made + 1, left - 1));
            stale.push(block);
        }
        stale
    }

    /// A block at `main`'s height on `parent`, holding most of `main`'s transactions that
    /// spend only coins older than the fork (so the stale branch is self-consistent).
    fn stale_block(
        &mut self,
        main: &MainBlock,
        parent: BlockHash,
        fork_height: u32,
        depth: u32,
    ) -> StaleBlock {
        let mut txs = Vec::new();
        let mut fees = 0;
        for (plan, tx) in main.plans.iter().zip(&main.built) {
            if plan.newest_input_height() < fork_height && self.rng.gen_bool(STALE_TX_SHARE) {
                txs.push(tx);
                fees += plan.fee();
            }
        }
        let coinbase = self
            .economy
            .stale_coinbase(main.pool, self.params.subsidy(main.height) + fees);
        let time = main.time + self.rng.gen_range(1..60);
        let pool_tag = self.pool_tag(coinbase.outputs[0].owner);
        let fields = HeaderFields {
            prev: parent,
            height: main.height,
            time,
            pool_tag,
        };
        let assembled = chain::assemble(
            &self.params,
            &fields,
            &coinbase,
            &txs,
            &self.ring,
            &mut self.rng,
        );
        StaleBlock {
            height: main.height,
            depth,
            hash: assembled.hash,
            bytes: assembled.bytes,
        }
    }
}
