//! Everyday traffic that fills a block: user payments and consolidations, exchange deposits,
//! sweeps and withdrawals, pool payouts.

use rand::Rng;

use crate::actors::{ActorId, Payee};
use crate::dist;
use crate::market::{affordable, BlockTxs, Market, MAX_TX_WEIGHT, SMALL_TX_WEIGHT};
use crate::txbuild::{Dest, OutPlan, Tag, TxPlan};
use crate::wallet::Utxo;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Activity {
    Payment,
    Consolidation,
    Withdrawal,
    BatchWithdrawal,
    Sweep,
    PoolPayout,
}

/// Share of each activity among a block's ordinary transactions, before steering.
const MIX: [(Activity, f64); 6] = [
    (Activity::Payment, 0.80),
    (Activity::Consolidation, 0.03),
    (Activity::Withdrawal, 0.08),
    (Activity::BatchWithdrawal, 0.012),
    (Activity::Sweep, 0.03),
    (Activity::PoolPayout, 0.004),
];

/// Outstanding coins below which fan-outs are favoured, above which merges are; above the
/// maximum no fan-out happens at all, which bounds memory whatever the chain length.
const COINS_LOW: usize = 120_000;
const COINS_HIGH: usize = 250_000;
const COINS_MAX: usize = 400_000;

/// Share of payments that go to the payer's exchange account rather than to another user.
const DEPOSIT_SHARE: f64 = 0.3;
/// Median exchange withdrawal (0.01 BTC).
const WITHDRAWAL_MEDIAN_SAT: f64 = 1_000_000.0;
/// Misses in a row after which a block is left partly empty (only during bootstrap).
const MAX_MISSES: u32 = 200;

impl Market {
    /// Adds ordinary transactions until the block is full.
    pub(crate) fn fill(&mut self, block: &mut BlockTxs) {
        let mut misses = 0;
        while block.left >= SMALL_TX_WEIGHT && misses < MAX_MISSES {
            let tx = if block.left >= MAX_TX_WEIGHT {
                let activity = self.pick_activity();
                self.activity(activity)
            } else {
                self.payment(true)
            };
            match tx {
                Some(tx) => {
                    block.push(tx);
                    misses = 0;
                }
                None => misses += 1,
            }
        }
    }

    fn pick_activity(&mut self) -> Activity {
        let (fan_out, merge) = match self.coins {
            c if c < COINS_LOW => (4.0, 0.25),
            c if c > COINS_MAX => (0.0, 4.0),
            c if c > COINS_HIGH => (0.25, 3.0),
            _ => (1.0, 1.0),
        };
        let table = MIX.map(|(activity, w)| {
            let steer = match activity {
                Activity::BatchWithdrawal | Activity::PoolPayout => fan_out,
                Activity::Consolidation | Activity::Sweep => merge,
                _ => 1.0,
            };
            (activity, w * steer)
        });
        dist::pick(&mut self.rng, &table)
    }

    fn activity(&mut self, activity: Activity) -> Option<TxPlan> {
        match activity {
            Activity::Payment => self.payment(false),
            Activity::Consolidation => self.consolidation(),
            Activity::Withdrawal => self.withdrawal(1),
            Activity::BatchWithdrawal => {
                let n = dist::count(&mut self.rng, dist::BATCH_RECIPIENTS);
                self.withdrawal(n)
            }
            Activity::Sweep => self.sweep(),
            Activity::PoolPayout => self.pool_payout(),
        }
    }

    /// A user paying one or more others (or their exchange account), usually with change.
    /// `small` keeps it under SMALL_TX_WEIGHT for the last bytes of a block.
    fn payment(&mut self, small: bool) -> Option<TxPlan> {
        let payer = self.user_with_coins(1)?;
        let mut n_in = dist::count(&mut self.rng, dist::PAYMENT_INPUTS);
        let mut n_pay = dist::count(&mut self.rng, dist::PAYMENT_RECIPIENTS);
        if small {
            (n_in, n_pay) = (n_in.min(3), n_pay.min(3));
        }
        let change = !self.rng.gen_bool(dist::NO_CHANGE_SHARE);
        if !change {
            n_pay = 1;
        }
        let op_return = self.rng.gen_bool(dist::OP_RETURN_SHARE);
        let rate = self.fee_rate();
        let height = self.height;
        let inputs = self
            .actors
            .get_mut(payer)
            .wallet
            .take_n(&mut self.rng, n_in, height);
        let n_out = n_pay + usize::from(change) + usize::from(op_return);
        let inputs = self.check_affordable(payer, inputs, n_out, rate)?;

        let mut plan = self.tx(inputs, Tag::default());
        for _ in 0..n_pay {
            let (owner, payee, dest) = self.recipient(payer);
            plan.pay(0, payee, owner, dest);
        }
        if op_return {
            plan.push_op_return(self.rng.gen());
        }
        if change {
            let payee = self.actors.address(&mut self.rng, payer);
            plan.pay(0, payee, payer, Dest::Wallet(payer));
            let available = plan.available(rate).expect("checked affordable");
            fund_outputs(
                &mut self.rng,
                &mut plan.outputs,
                available,
                dist::PAYMENT_MEDIAN_SAT,
            );
        } else {
            plan.outputs[0].value = plan.available(rate).expect("checked affordable");
        }
        Some(plan)
    }

    /// Gives the coins back if they cannot pay `n_out` outputs at `rate`.
    fn check_affordable(
        &mut self,
        owner: ActorId,
        inputs: Vec<Utxo>,
        n_out: usize,
        rate: f64,
    ) -> Option<Vec<Utxo>> {
        if !inputs.is_empty() && affordable(&inputs, n_out, rate) {
            return Some(inputs);
        }
        self.actors.get_mut(owner).wallet.give_back(inputs);
        None
    }

    fn recipient(&mut self, payer: ActorId) -> (ActorId, Payee, Dest) {
        // With a whale, users mostly pay into their exchange accounts.
        let deposit_share = DEPOSIT_SHARE.max(self.actors.whale_share());
        if self.rng.gen_bool(deposit_share) {
            let (exchange, payee) = self.actors.deposit_address(&mut self.rng, payer);
            (exchange, payee, Dest::Deposits(exchange))
        } else {
            let user = self.actors.random_user(&mut self.rng);
            (
                user,
                self.actors.address(&mut self.rng, user),
                Dest::Wallet(user),
            )
        }
    }

    /// A user merging many small coins into one.
    fn consolidation(&mut self) -> Option<TxPlan> {
        let user = self.user_with_coins(5)?;
        let n = dist::count(&mut self.rng, dist::CONSOLIDATION_INPUTS);
        let height = self.height;
        let inputs = self
            .actors
            .get_mut(user)
            .wallet
            .take_n(&mut self.rng, n, height);
        let payee = self.actors.address(&mut self.rng, user);
        self.merge(
            user,
            inputs,
            (user, payee, Dest::Wallet(user)),
            Tag::default(),
        )
    }

    /// An exchange moving customer deposits into its hot wallet.
    fn sweep(&mut self) -> Option<TxPlan> {
        let exchange = self.actors.random_exchange(&mut self.rng);
        let n = dist::count(&mut self.rng, dist::SWEEP_INPUTS);
        let height = self.height;
        let deposits = &mut self.actors.get_mut(exchange).deposits;
        if deposits.len() < 3 {
            return None;
        }
        let inputs = deposits.take_n(&mut self.rng, n, height);
        let rate = self.fee_rate();
        if !affordable(&inputs, 1, rate) {
            self.actors.get_mut(exchange).deposits.give_back(inputs);
            return None;
        }
        let payee = self.actors.address(&mut self.rng, exchange);
        let mut plan = self.tx(inputs, Tag::default());
        plan.pay(0, payee, exchange, Dest::Wallet(exchange));
        plan.outputs[0].value = plan.available(rate).expect("checked affordable");
        Some(plan)
    }

    /// Spends `inputs` of `owner` into a single output (a consolidation or a criminal's merge).
    pub(crate) fn merge(
        &mut self,
        owner: ActorId,
        inputs: Vec<Utxo>,
        (to, payee, dest): (ActorId, Payee, Dest),
        tag: Tag,
    ) -> Option<TxPlan> {
        let rate = self.fee_rate();
        let inputs = self.check_affordable(owner, inputs, 1, rate)?;
        let mut plan = self.tx(inputs, tag);
        plan.pay(0, payee, to, dest);
        plan.outputs[0].value = plan.available(rate).expect("checked affordable");
        Some(plan)
    }

    /// An exchange paying `n` customers from its hot wallet, change back to the hot wallet.
    fn withdrawal(&mut self, n: usize) -> Option<TxPlan> {
        let exchange = self.actors.random_exchange(&mut self.rng);
        let n_in = self.rng.gen_range(1..=3);
        let recipients: Vec<ActorId> = (0..n)
            .map(|_| self.actors.random_user(&mut self.rng))
            .collect();
        self.payout(exchange, n_in, &recipients, WITHDRAWAL_MEDIAN_SAT)
    }

    /// A pool sharing mined coins among its miners (some of whom cash out at an exchange).
    fn pool_payout(&mut self) -> Option<TxPlan> {
        let pool = self.actors.random_pool(&mut self.rng);
        let n = dist::count(&mut self.rng, dist::POOL_PAYOUT_RECIPIENTS);
        let miners: Vec<ActorId> = (0..n)
            .map(|_| self.actors.random_user(&mut self.rng))
            .collect();
        let median = self.actors.get(pool).wallet.balance() as f64 / (4 * n) as f64;
        self.payout(pool, 2, &miners, median.max(dist::DUST as f64))
    }

    /// `payer` pays each of `recipients` (user addresses, or one in four their exchange
    /// deposit address) lognormal amounts around `median` from up to `n_in` coins.
    fn payout(
        &mut self,
        payer: ActorId,
        n_in: usize,
        recipients: &[ActorId],
        median: f64,
    ) -> Option<TxPlan> {
        let rate = self.fee_rate();
        let height = self.height;
        let inputs = self
            .actors
            .get_mut(payer)
            .wallet
            .take_n(&mut self.rng, n_in, height);
        let inputs = self.check_affordable(payer, inputs, recipients.len() + 1, rate)?;
        let mut plan = self.tx(inputs, Tag::default());
        for &user in recipients {
            if self.rng.gen_bool(0.25) {
                let (exchange, payee) = self.actors.deposit_address(&mut self.rng, user);
                plan.pay(0, payee, exchange, Dest::Deposits(exchange));
            } else {
                let payee = self.actors.address(&mut self.rng, user);
                plan.pay(0, payee, user, Dest::Wallet(user));
            }
        }
        let change = self.actors.address(&mut self.rng, payer);
        plan.pay(0, change, payer, Dest::Wallet(payer));
        let available = plan.available(rate).expect("checked affordable");
        fund_outputs(&mut self.rng, &mut plan.outputs, available, median);
        Some(plan)
    }
}

/// Gives the payment outputs (all but the last; OP_RETURNs stay at zero) lognormal amounts
/// around `median`, scaled down if the coins cannot afford them, and the last output (the
/// change) the rest. Every paying output gets at least DUST.
pub(crate) fn fund_outputs(
    rng: &mut impl Rng,
    outputs: &mut [OutPlan],
    available: u64,
    median: f64,
) {
    let (change, payments) = outputs.split_last_mut().expect("a change output");
    let paying: Vec<&mut OutPlan> = payments
        .iter_mut()
        .filter(|o| o.dest != Dest::Nowhere)
        .collect();
    let spare = available - dist::DUST * (paying.len() as u64 + 1);
    let mut extra: Vec<u64> = paying
        .iter()
        .map(|_| {
            (dist::lognormal(rng, median, dist::PAYMENT_SIGMA) as u64).saturating_sub(dist::DUST)
        })
        .collect();
    let wanted: u64 = extra.iter().sum();
    if wanted > spare / 20 * 19 {
        let scale = spare as f64 * rng.gen_range(0.3..0.95) / wanted as f64;
        extra
            .iter_mut()
            .for_each(|x| *x = (*x as f64 * scale) as u64);
    }
    let mut paid = 0;
    for (out, x) in paying.into_iter().zip(extra) {
        out.value = dist::DUST + x;
        paid += out.value;
    }
    change.value = available - paid;
}
