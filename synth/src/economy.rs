//! The simulated economy: the market everyday traffic happens in, plus the Whirlpool queues,
//! peeling chains, illicit flows, (with `--plant-patterns`) planted suspicious patterns and
//! (with `--plant-services`) gambling services and payment processors that hold coins
//! between blocks; it plans one block's transactions and puts their coins
//! where they go once the block is committed.
//!
//! Planning is sequential (it decides which coins move where); materialising the plans into
//! bytes happens later, in parallel. Coins created in a block become spendable once the block
//! is committed, i.e. from the next block on, so planning never needs a txid of its own block.

use bitcoin::{OutPoint, Txid};
use rand::Rng;

use crate::actors::{ActorId, Actors};
use crate::coinjoin::{self, Whirlpool};
use crate::dist;
use crate::flows::Flows;
use crate::keys::ScriptKind;
use crate::market::{split_value, BlockTxs, Market};
use crate::patterns::Patterns;
use crate::peel::PeelChains;
use crate::services::Services;
use crate::txbuild::{Dest, Tag, TxPlan};
use crate::wallet::{Utxo, COINBASE_MATURITY};

pub struct Economy {
    market: Market,
    whirlpool: Whirlpool,
    peels: PeelChains,
    flows: Flows,
    /// `--plant-patterns` only: without it nothing is planned that was not before.
    patterns: Option<Patterns>,
    /// `--plant-services` only, likewise.
    services: Option<Services>,
}

impl Economy {
    pub fn new(seed: u64, whale_share: f64, plant_patterns: bool, plant_services: bool) -> Self {
        Economy {
            market: Market::new(seed, whale_share),
            whirlpool: Whirlpool::default(),
            peels: PeelChains::new(),
            flows: Flows::default(),
            patterns: plant_patterns.then(|| Patterns::new(seed)),
            services: plant_services.then(|| Services::new(seed)),
        }
    }

    pub fn actors(&self) -> &Actors {
        &self.market.actors
    }

    pub fn flows(&self) -> &Flows {
        &self.flows
    }

    /// Plans the non-coinbase transactions of block `height` within `budget` weight units.
    pub fn plan_block(&mut self, height: u32, budget: u64) -> Vec<TxPlan> {
        let m = &mut self.market;
        m.height = height;
        m.fee_level = dist::block_fee_level(&mut m.rng);
        let mut block = BlockTxs {
            txs: Vec::new(),
            left: budget,
        };
        self.flows.plan(m, &mut block);
        self.peels.plan(m, &mut block);
        coinjoin::plan(m, &mut self.whirlpool, &mut block);
        if let Some(patterns) = &mut self.patterns {
            patterns.plan(m, &mut block);
        }
        if let Some(services) = &mut self.services {
            services.plan(m, &mut block);
        }
        m.fill(&mut block);
        m.coins -= block.txs.iter().map(|t| t.inputs.len()).sum::<usize>();
        block.txs
    }

    /// Puts the coins of `tx` where its outputs say, now that its txid is known.
    pub fn commit(&mut self, tx: &TxPlan, txid: Txid, height: u32, coinbase: bool) {
        if let Some(flow) = tx.tag.flow {
            self.flows.record_tx(flow, txid);
        }
        for (vout, out) in tx.outputs.iter().enumerate() {
            let outpoint = OutPoint {
                txid,
                vout: vout as u32,
            };
            let utxo = Utxo {
                outpoint,
                value: out.value,
                key: out.key,
                kind: out.kind,
                height,
                coinbase,
            };
            if let Some(flow) = out.taint {
                self.flows.record_output(flow, outpoint, out.value);
            }
            if out.dest != Dest::Nowhere {
                self.market.coins += 1;
            }
            let actors = &mut self.market.actors;
            match out.dest {
                Dest::Wallet(actor) => actors.get_mut(actor).wallet.push(utxo),
                Dest::Deposits(exchange) => actors.get_mut(exchange).deposits.push(utxo),
                Dest::Premix(denom) => self.whirlpool.enqueue(denom, out.owner, utxo),
                Dest::Peel(chain) => self.peels.receive(chain, utxo),
                Dest::Flow(flow) => self.flows.hold(flow, utxo),
                Dest::Nowhere => {}
            }
        }
    }

    /// Outputs of the coinbase of a block mined by `pool` worth `value` in total.
    pub fn coinbase_outputs(&mut self, pool: ActorId, value: u64, height: u32) -> TxPlan {
        let m = &mut self.market;
        let mut plan = empty_coinbase();
        // Regtest-style bootstrap: until coins mature, blocks split their reward so the
        // economy has enough coins to spend once they do.
        let bootstrap = height <= COINBASE_MATURITY;
        for _ in 0..if bootstrap { BOOTSTRAP_OUTPUTS } else { 1 } {
            let payee = if bootstrap {
                m.actors.fresh(ScriptKind::P2wpkh)
            } else {
                m.actors.address(&mut m.rng, pool)
            };
            plan.pay(0, payee, pool, Dest::Wallet(pool));
        }
        if !bootstrap && m.actors.pays_miners_in_coinbase(pool) {
            for _ in 0..m.rng.gen_range(8..30) {
                let miner = m.actors.random_user(&mut m.rng);
                let payee = m.actors.address(&mut m.rng, miner);
                plan.pay(0, payee, miner, Dest::Wallet(miner));
            }
        }
        if value >= dist::DUST * plan.outputs.len() as u64 {
            split_value(&mut m.rng, value, &mut plan.outputs);
        } else {
            plan.outputs.truncate(1);
            plan.outputs[0].value = value;
        }
        plan
    }

    /// Coinbase of a stale block: another pool than `winner` (if one has mined before) pays
    /// its current address, so that stale blocks hand out no address the truth lacks.
    pub fn stale_coinbase(&mut self, winner: ActorId, value: u64) -> TxPlan {
        let m = &mut self.market;
        let pools = m.actors.pools.clone();
        let offset = m.rng.gen_range(0..pools.len() as u32);
        let (pool, payee) = pools
            .clone()
            .map(|i| pools.start + (i - pools.start + offset) % pools.len() as u32)
            .filter(|&p| p != winner)
            .chain([winner])
            .find_map(|p| m.actors.last_address(p).map(|payee| (p, payee)))
            .expect("the winner has just paid itself");
        let mut plan = empty_coinbase();
        plan.pay(value, payee, pool, Dest::Wallet(pool));
        plan
    }
}

const BOOTSTRAP_OUTPUTS: usize = 50;

fn empty_coinbase() -> TxPlan {
    TxPlan {
        inputs: Vec::new(),
        outputs: Vec::new(),
        version: 2,
        lock_time: 0,
        sequence: u32::MAX,
        seed: 0,
        tag: Tag::default(),
    }
}

/// Weight bound of a coinbase (the bootstrap one with the most outputs, plus the witness
/// commitment): reserved before planning so that a block stays under 4 MWU.
pub const COINBASE_WEIGHT: u64 = 4 * (250 + (BOOTSTRAP_OUTPUTS as u64 + 2) * 44) + 40;
