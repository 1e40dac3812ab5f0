//! What every planner of a block shares: the actors and their coins, the randomness, the
//! height and fee level of the block being planned, and how transactions are started, paid
//! and checked for affordability.
//!
//! The CoinJoin, peeling-chain and illicit-flow planners each keep their own state and take a
//! `&mut Market`, so none of them depends on the economy that holds them all.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::actors::{ActorId, Actors, Payee};
use crate::dist;
use crate::keys::{mix64, KeyId, ScriptKind};
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

pub struct Market {
    pub rng: ChaCha8Rng,
    pub actors: Actors,
    pub height: u32,
    /// Fee-rate level of the mempool for the block being planned.
    pub fee_level: f64,
    /// Coins held by anyone; planning steers it between bounds so memory stays flat.
    pub coins: usize,
    next_seed: u64,
    /// Next id of a planted pattern instance (truth/patterns.csv); counting draws nothing
    /// from `rng`, so it changes no chain.
    next_instance: u32,
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

impl Market {
    pub fn new(seed: u64, whale_share: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(mix64(seed ^ 0xec0));
        let actors = Actors::new(&mut rng, whale_share);
        Market {
            rng,
            actors,
            height: 0,
            fee_level: 1.0,
            coins: 0,
            next_seed: 0,
            next_instance: 0,
            salt: mix64(seed),
        }
    }

    /// A new transaction with the version/locktime/sequence habits of the wallet that makes it:
    /// Core-like wallets use version 2, anti-fee-sniping locktimes and RBF; older ones don't.
    pub fn tx(&mut self, inputs: Vec<Utxo>, tag: Tag) -> TxPlan {
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

    /// A new id for a pattern instance, unique across all kinds.
    pub fn new_instance(&mut self) -> u32 {
        self.next_instance += 1;
        self.next_instance - 1
    }

    pub fn fee_rate(&mut self) -> f64 {
        dist::fee_rate(&mut self.rng, self.fee_level)
    }

    /// A random user holding at least `min_coins` coins, if one turns up quickly.
    pub fn user_with_coins(&mut self, min_coins: usize) -> Option<ActorId> {
        (0..20)
            .map(|_| self.actors.random_user(&mut self.rng))
            .find(|&u| self.actors.get(u).wallet.len() >= min_coins)
    }
}
