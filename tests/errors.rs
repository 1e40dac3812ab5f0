//! Bad input: a clear error naming the file and offset, nothing already
//! indexed is lost, and garbage between records is survived.

mod common;

use common::*;
use satflow_indexer::Network;
use satflow_schema::Height;

#[test]
fn a_corrupt_block_names_file_and_offset_and_keeps_what_came_before() {
    let mut bytes = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let (record, len) = records(&bytes)[1000];
    let at = record + 8;
    bytes[at + len - 30] ^= 0xff; // inside the coinbase output script of block 1000
    let blocks = tempfile::tempdir().unwrap();
    let path = blocks.path().join("blk00000.dat");
    std::fs::write(&path, &bytes).unwrap();
    let db = tempfile::tempdir().unwrap();
    let opts = satflow_indexer::IndexOptions {
        batch_bytes: 1,
        ..options(blocks.path(), db.path())
    };
    let err = format!("{:#}", satflow_indexer::run(&opts).unwrap_err());
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(
        err.contains("corrupt block") && err.contains("merkle root"),
        "{err}"
    );
    assert!(err.contains(&format!("offset {}", at + 36)), "{err}");
    let store = satflow_indexer::Store::open(db.path(), satflow_indexer::Access::ReadOnly).unwrap();
    assert_eq!(store.tip().unwrap().map(|t| t.height), Some(Height(999)));
    drop(store);
    // The scan saw every header: readers can tell how far behind it is.
    let last = records(&bytes).len() as u32 - 1;
    assert!(last > 1000);
    let index = satflow_query::Index::open(db.path(), satflow_indexer::Access::ReadOnly).unwrap();
    let status = satflow_query::chain::status(&index).unwrap();
    assert_eq!(
        (
            status.tip_height,
            status.best_header_height,
            status.lag_blocks
        ),
        (999, last, last - 999)
    );
}

#[test]
fn wrong_or_mixed_networks_are_refused() {
    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let db = tempfile::tempdir().unwrap();
    let opts = satflow_indexer::IndexOptions {
        network: Some(Network::Test),
        ..options(blocks.path(), db.path())
    };
    let err = satflow_indexer::run(&opts).unwrap_err().to_string();
    assert!(
        err.contains("--network test") && err.contains("is main"),
        "{err}"
    );

    add_blk(blocks.path(), "regtest/blocksci_regtest_blk00000.dat");
    let err = satflow_indexer::run(&options(blocks.path(), db.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("blk00001.dat holds regtest blocks"), "{err}");
}

#[test]
fn an_empty_directory_or_missing_genesis_is_an_error() {
    let empty = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let err = satflow_indexer::run(&options(empty.path(), db.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no blk*.dat files"), "{err}");
    let no_genesis = blocks_dir(&["mainnet/btcd_blocks_h1-255.dat"]);
    let err = satflow_indexer::run(&options(no_genesis.path(), db.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "genesis block 000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        ) && err.contains("--start-at"),
        "{err}"
    );
}

#[test]
fn garbage_between_records_is_skipped_with_a_warning() {
    let clean = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let at = records(&clean)[2000].0 + 8;
    let mut dirty = clean[..at - 8].to_vec();
    dirty.extend_from_slice(b"\x01\x02crash leftovers\xf9\xbe"); // ends in half a magic
    dirty.extend_from_slice(&clean[at - 8..]);
    let blocks = tempfile::tempdir().unwrap();
    std::fs::write(blocks.path().join("blk00000.dat"), &dirty).unwrap();
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    assert_eq!(s.tip_height, Some(4521));
    let note = s
        .notes
        .iter()
        .find(|n| n.contains("garbage"))
        .expect("a garbage note");
    assert!(
        note.contains(&format!("offset {}", at - 8)) && note.contains("19 bytes"),
        "{note}"
    );

    let reference = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let reference_db = tempfile::tempdir().unwrap();
    index(reference.path(), reference_db.path());
    assert_same(
        &dump(db.path(), &LOCATION_FREE),
        &dump(reference_db.path(), &LOCATION_FREE),
    );
}

#[test]
fn an_input_spending_no_coin_names_block_tx_and_input_and_keeps_what_came_before() {
    use bitcoin::OutPoint;
    use common::build::*;

    const COIN: u64 = 50_0000_0000;
    let genesis = regtest_genesis();
    let b1 = block(
        genesis.block_hash(),
        1,
        vec![coinbase(b"b1", &[(COIN, p2pkh(1))])],
    );
    let b2 = block(
        b1.block_hash(),
        2,
        vec![coinbase(b"b2", &[(COIN, p2pkh(2))])],
    );
    let coin = |b: &bitcoin::Block, vout| OutPoint {
        txid: b.txdata[0].compute_txid(),
        vout,
    };
    // Input 0 spends b2's coin; input 1 an output b1's coinbase never had.
    let bad = tx(&[coin(&b2, 0), coin(&b1, 7)], &[(COIN, p2pkh(3))]);
    let b3 = block(
        b2.block_hash(),
        3,
        vec![coinbase(b"b3", &[(COIN, p2pkh(4))]), bad.clone()],
    );
    let blocks = tempfile::tempdir().unwrap();
    write_blk(
        &blocks.path().join("blk00000.dat"),
        &[genesis, b1.clone(), b2, b3.clone()],
    );
    for bulk in [true, false] {
        let db = tempfile::tempdir().unwrap();
        let opts = satflow_indexer::IndexOptions {
            bulk,
            batch_bytes: 1,
            ..options(blocks.path(), db.path())
        };
        let err = format!("{:#}", satflow_indexer::run(&opts).unwrap_err());
        let named = format!(
            "block {} at height 3: tx {} input 1 spends {}",
            b3.block_hash(),
            bad.compute_txid(),
            coin(&b1, 7)
        );
        assert!(err.contains(&named), "bulk {bulk}: {err}");
        // The block-by-block path reads the index, and says more.
        let why = match bulk {
            true => "not in the index, or the output is spent or does not exist",
            false => "its transaction has only 1 outputs",
        };
        assert!(err.ends_with(why), "bulk {bulk}: {err}");
        let store =
            satflow_indexer::Store::open(db.path(), satflow_indexer::Access::ReadOnly).unwrap();
        assert_eq!(store.tip().unwrap().map(|t| t.height), Some(Height(2)));
    }
}
