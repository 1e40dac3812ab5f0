//! Peeling chains: a large coin pays out a small amount per hop and moves the rest to a fresh
//! address of the same owner, hop after hop, until it is nearly spent and cashed out.

use std::collections::HashMap;

use rand::Rng;

use crate::dist;
use crate::keys::{KeyId, ScriptKind};
use crate::market::{affordable, BlockTxs, Market, MAX_OUTPUT_WEIGHT};
use crate::txbuild::{Dest, PatternKind, Tag};
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
struct PeelChain {
    coin: Option<Utxo>,
    /// A funding transaction is in a block not yet committed.
    funding: bool,
    start_value: u64,
    hops: u32,
}

/// The chains, each peeled by its own peeler actor (`Actors::peelers`, in order).
///
/// A chain whose coin is on its way (a hop just made) is funded anew, so two runs can take
/// turns in one chain, and a coin that arrives while another waits replaces it (the other
/// stays unspent for good). The truth follows the coins: a run (an instance in
/// truth/patterns.csv) is a funding output and the hops that spend it and each other's
/// outputs, whichever chain they happen in.
pub struct PeelChains {
    chains: Vec<PeelChain>,
    /// The instance of each peel coin not spent yet, by its address key (fresh per coin).
    runs: HashMap<KeyId, u32>,
}

impl PeelChains {
    pub fn new() -> Self {
        let chains = (0..CHAINS).map(|_| PeelChain::default()).collect();
        PeelChains {
            chains,
            runs: HashMap::new(),
        }
    }

    /// The coin chain `i` peels next has been committed.
    pub fn receive(&mut self, i: u16, coin: Utxo) {
        let chain = &mut self.chains[i as usize];
        if let Some(dropped) = chain.coin.replace(coin) {
            self.runs.remove(&dropped.key);
        }
        chain.funding = false;
    }

    pub fn plan(&mut self, m: &mut Market, block: &mut BlockTxs) {
        for i in 0..self.chains.len() {
            let chain = &self.chains[i];
            if chain.coin.is_none() && !chain.funding {
                self.fund(m, i, block);
            } else if chain.coin.is_some() && m.rng.gen_bool(HOP_CHANCE) {
                self.hop(m, i, block);
            }
        }
    }

    /// An exchange withdrawal that starts a chain.
    fn fund(&mut self, m: &mut Market, i: usize, block: &mut BlockTxs) {
        let exchange = m.actors.random_exchange(&mut m.rng);
        let balance = m.actors.get(exchange).wallet.balance();
        let value = (dist::lognormal(&mut m.rng, START_MEDIAN_SAT, 0.7) as u64).min(balance / 3);
        if value < MIN_START_SAT {
            return;
        }
        let rate = m.fee_rate();
        let fee_bound = dist::fee(
            rate,
            50 + 4 * ScriptKind::P2pkh.input_weight() + 2 * MAX_OUTPUT_WEIGHT,
        );
        let height = m.height;
        let wallet = &mut m.actors.get_mut(exchange).wallet;
        let Some(inputs) = wallet.take_value(&mut m.rng, value + fee_bound + dist::DUST, 4, height)
        else {
            return;
        };
        let mut plan = m.tx(inputs, Tag::default());
        let peeler = m.actors.peelers.start + i as u32;
        let payee = m.actors.fresh(ScriptKind::P2wpkh);
        self.runs.insert(payee.key, m.new_instance());
        plan.pay(value, payee, peeler, Dest::Peel(i as u16));
        let change = m.actors.address(&mut m.rng, exchange);
        plan.pay(0, change, exchange, Dest::Wallet(exchange));
        plan.outputs[1].value = plan.available(rate).expect("fee bounded above");
        block.push(plan);
        let chain = &mut self.chains[i];
        (chain.funding, chain.start_value, chain.hops) = (true, value, 0);
    }

    /// One hop: a small payment out, the rest to a fresh address; the last hop cashes out.
    fn hop(&mut self, m: &mut Market, i: usize, block: &mut BlockTxs) {
        let chain = &mut self.chains[i];
        let coin = chain.coin.take().expect("hop needs a coin");
        chain.hops += 1;
        let last = chain.hops >= MAX_HOPS || coin.value < chain.start_value / 20;
        let instance = self
            .runs
            .remove(&coin.key)
            .expect("peel coins come from fund or hop");
        let rate = m.fee_rate();
        let peeler = m.actors.peelers.start + i as u32;
        if !affordable(&[coin], 2, rate) {
            // Too small to move: it stays unspent for good, as dust often does.
            m.coins -= 1;
            return;
        }
        let tag = Tag::pattern(PatternKind::PeelChain, instance, last);
        let mut plan = m.tx(vec![coin], tag);
        if last {
            let exchange = m.actors.random_exchange(&mut m.rng);
            let payee = m.actors.fresh_deposit(exchange);
            plan.pay(0, payee, exchange, Dest::Deposits(exchange));
        } else {
            let share = m.rng.gen_range(0.01..0.05);
            let user = m.actors.random_user(&mut m.rng);
            let payee = m.actors.address(&mut m.rng, user);
            plan.pay(
                (coin.value as f64 * share) as u64 + dist::DUST,
                payee,
                user,
                Dest::Wallet(user),
            );
            let next = m.actors.fresh(ScriptKind::P2wpkh);
            self.runs.insert(next.key, instance);
            plan.pay(0, next, peeler, Dest::Peel(i as u16));
        }
        let available = plan.available(rate).expect("checked affordable");
        plan.outputs.last_mut().expect("an output").value += available;
        block.push(plan);
    }
}
