//! CoinJoin denominations: the output values the Whirlpool and Wasabi
//! protocols publish, shared by the clustering detectors that look for
//! them and the generator (`satflow synth`) that plants them, so that the
//! two cannot drift apart.

/// Whirlpool's published pool denominations, in sats: 0.001, 0.01, 0.05
/// and 0.5 BTC. A mix pays exactly one of them to each of its outputs.
pub const WHIRLPOOL_POOLS: [u64; 4] = [100_000, 1_000_000, 5_000_000, 50_000_000];

/// Wasabi 1.x's published base denomination, in sats: about 0.1 BTC per
/// equal output of a round.
pub const WASABI1_DENOM: u64 = 10_000_000;
