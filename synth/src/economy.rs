//! The state of the simulated economy and the planning of one block's transactions.
//!
//! Planning is sequential (it decides which coins move where); materialising the plans into
//! bytes happens later, in parallel. Coins created in a block become spendable once the block
//! is committed, i.e. from the next block on, so planning never needs a txid of its own block.

use bitcoin::{OutPoint, Txid};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::actors::{ActorId, Actors, Payee};
use crate::coinjoin::Whirlpool;
use crate::dist;
use crate::flows::Flows;
use crate::keys::{mix64, KeyId, ScriptKind};
use crate::peel::PeelChain;
use crate::txbuild::{Dest, OutPlan, Tag, TxPlan};
use crate::wallet::Utxo;

/// Every planned transaction weighs less than this, so a block with at least this much room
/// left can take any activity.
pub const MAX_TX_WEIGHT: u64 = 150_000;
/// Bound of a small payment (<= 3 inputs, <= 5 outputs): what still fits at a block's end.
pub const SMALL_TX_WEIGHT: u64 = 4_000;
/// Largest output weight (an 80-byte OP_RETURN); used to check affordability before payees exist.
pub const MAX_OUTPUT_WEIGHT: u64 = 4 * (8 + 1 + 83);

/// The transactions of one block being planned and the weight still free.
pub struct BlockTxs {
    pub txs: Vec<TxPlan>,
    pub left: u64,
}

impl BlockTxs {
    pub fn push(&mut self, tx: TxPlan) {
        self.left -= tx.weight_bound();
        self.txs.push(tx);
    }
}

pub struct Economy {
    pub(crate) rng: ChaCha8Rng,
    pub(crate) actors: Actors,
    pub(crate) height: u32,
    /// Fee-rate level of the mempool for the block being planned.
    pub(crate) fee_level: f64,
    pub(crate) whirlpool: Whirlpool,
    pub(crate) peels: Vec<PeelChain>,
    pub(crate) flows: Flows,
    /// Coins held by anyone; planning steers it between bounds so memory stays flat.
    pub(crate) coins: usize,
    next_seed: u64,
    salt: u64,
}

impl TxPlan {
    /// Adds an output; values of payouts are often filled in once the fee is known.
    pub fn pay(&mut self, value: u64, payee: Payee, owner: ActorId, dest: Dest) -> &mut OutPlan {
        self.outputs.push(OutPlan {
            value,
            kind: payee.kind,
            key: payee.key,
            fresh: payee.fresh,
            owner,
            dest,
            taint: None,
        });
        self.outputs.last_mut().expect("just pushed")
    }

    /// Adds an OP_RETURN output with a payload derived from `data_key`.
    pub fn push_op_return(&mut self, data_key: KeyId) {
        let payee = Payee {
            kind: ScriptKind::OpReturn,
            key: data_key,
            fresh: false,
        };
        self.pay(0, payee, ActorId::MAX, Dest::Nowhere);
    }

    /// Input value left after the fee at `rate` for the transaction as it stands.
    pub fn available(&self, rate: f64) -> Option<u64> {
        let paid = self.output_value() + dist::fee(rate, self.weight_bound());
        self.input_value().checked_sub(paid)
    }
}

/// Can coins worth `value` and weighing `weight` pay `n_outputs` outputs at `rate`?
/// Checked before any payee is created, so that no address is handed out for a tx never made.
pub fn affordable(inputs: &[Utxo], n_outputs: usize, rate: f64) -> bool {
    let weight: u64 = 50 + inputs.iter().map(|u| u.kind.input_weight()).sum::<u64>();
    let fee = dist::fee(rate, weight + n_outputs as u64 * MAX_OUTPUT_WEIGHT);
    inputs.iter().map(|u| u.value).sum::<u64>() > fee + 2 * dist::DUST * n_outputs as u64
}

/// Splits `total` over `outputs` in random (lognormal) proportions, each at least DUST.
pub fn split_value(rng: &mut impl Rng, total: u64, outputs: &mut [OutPlan]) {
    let weights: Vec<f64> = outputs
        .iter()
        .map(|_| dist::lognormal(rng, 1.0, 0.8))
        .collect();
    let sum: f64 = weights.iter().sum();
    let spare = total - dist::DUST * outputs.len() as u64;
    let mut given = 0;
    for (out, w) in outputs.iter_mut().zip(&weights) {
        out.value = dist::DUST + (spare as f64 * w / sum) as u64;
        given += out.value;
    }
    outputs[0].value += total - given;
}

impl Economy {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0xec0));
        let actors = Actors::new(&mut rng);
        Economy {
            rng,
            actors,
            height: 0,
            fee_level: 1.0,
            whirlpool: Whirlpool::default(),
            peels: PeelChain::start_all(),
            flows: Flows::default(),
            coins: 0,
            next_seed: 0,
            salt: mix64(seed),
        }
    }

    pub fn actors(&self) -> &Actors {
        &self.actors
    }

    pub fn flows(&self) -> &Flows {
        &self.flows
    }

    /// Plans the non-coinbase transactions of block `height` within `budget` weight units.
    pub fn plan_block(&mut self, height: u32, budget: u64) -> Vec<TxPlan> {
        self.height = height;
        self.fee_level = dist::block_fee_level(&mut self.rng);
        let mut block = BlockTxs {
            txs: Vec::new(),
            left: budget,
        };
        self.plan_flows(&mut block);
        self.plan_peels(&mut block);
        self.plan_coinjoins(&mut block);
        self.fill(&mut block);
        self.coins -= block.txs.iter().map(|t| t.inputs.len()).sum::<usize>();
        block.txs
    }

    /// A new transaction with the version/locktime/sequence habits of the wallet that makes it:
    /// Core-like wallets use version 2, anti-fee-sniping locktimes and RBF; older ones don't.
    pub(crate) fn tx(&mut self, inputs: Vec<Utxo>, tag: Tag) -> TxPlan {
        let modern = self.rng.gen_bool(0.85);
        let seed = mix64(self.salt ^ self.next_seed);
        self.next_seed += 1;
        let (version, lock_time, sequence) = match (modern, self.rng.gen_bool(0.6)) {
            (true, true) => (2, self.height - 1, 0xffff_fffd),
            (true, false) => (2, 0, 0xffff_fffe),
            (false, _) => (1, 0, 0xffff_ffff),
        };
        TxPlan {
            inputs,
            outputs: Vec::new(),
            version,
            lock_time,
            sequence,
            seed,
            tag,
        }
    }

    pub(crate) fn fee_rate(&mut self) -> f64 {
        dist::fee_rate(&mut self.rng, self.fee_level)
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
                self.coins += 1;
            }
            match out.dest {
                Dest::Wallet(actor) => self.actors.get_mut(actor).wallet.push(utxo),
                Dest::Deposits(exchange) => self.actors.get_mut(exchange).deposits.push(utxo),
                Dest::Premix(denom) => self.whirlpool.enqueue(denom, out.owner, utxo),
                Dest::Peel(chain) => self.peels[chain as usize].receive(utxo),
                Dest::Flow(flow) => self.flows.hold(flow, utxo),
                Dest::Nowhere => {}
            }
        }
    }

    /// Outputs of the coinbase of a block mined by `pool` worth `value` in total.
    pub fn coinbase_outputs(&mut self, pool: ActorId, value: u64, height: u32) -> TxPlan {
        let mut plan = empty_coinbase();
        // Regtest-style bootstrap: until coins mature, blocks split their reward so the
        // economy has enough coins to spend once they do.
        let bootstrap = height <= crate::wallet::COINBASE_MATURITY;
        for _ in 0..if bootstrap { BOOTSTRAP_OUTPUTS } else { 1 } {
            let payee = if bootstrap {
                self.actors.fresh(ScriptKind::P2wpkh)
            } else {
                self.actors.address(&mut self.rng, pool)
            };
            plan.pay(0, payee, pool, Dest::Wallet(pool));
        }
        if !bootstrap && self.actors.pays_miners_in_coinbase(pool) {
            for _ in 0..self.rng.gen_range(8..30) {
                let miner = self.actors.random_user(&mut self.rng);
                let payee = self.actors.address(&mut self.rng, miner);
                plan.pay(0, payee, miner, Dest::Wallet(miner));
            }
        }
        if value >= dist::DUST * plan.outputs.len() as u64 {
            split_value(&mut self.rng, value, &mut plan.outputs);
        } else {
            plan.outputs.truncate(1);
            plan.outputs[0].value = value;
        }
        plan
    }

    /// Coinbase of a stale block: another pool than `winner` (if one has mined before) pays
    /// its current address, so that stale blocks hand out no address the truth lacks.
    pub fn stale_coinbase(&mut self, winner: ActorId, value: u64) -> TxPlan {
        let pools = self.actors.pools.clone();
        let offset = self.rng.gen_range(0..pools.len() as u32);
        let (pool, payee) = pools
            .clone()
            .map(|i| pools.start + (i - pools.start + offset) % pools.len() as u32)
            .filter(|&p| p != winner)
            .chain([winner])
            .find_map(|p| self.actors.last_address(p).map(|payee| (p, payee)))
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
