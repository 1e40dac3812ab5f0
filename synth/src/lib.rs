//! `satflow synth`: writes a Bitcoin Core-style blocks directory shaped like recent mainnet,
//! with ground truth (who owns which address, which txs are CoinJoins, where planted illicit
//! flows go) for testing and benchmarking satflow at any size. See synth/README.md.

mod activity;
mod actors;
mod blkfile;
mod chain;
mod cli;
mod coinjoin;
mod dist;
mod economy;
mod flows;
mod generator;
mod keys;
mod market;
mod patterns;
mod peel;
mod services;
mod stats;
mod truth;
mod txbuild;
mod wallet;

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

pub use blkfile::{xor, MAX_FILE_SIZE, PREALLOC_CHUNK};
pub use cli::{parse_size, NetworkChoice, SynthArgs};
pub use stats::Distributions;

use blkfile::BlkWriter;
use chain::ChainParams;
use generator::{Generator, MainBlock, StaleBlock};
use keys::mix64;
use stats::Stats;
use truth::TruthWriter;

/// What a run produced; also written to `truth/summary.json`.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub network: NetworkChoice,
    pub seed: u64,
    /// Main-chain blocks written in full, genesis included (the truncated tail is not).
    pub blocks: u64,
    pub tip_height: u32,
    pub tip_hash: String,
    /// Main-chain transactions, inputs (coinbase inputs excluded) and outputs.
    pub txs: u64,
    pub inputs: u64,
    pub outputs: u64,
    /// Bytes of blk records written (magic and size headers included, padding excluded).
    pub bytes: u64,
    pub files: u32,
    pub stale_blocks: Vec<StaleInfo>,
    /// Length of the longest stale branch.
    pub deepest_fork: u32,
    /// The block whose record was cut in half, if `--truncate-tail`: not part of the chain.
    pub truncated_tail: Option<StaleInfo>,
    pub actors: usize,
    pub flows: usize,
    /// Whether `--plant-patterns` planted the suspicious patterns beyond peel chains.
    pub plant_patterns: bool,
    /// Whether `--plant-services` planted the gambling services and payment processors.
    pub plant_services: bool,
    /// Instances listed in `truth/patterns.csv`, by kind (every kind named, 0 if none).
    pub patterns: BTreeMap<&'static str, u64>,
    pub elapsed_secs: f64,
    pub mb_per_sec: f64,
    pub distributions: Distributions,
}

#[derive(Debug, Serialize)]
pub struct StaleInfo {
    pub height: u32,
    pub hash: String,
}

/// Writes each block, its stale competitors, truth rows and statistics as they arrive.
fn sink(
    blocks: std::sync::mpsc::Receiver<(MainBlock, Vec<StaleBlock>)>,
    writer: &mut BlkWriter,
    truth: &mut TruthWriter,
    stats: &mut Stats,
    progress: &mut impl FnMut(u64, u32),
) -> anyhow::Result<()> {
    for (block, stale) in blocks {
        truth.block(
            block.height,
            &block.assembled.coinbase,
            &block.plans,
            &block.built,
        )?;
        let size = block.assembled.bytes.len() as u64;
        stats.record_block(
            &block.coinbase,
            &block.plans,
            &block.built,
            block.assembled.weight,
            size,
        );
        let mut bytes = 8 + size;
        writer.push(block.assembled.bytes)?;
        for s in stale {
            bytes += 8 + s.bytes.len() as u64;
            writer.push(s.bytes)?;
        }
        progress(bytes, block.height);
    }
    Ok(())
}

/// Generates the directory described by `args`, silently.
pub fn run(args: &SynthArgs) -> anyhow::Result<Summary> {
    run_with_progress(args, |_, _| {})
}

/// Generates the directory described by `args`, calling `progress` after each main-chain
/// block is written with the bytes of blk records written for it (its stale competitors
/// included) and its height. Drawing progress is the caller's business (`satflow synth`
/// shows the indexer's bar), so this crate needs no terminal code; `args.quiet` is the
/// caller's to honour.
pub fn run_with_progress(
    args: &SynthArgs,
    mut progress: impl FnMut(u64, u32) + Send,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let params = ChainParams::new(args.network);
    let xor_key = args
        .xor
        .then(|| ChaCha8Rng::seed_from_u64(mix64(args.seed ^ 0x0b5)).gen::<[u8; 8]>());
    let mut writer =
        BlkWriter::create(&args.out, params.magic, xor_key, mix64(args.seed ^ 0x0de7))?;
    let mut truth = TruthWriter::create(&args.out.join("truth"))?;
    let mut generator = Generator::new(
        params,
        args.seed,
        args.size,
        args.whale_share,
        args.plant_patterns,
        args.plant_services,
    );
    let mut stats = Stats::default();

    let genesis = generator.genesis_bytes();
    let mut bytes = 8 + genesis.len() as u64;
    writer.push(genesis)?;
    stats.count_plain_block(1);
    let mut stale_blocks = Vec::new();
    let mut deepest_fork = 0;
    let mut tip_hash = String::new();
    // Writing blk records, truth rows and statistics happens on a second thread, overlapping
    // with the planning and hashing of the next blocks; the bounded channel bounds memory.
    let (sender, receiver) = std::sync::mpsc::sync_channel::<(MainBlock, Vec<StaleBlock>)>(2);
    let sink = std::thread::scope(|scope| {
        let sink =
            scope.spawn(|| sink(receiver, &mut writer, &mut truth, &mut stats, &mut progress));
        while bytes < args.size || generator.forks_pending() {
            let block = generator.next_block();
            let stale = generator.stale_blocks(&block);
            generator.commit(&block);
            tip_hash = block.assembled.hash.to_string();
            bytes += 8 + block.assembled.bytes.len() as u64;
            for s in &stale {
                bytes += 8 + s.bytes.len() as u64;
                deepest_fork = deepest_fork.max(s.depth);
                stale_blocks.push(StaleInfo {
                    height: s.height,
                    hash: s.hash.to_string(),
                });
            }
            if sender.send((block, stale)).is_err() {
                break; // the sink failed; its error is reported below
            }
        }
        drop(sender);
        sink.join().expect("the sink thread does not panic")
    });
    sink?;
    let tip_height = generator.tip_height();
    let truncated = args.truncate_tail.then(|| generator.next_block());
    let truncated_tail = truncated.as_ref().map(|b| StaleInfo {
        height: b.height,
        hash: b.assembled.hash.to_string(),
    });
    let partial = truncated.map(|b| b.assembled.bytes);
    bytes += partial.as_ref().map_or(0, |b| 8 + b.len() as u64 / 2);
    let files = writer.finish(partial)?;

    let elapsed = started.elapsed().as_secs_f64();
    let mut summary = Summary {
        network: args.network,
        seed: args.seed,
        blocks: stats.blocks,
        tip_height,
        tip_hash,
        txs: stats.txs,
        inputs: stats.inputs,
        outputs: stats.outputs,
        bytes,
        files,
        deepest_fork,
        stale_blocks,
        truncated_tail,
        actors: generator.economy.actors().iter().count(),
        flows: generator.economy.flows().len(),
        plant_patterns: args.plant_patterns,
        plant_services: args.plant_services,
        patterns: BTreeMap::new(),
        elapsed_secs: elapsed,
        mb_per_sec: bytes as f64 / 1e6 / elapsed,
        distributions: stats.distributions(),
    };
    truth.finish(
        generator.economy.actors(),
        generator.economy.flows(),
        tip_height,
        &mut summary,
    )?;
    Ok(summary)
}
