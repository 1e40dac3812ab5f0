//! `--plant-patterns`: labelled instances of suspicious patterns, for measuring detectors'
//! precision and recall against `truth/patterns.csv` (synth/README.md lists each kind and its
//! parameter ranges). Every instance has an actor of its own (`layerer-N`, `structurer-N`, …)
//! whose wallet holds the instance's coins between steps; peel chains (peel.rs) are listed in
//! the same file, flag or not.
//!
//! Every decision here draws from a random stream of its own, seeded from the seed; without
//! the flag this planner does not exist, so the market's stream and the chain stay what they
//! were. With it, the planted transactions move coins the rest of the economy would have moved
//! and draw from the market's stream (`Market::tx`, fee rates, CoinJoin rounds), so the whole
//! chain differs from the one without.
//!
//! A step runs in a block planned at least two blocks after the one holding the coins it
//! spends (coins are spendable two blocks after the block that creates them).

use std::collections::HashSet;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satflow_schema::coinjoin::{WASABI1_DENOM, WHIRLPOOL_POOLS};

use crate::actors::{ActorId, ActorKind, Payee};
use crate::coinjoin::{self, Participant};
use crate::dist;
use crate::keys::{KeyId, ScriptKind};
use crate::market::{BlockTxs, Market, MAX_OUTPUT_WEIGHT, MAX_TX_WEIGHT};
use crate::txbuild::{Dest, PatternKind, Tag, TxPlan};
use crate::wallet::Utxo;

/// The first instances start once the economy is running (blocks are full from ~105).
pub(crate) const FIRST_START: u32 = 106;
/// Blocks from one start of a kind to the next (uniform; a start that finds no coins is
/// tried again in the next block).
const START_EVERY: std::ops::RangeInclusive<u32> = 1..=6;
/// A step is put off to the next block when less room than this is left in the block.
pub(crate) const ROOM: u64 = 2 * MAX_TX_WEIGHT;
/// Largest input of any script kind (P2PKH with a 72-byte signature).
pub(crate) const MAX_INPUT_WEIGHT: u64 = 593;
/// Fee rate the funding of CoinJoin participants and dusters is sized for; their CoinJoin
/// and dust transactions pay at most this.
pub(crate) const FUNDED_RATE: f64 = 50.0;
/// Fees of planted transactions stay under this share of what they move.
const MAX_FEE_SHARE: f64 = 0.03;
/// Script types of the planted actors' own addresses.
const SCRIPTS: [(ScriptKind, f64); 5] = [
    (ScriptKind::P2wpkh, 0.5),
    (ScriptKind::P2tr, 0.2),
    (ScriptKind::P2pkh, 0.12),
    (ScriptKind::P2sh, 0.12),
    (ScriptKind::P2wsh, 0.06),
];
/// Whirlpool pools a planted participant joins (0.001, 0.01, 0.05 BTC), by popularity.
const WHIRLPOOL_DENOMS: [(u8, f64); 3] = [(0, 0.35), (1, 0.45), (2, 0.2)];
/// A Whirlpool participant waits at most this long for its premix coins to be mixed.
const MIX_DEADLINE: u32 = 150;
/// Tries to find a Wasabi round before a participant gives up.
const WASABI_TRIES: u32 = 40;

/// The kinds this planner starts: all but peel chains, the first kind,
/// which run on their own (peel.rs).
const PLANTED: &[PatternKind] = match PatternKind::ALL.split_first() {
    Some((PatternKind::PeelChain, rest)) => rest,
    _ => panic!("peel chains come first in PatternKind::ALL"),
};

fn actor_kind(kind: PatternKind) -> ActorKind {
    match kind {
        PatternKind::Layering => ActorKind::Layerer,
        PatternKind::FanOutIn => ActorKind::Structurer,
        PatternKind::FanIn => ActorKind::Collector,
        PatternKind::Dusting => ActorKind::Duster,
        PatternKind::CoinJoinReunion => ActorKind::Reuniter,
        PatternKind::CoinJoinToExchange => ActorKind::MixCasher,
        PatternKind::PeelChain => unreachable!("peel chains have peelers"),
    }
}

/// Which CoinJoin a participant joins.
#[derive(Clone, Copy)]
enum Mix {
    /// A tx0 of `count` premix coins of pool `denom`, each mixed in its own round.
    Whirlpool { denom: u8, count: u64 },
    /// One Wasabi round taking `equal` equal outputs.
    Wasabi { equal: u64 },
}

impl Mix {
    /// Value of the equal outputs the participant gets back.
    fn denomination(self) -> u64 {
        match self {
            Mix::Whirlpool { denom, .. } => WHIRLPOOL_POOLS[denom as usize],
            Mix::Wasabi { .. } => WASABI1_DENOM,
        }
    }
}

/// Where a CoinJoin participant is.
enum Joining {
    /// The funding withdrawal worth `funded` is on its way.
    Funding { funded: u64 },
    /// The tx0 or round is in; waiting for the equal outputs since `since`.
    Mixing { since: u32 },
}

/// A planted CoinJoin participant.
struct Participation {
    mix: Mix,
    joining: Joining,
    /// Blocks in which no Wasabi round could be made.
    tries: u32,
}

enum State {
    /// `done` of `hops` hops made; the coin to move next is worth `coin`.
    Layering { hops: u32, done: u32, coin: u64 },
    /// Before the split, the funding coin is worth `coin`; `split` is the split's height.
    FanOutIn {
        outputs: u32,
        spread: f64,
        coin: u64,
        gap: u32,
        split: Option<u32>,
    },
    /// Payments still to make at `schedule` heights, to the collector's `addresses` (and
    /// whether each has been paid before); `paid` made by `payers`.
    FanIn {
        addresses: Vec<(KeyId, bool)>,
        schedule: Vec<u32>,
        payers: HashSet<ActorId>,
        paid: usize,
        last_paid: u32,
    },
    /// The funding coin is worth `coin`; the dust goes to `targets` users.
    Dusting { targets: usize, coin: u64 },
    /// Reunites `reunite` equal outputs; `held` once they are out of the mix.
    Reunion {
        join: Participation,
        reunite: usize,
        held: Vec<Utxo>,
    },
    /// Moves one equal output in `hops` hops to an exchange at the heights of `schedule`;
    /// `held` is the output once mixed, `coin` the value of the hop output to move next.
    CashOut {
        join: Participation,
        hops: u32,
        schedule: Vec<u32>,
        held: Option<Utxo>,
        coin: u64,
    },
}

struct Job {
    kind: PatternKind,
    instance: u32,
    actor: ActorId,
    /// Height of the next step.
    due: u32,
    state: State,
}

/// What a step left of its job.
#[derive(PartialEq, Eq)]
enum Step {
    Keep,
    /// The instance is complete, or abandoned (its unfinished rows never reach the truth).
    Done,
}

pub struct Patterns {
    rng: ChaCha8Rng,
    /// Height of the next start of each kind of `PLANTED`.
    next_start: [u32; PLANTED.len()],
    /// Actors created so far per kind, for their names.
    named: [u32; PLANTED.len()],
    jobs: Vec<Job>,
}

/// An integer between `lo` and `hi`, log-uniform, so short waits and small counts are common
/// while the whole range occurs.
pub(crate) fn log_uniform(rng: &mut impl Rng, lo: u32, hi: u32) -> u32 {
    let x = lo as f64 * ((hi as f64 + 1.0) / lo as f64).powf(rng.gen::<f64>());
    (x.floor() as u32).clamp(lo, hi)
}

/// Smallest standard output value of a script kind (Core's dust limit at 3 sat/vB).
fn dust_limit(kind: ScriptKind) -> u64 {
    match kind {
        ScriptKind::P2wpkh => 294,
        ScriptKind::P2tr | ScriptKind::P2wsh => 330,
        ScriptKind::P2sh => 540,
        _ => 546,
    }
}

/// Sets output `out` of `plan` to what the inputs leave after the fee: the market's rate,
/// capped so the fee stays under `MAX_FEE_SHARE` of the inputs (and at `FUNDED_RATE`).
pub(crate) fn settle(m: &mut Market, plan: &mut TxPlan, out: usize) {
    let vsize = plan.weight_bound().div_ceil(4) as f64;
    let cap = plan.input_value() as f64 * MAX_FEE_SHARE / vsize;
    let rate = m.fee_rate().min(cap).clamp(1.0, FUNDED_RATE);
    plan.outputs[out].value = 0;
    plan.outputs[out].value = plan
        .available(rate)
        .expect("planted coins cover their fees");
}

impl Patterns {
    pub fn new(seed: u64) -> Self {
        Patterns {
            rng: ChaCha8Rng::seed_from_u64(crate::keys::mix64(seed ^ 0x9a77_e2a5)),
            next_start: [FIRST_START; PLANTED.len()],
            named: [0; PLANTED.len()],
            jobs: Vec::new(),
        }
    }

    /// Starts the instances that are due and takes every step that is.
    pub fn plan(&mut self, m: &mut Market, block: &mut BlockTxs) {
        for (i, &kind) in PLANTED.iter().enumerate() {
            if self.next_start[i] <= m.height && block.left >= ROOM {
                if self.start(m, block, i, kind) {
                    self.next_start[i] = m.height + self.rng.gen_range(START_EVERY);
                } else {
                    self.next_start[i] = m.height + 1;
                }
            }
        }
        let mut jobs = std::mem::take(&mut self.jobs);
        jobs.retain_mut(|job| {
            if job.due > m.height {
                return true;
            }
            if block.left < ROOM {
                job.due = m.height + 1;
                return true;
            }
            self.step(m, block, job) == Step::Keep
        });
        self.jobs = jobs;
    }

    /// A new actor of the kind that plants `kind`.
    fn new_actor(&mut self, m: &mut Market, i: usize, kind: PatternKind) -> ActorId {
        let actor_kind = actor_kind(kind);
        let name = format!("{}-{}", actor_kind.name(), self.named[i]);
        self.named[i] += 1;
        let script = dist::pick(&mut self.rng, &SCRIPTS);
        m.actors.add(actor_kind, name, script)
    }

    /// With probability `chance`, a payment to a random user of a share
    /// (drawn from `shares`) of what `plan` spends.
    fn maybe_pay_user(
        &mut self,
        m: &mut Market,
        plan: &mut TxPlan,
        chance: f64,
        shares: std::ops::Range<f64>,
    ) {
        if self.rng.gen_bool(chance) {
            let share = self.rng.gen_range(shares);
            let user = m.actors.random_user(&mut self.rng);
            let payee = m.actors.address(&mut self.rng, user);
            let value = (plan.input_value() as f64 * share) as u64;
            plan.pay(value, payee, user, Dest::Wallet(user));
        }
    }

    /// A fresh address of a planted actor (they never reuse one).
    fn address(&mut self, m: &mut Market, actor: ActorId) -> Payee {
        m.actors.address(&mut self.rng, actor)
    }

    /// Coins for a withdrawal of `value` (plus its fee at `rate`): an exchange's, or if
    /// `from_user` a user's (for a layerer: an illicit source, a victim); the other source's
    /// if the first has none. Nothing is handed out before the coins are found.
    fn find_funds(
        &mut self,
        m: &mut Market,
        value: u64,
        rate: f64,
        from_user: bool,
    ) -> Option<(ActorId, Vec<Utxo>)> {
        let need =
            value + dist::fee(rate, 50 + 4 * MAX_INPUT_WEIGHT + 2 * MAX_OUTPUT_WEIGHT) + dist::DUST;
        let height = m.height;
        for user in [from_user, !from_user] {
            let payer = (0..30)
                .map(|_| {
                    if user {
                        m.actors.random_user(&mut self.rng)
                    } else {
                        m.actors.random_exchange(&mut self.rng)
                    }
                })
                .find(|&p| m.actors.get(p).wallet.balance() >= 2 * need);
            let Some(payer) = payer else { continue };
            let wallet = &mut m.actors.get_mut(payer).wallet;
            if let Some(inputs) = wallet.take_value(&mut self.rng, need, 4, height) {
                return Some((payer, inputs));
            }
        }
        None
    }

    /// Draws an instance of `kind` and makes its first transaction (a funding withdrawal, or
    /// a first payment); false if there were no coins for it this block (then no actor is
    /// created: the next try draws anew).
    fn start(&mut self, m: &mut Market, block: &mut BlockTxs, i: usize, kind: PatternKind) -> bool {
        let rng = &mut self.rng;
        // CoinJoin participants are funded for their largest possible input.
        let script = ScriptKind::P2pkh;
        let (value, from_user, state) = match kind {
            PatternKind::Layering => {
                // An illicit source (a victim's payment) is smaller than a withdrawal.
                let from_user = rng.gen_bool(0.4);
                let median = if from_user { 5_000_000.0 } else { 50_000_000.0 };
                let value =
                    (dist::lognormal(rng, median, 1.0) as u64).clamp(2_000_000, 2_000_000_000);
                let state = State::Layering {
                    hops: rng.gen_range(3..=12),
                    done: 0,
                    coin: value,
                };
                (value, from_user, state)
            }
            PatternKind::FanOutIn => {
                let outputs = rng.gen_range(4..=40);
                let base =
                    (dist::lognormal(rng, 2_000_000.0, 0.9) as u64).clamp(200_000, 50_000_000);
                let value = outputs as u64 * base;
                let state = State::FanOutIn {
                    outputs,
                    spread: rng.gen_range(0.02..0.11),
                    coin: value,
                    gap: log_uniform(rng, 2, 50),
                    split: None,
                };
                (value, false, state)
            }
            PatternKind::FanIn => {
                // No funding: the users' payments are the first transactions.
                let payments = rng.gen_range(15..=80);
                let window = log_uniform(rng, 5, 100);
                let mut schedule: Vec<u32> = (0..payments)
                    .map(|_| m.height + rng.gen_range(0..window))
                    .collect();
                schedule.sort_unstable();
                let address_count = rng.gen_range(1..=4);
                let actor = self.new_actor(m, i, kind);
                let addresses = (0..address_count)
                    .map(|_| (self.address(m, actor).key, false))
                    .collect();
                let due = schedule[0];
                self.jobs.push(Job {
                    kind,
                    instance: m.new_instance(),
                    actor,
                    due,
                    state: State::FanIn {
                        addresses,
                        schedule,
                        payers: HashSet::new(),
                        paid: 0,
                        last_paid: 0,
                    },
                });
                return true;
            }
            PatternKind::Dusting => {
                let targets = log_uniform(rng, 10, 300) as usize;
                let weight = 50 + MAX_INPUT_WEIGHT + (targets as u64 + 1) * MAX_OUTPUT_WEIGHT;
                let value = targets as u64 * 1_000
                    + dist::fee(FUNDED_RATE, weight)
                    + rng.gen_range(20_000..2_000_000);
                let state = State::Dusting {
                    targets,
                    coin: value,
                };
                (value, rng.gen_bool(0.3), state)
            }
            PatternKind::CoinJoinReunion | PatternKind::CoinJoinToExchange => {
                let reunion = kind == PatternKind::CoinJoinReunion;
                let equal = if reunion { rng.gen_range(2..=5) } else { 1 };
                let (mix, need) = if rng.gen_bool(0.5) {
                    let denom = dist::pick(rng, &WHIRLPOOL_DENOMS);
                    // A reuniter sometimes mixes one coin more than it reunites.
                    let count = equal + u64::from(reunion && rng.gen_bool(0.3));
                    let need = coinjoin::tx0_need(denom, count, FUNDED_RATE, script);
                    (Mix::Whirlpool { denom, count }, need)
                } else {
                    let need = coinjoin::wasabi_need(equal, FUNDED_RATE, script);
                    (Mix::Wasabi { equal }, need)
                };
                // Some change, never as much as an equal output.
                let funded = need + rng.gen_range(0..mix.denomination() / 2);
                let join = Participation {
                    mix,
                    joining: Joining::Funding { funded },
                    tries: 0,
                };
                let state = if reunion {
                    State::Reunion {
                        join,
                        reunite: equal as usize,
                        held: Vec::new(),
                    }
                } else {
                    State::CashOut {
                        join,
                        hops: rng.gen_range(1..=3),
                        schedule: Vec::new(),
                        held: None,
                        coin: 0,
                    }
                };
                (funded, rng.gen_bool(0.3), state)
            }
            PatternKind::PeelChain => unreachable!("peel chains start in peel.rs"),
        };
        let rate = m.fee_rate().min(FUNDED_RATE);
        let Some((payer, inputs)) = self.find_funds(m, value, rate, from_user) else {
            return false;
        };
        let actor = self.new_actor(m, i, kind);
        let mut plan = m.tx(inputs, Tag::default());
        let payee = self.address(m, actor);
        plan.pay(value, payee, actor, Dest::Wallet(actor));
        let change = m.actors.address(&mut self.rng, payer);
        plan.pay(0, change, payer, Dest::Wallet(payer)).value =
            plan.available(rate).expect("fee bounded above");
        block.push(plan);
        self.jobs.push(Job {
            kind,
            instance: m.new_instance(),
            actor,
            due: m.height + 2,
            state,
        });
        true
    }

    fn step(&mut self, m: &mut Market, block: &mut BlockTxs, job: &mut Job) -> Step {
        match job.kind {
            PatternKind::Layering => self.layering(m, block, job),
            PatternKind::FanOutIn => self.fan_out_in(m, block, job),
            PatternKind::FanIn => self.fan_in(m, block, job),
            PatternKind::Dusting => self.dusting(m, block, job),
            PatternKind::CoinJoinReunion => self.reunion(m, block, job),
            PatternKind::CoinJoinToExchange => self.cash_out(m, block, job),
            PatternKind::PeelChain => unreachable!("peel chains step in peel.rs"),
        }
    }

    /// The coin of `actor` worth exactly `value` (what the last step paid it), once committed.
    fn take_coin(m: &mut Market, actor: ActorId, value: u64) -> Option<Utxo> {
        let wallet = &mut m.actors.get_mut(actor).wallet;
        wallet.take_matching(1, |u| u.value == value).pop()
    }

    /// One hop: the coin to a fresh address of the layerer (the last hop: to a fresh deposit
    /// address at an exchange), sometimes with a change output of at most 2% of its value.
    fn layering(&mut self, m: &mut Market, block: &mut BlockTxs, job: &mut Job) -> Step {
        let State::Layering { hops, done, coin } = &mut job.state else {
            unreachable!("a layering job")
        };
        let Some(input) = Self::take_coin(m, job.actor, *coin) else {
            job.due = m.height + 1;
            return Step::Keep;
        };
        let last = *done + 1 == *hops;
        let tag = Tag::pattern(job.kind, job.instance, last);
        let mut plan = m.tx(vec![input], tag);
        if last {
            let exchange = m.actors.random_exchange(&mut self.rng);
            let payee = m.actors.fresh_deposit(exchange);
            plan.pay(0, payee, exchange, Dest::Deposits(exchange));
        } else {
            let payee = self.address(m, job.actor);
            plan.pay(0, payee, job.actor, Dest::Wallet(job.actor));
        }
        if self.rng.gen_bool(0.3) {
            let change = (input.value as f64 * self.rng.gen_range(0.001..0.02)) as u64;
            let payee = self.address(m, job.actor);
            plan.pay(
                change.max(dist::DUST),
                payee,
                job.actor,
                Dest::Wallet(job.actor),
            );
        }
        settle(m, &mut plan, 0);
        (*done, *coin) = (*done + 1, plan.outputs[0].value);
        block.push(plan);
        job.due = m.height + 2 + self.rng.gen_range(0..=3);
        if last {
            Step::Done
        } else {
            Step::Keep
        }
    }

    /// The split (one coin into similar outputs), then `gap` blocks later the sweep of all of
    /// them, or of all but one or two, into one or two outputs.
    fn fan_out_in(&mut self, m: &mut Market, block: &mut BlockTxs, job: &mut Job) -> Step {
        let State::FanOutIn {
            outputs,
            spread,
            coin,
            gap,
            split,
        } = &mut job.state
        else {
            unreachable!("a fan-out-in job")
        };
        let actor = job.actor;
        let Some(split_height) = *split else {
            let Some(input) = Self::take_coin(m, actor, *coin) else {
                job.due = m.height + 1;
                return Step::Keep;
            };
            let mut plan = m.tx(vec![input], Tag::pattern(job.kind, job.instance, false));
            for _ in 0..*outputs {
                let payee = self.address(m, actor);
                plan.pay(0, payee, actor, Dest::Wallet(actor));
            }
            // Each output is base × (1 ± spread): any two within 25% of each other.
            settle(m, &mut plan, 0);
            let available = plan.outputs[0].value;
            let weights: Vec<f64> = (0..*outputs)
                .map(|_| 1.0 + self.rng.gen_range(-*spread..*spread))
                .collect();
            let base = available as f64 / weights.iter().sum::<f64>();
            for (out, w) in plan.outputs.iter_mut().zip(&weights) {
                out.value = (base * w) as u64;
            }
            block.push(plan);
            *split = Some(m.height);
            job.due = m.height + *gap;
            return Step::Keep;
        };
        let n = *outputs as usize;
        let wallet = &mut m.actors.get_mut(actor).wallet;
        if wallet.len() < n {
            // The split is not committed yet (never the case two blocks after it).
            job.due = m.height + 1;
            return Step::Keep;
        }
        let leave = if n >= 5 && self.rng.gen_bool(0.3) {
            self.rng.gen_range(1..=2).min(n - 3)
        } else {
            0
        };
        let inputs = wallet.take_matching(n - leave, |u| u.height == split_height);
        let mut plan = m.tx(inputs, Tag::pattern(job.kind, job.instance, true));
        if self.rng.gen_bool(0.6) {
            let exchange = m.actors.random_exchange(&mut self.rng);
            let payee = m.actors.fresh_deposit(exchange);
            plan.pay(0, payee, exchange, Dest::Deposits(exchange));
        } else {
            let payee = self.address(m, actor);
            plan.pay(0, payee, actor, Dest::Wallet(actor));
        }
        self.maybe_pay_user(m, &mut plan, 0.5, 0.1..0.5);
        settle(m, &mut plan, 0);
        block.push(plan);
        Step::Done
    }

    /// Payments from different users to the collector's addresses as they fall due, then,
    /// once all are in, their consolidation into one output.
    fn fan_in(&mut self, m: &mut Market, block: &mut BlockTxs, job: &mut Job) -> Step {
        let State::FanIn {
            addresses,
            schedule,
            payers,
            paid,
            last_paid,
        } = &mut job.state
        else {
            unreachable!("a fan-in job")
        };
        let actor = job.actor;
        let height = m.height;
        if schedule.is_empty() {
            let wallet = &mut m.actors.get_mut(actor).wallet;
            if wallet.len() < *paid {
                job.due = height + 1;
                return Step::Keep;
            }
            let inputs = wallet.take_matching(*paid, |_| true);
            let mut plan = m.tx(inputs, Tag::pattern(job.kind, job.instance, true));
            if self.rng.gen_bool(0.5) {
                let exchange = m.actors.random_exchange(&mut self.rng);
                let payee = m.actors.fresh_deposit(exchange);
                plan.pay(0, payee, exchange, Dest::Deposits(exchange));
            } else {
                let payee = self.address(m, actor);
                plan.pay(0, payee, actor, Dest::Wallet(actor));
            }
            settle(m, &mut plan, 0);
            block.push(plan);
            return Step::Done;
        }
        while schedule.first().is_some_and(|&h| h <= height) && block.left >= ROOM {
            let amount = log_uniform(&mut self.rng, 50_000, 2_000_000) as u64;
            let rate = m.fee_rate().min(FUNDED_RATE);
            let need = amount
                + dist::fee(rate, 50 + 3 * MAX_INPUT_WEIGHT + 2 * MAX_OUTPUT_WEIGHT)
                + dist::DUST;
            let payer = (0..20)
                .map(|_| m.actors.random_user(&mut self.rng))
                .find(|u| !payers.contains(u) && m.actors.get(*u).wallet.balance() >= 2 * need);
            let Some(payer) = payer else { break };
            let wallet = &mut m.actors.get_mut(payer).wallet;
            let Some(inputs) = wallet.take_value(&mut self.rng, need, 3, height) else {
                break;
            };
            let mut plan = m.tx(inputs, Tag::pattern(job.kind, job.instance, false));
            let pick = self.rng.gen_range(0..addresses.len());
            let (key, used) = &mut addresses[pick];
            let collector = Payee {
                kind: m.actors.script(actor),
                key: *key,
                fresh: !*used,
            };
            *used = true;
            let change = m.actors.address(&mut self.rng, payer);
            if self.rng.gen_bool(0.5) {
                plan.pay(amount, collector, actor, Dest::Wallet(actor));
                plan.pay(0, change, payer, Dest::Wallet(payer));
            } else {
                plan.pay(0, change, payer, Dest::Wallet(payer));
                plan.pay(amount, collector, actor, Dest::Wallet(actor));
            }
            let change_at = plan
                .outputs
                .iter()
                .position(|o| o.owner == payer)
                .expect("change");
            plan.outputs[change_at].value = plan.available(rate).expect("fee bounded above");
            block.push(plan);
            payers.insert(payer);
            *paid += 1;
            *last_paid = height;
            schedule.remove(0);
        }
        job.due = match schedule.first() {
            Some(&h) => h.max(height + 1),
            None => *last_paid + 2 + self.rng.gen_range(0..=3),
        };
        Step::Keep
    }

    /// One transaction paying dust to used addresses of distinct users, change to the duster.
    fn dusting(&mut self, m: &mut Market, block: &mut BlockTxs, job: &mut Job) -> Step {
        let State::Dusting { targets, coin } = &job.state else {
            unreachable!("a dusting job")
        };
        let (targets, coin) = (*targets, *coin);
        let mut seen = HashSet::new();
        let mut dust = Vec::new();
        for _ in 0..5 * targets {
            if dust.len() == targets {
                break;
            }
            let user = m.actors.random_user(&mut self.rng);
            if !seen.insert(user) {
                continue;
            }
            let Some(used) = m.actors.get(user).wallet.peek(&mut self.rng) else {
                continue;
            };
            if SCRIPTS.iter().any(|&(k, _)| k == used.kind) {
                let payee = Payee {
                    kind: used.kind,
                    key: used.key,
                    fresh: false,
                };
                dust.push((user, payee));
            }
        }
        if dust.len() < 10 {
            job.due = m.height + 1;
            return Step::Keep;
        }
        let Some(input) = Self::take_coin(m, job.actor, coin) else {
            job.due = m.height + 1;
            return Step::Keep;
        };
        let mut plan = m.tx(vec![input], Tag::pattern(job.kind, job.instance, true));
        for (user, payee) in dust {
            let value = self.rng.gen_range(dust_limit(payee.kind)..=1_000);
            plan.pay(value, payee, user, Dest::Wallet(user));
        }
        let change = self.address(m, job.actor);
        plan.pay(0, change, job.actor, Dest::Wallet(job.actor));
        let last = plan.outputs.len() - 1;
        settle(m, &mut plan, last);
        block.push(plan);
        Step::Done
    }

    /// Joins the participant's CoinJoin(s) once funded, and says when its equal outputs are
    /// back: Some(those coins, at most `want`), None while they are not, and Err(()) if the
    /// participant gave up.
    fn join_and_wait(
        &mut self,
        m: &mut Market,
        block: &mut BlockTxs,
        job_actor: ActorId,
        join: &mut Participation,
        want: usize,
    ) -> Result<Option<Vec<Utxo>>, ()> {
        let height = m.height;
        let mix = join.mix;
        match join.joining {
            Joining::Funding { funded } => {
                let Some(input) = Self::take_coin(m, job_actor, funded) else {
                    return Ok(None);
                };
                let rate = m.fee_rate().min(FUNDED_RATE);
                match mix {
                    Mix::Whirlpool { denom, count } => {
                        let tx0 = coinjoin::planted_tx0(
                            m,
                            &mut self.rng,
                            job_actor,
                            &[input],
                            denom,
                            count,
                            rate,
                        )
                        .expect("funded for a tx0 at FUNDED_RATE");
                        block.push(tx0);
                    }
                    Mix::Wasabi { equal } => {
                        let p = Participant {
                            owner: job_actor,
                            inputs: vec![input],
                            dest: Dest::Wallet(job_actor),
                            taint: None,
                            max_equal: equal,
                        };
                        match coinjoin::wasabi_round(m, rate, vec![p]) {
                            Ok(tx) => block.push(tx),
                            Err(ours) => {
                                // Too few users with coins this block: try again.
                                let wallet = &mut m.actors.get_mut(job_actor).wallet;
                                ours.into_iter().for_each(|p| wallet.give_back(p.inputs));
                                join.tries += 1;
                                return if join.tries > WASABI_TRIES {
                                    Err(())
                                } else {
                                    Ok(None)
                                };
                            }
                        }
                    }
                }
                join.joining = Joining::Mixing { since: height };
                Ok(None)
            }
            Joining::Mixing { since } => {
                let denomination = mix.denomination();
                let wallet = &mut m.actors.get_mut(job_actor).wallet;
                let back = wallet
                    .coins()
                    .iter()
                    .filter(|u| u.value == denomination)
                    .count();
                let all = match mix {
                    // One round returns all equal outputs at once.
                    Mix::Wasabi { .. } => back > 0,
                    Mix::Whirlpool { .. } => back >= want,
                };
                let late = height > since + MIX_DEADLINE;
                if all || late {
                    let coins = wallet.take_matching(want, |u| u.value == denomination);
                    return Ok(Some(coins));
                }
                Ok(None)
            }
        }
    }

    /// Joins CoinJoins, waits for `reunite` equal outputs, and 2-200 blocks after the
    /// CoinJoins spends them together into one or two outputs.
    fn reunion(&mut self, m: &mut Market, block: &mut BlockTxs, job: &mut Job) -> Step {
        let State::Reunion {
            join,
            reunite,
            held,
        } = &mut job.state
        else {
            unreachable!("a reunion job")
        };
        let height = m.height;
        if held.is_empty() {
            match self.join_and_wait(m, block, job.actor, join, *reunite) {
                Err(()) => return Step::Done,
                Ok(None) => {
                    job.due = height + 1;
                    return Step::Keep;
                }
                Ok(Some(coins)) if coins.len() < 2 => return Step::Done,
                Ok(Some(coins)) => {
                    let oldest = coins.iter().map(|u| u.height).min().expect("coins");
                    let newest = coins.iter().map(|u| u.height).max().expect("coins");
                    let wait = log_uniform(&mut self.rng, 2, 200);
                    job.due = (newest + wait).min(oldest + 200).max(height);
                    *held = coins;
                    if job.due > height {
                        return Step::Keep;
                    }
                }
            }
        }
        let inputs = std::mem::take(held);
        let mut plan = m.tx(inputs, Tag::pattern(job.kind, job.instance, true));
        let payee = self.address(m, job.actor);
        plan.pay(0, payee, job.actor, Dest::Wallet(job.actor));
        self.maybe_pay_user(m, &mut plan, 0.4, 0.1..0.6);
        settle(m, &mut plan, 0);
        block.push(plan);
        Step::Done
    }

    /// Joins a CoinJoin, then moves its equal output through 1-3 hops (one input; a fresh
    /// address of the casher, sometimes plus a payment to a user) and pays it to a fresh
    /// deposit address at an exchange, all within 30 blocks of the CoinJoin.
    fn cash_out(&mut self, m: &mut Market, block: &mut BlockTxs, job: &mut Job) -> Step {
        let State::CashOut {
            join,
            hops,
            schedule,
            held,
            coin,
        } = &mut job.state
        else {
            unreachable!("a coinjoin-to-exchange job")
        };
        let height = m.height;
        if schedule.is_empty() && held.is_none() {
            match self.join_and_wait(m, block, job.actor, join, 1) {
                Err(()) => return Step::Done,
                Ok(None) => {
                    job.due = height + 1;
                    return Step::Keep;
                }
                Ok(Some(mut coins)) => {
                    let Some(mixed) = coins.pop() else {
                        return Step::Done;
                    };
                    // Steps (hops and the deposit) at least 2 blocks apart, the last `span`
                    // (at most 30) blocks after the CoinJoin: step i at 2i + (i-th of sorted
                    // cuts of the spare blocks).
                    let steps = *hops + 1;
                    let span = log_uniform(&mut self.rng, 2 * steps, 30);
                    let spare = span - 2 * steps;
                    let mut cuts: Vec<u32> =
                        (1..steps).map(|_| self.rng.gen_range(0..=spare)).collect();
                    cuts.push(spare);
                    cuts.sort_unstable();
                    for (i, cut) in cuts.into_iter().enumerate() {
                        schedule.push(mixed.height + 2 * (i as u32 + 1) + cut);
                    }
                    *held = Some(mixed);
                    job.due = schedule[0].max(height);
                    if job.due > height {
                        return Step::Keep;
                    }
                }
            }
        }
        let input = match held.take() {
            Some(mixed) => mixed,
            None => match Self::take_coin(m, job.actor, *coin) {
                Some(input) => input,
                None => {
                    job.due = height + 1;
                    return Step::Keep;
                }
            },
        };
        schedule.remove(0);
        let last = schedule.is_empty();
        let mut plan = m.tx(vec![input], Tag::pattern(job.kind, job.instance, last));
        if last {
            let exchange = m.actors.random_exchange(&mut self.rng);
            let payee = m.actors.fresh_deposit(exchange);
            plan.pay(0, payee, exchange, Dest::Deposits(exchange));
        } else {
            let payee = self.address(m, job.actor);
            plan.pay(0, payee, job.actor, Dest::Wallet(job.actor));
            self.maybe_pay_user(m, &mut plan, 0.5, 0.05..0.4);
        }
        settle(m, &mut plan, 0);
        *coin = plan.outputs[0].value;
        block.push(plan);
        match schedule.first() {
            Some(&next) => {
                job.due = next.max(height + 2);
                Step::Keep
            }
            None => Step::Done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_uniform_covers_its_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let draws: Vec<u32> = (0..20_000).map(|_| log_uniform(&mut rng, 2, 200)).collect();
        assert!(draws.iter().all(|&d| (2..=200).contains(&d)));
        assert!(draws.contains(&2) && draws.contains(&200));
        let short = draws.iter().filter(|&&d| d <= 20).count() as f64 / draws.len() as f64;
        assert!((0.4..0.6).contains(&short), "share <= 20: {short}");
    }
}
