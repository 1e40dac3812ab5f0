//! Distributions measured on what was generated (main chain only), for summary.json.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::keys::ScriptKind;
use crate::txbuild::{BuiltTx, CoinJoinKind, TxPlan};

/// Count buckets of the in/out histograms.
const BUCKETS: [(usize, usize, &str); 10] = [
    (1, 1, "1"),
    (2, 2, "2"),
    (3, 3, "3"),
    (4, 4, "4"),
    (5, 5, "5"),
    (6, 10, "6-10"),
    (11, 20, "11-20"),
    (21, 50, "21-50"),
    (51, 100, "51-100"),
    (101, usize::MAX, "101+"),
];
/// Fee rates are binned at 0.1 sat/vB up to this rate (above it they land in the last bin).
const FEE_BINS: usize = 10_000;
/// Blocks at least this heavy count as "full" for the per-block means.
const FULL_BLOCK_WEIGHT: u64 = 3_900_000;

pub struct Stats {
    pub blocks: u64,
    pub txs: u64,
    pub inputs: u64,
    pub outputs: u64,
    scripts: BTreeMap<ScriptKind, u64>,
    inputs_hist: [u64; BUCKETS.len()],
    outputs_hist: [u64; BUCKETS.len()],
    fee_bins: Vec<u64>,
    fee_rate_sum: f64,
    reused: u64,
    addressable: u64,
    coinjoins: BTreeMap<&'static str, u64>,
    full_blocks: u64,
    full_weight: u64,
    full_size: u64,
    full_txs: u64,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    pub range: &'static str,
    pub txs: u64,
    pub share: f64,
}

#[derive(Debug, Serialize)]
pub struct FeeRates {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub mean: f64,
}

#[derive(Debug, Serialize)]
pub struct Distributions {
    /// Share of all outputs (coinbase outputs and witness commitments included) by script type.
    pub output_script_share: BTreeMap<&'static str, f64>,
    pub output_script_count: BTreeMap<&'static str, u64>,
    /// Non-coinbase transactions by number of inputs and of outputs.
    pub inputs_per_tx: Vec<Bucket>,
    pub outputs_per_tx: Vec<Bucket>,
    /// Non-coinbase transactions' fee / vsize.
    pub fee_rate_sat_per_vb: FeeRates,
    /// Share of outputs with an address paying an address that had been paid before.
    pub address_reuse_rate: f64,
    pub coinjoins: BTreeMap<&'static str, u64>,
    /// Means over blocks of at least 3.9 MWU (all blocks past the bootstrap).
    pub full_blocks: u64,
    pub full_block_mean_weight: f64,
    pub full_block_mean_size: f64,
    pub full_block_mean_txs: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            blocks: 0,
            txs: 0,
            inputs: 0,
            outputs: 0,
            scripts: BTreeMap::new(),
            inputs_hist: [0; BUCKETS.len()],
            outputs_hist: [0; BUCKETS.len()],
            fee_bins: vec![0; FEE_BINS + 1],
            fee_rate_sum: 0.0,
            reused: 0,
            addressable: 0,
            coinjoins: BTreeMap::new(),
            full_blocks: 0,
            full_weight: 0,
            full_size: 0,
            full_txs: 0,
        }
    }
}

fn bucket(n: usize) -> usize {
    BUCKETS
        .iter()
        .position(|&(lo, hi, _)| (lo..=hi).contains(&n))
        .expect("buckets cover 1..")
}

impl Stats {
    /// A block that carries nothing the simulation planned (genesis).
    pub fn count_plain_block(&mut self, outputs: u64) {
        self.blocks += 1;
        self.txs += 1;
        self.outputs += outputs;
    }

    pub fn record_block(
        &mut self,
        coinbase: &TxPlan,
        plans: &[TxPlan],
        built: &[BuiltTx],
        weight: u64,
        size: u64,
    ) {
        self.blocks += 1;
        self.txs += 1 + plans.len() as u64;
        // The witness commitment is an extra OP_RETURN output of every coinbase.
        self.outputs += coinbase.outputs.len() as u64 + 1;
        *self.scripts.entry(ScriptKind::OpReturn).or_default() += 1;
        self.count_outputs(coinbase);
        for (plan, tx) in plans.iter().zip(built) {
            self.inputs += plan.inputs.len() as u64;
            self.outputs += plan.outputs.len() as u64;
            self.inputs_hist[bucket(plan.inputs.len())] += 1;
            self.outputs_hist[bucket(plan.outputs.len())] += 1;
            self.count_outputs(plan);
            let rate = plan.fee() as f64 / tx.weight.div_ceil(4) as f64;
            self.fee_rate_sum += rate;
            self.fee_bins[((rate * 10.0) as usize).min(FEE_BINS)] += 1;
            if let Some(kind) = plan.tag.coinjoin {
                *self.coinjoins.entry(kind.name()).or_default() += 1;
            }
        }
        if weight >= FULL_BLOCK_WEIGHT {
            self.full_blocks += 1;
            self.full_weight += weight;
            self.full_size += size;
            self.full_txs += 1 + plans.len() as u64;
        }
    }

    fn count_outputs(&mut self, plan: &TxPlan) {
        for out in &plan.outputs {
            *self.scripts.entry(out.kind).or_default() += 1;
            if out.kind != ScriptKind::OpReturn {
                self.addressable += 1;
                self.reused += u64::from(!out.fresh);
            }
        }
    }

    fn fee_percentile(&self, p: f64) -> f64 {
        let total: u64 = self.fee_bins.iter().sum();
        let wanted = (total as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (bin, &n) in self.fee_bins.iter().enumerate() {
            seen += n;
            if seen >= wanted.max(1) {
                return bin as f64 / 10.0;
            }
        }
        0.0
    }

    pub fn distributions(&self) -> Distributions {
        let all_outputs: u64 = self.scripts.values().sum();
        let share = |n: u64, of: u64| if of == 0 { 0.0 } else { n as f64 / of as f64 };
        let spends = self.txs.saturating_sub(self.blocks);
        let hist = |h: &[u64; BUCKETS.len()]| {
            BUCKETS
                .iter()
                .zip(h)
                .map(|(b, &n)| Bucket {
                    range: b.2,
                    txs: n,
                    share: share(n, spends),
                })
                .collect()
        };
        let full = self.full_blocks.max(1) as f64;
        let mut coinjoins: BTreeMap<&'static str, u64> = [
            CoinJoinKind::Whirlpool,
            CoinJoinKind::Wasabi,
            CoinJoinKind::JoinMarket,
        ]
        .map(|k| (k.name(), 0))
        .into();
        coinjoins.extend(self.coinjoins.iter().map(|(k, v)| (*k, *v)));
        Distributions {
            output_script_share: ScriptKind::ALL
                .iter()
                .map(|k| {
                    (
                        k.name(),
                        share(self.scripts.get(k).copied().unwrap_or(0), all_outputs),
                    )
                })
                .collect(),
            output_script_count: ScriptKind::ALL
                .iter()
                .map(|k| (k.name(), self.scripts.get(k).copied().unwrap_or(0)))
                .collect(),
            inputs_per_tx: hist(&self.inputs_hist),
            outputs_per_tx: hist(&self.outputs_hist),
            fee_rate_sat_per_vb: FeeRates {
                p10: self.fee_percentile(0.1),
                p50: self.fee_percentile(0.5),
                p90: self.fee_percentile(0.9),
                mean: self.fee_rate_sum / spends.max(1) as f64,
            },
            address_reuse_rate: share(self.reused, self.addressable),
            coinjoins,
            full_blocks: self.full_blocks,
            full_block_mean_weight: self.full_weight as f64 / full,
            full_block_mean_size: self.full_size as f64 / full,
            full_block_mean_txs: self.full_txs as f64 / full,
        }
    }
}
