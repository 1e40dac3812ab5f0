//! Measures real mainnet blocks the way the tests measure generated ones, to calibrate the
//! tables in `src/dist.rs`:
//! `cargo run --release -p satflow-synth --example calibrate -- /work/shared/testdata/mainnet/raw/*.raw`

use std::collections::BTreeMap;

use bitcoin::{Block, Script};

fn kind(script: &Script) -> &'static str {
    match () {
        _ if script.is_p2wpkh() => "p2wpkh",
        _ if script.is_p2tr() => "p2tr",
        _ if script.is_p2pkh() => "p2pkh",
        _ if script.is_p2sh() => "p2sh",
        _ if script.is_p2wsh() => "p2wsh",
        _ if script.is_op_return() => "op_return",
        _ if script.is_p2pk() => "p2pk",
        _ if script.is_multisig() => "bare_multisig",
        _ => "nonstandard",
    }
}

fn main() -> anyhow::Result<()> {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path)?;
        let block: Block = bitcoin::consensus::deserialize(&bytes)?;
        let spends = &block.txdata[1..];
        let share = |n: usize| n as f64 / spends.len() as f64;
        let mut scripts: BTreeMap<&str, usize> = BTreeMap::new();
        for out in block.txdata.iter().flat_map(|tx| &tx.output) {
            *scripts.entry(kind(&out.script_pubkey)).or_default() += 1;
        }
        let outputs: usize = scripts.values().sum();
        let mix: Vec<String> = scripts
            .iter()
            .map(|(k, n)| format!("{k} {:.1}%", 100.0 * *n as f64 / outputs as f64))
            .collect();
        println!(
            "{path}: {} txs, {} bytes, weight {}; 1-input {:.2}, 2-output {:.2}, 1-output {:.2}, max in {}, max out {}\n  outputs: {}",
            block.txdata.len(),
            bytes.len(),
            block.weight().to_wu(),
            share(spends.iter().filter(|t| t.input.len() == 1).count()),
            share(spends.iter().filter(|t| t.output.len() == 2).count()),
            share(spends.iter().filter(|t| t.output.len() == 1).count()),
            spends.iter().map(|t| t.input.len()).max().unwrap_or(0),
            spends.iter().map(|t| t.output.len()).max().unwrap_or(0),
            mix.join(", ")
        );
    }
    Ok(())
}
