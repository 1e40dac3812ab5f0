//! Peeling chains: a large coin pays out a small amount per hop and moves the rest to a fresh
//! address of the same owner, hop after hop, until it is nearly spent and cashed out.

use rand::Rng;

use crate::dist;
use crate::economy::{affordable, BlockTxs, Economy, MAX_OUTPUT_WEIGHT};
use crate::keys::ScriptKind;
use crate::txbuild::{Dest, Tag};
use crate::wallet::Utxo;

const CHAINS: usize = 3;
/// Chance that a chain takes a hop in a given block.
const HOP_CHANCE: f64 = 0.6;
/// A chain ends after this many hops or once less than 1/20 of its start value is left.
const MAX_HOPS: u32 = 150;
const START_MEDIAN_SAT: f64 = 2_000_000_000.0;
/// At least 1 BTC, so the last hop (1/20 of it) is still far above any fee.
const MIN_START_SAT: u64 = 100_000_000;

#[derive(Default)]
pub struct PeelChain {
    coin: Option<Utxo>,
    /// A funding transaction is in a block not yet committed.
    funding: bool,
    start_value: u64,
    hops: u32,
}

impl PeelChain {
    pub fn start_all() -> Vec<PeelChain> {
        (0..CHAINS).map(|_| PeelChain::default()).collect()
    }

    pub fn receive(&mut self, coin: Utxo) {
        self.coin = Some(coin);
        self.funding = false;
    }
}

impl Economy {
    pub(crate) fn plan_peels(&mut self, block: &mut BlockTxs) {
        for i in 0..self.peels.len() {
            let chain = &self.peels[i];
            if chain.coin.is_none() && !chain.funding {
                self.fund_peel(i, block);
            } else if chain.coin.is_some() && self.rng.gen_bool(HOP_CHANCE) {
                self.peel_hop(i, block);
            }
        }
    }

    /// An exchange withdrawal that starts a chain.
    fn fund_peel(&mut self, i: usize, block: &mut BlockTxs) {
        let exchange = self.actors.random_exchange(&mut self.rng);
        let balance = self.actors.get(exchange).wallet.balance();
        let value = (dist::lognormal(&mut self.rng, START_MEDIAN_SAT, 0.7) as u64).min(balance / 3);
        if value < MIN_START_SAT {
            return;
        }
        let rate = self.fee_rate();
        let fee_bound = dist::fee(
            rate,
            50 + 4 * ScriptKind::P2pkh.input_weight() + 2 * MAX_OUTPUT_WEIGHT,
        );
        let height = self.height;
        let wallet = &mut self.actors.get_mut(exchange).wallet;
        let Some(inputs) =
            wallet.take_value(&mut self.rng, value + fee_bound + dist::DUST, 4, height)
        else {
            return;
        };
        let mut plan = self.tx(inputs, Tag::default());
        let peeler = self.actors.peelers.start + i as u32;
        let payee = self.actors.fresh(ScriptKind::P2wpkh);
        plan.pay(value, payee, peeler, Dest::Peel(i as u16));
        let change = self.actors.address(&mut self.rng, exchange);
        plan.pay(0, change, exchange, Dest::Wallet(exchange));
        plan.outputs[1].value = plan.available(rate).expect("fee bounded above");
        block.push(plan);
        let chain = &mut self.peels[i];
        (chain.funding, chain.start_value, chain.hops) = (true, value, 0);
    }

    /// One hop: a small payment out, the rest to a fresh address; the last hop cashes out.
    fn peel_hop(&mut self, i: usize, block: &mut BlockTxs) {
        let chain = &mut self.peels[i];
        let coin = chain.coin.take().expect("hop needs a coin");
        chain.hops += 1;
        let last = chain.hops >= MAX_HOPS || coin.value < chain.start_value / 20;
        let rate = self.fee_rate();
        let peeler = self.actors.peelers.start + i as u32;
        if !affordable(&[coin], 2, rate) {
            // Too small to move: it stays unspent for good, as dust often does.
            self.coins -= 1;
            return;
        }
        let mut plan = self.tx(vec![coin], Tag::default());
        if last {
            let exchange = self.actors.random_exchange(&mut self.rng);
            let payee = self.actors.fresh_deposit(exchange);
            plan.pay(0, payee, exchange, Dest::Deposits(exchange));
        } else {
            let share = self.rng.gen_range(0.01..0.05);
            let user = self.actors.random_user(&mut self.rng);
            let payee = self.actors.address(&mut self.rng, user);
            plan.pay(
                (coin.value as f64 * share) as u64 + dist::DUST,
                payee,
                user,
                Dest::Wallet(user),
            );
            let next = self.actors.fresh(ScriptKind::P2wpkh);
            plan.pay(0, next, peeler, Dest::Peel(i as u16));
        }
        let available = plan.available(rate).expect("checked affordable");
        plan.outputs.last_mut().expect("an output").value += available;
        block.push(plan);
    }
}
