//! CoinJoins: Whirlpool-like (tx0 premix, then 5 inputs -> 5 equal outputs), Wasabi-like
//! (dozens of participants, equal 0.1 BTC outputs plus change and a coordinator fee) and
//! JoinMarket-like (a taker and a few makers, equal outputs plus change).

use rand::Rng;
use satflow_schema::coinjoin::{WASABI1_DENOM, WHIRLPOOL_POOLS};

use crate::actors::ActorId;
use crate::dist;
use crate::keys::ScriptKind;
use crate::market::{BlockTxs, Market, MAX_OUTPUT_WEIGHT};
use crate::txbuild::{CoinJoinKind, Dest, Tag, TxPlan};
use crate::wallet::Utxo;

const WHIRLPOOL_POPULARITY: [(u8, f64); 4] = [(0, 0.3), (1, 0.35), (2, 0.25), (3, 0.1)];
const WHIRLPOOL_SIZE: usize = 5;
const PREMIX_QUEUE_MAX: usize = 60;
/// Virtual size each mix participant pays for (one P2WPKH input and output plus overhead).
const MIX_VBYTES_EACH: f64 = 110.0;
/// Smaller change is left to the miner rather than creating an uneconomical coin.
pub const MIN_CHANGE: u64 = 50_000;
const WASABI_MIN: usize = 5;
const WASABI_PER_BLOCK: f64 = 0.15;
/// Wasabi's coordinator fee: 0.003% per anonymity-set member, 0.3% of the denomination here.
pub const WASABI_COORDINATOR_FEE: u64 = WASABI1_DENOM * 3 / 1000;
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
        self.value() >= WASABI1_DENOM + self.wasabi_cost(rate)
    }
}

/// Plans a block's CoinJoins: Whirlpool tx0s and mixes, perhaps a Wasabi and a JoinMarket round.
pub fn plan(m: &mut Market, whirlpool: &mut Whirlpool, block: &mut BlockTxs) {
    whirlpool.plan(m, block);
    if m.rng.gen_bool(WASABI_PER_BLOCK) {
        let rate = m.fee_rate();
        if let Ok(tx) = wasabi_round(m, rate, Vec::new()) {
            block.push(tx);
        }
    }
    if m.rng.gen_bool(JOINMARKET_PER_BLOCK) {
        if let Some(tx) = joinmarket(m) {
            block.push(tx);
        }
    }
}

impl Whirlpool {
    /// Up to three tx0s, then a mix for every queue that holds coins of five owners.
    fn plan(&mut self, m: &mut Market, block: &mut BlockTxs) {
        for _ in 0..m.rng.gen_range(0..=3) {
            if let Some(tx) = self.tx0(m) {
                block.push(tx);
            }
        }
        for denom in 0..WHIRLPOOL_POOLS.len() {
            while let Some(round) = self.take_round(denom) {
                block.push(mix(m, denom, round));
            }
        }
    }

    /// Whirlpool's tx0: a user splits a coin into premix coins of denomination + mining fee,
    /// pays the coordinator and keeps the (toxic) change; it carries an OP_RETURN.
    fn tx0(&self, m: &mut Market) -> Option<TxPlan> {
        let denom = dist::pick(&mut m.rng, &WHIRLPOOL_POPULARITY);
        if self.queues[denom as usize].len() >= PREMIX_QUEUE_MAX {
            return None;
        }
        let value = WHIRLPOOL_POOLS[denom as usize];
        let rate = m.fee_rate();
        let premix = value + (rate * MIX_VBYTES_EACH).ceil() as u64;
        let coordinator_fee = value / 20;
        let user = m.user_with_coins(1)?;
        let height = m.height;
        let inputs = m
            .actors
            .get_mut(user)
            .wallet
            .take_value(&mut m.rng, 2 * premix, 2, height)?;
        let total: u64 = inputs.iter().map(|u| u.value).sum();
        // Fee for the largest tx0 (ten premixes), so the count is settled before any payee.
        let fee = dist::fee(
            rate,
            50 + inputs.iter().map(|u| u.kind.input_weight()).sum::<u64>() + 13 * MAX_OUTPUT_WEIGHT,
        );
        let count = (total.saturating_sub(coordinator_fee + fee + dist::DUST) / premix).min(10);
        if count == 0 {
            m.actors.get_mut(user).wallet.give_back(inputs);
            return None;
        }
        let mut plan = m.tx(inputs, Tag::default());
        plan.push_op_return(m.rng.gen());
        let whirlpool = m.actors.whirlpool;
        pay_coordinator(m, &mut plan, coordinator_fee, whirlpool);
        for _ in 0..count {
            let payee = m.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(premix, payee, user, Dest::Premix(denom));
        }
        let change = m.actors.address(&mut m.rng, user);
        plan.pay(0, change, user, Dest::Wallet(user)).value =
            total - coordinator_fee - count * premix - fee;
        Some(plan)
    }
}

/// What a tx0 of `count` premix coins of pool `denom` at `rate` costs, from one coin of
/// `input` kind, leaving at least DUST of change: what a planted participant withdraws.
pub fn tx0_need(denom: u8, count: u64, rate: f64, input: ScriptKind) -> u64 {
    let value = WHIRLPOOL_POOLS[denom as usize];
    let premix = value + (rate * MIX_VBYTES_EACH).ceil() as u64;
    let fee = dist::fee(
        rate,
        50 + input.input_weight() + (count + 3) * MAX_OUTPUT_WEIGHT,
    );
    value / 20 + count * premix + fee + dist::DUST
}

/// The tx0 of a planted participant `owner` (patterns.rs): `count` premix coins of pool
/// `denom` (queued as `owner`'s, so each goes to a different mix whose output comes back to
/// `owner`'s wallet), the coordinator fee and the change to a fresh address of `owner`,
/// never worth exactly the denomination. None if `inputs` (still the caller's) fall short at
/// `rate`.
pub fn planted_tx0(
    m: &mut Market,
    rng: &mut impl Rng,
    owner: ActorId,
    inputs: &[Utxo],
    denom: u8,
    count: u64,
    rate: f64,
) -> Option<TxPlan> {
    let value = WHIRLPOOL_POOLS[denom as usize];
    let premix = value + (rate * MIX_VBYTES_EACH).ceil() as u64;
    let coordinator_fee = value / 20;
    let total: u64 = inputs.iter().map(|u| u.value).sum();
    let fee = dist::fee(
        rate,
        50 + inputs.iter().map(|u| u.kind.input_weight()).sum::<u64>()
            + (count + 3) * MAX_OUTPUT_WEIGHT,
    );
    let mut change = total
        .checked_sub(coordinator_fee + count * premix + fee)
        .filter(|&c| c > dist::DUST)?;
    if change == value {
        change -= 1; // to the miner: only the mixes' outputs are worth the denomination
    }
    let mut plan = m.tx(inputs.to_vec(), Tag::default());
    plan.push_op_return(rng.gen());
    let whirlpool = m.actors.whirlpool;
    pay_coordinator(m, &mut plan, coordinator_fee, whirlpool);
    for _ in 0..count {
        let payee = m.actors.fresh(ScriptKind::P2wpkh);
        plan.pay(premix, payee, owner, Dest::Premix(denom));
    }
    let payee = m.actors.address(rng, owner);
    plan.pay(change, payee, owner, Dest::Wallet(owner));
    Some(plan)
}

/// What a Wasabi participant needs for `equal` outputs at `rate` from one coin of `input`
/// kind (`wasabi_round` counts one coordinator fee more than it charges before it divides).
pub fn wasabi_need(equal: u64, rate: f64, input: ScriptKind) -> u64 {
    let mining = dist::fee(rate, input.input_weight() + 2 * 124);
    equal * (WASABI1_DENOM + WASABI_COORDINATOR_FEE) + WASABI_COORDINATOR_FEE + mining
}

/// Five premix coins in, five coins of exactly the denomination out, to fresh addresses.
fn mix(m: &mut Market, denom: usize, round: Vec<(ActorId, Utxo)>) -> TxPlan {
    let (owners, inputs): (Vec<ActorId>, Vec<Utxo>) = round.into_iter().unzip();
    let tag = Tag {
        coinjoin: Some(CoinJoinKind::Whirlpool),
        flow: None,
        pattern: None,
    };
    let mut plan = m.tx(inputs, tag);
    for owner in owners {
        let payee = m.actors.fresh(ScriptKind::P2wpkh);
        plan.pay(WHIRLPOOL_POOLS[denom], payee, owner, Dest::Wallet(owner));
    }
    plan
}

/// Users with at least the denomination plus fees join; `extra` participants (a thief
/// laundering coins) join too. Each gets equal outputs and, if worth it, change. With too few
/// participants the users take their coins back and `extra` is handed back to the caller.
pub fn wasabi_round(
    m: &mut Market,
    rate: f64,
    extra: Vec<Participant>,
) -> Result<TxPlan, Vec<Participant>> {
    let wanted = m.rng.gen_range(20..=60);
    let extras = extra.len();
    let mut participants = extra;
    let need =
        WASABI1_DENOM + WASABI_COORDINATOR_FEE + dist::fee(rate, 3 * 272 + 2 * 124) + dist::DUST;
    let height = m.height;
    for _ in 0..4 * wanted {
        if participants.len() >= wanted {
            break;
        }
        let user = m.actors.random_user(&mut m.rng);
        let wallet = &mut m.actors.get_mut(user).wallet;
        if wallet.balance() < need {
            continue;
        }
        if let Some(inputs) = wallet.take_value(&mut m.rng, need, 3, height) {
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
                wallet.give_back(p.inputs);
            }
        }
    }
    if participants.len() < WASABI_MIN {
        for user in participants.split_off(extras) {
            m.actors.get_mut(user.owner).wallet.give_back(user.inputs);
        }
        return Err(participants);
    }
    let flow = participants.iter().find_map(|p| p.taint);
    let tag = Tag {
        coinjoin: Some(CoinJoinKind::Wasabi),
        flow,
        pattern: None,
    };
    let mut plan = m.tx(Vec::new(), tag);
    let mut changes = Vec::new();
    let mut coordinator = 0;
    for p in participants {
        let total = p.value();
        let cost = p.wasabi_cost(rate);
        let equal =
            ((total - cost) / (WASABI1_DENOM + WASABI_COORDINATOR_FEE)).clamp(1, p.max_equal);
        let rest = total - equal * WASABI1_DENOM - cost - (equal - 1) * WASABI_COORDINATOR_FEE;
        coordinator += equal * WASABI_COORDINATOR_FEE;
        for _ in 0..equal {
            let payee = m.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(WASABI1_DENOM, payee, p.owner, p.dest).taint = p.taint;
        }
        if rest >= MIN_CHANGE {
            changes.push((rest, p.owner, p.dest, p.taint));
        }
        plan.inputs.extend(p.inputs);
    }
    for (value, owner, dest, taint) in changes {
        let payee = m.actors.fresh(ScriptKind::P2wpkh);
        plan.pay(value, payee, owner, dest).taint = taint;
    }
    let wasabi = m.actors.wasabi;
    pay_coordinator(m, &mut plan, coordinator, wasabi);
    Ok(plan)
}

/// The coordinator's fee, to a fresh address of the coordinator.
fn pay_coordinator(m: &mut Market, plan: &mut TxPlan, fee: u64, coordinator: ActorId) {
    let payee = m.actors.fresh(ScriptKind::P2wpkh);
    plan.pay(fee, payee, coordinator, Dest::Wallet(coordinator));
}

/// A taker and 3-8 makers: one equal output each, makers earn a small fee from the taker.
fn joinmarket(m: &mut Market) -> Option<TxPlan> {
    let amount = dist::lognormal(&mut m.rng, 2_000_000.0, 1.0) as u64 + dist::DUST;
    let makers = m.rng.gen_range(JOINMARKET_MAKERS);
    let rate = m.fee_rate();
    let height = m.height;
    let tx_fee = dist::fee(rate, 60 + (makers as u64 + 1) * (3 * 593 + 2 * 124));
    let maker_fees: Vec<u64> = (0..makers).map(|_| m.rng.gen_range(200..2_000)).collect();
    let taker_need = amount + tx_fee + maker_fees.iter().sum::<u64>() + dist::DUST;
    let mut joined: Vec<(ActorId, Vec<Utxo>, u64)> = Vec::new();
    for (i, need) in std::iter::once(taker_need)
        .chain(maker_fees.iter().map(|_| amount))
        .enumerate()
    {
        let found = (0..30).find_map(|_| {
            let user = m.actors.random_user(&mut m.rng);
            let wallet = &mut m.actors.get_mut(user).wallet;
            let fresh_owner = joined.iter().all(|j| j.0 != user);
            let inputs = (fresh_owner && wallet.balance() >= need)
                .then(|| wallet.take_value(&mut m.rng, need, 3, height))??;
            Some((user, inputs, if i == 0 { 0 } else { maker_fees[i - 1] }))
        });
        match found {
            Some(participant) => joined.push(participant),
            None => {
                for (user, inputs, _) in joined {
                    m.actors.get_mut(user).wallet.give_back(inputs);
                }
                return None;
            }
        }
    }
    let tag = Tag {
        coinjoin: Some(CoinJoinKind::JoinMarket),
        flow: None,
        pattern: None,
    };
    let mut plan = m.tx(Vec::new(), tag);
    for (user, _, _) in &joined {
        let payee = m.actors.fresh(ScriptKind::P2wpkh);
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
            let payee = m.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(change, payee, user, Dest::Wallet(user));
        }
        plan.inputs.extend(inputs);
    }
    Some(plan)
}
