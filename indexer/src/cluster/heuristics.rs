//! Which addresses a transaction says belong together, under a chosen set
//! of heuristics. README "Clustering" documents each rule, what it assumes
//! and where it goes wrong.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::script::ScriptType;

/// An output as the heuristics see it.
#[derive(Clone, Copy, Debug)]
pub struct Coin {
    pub addr: Option<u64>,
    pub value: u64,
    pub script: ScriptType,
}

/// An input: the address and script type of the output it spends.
#[derive(Clone, Copy, Debug)]
pub struct Spent {
    pub addr: Option<u64>,
    pub script: ScriptType,
}

/// A transaction's inputs and outputs. `fresh` marks outputs whose address
/// the chain had never seen before this tx.
#[derive(Clone, Debug, Default)]
pub struct TxView {
    pub inputs: Vec<Spent>,
    pub outputs: Vec<(Coin, bool)>,
}

/// The heuristics in force. Common-input ownership is always on: it is what
/// the others refine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heuristics {
    pub whirlpool: bool,
    pub wasabi: bool,
    pub joinmarket: bool,
    pub change_fresh: bool,
    pub change_round: bool,
}

const NAMES: [&str; 6] = [
    "multi-input",
    "whirlpool",
    "wasabi",
    "joinmarket",
    "change-fresh",
    "change-round",
];

impl Heuristics {
    /// Multi-input with every CoinJoin detector: the default.
    pub const DEFAULT: Heuristics = Heuristics {
        whirlpool: true,
        wasabi: true,
        joinmarket: true,
        change_fresh: false,
        change_round: false,
    };

    /// The addresses `tx` links to each other (empty when it links none),
    /// and which CoinJoin detector exempted it, if one did.
    pub fn links(&self, tx: &TxView) -> (Vec<u64>, Option<CoinJoin>) {
        if tx.inputs.is_empty() {
            return (Vec::new(), None);
        }
        if let Some(kind) = self.coinjoin(tx) {
            return (Vec::new(), Some(kind));
        }
        let mut linked: Vec<u64> = tx.inputs.iter().filter_map(|c| c.addr).collect();
        if let Some(change) = self.change(tx) {
            linked.push(change);
        }
        linked.sort_unstable();
        linked.dedup();
        if linked.len() < 2 {
            linked.clear();
        }
        (linked, None)
    }

    fn coinjoin(&self, tx: &TxView) -> Option<CoinJoin> {
        let counts = value_counts(tx);
        // The most frequent output value and how often (ties: the larger value).
        let (value, equal) = counts
            .iter()
            .map(|(&v, &n)| (v, n))
            .max_by_key(|&(v, n)| (n, v))?;
        let (inputs, outputs) = (tx.inputs.len(), tx.outputs.len());
        if self.whirlpool
            && (5..=8).contains(&outputs)
            && inputs == outputs
            && equal == outputs
            && WHIRLPOOL_POOLS.contains(&value)
        {
            return Some(CoinJoin::Whirlpool);
        }
        if self.wasabi {
            // One participant may take several equal outputs: no input count rule.
            let wasabi1 =
                equal >= 5 && inputs >= 3 && value.abs_diff(WASABI1_DENOM) <= WASABI1_DENOM / 10;
            let repeated: usize = counts.values().filter(|&&n| n > 1).sum();
            let wasabi2 = inputs >= 50 && outputs >= 50 && repeated * 2 >= outputs;
            if wasabi1 || wasabi2 {
                return Some(CoinJoin::Wasabi);
            }
        }
        if self.joinmarket && equal >= 3 && inputs >= equal && outputs - equal <= equal + 1 {
            return Some(CoinJoin::JoinMarket);
        }
        None
    }

    /// The one output that looks like change, if exactly one does.
    fn change(&self, tx: &TxView) -> Option<u64> {
        if tx.outputs.len() < 2 {
            return None;
        }
        let input_type = tx.inputs[0].script;
        let same_inputs = tx.inputs.iter().all(|c| c.script == input_type);
        let mut candidates: Vec<u64> = Vec::new();
        if self.change_fresh && same_inputs {
            candidates.extend(pick_one(tx, |(c, fresh)| *fresh && c.script == input_type));
        }
        if self.change_round {
            let round = |v: u64| v.is_multiple_of(ROUND);
            let payments_round =
                tx.outputs.iter().filter(|(c, _)| round(c.value)).count() == tx.outputs.len() - 1;
            if payments_round {
                candidates.extend(pick_one(tx, |(c, _)| !round(c.value)));
            }
        }
        candidates.dedup();
        match candidates[..] {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// The address of the only output matching `pred`; None if zero or several.
fn pick_one(tx: &TxView, pred: impl Fn(&(Coin, bool)) -> bool) -> Option<u64> {
    let mut found = tx.outputs.iter().filter(|o| pred(o));
    match (found.next(), found.next()) {
        (Some((c, _)), None) => c.addr,
        _ => None,
    }
}

/// Whirlpool's pool denominations: 0.001, 0.01, 0.05 and 0.5 BTC.
const WHIRLPOOL_POOLS: [u64; 4] = [100_000, 1_000_000, 5_000_000, 50_000_000];
/// Wasabi 1.x rounds paid ~0.1 BTC per participant.
const WASABI1_DENOM: u64 = 10_000_000;
/// A payment "looks round" at 0.0001 BTC precision.
const ROUND: u64 = 10_000;

/// How many outputs carry each value.
fn value_counts(tx: &TxView) -> HashMap<u64, usize> {
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for (c, _) in &tx.outputs {
        *counts.entry(c.value).or_default() += 1;
    }
    counts
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoinJoin {
    Whirlpool,
    Wasabi,
    JoinMarket,
}

impl fmt::Display for Heuristics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = [
            true,
            self.whirlpool,
            self.wasabi,
            self.joinmarket,
            self.change_fresh,
            self.change_round,
        ];
        let names: Vec<&str> = NAMES
            .iter()
            .zip(on)
            .filter(|(_, on)| *on)
            .map(|(n, _)| *n)
            .collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Heuristics {
    type Err = String;

    /// A comma-separated list of names; `coinjoin` stands for all three
    /// detectors. `multi-input` is implied.
    fn from_str(s: &str) -> Result<Heuristics, String> {
        let mut h = Heuristics {
            whirlpool: false,
            wasabi: false,
            joinmarket: false,
            change_fresh: false,
            change_round: false,
        };
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "multi-input" => {}
                "coinjoin" => (h.whirlpool, h.wasabi, h.joinmarket) = (true, true, true),
                "whirlpool" => h.whirlpool = true,
                "wasabi" => h.wasabi = true,
                "joinmarket" => h.joinmarket = true,
                "change-fresh" => h.change_fresh = true,
                "change-round" => h.change_round = true,
                other => {
                    return Err(format!(
                        "unknown heuristic {other:?}; known: {}, coinjoin",
                        NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coin(addr: u64, value: u64) -> Coin {
        Coin {
            addr: Some(addr),
            value,
            script: ScriptType::P2wpkh,
        }
    }

    fn tx(inputs: &[(u64, u64)], outputs: &[(u64, u64, bool)]) -> TxView {
        TxView {
            inputs: inputs
                .iter()
                .map(|&(a, _)| Spent {
                    addr: Some(a),
                    script: ScriptType::P2wpkh,
                })
                .collect(),
            outputs: outputs.iter().map(|&(a, v, f)| (coin(a, v), f)).collect(),
        }
    }

    #[test]
    fn names_round_trip() {
        for s in [
            "multi-input",
            "multi-input,whirlpool,wasabi,joinmarket",
            "multi-input,joinmarket,change-fresh,change-round",
        ] {
            assert_eq!(s.parse::<Heuristics>().unwrap().to_string(), s);
        }
        assert_eq!(
            "coinjoin".parse::<Heuristics>().unwrap(),
            Heuristics::DEFAULT
        );
        assert!("multi-input,magic".parse::<Heuristics>().is_err());
    }

    #[test]
    fn a_whirlpool_mix_links_nothing_unless_its_detector_is_off() {
        let mix = tx(
            &[
                (1, 1_000_170),
                (2, 1_000_000),
                (3, 1_000_000),
                (4, 1_000_000),
                (5, 1_000_000),
            ],
            &[
                (6, 1_000_000, true),
                (7, 1_000_000, true),
                (8, 1_000_000, true),
                (9, 1_000_000, true),
                (10, 1_000_000, true),
            ],
        );
        assert_eq!(
            Heuristics::DEFAULT.links(&mix),
            (vec![], Some(CoinJoin::Whirlpool))
        );
        let plain: Heuristics = "multi-input".parse().unwrap();
        assert_eq!(plain.links(&mix).0, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn wasabi_and_joinmarket_shapes() {
        let mut inputs: Vec<(u64, u64)> = (0..6).map(|i| (i, 12_000_000)).collect();
        let mut outputs: Vec<(u64, u64, bool)> = (10..16).map(|a| (a, 10_000_000, true)).collect();
        outputs.push((20, 1_234_567, true));
        assert_eq!(
            Heuristics::DEFAULT.links(&tx(&inputs, &outputs)).1,
            Some(CoinJoin::Wasabi)
        );
        // Three makers and a taker: equal outputs, change for most.
        inputs.truncate(4);
        let jm = tx(
            &inputs,
            &[
                (30, 3_333_333, true),
                (31, 3_333_333, true),
                (32, 3_333_333, true),
                (33, 777, true),
                (34, 888, true),
            ],
        );
        assert_eq!(Heuristics::DEFAULT.links(&jm).1, Some(CoinJoin::JoinMarket));
        // A two-output payment is no CoinJoin: its inputs are linked.
        let pay = tx(&[(1, 5), (2, 5)], &[(3, 4, false), (4, 4, true)]);
        assert_eq!(Heuristics::DEFAULT.links(&pay), (vec![1, 2], None));
    }

    #[test]
    fn change_heuristics_link_the_one_plausible_change_output() {
        let h: Heuristics = "change-fresh,change-round".parse().unwrap();
        // One fresh output of the inputs' type, one reused: the fresh one is change.
        let t = tx(&[(1, 100_000)], &[(7, 50_000, false), (8, 48_123, true)]);
        assert_eq!(h.links(&t).0, vec![1, 8]);
        // Two fresh outputs, neither amount round: no change is named.
        let t = tx(&[(1, 100_000)], &[(7, 50_001, true), (8, 48_123, true)]);
        assert_eq!(h.links(&t).0, Vec::<u64>::new());
        // A single input and no change: nothing to link.
        let off = Heuristics::DEFAULT;
        assert_eq!(
            off.links(&tx(
                &[(1, 100_000)],
                &[(7, 50_000, false), (8, 48_123, true)]
            ))
            .0,
            Vec::<u64>::new()
        );
    }
}
