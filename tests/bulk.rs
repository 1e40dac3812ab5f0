//! The bulk path (an empty index built in parallel epochs) against the
//! block-by-block path: the same database, row for row, clusters and flow
//! graph included, whatever the epoch size; and a bulk run stopped by bad
//! input keeps its blocks before the bad one, with their totals.

mod common;

use std::path::Path;

use common::*;
use satflow_indexer::{Access, IndexOptions, Store, Summary};
use satflow_schema::cf::{self, Family};

fn build(blocks: &Path, bulk: bool, batch_bytes: u64) -> (tempfile::TempDir, Summary) {
    build_with(blocks, bulk, batch_bytes, 1024)
}

fn build_with(
    blocks: &Path,
    bulk: bool,
    batch_bytes: u64,
    cache_mb: usize,
) -> (tempfile::TempDir, Summary) {
    let db = tempfile::tempdir().unwrap();
    let summary = satflow_indexer::run(&IndexOptions {
        bulk,
        batch_bytes,
        cache_mb,
        ..options(blocks, db.path())
    })
    .unwrap();
    (db, summary)
}

/// Bulk runs with tiny and large epochs equal a block-by-block run.
fn assert_bulk_equals_block_by_block(blocks: &Path) {
    let (reference, by_block) = build(blocks, false, 32 << 20);
    let rows = dump_all(reference.path());
    // Not a vacuous check: the chain spends coins and reuses addresses.
    assert!(!rows[cf::Spends::NAME].is_empty());
    assert!(rows[cf::History::NAME].len() > rows[cf::Addrs::NAME].len());
    for epoch_bytes in [20_000, 32 << 20] {
        let (db, bulk) = build(blocks, true, epoch_bytes);
        assert_eq!(
            (bulk.blocks_applied, bulk.txs, bulk.inputs, bulk.outputs),
            (
                by_block.blocks_applied,
                by_block.txs,
                by_block.inputs,
                by_block.outputs
            )
        );
        assert_same(&dump_all(db.path()), &rows);
        assert_eq!(flow_graph(db.path()), flow_graph(reference.path()));
    }
}

#[test]
fn real_mainnet_blocks_with_a_stale_fork_index_the_same_in_bulk() {
    let blocks = blocks_dir(&[
        "mainnet/stale_fork/btcd_reorgtest_blk_0_to_4.dat",
        "mainnet/blk00000_first1MiB.dat",
    ]);
    assert_bulk_equals_block_by_block(blocks.path());
}

#[test]
fn real_regtest_blocks_index_the_same_in_bulk() {
    let blocks = blocks_dir(&["regtest/blocksci_regtest_blk00000.dat"]);
    assert_bulk_equals_block_by_block(blocks.path());
}

#[test]
fn a_generated_chain_with_stale_blocks_indexes_the_same_in_bulk() {
    let (blocks, _) = synth_chain(11, 24 << 20);
    assert_bulk_equals_block_by_block(blocks.path());
}

/// Without a flow graph, a bulk run finds its unspent outputs in the rows
/// (`outputs` and `spends`) rather than in the graph: the same database.
#[test]
fn a_bulk_run_without_a_flow_graph_indexes_the_same() {
    let (blocks, _) = synth_chain(11, 8 << 20);
    let (reference, _) = build(blocks.path(), false, 32 << 20);
    let rows = dump_all(reference.path());
    assert!(!rows[cf::AddrUtxos::NAME].is_empty());
    let db = tempfile::tempdir().unwrap();
    satflow_indexer::run(&IndexOptions {
        bulk: true,
        flow: false,
        batch_bytes: 1 << 20,
        ..options(blocks.path(), db.path())
    })
    .unwrap();
    assert!(!db.path().join("flow").exists());
    assert_same(&dump_all(db.path()), &rows);
}

/// What stays in memory outgrowing the budget (none at all here) stops the
/// bulk path after an epoch; the run goes on block by block from there,
/// into the same database.
#[test]
fn a_bulk_run_whose_maps_outgrow_the_budget_goes_on_block_by_block() {
    let (blocks, _) = synth_chain(13, 8 << 20);
    let (reference, _) = build(blocks.path(), false, 32 << 20);
    let (db, summary) = build_with(blocks.path(), true, 1 << 20, 0);
    let note = summary
        .notes
        .iter()
        .find(|n| n.contains("outgrew --cache-mb 0"));
    let from: u32 = note
        .and_then(|n| n.rsplit(' ').next())
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| panic!("no note of the switch: {:?}", summary.notes));
    // Some epochs went in bulk, the rest block by block.
    assert!(from > 0 && from < summary.tip_height.unwrap(), "{from}");
    assert_same(&dump_all(db.path()), &dump_all(reference.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(reference.path()));
}

/// Maps that outgrow the budget go to disk and start again, merging their
/// generations as they pile up; the addresses and coins found there keep
/// their ids, and the run stays in bulk.
#[test]
fn a_bulk_run_whose_maps_go_to_disk_indexes_the_same() {
    let (blocks, _) = synth_chain(13, 8 << 20);
    let (reference, _) = build(blocks.path(), false, 32 << 20);
    let (db, summary) = build_with(blocks.path(), true, 1 << 20, 1);
    let wrote = |n: &&String| {
        n.contains("maps written to disk")
            && !n.contains(": 0 addresses")
            && !n.contains(" and 0 unspent")
    };
    assert!(
        summary.notes.iter().any(|n| wrote(&n))
            && !summary.notes.iter().any(|n| n.contains("outgrew")),
        "both maps should go to disk and the run stay in bulk: {:?}",
        summary.notes
    );
    assert_same(&dump_all(db.path()), &dump_all(reference.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(reference.path()));
}

/// A corrupt block half way: the blocks before it are indexed, their
/// address totals built, and the next run (the blocks directory mended)
/// finishes block by block into the same database as a clean run.
#[test]
fn a_bulk_run_stopped_by_a_corrupt_block_keeps_what_came_before() {
    let (good, _) = synth_chain(12, 8 << 20);
    let (reference, _) = build(good.path(), false, 32 << 20);
    // The record of the best chain's block 60 (stale blocks lie between).
    let target = best_chain(good.path(), reference.path())[60].block_hash();
    let file = good.path().join("blk00000.dat");
    let bytes = std::fs::read(&file).unwrap();
    let (record, len) = records(&bytes)
        .into_iter()
        .find(|&(at, _)| {
            let header: bitcoin::block::Header =
                bitcoin::consensus::deserialize(&bytes[at + 8..at + 88]).unwrap();
            header.block_hash() == target
        })
        .unwrap();
    let mut bad = bytes.clone();
    bad[record + 8 + len - 40] ^= 0xff; // inside the block's last tx
    std::fs::write(&file, &bad).unwrap();

    let db = tempfile::tempdir().unwrap();
    let opts = IndexOptions {
        batch_bytes: 1 << 20,
        ..options(good.path(), db.path())
    };
    let err = format!("{:#}", satflow_indexer::run(&opts).unwrap_err());
    assert!(
        err.contains("corrupt block") && err.contains("blk00000.dat"),
        "{err}"
    );
    {
        let store = Store::open(db.path(), Access::ReadOnly).unwrap();
        let tip = store
            .tip()
            .unwrap()
            .expect("the blocks before the corrupt one");
        // Epochs of 1 MiB: some before the bad block's are whole.
        assert!(tip.height.0 > 0 && tip.height.0 < 60, "{tip:?}");
        // Totals are built for what was indexed: every address has its stats.
        let addrs = store.scan_all::<cf::Addrs>().count();
        assert_eq!(store.scan_all::<cf::AddrStats>().count(), addrs);
        assert!(addrs > 0);
    }
    std::fs::write(&file, &bytes).unwrap();
    satflow_indexer::run(&opts).unwrap();
    assert_same(&dump_all(db.path()), &dump_all(reference.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(reference.path()));
}

/// While the `bulk` row says the address totals are behind (a bulk run
/// was killed before its end), address summaries, unspent outputs and
/// traces are refused with the reason; the next run builds the totals from
/// the rows, and marks the flow graph's spent outputs, equal to what they
/// were.
#[test]
fn totals_a_killed_bulk_run_left_behind_are_refused_then_rebuilt() {
    use satflow_indexer::{address, Network};
    use satflow_query::QueryError;
    use satflow_schema::meta;
    use satflow_schema::script::{AddrKey, AddrKind};

    let (blocks, db) = synth_chain(14, 4 << 20);
    let before = dump_all(db.path());
    let flow_before = flow_graph(db.path());
    // A bulk run's epochs leave every output unmarked (the spender, each
    // output's second of three words, unset: all ones).
    let outputs = db.path().join("flow/outputs");
    let mut words = std::fs::read(&outputs).unwrap();
    let spent = words
        .chunks_exact_mut(24)
        .filter(|o| o[8..16] != [0xff; 8])
        .map(|o| o[8..16].fill(0xff))
        .count();
    assert!(spent > 1000, "{spent} spent outputs");
    std::fs::write(&outputs, &words).unwrap();
    assert_ne!(flow_graph(db.path()), flow_before);
    let addr = {
        let store = Store::open(db.path(), Access::Write).unwrap();
        let (_, key) = store.scan_all::<cf::Addrs>().next().unwrap().unwrap();
        let mut batch = store.batch();
        batch.put_meta(meta::Bulk, &());
        batch.clear::<cf::AddrStats>();
        batch.clear::<cf::AddrUtxos>();
        store.write(batch).unwrap();
        store.flush().unwrap();
        address::encode(&key, Network::Regtest)
    };
    let q = query::Q::open(db.path());
    match q.summary(&addr) {
        Err(QueryError::FailedPrecondition(why)) => assert!(why.contains("being built"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Rows found by txid or address wait in run files until the end: a
    // miss is not an answer yet.
    let unknown = "00".repeat(32).parse().unwrap();
    match satflow_query::chain::transaction(&q.0, &unknown, 10, "") {
        Err(QueryError::FailedPrecondition(why)) => assert!(why.contains("being built"), "{why}"),
        other => panic!("{other:?}"),
    }
    let never_used = AddrKey::new(AddrKind::P2wpkh, &[7; 20]).unwrap();
    let never_used = address::encode(&never_used, Network::Regtest);
    match q.summary(&never_used) {
        Err(QueryError::FailedPrecondition(_)) => {}
        other => panic!("{other:?}"),
    }
    match q.0.flow().err() {
        Some(QueryError::FailedPrecondition(why)) => assert!(why.contains("traces"), "{why}"),
        other => panic!("{other:?}"),
    }
    drop(q);
    index(blocks.path(), db.path());
    assert_same(&dump_all(db.path()), &before);
    assert_eq!(flow_graph(db.path()), flow_before);
    let summary = query::Q::open(db.path()).summary(&addr).unwrap().unwrap();
    assert!(summary.tx_count > 0);
}
