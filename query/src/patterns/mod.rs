//! Suspicious patterns, found from the shape of the transactions alone:
//! peel chains, rapid layering, structuring (fan-out then fan-in), the
//! consolidation of many small deposits, CoinJoin outputs spent together
//! again or carried to an exchange, and dusting. README "Patterns" gives
//! each rule, its parameters, what it assumes and where it goes wrong.
//!
//! Every pattern is reported once, in the block holding the transaction
//! that completes it, and a block's report depends only on the chain up to
//! that block: the detectors walk back from each transaction (`peel`,
//! `layering`, `fan`, `reunion`, `dusting`), or carry a window of state
//! forward that a scan rebuilds before its first block (`to_exchange`). So
//! a scan of any range of blocks, a live alert on the newest block and a
//! full historical scan agree. The detectors read through `ctx`; `scan`
//! runs them over blocks; `list` answers `Patterns/ListPatterns` with it.
//!
//! Transactions and outputs are the flow graph's numbers (plain `u64`s).

mod ctx;
mod dusting;
mod fan;
mod layering;
pub mod list;
mod peel;
mod reunion;
mod scan;
mod to_exchange;

use std::fmt;
use std::str::FromStr;

pub use dusting::DustingParams;
pub use fan::{FanInParams, FanOutInParams};
pub use layering::LayeringParams;
pub use peel::PeelParams;
pub use scan::{Carry, Scanner};
pub use to_exchange::ToExchangeParams;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    PeelChain,
    Layering,
    FanOutIn,
    FanIn,
    CoinJoinReunion,
    CoinJoinToExchange,
    Dusting,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::PeelChain,
        Kind::Layering,
        Kind::FanOutIn,
        Kind::FanIn,
        Kind::CoinJoinReunion,
        Kind::CoinJoinToExchange,
        Kind::Dusting,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::PeelChain => "peel-chain",
            Kind::Layering => "layering",
            Kind::FanOutIn => "fan-out-in",
            Kind::FanIn => "fan-in",
            Kind::CoinJoinReunion => "coinjoin-reunion",
            Kind::CoinJoinToExchange => "coinjoin-to-exchange",
            Kind::Dusting => "dusting",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                format!("unknown pattern {s:?}; known: {}", names.join(", "))
            })
    }
}

/// One pattern found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    /// The block of the transaction that completed it.
    pub height: u32,
    /// Its transactions, oldest first; the last one completed it.
    pub txs: Vec<u64>,
    /// What it moved (see `Kind` docs in the README): a peel chain's or a
    /// layering's first coin, the coins swept or consolidated, the dust
    /// sent, the mixed coins reunited, or what reached the exchange.
    pub value: u64,
    /// Steps, hops, coins or outputs, by kind.
    pub size: u32,
}

impl Found {
    /// The transaction that completed it.
    pub fn last(&self) -> u64 {
        *self.txs.last().expect("a pattern has transactions")
    }
}

/// The detectors' thresholds. The defaults are chosen from how the
/// patterns are described in the literature and by investigators, not
/// fitted to any chain (README "Patterns" gives the reasons).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Params {
    pub peel: PeelParams,
    pub layering: LayeringParams,
    pub fan_out_in: FanOutInParams,
    pub fan_in: FanInParams,
    pub to_exchange: ToExchangeParams,
    pub dusting: DustingParams,
}
