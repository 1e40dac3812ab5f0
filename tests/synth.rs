//! satflow's own indexer against generated chains: it accepts every block
//! the generator writes (XOR, out-of-order records, stale forks, truncated
//! tail) and finds what the generator's summary and truth say is there.

mod common;

use std::collections::HashSet;

use common::*;
use satflow_query::{Index, QueryError};
use satflow_synth::{NetworkChoice, SynthArgs};

fn generate(out: &std::path::Path, seed: u64) -> satflow_synth::Summary {
    let args = SynthArgs {
        out: out.to_owned(),
        size: 12_000_000,
        seed,
        network: NetworkChoice::Regtest,
        xor: true,
        truncate_tail: true,
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
    let index = Index::open(db.path()).unwrap();
    let csv = std::fs::read_to_string(blocks.path().join("truth/addresses.csv")).unwrap();
    let mut seen = HashSet::new();
    for line in csv.lines().skip(1) {
        let address = line.split(',').next().unwrap();
        let query = address.strip_prefix("script:").unwrap_or(address);
        match index.address(query) {
            Ok(a) => assert!(a.tx_count > 0 && a.received > 0, "{address}"),
            Err(QueryError::NotFound(e)) => panic!("{address}: {e}"),
            Err(e) => panic!("{address}: {e}"),
        }
        seen.insert(address.to_string());
    }
    assert!(seen.len() > 1000, "{} addresses", seen.len());
    // The only address without an owner in the truth: genesis's coinbase.
    let genesis = index.tx(&index.block_txids(0, 0, 1).unwrap()[0]).unwrap();
    let genesis_address = genesis.outputs[0].address.clone().unwrap();
    assert!(!seen.contains(&genesis_address));
    assert_eq!(
        index.status().unwrap().addresses as usize,
        seen.len() + 1,
        "the truth names every other indexed address once"
    );
}
