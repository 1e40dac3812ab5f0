//! The random distributions that make the chain look like recent mainnet.
//!
//! Every table here is an approximation of publicly known statistics of 2021-2024 mainnet
//! (before the 2024 runes wave); `synth/README.md` lists the figures and where they come from,
//! and the tests check that what is generated stays inside the documented ranges.

use rand::Rng;

use crate::keys::ScriptKind;

/// A count table: buckets `(lo, hi, weight)`, log-uniform inside a bucket so tails stay long.
pub type CountTable = [(u32, u32, f64)];

/// Inputs of an ordinary payment: most spend one coin, a few sweep many.
pub const PAYMENT_INPUTS: &CountTable = &[
    (1, 1, 0.75),
    (2, 2, 0.14),
    (3, 3, 0.045),
    (4, 5, 0.035),
    (6, 10, 0.02),
    (11, 30, 0.01),
];
/// Recipients of an ordinary payment (a change output comes on top).
pub const PAYMENT_RECIPIENTS: &CountTable =
    &[(1, 1, 0.88), (2, 2, 0.06), (3, 4, 0.04), (5, 12, 0.02)];
/// Share of payments that send everything and have no change output.
pub const NO_CHANGE_SHARE: f64 = 0.12;
/// Share of payments that carry an OP_RETURN (timestamps, protocol markers).
pub const OP_RETURN_SHARE: f64 = 0.08;
/// Coins merged by a consolidation.
pub const CONSOLIDATION_INPUTS: &CountTable = &[
    (5, 10, 0.55),
    (11, 30, 0.3),
    (31, 100, 0.12),
    (101, 200, 0.03),
];
/// Deposits merged by one exchange sweep.
pub const SWEEP_INPUTS: &CountTable = &[(3, 10, 0.5), (11, 40, 0.35), (41, 150, 0.15)];
/// Recipients of an exchange batch withdrawal.
pub const BATCH_RECIPIENTS: &CountTable = &[(5, 20, 0.5), (21, 80, 0.35), (81, 250, 0.15)];
/// Recipients of a mining pool's payout transaction.
pub const POOL_PAYOUT_RECIPIENTS: &CountTable = &[(20, 60, 0.5), (61, 150, 0.3), (151, 290, 0.2)];

/// Script types of user wallets. The output mix that results (measured in summary.json and the
/// tests) is P2WPKH > P2TR > P2PKH ~ P2SH > P2WSH > OP_RETURN > rare kinds.
pub const USER_WALLET_KINDS: &[(ScriptKind, f64)] = &[
    (ScriptKind::P2wpkh, 0.45),
    (ScriptKind::P2tr, 0.24),
    (ScriptKind::P2pkh, 0.125),
    (ScriptKind::P2sh, 0.10),
    (ScriptKind::P2wsh, 0.03),
    (ScriptKind::P2pk, 0.0015),
    (ScriptKind::BareMultisig, 0.0015),
    (ScriptKind::NonStandard, 0.001),
];

/// Median payment: about 0.004 BTC (a few hundred dollars), with a heavy tail both ways.
pub const PAYMENT_MEDIAN_SAT: f64 = 400_000.0;
pub const PAYMENT_SIGMA: f64 = 1.7;
/// Smallest output a wallet creates (above every standard dust limit).
pub const DUST: u64 = 1_000;

/// Median fee rate of a block's mempool (sat/vB) and spreads between blocks and within one.
const FEE_MEDIAN: f64 = 7.0;
const FEE_BLOCK_SIGMA: f64 = 0.5;
const FEE_TX_SIGMA: f64 = 0.6;

pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn lognormal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// One item of a weighted table.
pub fn pick<T: Copy>(rng: &mut impl Rng, table: &[(T, f64)]) -> T {
    let total: f64 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen::<f64>() * total;
    for &(item, w) in table {
        if x < w {
            return item;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

pub fn count(rng: &mut impl Rng, table: &CountTable) -> usize {
    let total: f64 = table.iter().map(|b| b.2).sum();
    let mut x = rng.gen::<f64>() * total;
    let &(lo, hi, _) = table
        .iter()
        .find(|b| {
            x -= b.2;
            x < 0.0
        })
        .unwrap_or(&table[table.len() - 1]);
    let n = (lo as f64) * ((hi as f64 + 1.0) / lo as f64).powf(rng.gen::<f64>());
    (n.floor() as usize).clamp(lo as usize, hi as usize)
}

/// The fee-rate level of one block's mempool.
pub fn block_fee_level(rng: &mut impl Rng) -> f64 {
    lognormal(rng, FEE_MEDIAN, FEE_BLOCK_SIGMA)
}

/// A transaction's fee rate (sat/vB) given its block's level.
pub fn fee_rate(rng: &mut impl Rng, level: f64) -> f64 {
    lognormal(rng, level, FEE_TX_SIGMA).clamp(1.0, 500.0)
}

/// Fee for `vsize` at `rate`, rounded up like wallets do.
pub fn fee(rate: f64, weight: u64) -> u64 {
    (rate * weight.div_ceil(4) as f64).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn counts_stay_in_their_table() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let draws: Vec<usize> = (0..20_000)
            .map(|_| count(&mut rng, PAYMENT_INPUTS))
            .collect();
        assert!(draws.iter().all(|&n| (1..=30).contains(&n)));
        let ones = draws.iter().filter(|&&n| n == 1).count() as f64 / draws.len() as f64;
        assert!((0.72..0.78).contains(&ones), "share of 1 = {ones}");
        assert!(draws.contains(&30) && draws.contains(&11));
    }

    #[test]
    fn lognormal_median_holds() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut xs: Vec<f64> = (0..20_001)
            .map(|_| lognormal(&mut rng, 100.0, 1.0))
            .collect();
        xs.sort_by(f64::total_cmp);
        assert!((90.0..110.0).contains(&xs[10_000]), "median {}", xs[10_000]);
    }
}
