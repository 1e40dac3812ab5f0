//! Who owns what: users, exchanges, pools, mixers, peelers and criminals, each with a wallet
//! and an address policy (which script type, how often an address is reused).

use std::ops::Range;

use rand::Rng;

use crate::dist;
use crate::keys::{KeyId, ScriptKind};
use crate::wallet::Wallet;

pub type ActorId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    User,
    Exchange,
    Pool,
    /// A CoinJoin coordinator (it receives the coordinator fees).
    Mixer,
    /// A service paying out through peeling chains.
    Peeler,
    Thief,
    Ransomware,
    /// `--plant-patterns` actors, one per instance (see patterns.rs): a coin moved through
    /// hops of one output to an exchange deposit.
    Layerer,
    /// Splits a coin into many similar outputs and later sweeps them together.
    Structurer,
    /// Receives many small payments from different users and consolidates them.
    Collector,
    /// Sends one transaction of dust to many users' used addresses.
    Duster,
    /// Joins CoinJoins and later spends several of its equal outputs together.
    Reuniter,
    /// Joins a CoinJoin and moves its output in a few hops to an exchange deposit.
    MixCasher,
    /// `--plant-services` actors (see services.rs): a dice-like gambling service taking bets
    /// at a handful of reused addresses and paying winners back within a few blocks.
    Gambling,
    /// A payment processor: invoices paid to fresh addresses, swept to its merchants.
    Processor,
    /// A merchant a payment processor settles to, at one fixed address.
    Merchant,
}

impl ActorKind {
    pub fn name(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Exchange => "exchange",
            ActorKind::Pool => "pool",
            ActorKind::Mixer => "mixer",
            ActorKind::Peeler => "peeler",
            ActorKind::Thief => "thief",
            ActorKind::Ransomware => "ransomware",
            ActorKind::Layerer => "layerer",
            ActorKind::Structurer => "structurer",
            ActorKind::Collector => "collector",
            ActorKind::Duster => "duster",
            ActorKind::Reuniter => "reuniter",
            ActorKind::MixCasher => "mix-casher",
            ActorKind::Gambling => "gambling",
            ActorKind::Processor => "processor",
            ActorKind::Merchant => "merchant",
        }
    }
}

/// An address to pay to.
#[derive(Clone, Copy, Debug)]
pub struct Payee {
    pub kind: ScriptKind,
    pub key: KeyId,
    pub fresh: bool,
}

pub struct Actor {
    pub kind: ActorKind,
    pub name: String,
    pub wallet: Wallet,
    /// Exchanges only: customers' deposits waiting to be swept into `wallet` (the hot wallet).
    pub deposits: Wallet,
    script: ScriptKind,
    /// Chance that a new receive or change address is the last one again.
    reuse: f64,
    last_key: Option<KeyId>,
    /// Users: the exchange they use. Exchanges: themselves.
    exchange: ActorId,
    /// Users: their current deposit address at `exchange`.
    deposit_key: Option<KeyId>,
}

const USERS: u32 = 30_000;
/// One in five users reuses addresses habitually; the rest do so only occasionally.
const REUSING_USERS: f64 = 0.2;
const HABITUAL_REUSE: f64 = 0.5;
const OCCASIONAL_REUSE: f64 = 0.02;
/// Customers sending again to their previous deposit address.
const DEPOSIT_REUSE: f64 = 0.5;
/// Hot-wallet kinds and customer-deposit kinds of the exchanges.
const EXCHANGES: [(ScriptKind, ScriptKind); 8] = [
    (ScriptKind::P2wpkh, ScriptKind::P2wpkh),
    (ScriptKind::P2wsh, ScriptKind::P2sh),
    (ScriptKind::P2sh, ScriptKind::P2wpkh),
    (ScriptKind::P2wpkh, ScriptKind::P2pkh),
    (ScriptKind::P2wsh, ScriptKind::P2tr),
    (ScriptKind::P2pkh, ScriptKind::P2wpkh),
    (ScriptKind::P2wpkh, ScriptKind::P2sh),
    (ScriptKind::P2tr, ScriptKind::P2wpkh),
];
/// Pools: payout script and share of the hash rate (2023-24 mainnet-like concentration).
const POOLS: [(ScriptKind, f64); 7] = [
    (ScriptKind::P2wpkh, 0.30),
    (ScriptKind::P2pkh, 0.22),
    (ScriptKind::P2wpkh, 0.14),
    (ScriptKind::P2sh, 0.11),
    (ScriptKind::P2wpkh, 0.09),
    (ScriptKind::P2tr, 0.08),
    (ScriptKind::P2wpkh, 0.06),
];
const PEELERS: u32 = 3;

pub struct Actors {
    list: Vec<Actor>,
    next_key: KeyId,
    pub users: Range<ActorId>,
    pub exchanges: Range<ActorId>,
    pub pools: Range<ActorId>,
    pub peelers: Range<ActorId>,
    pub whirlpool: ActorId,
    pub wasabi: ActorId,
    /// Share of users, sweeps and withdrawals that are the first exchange's.
    whale_share: f64,
}

impl Actors {
    /// `whale_share`: see `SynthArgs::whale_share`.
    pub fn new(rng: &mut impl Rng, whale_share: f64) -> Self {
        let mut actors = Actors {
            list: Vec::new(),
            next_key: 1,
            users: 0..0,
            exchanges: 0..0,
            pools: 0..0,
            peelers: 0..0,
            whirlpool: 0,
            wasabi: 0,
            whale_share,
        };
        let first_exchange = USERS;
        let start = actors.list.len() as ActorId;
        for i in 0..USERS {
            let reuse = if rng.gen_bool(REUSING_USERS) {
                HABITUAL_REUSE
            } else {
                OCCASIONAL_REUSE
            };
            let mut exchange = first_exchange + rng.gen_range(0..EXCHANGES.len() as u32);
            // Drawn only when asked, so that chains without a whale stay
            // byte for byte what they were.
            if whale_share > 0.0 && rng.gen_bool(whale_share) {
                exchange = first_exchange;
            }
            let script = dist::pick(rng, dist::USER_WALLET_KINDS);
            actors.push(
                ActorKind::User,
                format!("user-{i}"),
                script,
                reuse,
                exchange,
            );
        }
        actors.users = start..actors.list.len() as ActorId;
        let start = actors.list.len() as ActorId;
        for (i, (hot, _)) in EXCHANGES.iter().enumerate() {
            actors.push(
                ActorKind::Exchange,
                format!("exchange-{i}"),
                *hot,
                0.8,
                first_exchange + i as u32,
            );
        }
        actors.exchanges = start..actors.list.len() as ActorId;
        let start = actors.list.len() as ActorId;
        for (i, (script, _)) in POOLS.iter().enumerate() {
            actors.push(ActorKind::Pool, format!("pool-{i}"), *script, 0.97, 0);
        }
        actors.pools = start..actors.list.len() as ActorId;
        let start = actors.list.len() as ActorId;
        for i in 0..PEELERS {
            actors.add(ActorKind::Peeler, format!("peeler-{i}"), ScriptKind::P2wpkh);
        }
        actors.peelers = start..actors.list.len() as ActorId;
        actors.whirlpool = actors.add(
            ActorKind::Mixer,
            "whirlpool-coordinator".into(),
            ScriptKind::P2wpkh,
        );
        actors.wasabi = actors.add(
            ActorKind::Mixer,
            "wasabi-coordinator".into(),
            ScriptKind::P2wpkh,
        );
        actors
    }

    fn push(
        &mut self,
        kind: ActorKind,
        name: String,
        script: ScriptKind,
        reuse: f64,
        exchange: ActorId,
    ) -> ActorId {
        self.list.push(Actor {
            kind,
            name,
            wallet: Wallet::default(),
            deposits: Wallet::default(),
            script,
            reuse,
            last_key: None,
            exchange,
            deposit_key: None,
        });
        self.list.len() as ActorId - 1
    }

    /// Adds an actor that never reuses addresses (criminals are created as their flows start).
    pub fn add(&mut self, kind: ActorKind, name: String, script: ScriptKind) -> ActorId {
        self.push(kind, name, script, 0.0, 0)
    }

    pub fn get(&self, id: ActorId) -> &Actor {
        &self.list[id as usize]
    }

    pub fn get_mut(&mut self, id: ActorId) -> &mut Actor {
        &mut self.list[id as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (ActorId, &Actor)> {
        self.list.iter().enumerate().map(|(i, a)| (i as ActorId, a))
    }

    pub fn random_user(&self, rng: &mut impl Rng) -> ActorId {
        rng.gen_range(self.users.clone())
    }

    /// See `SynthArgs::whale_share`.
    pub fn whale_share(&self) -> f64 {
        self.whale_share
    }

    /// The exchange that sweeps or pays out next: the whale for its share.
    pub fn random_exchange(&self, rng: &mut impl Rng) -> ActorId {
        if self.whale_share > 0.0 && rng.gen_bool(self.whale_share) {
            return self.exchanges.start;
        }
        rng.gen_range(self.exchanges.clone())
    }

    /// The pool that finds the next block, by hash rate.
    pub fn random_pool(&self, rng: &mut impl Rng) -> ActorId {
        let table: Vec<(ActorId, f64)> =
            self.pools.clone().zip(POOLS.iter().map(|p| p.1)).collect();
        dist::pick(rng, &table)
    }

    /// The pool that, like Ocean or old P2Pool, pays its miners inside the coinbase.
    pub fn pays_miners_in_coinbase(&self, pool: ActorId) -> bool {
        pool == self.pools.end - 1
    }

    /// A receive or change address under the actor's reuse policy.
    pub fn address(&mut self, rng: &mut impl Rng, id: ActorId) -> Payee {
        let actor = &mut self.list[id as usize];
        if let Some(key) = actor.last_key.filter(|_| rng.gen_bool(actor.reuse)) {
            return Payee {
                kind: actor.script,
                key,
                fresh: false,
            };
        }
        let kind = actor.script;
        let payee = self.fresh(kind);
        self.list[id as usize].last_key = Some(payee.key);
        payee
    }

    /// A never-used address of the actor's own script type, which becomes its last address
    /// (whatever its reuse policy: a gambling service pays winners to a fresh address).
    pub fn fresh_address(&mut self, id: ActorId) -> Payee {
        let payee = self.fresh(self.list[id as usize].script);
        self.list[id as usize].last_key = Some(payee.key);
        payee
    }

    /// The script type of the actor's own addresses.
    pub fn script(&self, id: ActorId) -> ScriptKind {
        self.list[id as usize].script
    }

    /// The address the actor used last, without handing out a new one.
    pub fn last_address(&self, id: ActorId) -> Option<Payee> {
        let actor = &self.list[id as usize];
        actor.last_key.map(|key| Payee {
            kind: actor.script,
            key,
            fresh: false,
        })
    }

    /// A never-used address of `kind` (CoinJoin outputs, criminals' hops).
    pub fn fresh(&mut self, kind: ScriptKind) -> Payee {
        let key = self.next_key;
        self.next_key += 1;
        Payee {
            kind,
            key,
            fresh: true,
        }
    }

    /// The deposit address a user pays to at their exchange, and that exchange.
    pub fn deposit_address(&mut self, rng: &mut impl Rng, user: ActorId) -> (ActorId, Payee) {
        let exchange = self.list[user as usize].exchange;
        let kind = self.deposit_kind(exchange);
        if let Some(key) = self.list[user as usize]
            .deposit_key
            .filter(|_| rng.gen_bool(DEPOSIT_REUSE))
        {
            return (
                exchange,
                Payee {
                    kind,
                    key,
                    fresh: false,
                },
            );
        }
        let payee = self.fresh(kind);
        self.list[user as usize].deposit_key = Some(payee.key);
        (exchange, payee)
    }

    /// A one-off deposit address at `exchange` (criminals and peelers cashing out).
    pub fn fresh_deposit(&mut self, exchange: ActorId) -> Payee {
        self.fresh(self.deposit_kind(exchange))
    }

    fn deposit_kind(&self, exchange: ActorId) -> ScriptKind {
        EXCHANGES[(exchange - self.exchanges.start) as usize].1
    }
}
