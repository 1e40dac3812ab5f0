//! From a cluster's features to a category: a rule or two per service,
//! tried in the order of `Service::SERVICES`, the first that holds winning
//! (README, "Services from behaviour", gives each rule and what it gets
//! wrong).
//!
//! A rule is a set of floors its features must reach, and for each a level
//! at which the evidence is strong. Confidence is 0.5 at the floors and
//! rises with the weakest feature's way from its floor to its strong level,
//! to 1.0 when every feature is strong.

use super::{Features, Service};

/// Transactions a cluster needs before it is categorised at all.
pub const MIN_TXS: u64 = 20;

/// One feature of a rule: its value, the floor it must reach, and where it
/// counts as strong.
struct Need {
    value: f64,
    floor: f64,
    strong: f64,
}

fn need(value: impl Into<f64>, floor: f64, strong: f64) -> Need {
    Need {
        value: value.into(),
        floor,
        strong,
    }
}

/// None when a need is unmet; else the confidence the needs give.
fn confidence(needs: &[Need]) -> Option<f64> {
    let mut weakest: f64 = 1.0;
    for n in needs {
        if n.value < n.floor {
            return None;
        }
        weakest = weakest.min(((n.value - n.floor) / (n.strong - n.floor)).min(1.0));
    }
    Some(0.5 + 0.5 * weakest)
}

/// The rules of `service`: any one of them holding is enough.
fn rules(service: Service, f: &Features) -> Vec<Vec<Need>> {
    let per_block = f.txs as f64 / f.span() as f64;
    let forwarding = f.forwards as f64 / f.spends().max(1) as f64;
    match service {
        Service::MiningPool => vec![vec![
            need(f.coinbase_txs as f64, 3.0, 20.0),
            need(f.coinbase_share(), 0.5, 0.9),
            // Shares its rewards among its miners: what tells it from a
            // solo miner.
            need(f.batch_payouts as f64, 3.0, 20.0),
        ]],
        Service::Mixer => vec![vec![
            need(f.coinjoins as f64, 10.0, 50.0),
            need(f.share(f.coinjoins), 0.5, 0.9),
        ]],
        Service::Exchange => vec![
            // A hot wallet: customers' coins in, swept together, paid out in batches.
            vec![
                need(f.size as f64, 50.0, 1000.0),
                need(f.deposits as f64, 50.0, 1000.0),
                need(f.sweeps as f64, 5.0, 50.0),
                need(f.batch_payouts as f64, 5.0, 50.0),
            ],
            // Deposit addresses: many, paid by others, each swept on whole.
            vec![
                need(f.size as f64, 100.0, 5000.0),
                need(f.deposits as f64, 200.0, 5000.0),
                need(f.share(f.deposits), 0.8, 0.95),
                need(forwarding, 0.8, 0.95),
            ],
        ],
        Service::PaymentProcessor => vec![vec![
            need(f.deposits as f64, 30.0, 300.0),
            need(f.share(f.deposits), 0.8, 0.95),
            // An invoice address for each payment.
            need(f.size as f64 / f.deposits.max(1) as f64, 0.8, 0.95),
            need(f.settlements as f64, 1.0, 10.0),
            // Settles to a few rather than paying many out one by one.
            need(f.settlements as f64 - f.single_payouts as f64, 0.0, 5.0),
        ]],
        Service::Gambling => vec![vec![
            need(f.deposits as f64, 100.0, 1000.0),
            need(f.single_payouts as f64, 50.0, 500.0),
            need(
                f.single_payouts as f64 / f.deposits.max(1) as f64,
                0.25,
                0.5,
            ),
            need(per_block, 2.0, 10.0),
            // Bets go to a few addresses, used over and over.
            need(f.txs as f64 / f.size.max(1) as f64, 20.0, 100.0),
        ]],
        Service::Ordinary => Vec::new(),
    }
}

/// The category of a cluster with `f`, and the confidence in it (0.5 to
/// 1.0 for a service). A cluster that no service rule fits is an ordinary
/// wallet, with more confidence the more transactions it has shown.
pub fn classify(f: &Features) -> (Service, f64) {
    for service in Service::SERVICES {
        let best = rules(service, f)
            .iter()
            .filter_map(|r| confidence(r))
            .max_by(f64::total_cmp);
        if let Some(c) = best {
            return (service, c);
        }
    }
    let c = confidence(&[need(f.txs as f64, MIN_TXS as f64, 200.0)]).unwrap_or(0.5);
    (Service::Ordinary, c)
}

/// How a cluster that no rule calls a service is tied to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Most of its spends forward everything to the service's cluster: it
    /// holds the service's deposit addresses.
    SweptTo,
    /// Most of its deposits come from the service's cluster: it is a
    /// wallet the service fills, e.g. a hot wallet its deposit addresses
    /// are swept into.
    FedBy,
}

/// The confidence that a cluster with `f`, tied to a service by `link`,
/// is part of that service, whose own confidence is `service_confidence`;
/// None when its own behaviour does not bear the link out.
pub fn linked(f: &Features, link: Link, service_confidence: f64) -> Option<f64> {
    let own = match link {
        Link::SweptTo => confidence(&[
            need(f.deposits as f64, 50.0, 1000.0),
            need(f.forwards as f64, 5.0, 50.0),
            need(f.forwards as f64 / f.spends().max(1) as f64, 0.5, 0.9),
        ]),
        Link::FedBy => confidence(&[
            need(f.deposits as f64, 20.0, 200.0),
            need(f.share(f.deposits), 0.3, 0.6),
            need(f.spends() as f64, 5.0, 50.0),
        ]),
    }?;
    Some(own.min(service_confidence))
}

/// The features a category was given for, readable: what an analyst checks.
pub fn evidence(service: Service, f: &Features) -> Vec<String> {
    let pct = |part: u64| {
        format!(
            "{:.0}% of its {} transactions",
            100.0 * f.share(part),
            f.txs
        )
    };
    match service {
        Service::MiningPool => vec![
            format!(
                "coinbase receipts: {} transactions, {:.0}% of the value others paid it",
                f.coinbase_txs,
                100.0 * f.coinbase_share()
            ),
            format!("batched payouts (5+ outputs): {}", f.batch_payouts),
        ],
        Service::Mixer => vec![format!("CoinJoins: {}, {}", f.coinjoins, pct(f.coinjoins))],
        _ if f.linked_to.is_some() => vec![
            format!(
                "tied to {} cluster {}, the most common {}",
                service.name(),
                f.linked_to.map_or(0, |c| c.0),
                "payee of its forwards or payer of its deposits"
            ),
            format!("payments received: {}, {}", f.deposits, pct(f.deposits)),
            format!(
                "forwards of everything to one address: {} of {} spends",
                f.forwards,
                f.spends()
            ),
        ],
        Service::Exchange => vec![
            format!("{} addresses", f.size),
            format!("deposits from others: {}, {}", f.deposits, pct(f.deposits)),
            format!("sweeps of 3+ of its coins into its own: {}", f.sweeps),
            format!("batched payouts (5+ outputs): {}", f.batch_payouts),
            format!(
                "forwards of everything to one address: {} of {} spends",
                f.forwards,
                f.spends()
            ),
        ],
        Service::PaymentProcessor => vec![
            format!(
                "payments received: {}, {}, to {} addresses",
                f.deposits,
                pct(f.deposits),
                f.size
            ),
            format!(
                "settlements (5+ coins to 2 to 8 outputs): {}",
                f.settlements
            ),
            format!("single payouts: {}", f.single_payouts),
        ],
        Service::Gambling => vec![
            format!("payments received: {} to {} addresses", f.deposits, f.size),
            format!("single payouts: {}", f.single_payouts),
            format!(
                "{:.1} transactions a block over {} blocks",
                f.txs as f64 / f.span() as f64,
                f.span()
            ),
        ],
        Service::Ordinary => vec![format!("no service rule holds over {} transactions", f.txs)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Features {
        Features {
            size: 2,
            txs: 40,
            received: 1000,
            coinbase_txs: 30,
            coinbase_value: 950,
            deposit_value: 50,
            batch_payouts: 25,
            first_height: 1,
            last_height: 100,
            ..Features::default()
        }
    }

    #[test]
    fn floors_and_strength() {
        assert_eq!(classify(&pool()), (Service::MiningPool, 1.0));
        let weak = Features {
            coinbase_txs: 3,
            ..pool()
        };
        assert_eq!(classify(&weak), (Service::MiningPool, 0.5));
        let few = Features {
            coinbase_txs: 2,
            ..pool()
        };
        assert_eq!(classify(&few).0, Service::Ordinary);
        let solo = Features {
            batch_payouts: 0,
            ..pool()
        };
        assert_eq!(classify(&solo).0, Service::Ordinary);
        let mostly_paid = Features {
            deposit_value: 1500,
            ..pool()
        };
        assert_eq!(classify(&mostly_paid).0, Service::Ordinary);
    }

    #[test]
    fn earlier_rules_win() {
        let f = Features {
            coinjoins: 40,
            txs: 40,
            ..pool()
        };
        assert_eq!(classify(&f).0, Service::MiningPool);
        assert!(evidence(Service::MiningPool, &f)[0].contains("30 transactions, 95%"));
    }

    #[test]
    fn a_coordinator_s_reused_fee_address_is_a_mixer() {
        // Wasabi 1's coordinator took its fees at one address, round after round.
        let f = Features {
            size: 1,
            txs: 60,
            coinjoins: 57,
            deposits: 3,
            first_height: 1,
            last_height: 500,
            ..Features::default()
        };
        assert_eq!(classify(&f), (Service::Mixer, 1.0));
        let user = Features {
            coinjoins: 20,
            deposits: 40,
            ..f
        };
        assert_eq!(classify(&user).0, Service::Ordinary, "a third CoinJoins");
    }

    #[test]
    fn deposit_addresses() {
        let f = Features {
            size: 500,
            txs: 250,
            deposits: 150,
            forwards: 90,
            first_height: 1,
            last_height: 100,
            ..Features::default()
        };
        assert_eq!(
            classify(&f).0,
            Service::Ordinary,
            "too few deposits to be deposit addresses alone"
        );
        // 90 of 100 spends forward: strong; 150 deposits: 0.5 + 0.5 × 100/950.
        let c = linked(&f, Link::SweptTo, 1.0).unwrap();
        assert!((c - (0.5 + 0.5 * 100.0 / 950.0)).abs() < 1e-9, "{c}");
        assert_eq!(linked(&f, Link::SweptTo, 0.5), Some(0.5));
        let paying = Features { forwards: 40, ..f };
        assert_eq!(linked(&paying, Link::SweptTo, 1.0), None);
        let many = Features {
            size: 5000,
            txs: 10_100,
            deposits: 10_000,
            forwards: 100,
            ..f
        };
        assert_eq!(classify(&many), (Service::Exchange, 1.0));
    }
}
