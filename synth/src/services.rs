//! `--plant-services`: services the everyday economy lacks, for measuring a service
//! categoriser against `truth/actors.csv` and `truth/addresses.csv` (synth/README.md,
//! "Planted services", lists the behaviours and their parameter ranges):
//!
//! - **gambling** (`gambling-N`): a dice-like service in the manner of SatoshiDice. Users bet
//!   small amounts at a handful of heavily reused game addresses; about half the bets win and
//!   are paid back within 1-3 blocks (up to 2x the bet) to a fresh address of the bettor,
//!   from the bet's own coin where it is already spendable plus the service's coins, change
//!   back to a game address; the service consolidates its small coins now and then and is
//!   funded (and refilled when low) by exchange withdrawals.
//! - **payment processor** (`processor-N`): customers pay invoices to a fresh processor
//!   address each; every 6-12 blocks the processor sweeps the invoice coins in one
//!   many-input transaction that settles to the fixed addresses of its 2-6 merchants
//!   (`merchant-N` actors), keeping its cut as change at a fresh address of its own.
//!
//! Every decision here draws from a random stream of its own, seeded from the seed; without
//! the flag this planner does not exist, so the market's stream and the chain stay what they
//! were. With it, the services' transactions spend users' and exchanges' coins and draw from
//! the market's stream (`Market::tx`, fee rates), so the whole chain differs from the one
//! without. Services plan after the planted patterns and before the ordinary traffic fills
//! the block; like patterns.rs, a step is put off while less than `ROOM` weight is left.
//!
//! Coins are spendable two blocks after the block that creates them: a payout one block
//! after its bet is paid from the service's older coins, a later one spends the bet itself.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::actors::{ActorId, ActorKind, Payee};
use crate::dist;
use crate::keys::{KeyId, ScriptKind};
use crate::market::{BlockTxs, Market, MAX_OUTPUT_WEIGHT, MAX_TX_WEIGHT};
use crate::patterns::{log_uniform, settle, FIRST_START, FUNDED_RATE, MAX_INPUT_WEIGHT, ROOM};
use crate::txbuild::{Dest, Tag};
use crate::wallet::Utxo;

/// Services of each kind.
const GAMBLING_SERVICES: usize = 3;
const PROCESSORS: usize = 3;
/// Each service opens this many blocks after `FIRST_START` at most (uniform).
const OPEN_SPREAD: u32 = 8;

/// Script types of the gambling services' and processors' addresses (SatoshiDice-era
/// services used P2PKH; today's mostly segwit).
const SERVICE_SCRIPTS: [(ScriptKind, f64); 4] = [
    (ScriptKind::P2pkh, 0.3),
    (ScriptKind::P2wpkh, 0.45),
    (ScriptKind::P2sh, 0.15),
    (ScriptKind::P2tr, 0.1),
];
/// Script types of merchants' settlement addresses.
const MERCHANT_SCRIPTS: [(ScriptKind, f64); 4] = [
    (ScriptKind::P2wpkh, 0.5),
    (ScriptKind::P2pkh, 0.2),
    (ScriptKind::P2sh, 0.2),
    (ScriptKind::P2wsh, 0.1),
];

/// Game addresses per gambling service (uniform).
const GAMES: std::ops::RangeInclusive<usize> = 3..=8;
/// What a winning bet pays back, as a multiple of the bet, per game (uniform).
const MULTIPLIERS: std::ops::Range<f64> = 1.5..2.0;
/// The house keeps this share on average: a game paying `x` times wins with chance
/// `(1 - HOUSE_EDGE) / x`, between 49% and 65%.
const HOUSE_EDGE: f64 = 0.02;
/// Bets (sat, log-uniform): 0.0005-0.05 BTC.
const BET_SAT: (u32, u32) = (50_000, 5_000_000);
/// Mean bets per block of a service once running (log-uniform per service); a block has
/// 0.5-1.5 times its mean (uniform), and a new service ramps up over `RAMP_BLOCKS`.
const BET_RATE: (u32, u32) = (15, 50);
const RAMP_BLOCKS: u32 = 10;
/// A win is paid 1-3 blocks after its bet (uniform), or in the next block while coins are
/// missing, and never later than `MAX_PAYOUT_DELAY` blocks: if the service cannot pay by
/// then, the bet is forfeit (with its bankroll that does not happen in practice).
const PAYOUT_DELAY: std::ops::RangeInclusive<u32> = 1..=3;
const MAX_PAYOUT_DELAY: u32 = 3;
/// Coins a payout adds to the bet's own: at most this many, `LAST_CHANCE_INPUTS` on the
/// last block it may be paid in.
const PAYOUT_INPUTS: usize = 4;
const LAST_CHANCE_INPUTS: usize = 20;
/// Bankroll of a gambling service (lognormal, sat), from an exchange withdrawal split into
/// `BANKROLL_COINS` coins; refilled the same way when the service holds less than a quarter.
const BANKROLL_MEDIAN_SAT: f64 = 200_000_000.0;
const BANKROLL_SAT: (u64, u64) = (50_000_000, 500_000_000);
const BANKROLL_COINS: std::ops::RangeInclusive<usize> = 10..=30;
/// Consolidations of the coins under `SMALL_COIN_SAT` (30-150 of them, at most half the
/// wallet) every 10-40 blocks (uniform), the first 5-15 blocks after the funding.
const SMALL_COIN_SAT: u64 = 2_000_000;
const CONSOLIDATE_INPUTS: std::ops::RangeInclusive<usize> = 30..=150;
const CONSOLIDATE_EVERY: std::ops::RangeInclusive<u32> = 10..=40;
const FIRST_CONSOLIDATION: std::ops::RangeInclusive<u32> = 5..=15;

/// Merchants per processor (uniform).
const MERCHANTS: std::ops::RangeInclusive<usize> = 2..=6;
/// Invoices (sat, log-uniform): 0.0005-0.2 BTC.
const INVOICE_SAT: (u32, u32) = (50_000, 20_000_000);
/// Mean invoices per block of a processor (log-uniform per processor); a block has 0.5-1.5
/// times its mean.
const INVOICE_RATE: (u32, u32) = (4, 20);
/// Blocks from one sweep to the next (uniform; put off a block while fewer than 2 coins
/// are spendable), the first one that long after opening.
const SWEEP_EVERY: std::ops::RangeInclusive<u32> = 6..=12;
/// The processor's cut of a settlement, kept as change (uniform).
const PROCESSOR_CUT: std::ops::Range<f64> = 0.005..0.01;

/// A game address: where bets go, and where the service's change returns.
struct Game {
    key: KeyId,
    /// Paid before (it has its row in addresses.csv).
    used: bool,
    multiplier: f64,
}

/// A winning bet not paid yet.
struct Win {
    bettor: ActorId,
    /// The bet's output: value, game address and height, to spend it once committed.
    bet: u64,
    key: KeyId,
    height: u32,
    payout: u64,
    due: u32,
}

struct Gambling {
    /// The service's actor, once its bankroll was found.
    actor: Option<ActorId>,
    open: u32,
    bankroll: u64,
    /// Mean bets per block once running.
    rate: f64,
    games: Vec<Game>,
    wins: Vec<Win>,
    /// Bets are taken from this height on (the bankroll is spendable by then).
    taking_bets: u32,
    /// No refill is asked for before this height (one is on its way).
    refill_after: u32,
    next_consolidation: u32,
}

struct Processor {
    actor: Option<ActorId>,
    open: u32,
    /// Mean invoices per block.
    rate: f64,
    /// The merchants and their settlement addresses (key, paid before).
    merchants: Vec<(ActorId, Payee)>,
    next_sweep: u32,
}

pub struct Services {
    rng: ChaCha8Rng,
    gambling: Vec<Gambling>,
    processors: Vec<Processor>,
    /// Merchants created so far, for their names.
    merchants: u32,
}

/// Weight bound of a transaction of `inputs` inputs and `outputs` outputs of any kind.
fn weight_bound(inputs: usize, outputs: usize) -> u64 {
    50 + inputs as u64 * MAX_INPUT_WEIGHT + outputs as u64 * MAX_OUTPUT_WEIGHT
}

impl Services {
    pub fn new(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(crate::keys::mix64(seed ^ 0x5e7_71ce5));
        let gambling = (0..GAMBLING_SERVICES)
            .map(|_| Gambling {
                actor: None,
                open: FIRST_START + rng.gen_range(0..=OPEN_SPREAD),
                bankroll: 0,
                rate: log_uniform(&mut rng, BET_RATE.0, BET_RATE.1) as f64,
                games: Vec::new(),
                wins: Vec::new(),
                taking_bets: u32::MAX,
                refill_after: 0,
                next_consolidation: u32::MAX,
            })
            .collect();
        let processors = (0..PROCESSORS)
            .map(|_| Processor {
                actor: None,
                open: FIRST_START + rng.gen_range(0..=OPEN_SPREAD),
                rate: log_uniform(&mut rng, INVOICE_RATE.0, INVOICE_RATE.1) as f64,
                merchants: Vec::new(),
                next_sweep: u32::MAX,
            })
            .collect();
        Services {
            rng,
            gambling,
            processors,
            merchants: 0,
        }
    }

    /// Takes every step of every service that is due in the block being planned.
    pub fn plan(&mut self, m: &mut Market, block: &mut BlockTxs) {
        let mut gambling = std::mem::take(&mut self.gambling);
        for (i, g) in gambling.iter_mut().enumerate() {
            if g.open <= m.height {
                self.gamble(m, block, i, g);
            }
        }
        self.gambling = gambling;
        let mut processors = std::mem::take(&mut self.processors);
        for (i, p) in processors.iter_mut().enumerate() {
            if p.open <= m.height {
                self.process(m, block, i, p);
            }
        }
        self.processors = processors;
    }

    fn script(&mut self, table: &[(ScriptKind, f64)]) -> ScriptKind {
        dist::pick(&mut self.rng, table)
    }

    /// A user with coins for a payment of `amount`, and those coins (at most 4) and the fee
    /// rate they are spent at; nothing is handed out before the coins are found.
    fn customer(&mut self, m: &mut Market, amount: u64) -> Option<(ActorId, Vec<Utxo>, f64)> {
        let rate = m.fee_rate().min(FUNDED_RATE);
        let need = amount + dist::fee(rate, weight_bound(4, 2)) + dist::DUST;
        let payer = (0..40)
            .map(|_| m.actors.random_user(&mut self.rng))
            .find(|&u| m.actors.get(u).wallet.balance() >= need * 3 / 2)?;
        let height = m.height;
        let wallet = &mut m.actors.get_mut(payer).wallet;
        let inputs = wallet.take_value(&mut self.rng, need, 4, height)?;
        Some((payer, inputs, rate))
    }

    /// The customer's transaction: `amount` to the service's `payee`, change back to the
    /// payer, in random order.
    fn customer_pays(
        &mut self,
        m: &mut Market,
        block: &mut BlockTxs,
        (payer, inputs, rate): (ActorId, Vec<Utxo>, f64),
        amount: u64,
        service: ActorId,
        payee: Payee,
    ) {
        let mut plan = m.tx(inputs, Tag::default());
        let change = m.actors.address(&mut self.rng, payer);
        let service_first = self.rng.gen_bool(0.5);
        if service_first {
            plan.pay(amount, payee, service, Dest::Wallet(service));
        }
        plan.pay(0, change, payer, Dest::Wallet(payer));
        if !service_first {
            plan.pay(amount, payee, service, Dest::Wallet(service));
        }
        let at = usize::from(service_first);
        plan.outputs[at].value = plan.available(rate).expect("fee bounded above");
        block.push(plan);
    }

    /// An exchange withdrawal of `value` to `coins` fresh addresses of a service (created
    /// by `new_actor` if it has none yet, once the coins are found); false if no exchange
    /// had the coins this block.
    fn withdraw(
        &mut self,
        m: &mut Market,
        block: &mut BlockTxs,
        value: u64,
        coins: usize,
        actor: &mut Option<ActorId>,
        new_actor: impl FnOnce(&mut Market) -> ActorId,
    ) -> bool {
        let rate = m.fee_rate().min(FUNDED_RATE);
        let need = value + dist::fee(rate, weight_bound(10, coins + 1)) + dist::DUST;
        let exchange = (0..30)
            .map(|_| m.actors.random_exchange(&mut self.rng))
            .find(|&e| m.actors.get(e).wallet.balance() >= 2 * need);
        let Some(exchange) = exchange else {
            return false;
        };
        let height = m.height;
        let wallet = &mut m.actors.get_mut(exchange).wallet;
        let Some(inputs) = wallet.take_value(&mut self.rng, need, 10, height) else {
            return false;
        };
        let service = *actor.get_or_insert_with(|| new_actor(m));
        let mut plan = m.tx(inputs, Tag::default());
        // Round-ish coins, as an operator withdraws them.
        let each = value / coins as u64 / 100_000 * 100_000;
        for _ in 0..coins {
            let payee = m.actors.address(&mut self.rng, service);
            plan.pay(each, payee, service, Dest::Wallet(service));
        }
        let change = m.actors.address(&mut self.rng, exchange);
        plan.pay(0, change, exchange, Dest::Wallet(exchange)).value =
            plan.available(rate).expect("fee bounded above");
        block.push(plan);
        true
    }

    /// One block of a gambling service: its funding until it has a bankroll, then the wins
    /// that are due, a consolidation now and then, a refill when low, and new bets.
    fn gamble(&mut self, m: &mut Market, block: &mut BlockTxs, i: usize, g: &mut Gambling) {
        let height = m.height;
        if g.actor.is_none() {
            if block.left < ROOM {
                return;
            }
            let bankroll = (dist::lognormal(&mut self.rng, BANKROLL_MEDIAN_SAT, 0.6) as u64)
                .clamp(BANKROLL_SAT.0, BANKROLL_SAT.1);
            let coins = self.rng.gen_range(BANKROLL_COINS);
            let script = self.script(&SERVICE_SCRIPTS);
            let name = format!("{}-{i}", ActorKind::Gambling.name());
            let new_actor = |m: &mut Market| m.actors.add(ActorKind::Gambling, name, script);
            if self.withdraw(m, block, bankroll, coins, &mut g.actor, new_actor) {
                g.bankroll = bankroll;
                g.games = (0..self.rng.gen_range(GAMES))
                    .map(|_| Game {
                        key: m.actors.fresh(script).key,
                        used: false,
                        multiplier: self.rng.gen_range(MULTIPLIERS),
                    })
                    .collect();
                g.taking_bets = height + 2;
                g.refill_after = height + 2;
                g.next_consolidation = height + self.rng.gen_range(FIRST_CONSOLIDATION);
            }
            return;
        }
        let actor = g.actor.expect("funded");
        let mut wins = std::mem::take(&mut g.wins);
        wins.retain(|win| {
            if win.due > height {
                return true;
            }
            if block.left < ROOM {
                return height < win.height + MAX_PAYOUT_DELAY;
            }
            if self.pay_out(m, block, actor, g, win) {
                return false;
            }
            // Coins are missing: the next block, if the win may still be paid then.
            height < win.height + MAX_PAYOUT_DELAY
        });
        for win in &mut wins {
            win.due = win.due.max(height + 1);
        }
        g.wins = wins;
        if height >= g.next_consolidation && block.left >= ROOM {
            self.consolidate(m, block, actor);
            g.next_consolidation = height + self.rng.gen_range(CONSOLIDATE_EVERY);
        }
        let balance = m.actors.get(actor).wallet.balance();
        if balance < g.bankroll / 4 && height >= g.refill_after && block.left >= ROOM {
            let coins = self.rng.gen_range(BANKROLL_COINS);
            if self.withdraw(m, block, g.bankroll, coins, &mut g.actor, |_| actor) {
                g.refill_after = height + 2;
            }
        }
        if height < g.taking_bets {
            return;
        }
        let ramp = ((height - g.taking_bets + 1) as f64 / RAMP_BLOCKS as f64).min(1.0);
        let bets = (g.rate * ramp * self.rng.gen_range(0.5..1.5)).round() as usize;
        for _ in 0..bets {
            if block.left < ROOM {
                break;
            }
            let bet = log_uniform(&mut self.rng, BET_SAT.0, BET_SAT.1) as u64;
            let Some(customer) = self.customer(m, bet) else {
                continue;
            };
            let bettor = customer.0;
            let (payee, multiplier) = self.game_address(m, actor, g);
            self.customer_pays(m, block, customer, bet, actor, payee);
            if self.rng.gen_bool((1.0 - HOUSE_EDGE) / multiplier) {
                g.wins.push(Win {
                    bettor,
                    bet,
                    key: payee.key,
                    height,
                    payout: (bet as f64 * multiplier) as u64,
                    due: height + self.rng.gen_range(PAYOUT_DELAY),
                });
            }
        }
    }

    /// A random game address of the service, and what a win there pays per bet: where bets
    /// go and where change returns (SatoshiDice sent change back to its game addresses).
    fn game_address(&mut self, m: &Market, actor: ActorId, g: &mut Gambling) -> (Payee, f64) {
        let pick = self.rng.gen_range(0..g.games.len());
        let game = &mut g.games[pick];
        let payee = Payee {
            kind: m.actors.script(actor),
            key: game.key,
            fresh: !game.used,
        };
        game.used = true;
        (payee, game.multiplier)
    }

    /// Pays a win to a fresh address of the bettor from the bet's own coin (once
    /// spendable) and as many other coins of the service as it takes, change to a game
    /// address; false, spending nothing, if the service lacks the coins.
    fn pay_out(
        &mut self,
        m: &mut Market,
        block: &mut BlockTxs,
        actor: ActorId,
        g: &mut Gambling,
        win: &Win,
    ) -> bool {
        let height = m.height;
        let extra = if height >= win.height + MAX_PAYOUT_DELAY {
            LAST_CHANCE_INPUTS
        } else {
            PAYOUT_INPUTS
        };
        // Enough for the payout, the fee at the highest rate planted transactions pay, and
        // a change output.
        let need = win.payout + dist::fee(FUNDED_RATE, weight_bound(extra + 1, 2)) + dist::DUST;
        let wallet = &mut m.actors.get_mut(actor).wallet;
        let mut inputs = wallet.take_matching(1, |u| {
            u.key == win.key && u.value == win.bet && u.height == win.height
        });
        let have: u64 = inputs.iter().map(|u| u.value).sum();
        if have < need {
            match wallet.take_value(&mut self.rng, need - have, extra, height) {
                Some(more) => inputs.extend(more),
                None => {
                    wallet.give_back(inputs);
                    return false;
                }
            }
        }
        let mut plan = m.tx(inputs, Tag::default());
        let winner = m.actors.fresh_address(win.bettor);
        let (change, _) = self.game_address(m, actor, g);
        let change_at = usize::from(self.rng.gen_bool(0.5));
        if change_at == 0 {
            plan.pay(0, change, actor, Dest::Wallet(actor));
        }
        plan.pay(win.payout, winner, win.bettor, Dest::Wallet(win.bettor));
        if change_at == 1 {
            plan.pay(0, change, actor, Dest::Wallet(actor));
        }
        settle(m, &mut plan, change_at);
        block.push(plan);
        true
    }

    /// Merges 30-150 of the service's small coins (at most half its coins) into one fresh
    /// address of its own; nothing if fewer than 10 are small.
    fn consolidate(&mut self, m: &mut Market, block: &mut BlockTxs, actor: ActorId) {
        let wallet = &mut m.actors.get_mut(actor).wallet;
        let n = self.rng.gen_range(CONSOLIDATE_INPUTS).min(wallet.len() / 2);
        let inputs = wallet.take_matching(n, |u| u.value < SMALL_COIN_SAT);
        if inputs.len() < 10 {
            wallet.give_back(inputs);
            return;
        }
        let mut plan = m.tx(inputs, Tag::default());
        let payee = m.actors.address(&mut self.rng, actor);
        plan.pay(0, payee, actor, Dest::Wallet(actor));
        settle(m, &mut plan, 0);
        block.push(plan);
    }

    /// One block of a payment processor: its customers' invoice payments, and a sweep of
    /// the invoice coins to its merchants when one is due.
    fn process(&mut self, m: &mut Market, block: &mut BlockTxs, i: usize, p: &mut Processor) {
        let height = m.height;
        let actor = match p.actor {
            Some(actor) => actor,
            None => {
                let script = self.script(&SERVICE_SCRIPTS);
                let name = format!("{}-{i}", ActorKind::Processor.name());
                let actor = m.actors.add(ActorKind::Processor, name, script);
                for _ in 0..self.rng.gen_range(MERCHANTS) {
                    let script = self.script(&MERCHANT_SCRIPTS);
                    let name = format!("{}-{}", ActorKind::Merchant.name(), self.merchants);
                    self.merchants += 1;
                    let merchant = m.actors.add(ActorKind::Merchant, name, script);
                    let payee = m.actors.fresh_address(merchant);
                    p.merchants.push((merchant, payee));
                }
                p.actor = Some(actor);
                p.next_sweep = height + self.rng.gen_range(SWEEP_EVERY);
                actor
            }
        };
        if height >= p.next_sweep && block.left >= ROOM {
            if self.sweep(m, block, actor, p) {
                p.next_sweep = height + self.rng.gen_range(SWEEP_EVERY);
            } else {
                p.next_sweep = height + 1;
            }
        }
        let invoices = (p.rate * self.rng.gen_range(0.5..1.5)).round() as usize;
        for _ in 0..invoices {
            if block.left < ROOM {
                break;
            }
            let amount = log_uniform(&mut self.rng, INVOICE_SAT.0, INVOICE_SAT.1) as u64;
            let Some(customer) = self.customer(m, amount) else {
                continue;
            };
            let payee = m.actors.address(&mut self.rng, actor);
            self.customer_pays(m, block, customer, amount, actor, payee);
        }
    }

    /// Spends the processor's coins (as many as fit in one transaction) into one output per
    /// merchant at its settlement address, the processor's cut as change to a fresh address
    /// of its own at a random place; false if fewer than 2 coins are spendable.
    fn sweep(
        &mut self,
        m: &mut Market,
        block: &mut BlockTxs,
        actor: ActorId,
        p: &mut Processor,
    ) -> bool {
        let kind = m.actors.script(actor);
        let outputs = p.merchants.len() + 1;
        let fit = (MAX_TX_WEIGHT - weight_bound(0, outputs)) / kind.input_weight();
        let wallet = &mut m.actors.get_mut(actor).wallet;
        if wallet.len() < 2 {
            return false;
        }
        let inputs = wallet.take_matching(fit as usize, |_| true);
        let mut plan = m.tx(inputs, Tag::default());
        let change_at = self.rng.gen_range(0..outputs);
        for (merchant, payee) in &mut p.merchants {
            if plan.outputs.len() == change_at {
                let change = m.actors.address(&mut self.rng, actor);
                plan.pay(0, change, actor, Dest::Wallet(actor));
            }
            plan.pay(0, *payee, *merchant, Dest::Wallet(*merchant));
            payee.fresh = false;
        }
        if plan.outputs.len() == change_at {
            let change = m.actors.address(&mut self.rng, actor);
            plan.pay(0, change, actor, Dest::Wallet(actor));
        }
        settle(m, &mut plan, change_at);
        let total = plan.outputs[change_at].value;
        let cut = ((total as f64 * self.rng.gen_range(PROCESSOR_CUT)) as u64).max(dist::DUST);
        let merchants = p.merchants.len() as u64;
        let spare = total - cut - dist::DUST * merchants;
        let weights: Vec<f64> = (0..merchants)
            .map(|_| dist::lognormal(&mut self.rng, 1.0, 0.8))
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut paid = 0;
        let mut w = weights.iter();
        for (at, out) in plan.outputs.iter_mut().enumerate() {
            if at != change_at {
                let share = w.next().expect("a weight per merchant") / sum;
                out.value = dist::DUST + (spare as f64 * share) as u64;
                paid += out.value;
            }
        }
        plan.outputs[change_at].value = total - paid;
        block.push(plan);
        true
    }
}
