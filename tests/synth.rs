//! satflow's own indexer against generated chains: it accepts every block
//! the generator writes (XOR, out-of-order records, stale forks, truncated
//! tail) and finds what the generator's summary and truth say is there.

mod common;

use std::collections::HashSet;

use common::query::Q;
use common::*;
use satflow_synth::{NetworkChoice, SynthArgs};

fn generate(out: &std::path::Path, seed: u64) -> satflow_synth::Summary {
    let args = SynthArgs {
        out: out.to_owned(),
        size: 12_000_000,
        seed,
        network: NetworkChoice::Regtest,
        xor: true,
        truncate_tail: true,
        whale_share: 0.0,
        plant_patterns: false,
        plant_services: false,
        quiet: true,
    };
    satflow_synth::run(&args).unwrap()
}

#[test]
fn the_indexer_accepts_a_generated_chain_and_agrees_with_its_summary() {
    let blocks = tempfile::tempdir().unwrap();
    let truth = generate(blocks.path(), 11);
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    assert_eq!(s.tip_hash.unwrap().to_string(), truth.tip_hash);
    assert_eq!(s.tip_height, Some(truth.tip_height));
    assert_eq!(
        (s.blocks_applied, s.txs, s.inputs, s.outputs),
        (truth.blocks, truth.txs, truth.inputs, truth.outputs)
    );
    assert_eq!(s.stale_blocks, truth.stale_blocks.len());
    assert!(
        s.notes.iter().any(|n| n.contains("still being written")),
        "the truncated tail is noticed: {:?}",
        s.notes
    );

    // Every address the truth assigns an owner has history in the index.
    let q = Q::open(db.path());
    let csv = std::fs::read_to_string(blocks.path().join("truth/addresses.csv")).unwrap();
    let mut seen = HashSet::new();
    for line in csv.lines().skip(1) {
        let address = line.split(',').next().unwrap();
        let query = address.strip_prefix("script:").unwrap_or(address);
        match q.summary(query) {
            Ok(Some(a)) => assert!(a.tx_count > 0 && a.received > 0, "{address}"),
            Ok(None) => panic!("{address} has no history"),
            Err(e) => panic!("{address}: {e}"),
        }
        seen.insert(address.to_string());
    }
    assert!(seen.len() > 1000, "{} addresses", seen.len());
    // The only address without an owner in the truth: genesis's coinbase.
    let genesis = q.tx(&q.block(0).txids[0]);
    let genesis_address = genesis.outputs[0].address.clone();
    assert!(!seen.contains(&genesis_address));
    assert_eq!(
        q.status().address_count as usize,
        seen.len() + 1,
        "the truth names every other indexed address once"
    );
}
