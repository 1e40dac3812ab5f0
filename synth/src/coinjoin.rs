//! CoinJoins: Whirlpool-like (tx0 premix, then 5 inputs -> 5 equal outputs), Wasabi-like
//! (dozens of participants, equal 0.1 BTC outputs plus change and a coordinator fee) and
//! JoinMarket-like (a taker and a few makers, equal outputs plus change).

use rand::Rng;

use crate::actors::ActorId;
use crate::dist;
use crate::economy::{BlockTxs, Economy, MAX_OUTPUT_WEIGHT};
use crate::keys::ScriptKind;
use crate::txbuild::{Dest, Tag, TxPlan};
use crate::wallet::Utxo;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoinJoinKind {
    Whirlpool,
    Wasabi,
    JoinMarket,
}

impl CoinJoinKind {
    pub fn name(self) -> &'static str {
        match self {
            CoinJoinKind::Whirlpool => "whirlpool",
            CoinJoinKind::Wasabi => "wasabi",
            CoinJoinKind::JoinMarket => "joinmarket",
        }
    }
}

/// Whirlpool pool denominations (sat): 0.001, 0.01, 0.05 and 0.5 BTC.
const WHIRLPOOL_DENOMS: [u64; 4] = [100_000, 1_000_000, 5_000_000, 50_000_000];
const WHIRLPOOL_POPULARITY: [(u8, f64); 4] = [(0, 0.3), (1, 0.35), (2, 0.25), (3, 0.1)];
const WHIRLPOOL_SIZE: usize = 5;
const PREMIX_QUEUE_MAX: usize = 60;
/// Virtual size each mix participant pays for (one P2WPKH input and output plus overhead).
const MIX_VBYTES_EACH: f64 = 110.0;
const WASABI_DENOM: u64 = 10_000_000;
/// Smaller change is left to the miner rather than creating an uneconomical coin.
pub const MIN_CHANGE: u64 = 50_000;
const WASABI_MIN: usize = 5;
const WASABI_PER_BLOCK: f64 = 0.15;
/// Wasabi's coordinator fee: 0.003% per anonymity-set member, 0.3% of the denomination here.
const WASABI_COORDINATOR_FEE: u64 = WASABI_DENOM * 3 / 1000;
const JOINMARKET_PER_BLOCK: f64 = 0.4;
const JOINMARKET_MAKERS: std::ops::Range<usize> = 3..9;

/// Premix coins waiting for a mix, per denomination, with their owners.
#[derive(Default)]
pub struct Whirlpool {
    queues: [Vec<(ActorId, Utxo)>; 4],
}

impl Whirlpool {
    pub fn enqueue(&mut self, denom: u8, owner: ActorId, utxo: Utxo) {
        self.queues[denom as usize].push((owner, utxo));
    }

    /// Five queued coins of distinct owners, oldest first.
    fn take_round(&mut self, denom: usize) -> Option<Vec<(ActorId, Utxo)>> {
        let queue = &mut self.queues[denom];
        let mut picked: Vec<usize> = Vec::new();
        for (i, (owner, _)) in queue.iter().enumerate() {
            if picked.iter().all(|&j| queue[j].0 != *owner) {
                picked.push(i);
            }
            if picked.len() == WHIRLPOOL_SIZE {
                let round = picked.iter().rev().map(|&j| queue.remove(j)).collect();
                return Some(round);
            }
        }
        None
    }
}

/// Someone putting coins into a Wasabi round: where the outputs go, how many equal outputs
/// they may take, and which illicit flow (if any) the coins belong to.
pub struct Participant {
    pub owner: ActorId,
    pub inputs: Vec<Utxo>,
    pub dest: Dest,
    pub taint: Option<u16>,
    pub max_equal: u64,
}

impl Participant {
    pub fn value(&self) -> u64 {
        self.inputs.iter().map(|u| u.value).sum()
    }

    /// Mining fee for the participant's inputs and two outputs, plus one coordinator fee.
    fn wasabi_cost(&self, rate: f64) -> u64 {
        let weight = self
            .inputs
            .iter()
            .map(|u| u.kind.input_weight())
            .sum::<u64>()
            + 2 * 124;
        dist::fee(rate, weight) + WASABI_COORDINATOR_FEE
    }

    /// Enough for one equal output after fees?
    pub fn can_afford_wasabi(&self, rate: f64) -> bool {
        self.value() >= WASABI_DENOM + self.wasabi_cost(rate)
    }
}

impl Economy {
    pub(crate) fn plan_coinjoins(&mut self, block: &mut BlockTxs) {
        for _ in 0..self.rng.gen_range(0..=3) {
            if let Some(tx) = self.tx0() {
                block.push(tx);
            }
        }
        for denom in 0..WHIRLPOOL_DENOMS.len() {
            while let Some(round) = self.whirlpool.take_round(denom) {
                let tx = self.whirlpool_mix(denom, round);
                block.push(tx);
            }
        }
        if self.rng.gen_bool(WASABI_PER_BLOCK) {
            let rate = self.fee_rate();
            if let Some(tx) = self.wasabi_round(rate, Vec::new()) {
                block.push(tx);
            }
        }
        if self.rng.gen_bool(JOINMARKET_PER_BLOCK) {
            if let Some(tx) = self.joinmarket() {
                block.push(tx);
            }
        }
    }

    /// Whirlpool's tx0: a user splits a coin into premix coins of denomination + mining fee,
    /// pays the coordinator and keeps the (toxic) change; it carries an OP_RETURN.
    fn tx0(&mut self) -> Option<TxPlan> {
        let denom = dist::pick(&mut self.rng, &WHIRLPOOL_POPULARITY);
        if self.whirlpool.queues[denom as usize].len() >= PREMIX_QUEUE_MAX {
            return None;
        }
        let value = WHIRLPOOL_DENOMS[denom as usize];
        let rate = self.fee_rate();
        let premix = value + (rate * MIX_VBYTES_EACH).ceil() as u64;
        let coordinator_fee = value / 20;
        let user = self.user_with_coins(1)?;
        let height = self.height;
        let inputs =
            self.actors
                .get_mut(user)
                .wallet
                .take_value(&mut self.rng, 2 * premix, 2, height)?;
        let total: u64 = inputs.iter().map(|u| u.value).sum();
        // Fee for the largest tx0 (ten premixes), so the count is settled before any payee.
        let fee = dist::fee(
            rate,
            50 + inputs.iter().map(|u| u.kind.input_weight()).sum::<u64>() + 13 * MAX_OUTPUT_WEIGHT,
        );
        let count = (total.saturating_sub(coordinator_fee + fee + dist::DUST) / premix).min(10);
        if count == 0 {
            self.actors.get_mut(user).wallet.give_back(inputs);
            return None;
        }
        let mut plan = self.tx(inputs, Tag::default());
        plan.push_op_return(self.rng.gen());
        let fee_payee = self.actors.fresh(ScriptKind::P2wpkh);
        plan.pay(
            coordinator_fee,
            fee_payee,
            self.actors.whirlpool,
            Dest::Wallet(self.actors.whirlpool),
        );
        for _ in 0..count {
            let payee = self.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(premix, payee, user, Dest::Premix(denom));
        }
        let change = self.actors.address(&mut self.rng, user);
        plan.pay(0, change, user, Dest::Wallet(user)).value =
            total - coordinator_fee - count * premix - fee;
        Some(plan)
    }

    /// Five premix coins in, five coins of exactly the denomination out, to fresh addresses.
    fn whirlpool_mix(&mut self, denom: usize, round: Vec<(ActorId, Utxo)>) -> TxPlan {
        let (owners, inputs): (Vec<ActorId>, Vec<Utxo>) = round.into_iter().unzip();
        let tag = Tag {
            coinjoin: Some(CoinJoinKind::Whirlpool),
            flow: None,
        };
        let mut plan = self.tx(inputs, tag);
        for owner in owners {
            let payee = self.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(WHIRLPOOL_DENOMS[denom], payee, owner, Dest::Wallet(owner));
        }
        plan
    }

    /// Users with at least the denomination plus fees join; `extra` participants (a thief
    /// laundering coins) join too. Each gets equal outputs and, if worth it, change.
    pub(crate) fn wasabi_round(&mut self, rate: f64, extra: Vec<Participant>) -> Option<TxPlan> {
        let wanted = self.rng.gen_range(20..=60);
        let mut participants = extra;
        let need =
            WASABI_DENOM + WASABI_COORDINATOR_FEE + dist::fee(rate, 3 * 272 + 2 * 124) + dist::DUST;
        let height = self.height;
        for _ in 0..4 * wanted {
            if participants.len() >= wanted {
                break;
            }
            let user = self.actors.random_user(&mut self.rng);
            let wallet = &mut self.actors.get_mut(user).wallet;
            if wallet.balance() < need {
                continue;
            }
            if let Some(inputs) = wallet.take_value(&mut self.rng, need, 3, height) {
                let p = Participant {
                    owner: user,
                    inputs,
                    dest: Dest::Wallet(user),
                    taint: None,
                    max_equal: 1,
                };
                if p.can_afford_wasabi(rate) {
                    participants.push(p);
                } else {
                    self.refund(p);
                }
            }
        }
        if participants.len() < WASABI_MIN {
            participants.into_iter().for_each(|p| self.refund(p));
            return None;
        }
        let flow = participants.iter().find_map(|p| p.taint);
        let tag = Tag {
            coinjoin: Some(CoinJoinKind::Wasabi),
            flow,
        };
        let mut plan = self.tx(Vec::new(), tag);
        let mut changes = Vec::new();
        let mut coordinator = 0;
        for p in participants {
            let total = p.value();
            let cost = p.wasabi_cost(rate);
            let equal =
                ((total - cost) / (WASABI_DENOM + WASABI_COORDINATOR_FEE)).clamp(1, p.max_equal);
            let rest = total - equal * WASABI_DENOM - cost - (equal - 1) * WASABI_COORDINATOR_FEE;
            coordinator += equal * WASABI_COORDINATOR_FEE;
            for _ in 0..equal {
                let payee = self.actors.fresh(ScriptKind::P2wpkh);
                plan.pay(WASABI_DENOM, payee, p.owner, p.dest).taint = p.taint;
            }
            if rest >= MIN_CHANGE {
                changes.push((rest, p.owner, p.dest, p.taint));
            }
            plan.inputs.extend(p.inputs);
        }
        for (value, owner, dest, taint) in changes {
            let payee = self.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(value, payee, owner, dest).taint = taint;
        }
        let payee = self.actors.fresh(ScriptKind::P2wpkh);
        plan.pay(
            coordinator,
            payee,
            self.actors.wasabi,
            Dest::Wallet(self.actors.wasabi),
        );
        Some(plan)
    }

    /// Gives a participant's coins back to wherever they came from.
    pub(crate) fn refund(&mut self, p: Participant) {
        match p.dest {
            Dest::Flow(flow) => self.flows.give_back(flow, p.inputs),
            _ => self.actors.get_mut(p.owner).wallet.give_back(p.inputs),
        }
    }

    /// A taker and 3-8 makers: one equal output each, makers earn a small fee from the taker.
    fn joinmarket(&mut self) -> Option<TxPlan> {
        let amount = dist::lognormal(&mut self.rng, 2_000_000.0, 1.0) as u64 + dist::DUST;
        let makers = self.rng.gen_range(JOINMARKET_MAKERS);
        let rate = self.fee_rate();
        let height = self.height;
        let tx_fee = dist::fee(rate, 60 + (makers as u64 + 1) * (3 * 593 + 2 * 124));
        let maker_fees: Vec<u64> = (0..makers)
            .map(|_| self.rng.gen_range(200..2_000))
            .collect();
        let taker_need = amount + tx_fee + maker_fees.iter().sum::<u64>() + dist::DUST;
        let mut joined: Vec<(ActorId, Vec<Utxo>, u64)> = Vec::new();
        for (i, need) in std::iter::once(taker_need)
            .chain(maker_fees.iter().map(|_| amount))
            .enumerate()
        {
            let found = (0..30).find_map(|_| {
                let user = self.actors.random_user(&mut self.rng);
                let wallet = &mut self.actors.get_mut(user).wallet;
                let fresh_owner = joined.iter().all(|j| j.0 != user);
                let inputs = (fresh_owner && wallet.balance() >= need)
                    .then(|| wallet.take_value(&mut self.rng, need, 3, height))??;
                Some((user, inputs, if i == 0 { 0 } else { maker_fees[i - 1] }))
            });
            match found {
                Some(participant) => joined.push(participant),
                None => {
                    for (user, inputs, _) in joined {
                        self.actors.get_mut(user).wallet.give_back(inputs);
                    }
                    return None;
                }
            }
        }
        let tag = Tag {
            coinjoin: Some(CoinJoinKind::JoinMarket),
            flow: None,
        };
        let mut plan = self.tx(Vec::new(), tag);
        for (user, _, _) in &joined {
            let payee = self.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(amount, payee, *user, Dest::Wallet(*user));
        }
        let paid_to_makers: u64 = maker_fees.iter().sum();
        for (i, (user, inputs, maker_fee)) in joined.into_iter().enumerate() {
            let total: u64 = inputs.iter().map(|u| u.value).sum();
            let change = if i == 0 {
                total - amount - paid_to_makers - tx_fee
            } else {
                total - amount + maker_fee
            };
            if change >= dist::DUST {
                let payee = self.actors.fresh(ScriptKind::P2wpkh);
                plan.pay(change, payee, user, Dest::Wallet(user));
            }
            plan.inputs.extend(inputs);
        }
        Some(plan)
    }
}
