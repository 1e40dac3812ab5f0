//! Runs after the first: new blocks, reorgs (several blocks deep), and the
//! rule that the result equals a database built from scratch.

mod common;

use std::io::Write;

use common::*;

const FORK_TIP: &str = "00000000195f85184e77c18914bd0febd11278d950f5e4731a38f71ed79f044e";

fn stale_fork_dir() -> tempfile::TempDir {
    blocks_dir(&[
        "mainnet/stale_fork/btcd_reorgtest_blk_0_to_4.dat",
        "mainnet/stale_fork/btcd_blk_3A.dat",
        "mainnet/stale_fork/btcd_blk_4A.dat",
        "mainnet/stale_fork/btcd_blk_5A.dat",
    ])
}

#[test]
fn the_stale_fork_loses_to_the_real_chain() {
    let blocks = stale_fork_dir();
    add_blk(blocks.path(), "mainnet/blk00000_first1MiB.dat");
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    assert_eq!(s.tip_height, Some(4521));
    // A1..A4 and 3A..5A: linked to genesis, not on the best chain.
    assert_eq!(s.stale_blocks, 7);
    assert_eq!(s.blocks_applied, 4522);
}

#[test]
fn a_five_block_reorg_onto_the_real_chain_equals_a_fresh_build() {
    let blocks = stale_fork_dir();
    let db = tempfile::tempdir().unwrap();
    let first = index(blocks.path(), db.path());
    // Alone, the side branch 3A–5A is the best chain (most work).
    assert_eq!(first.tip_height, Some(5));
    assert_eq!(first.tip_hash.unwrap().to_string(), FORK_TIP);
    assert_eq!(first.stale_blocks, 2);

    add_blk(blocks.path(), "mainnet/blk00000_first1MiB.dat");
    let second = index(blocks.path(), db.path());
    assert_eq!(second.blocks_undone, 5);
    assert_eq!(second.blocks_applied, 4521);
    assert_eq!(second.tip_height, Some(4521));

    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(fresh.path()));
    assert_eq!(utxo_set(db.path()), (4349, 22_610_000_000_000));
}

/// `satflow index --follow` keeps one `Indexer` open, with its header tree
/// and caches, from run to run: the same reorg through it ends equal to a
/// fresh build.
#[test]
fn an_indexer_kept_open_across_runs_follows_the_reorg_like_separate_runs() {
    let blocks = stale_fork_dir();
    let db = tempfile::tempdir().unwrap();
    let mut indexer = satflow_indexer::Indexer::open(options(blocks.path(), db.path())).unwrap();
    let first = indexer.run().unwrap();
    assert_eq!(first.tip_hash.unwrap().to_string(), FORK_TIP);
    let idle = indexer.run().unwrap();
    assert_eq!((idle.blocks_applied, idle.blocks_undone), (0, 0));

    add_blk(blocks.path(), "mainnet/blk00000_first1MiB.dat");
    let second = indexer.run().unwrap();
    assert_eq!(
        (
            second.blocks_undone,
            second.blocks_applied,
            second.tip_height
        ),
        (5, 4521, Some(4521))
    );
    drop(indexer);
    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(fresh.path()));
}

/// Floresta's regtest pair: chain A (10 blocks), then chain B forking at 5
/// with 11 blocks.
#[test]
fn regtest_reorg_of_chain_a_by_longer_chain_b() {
    let chains: Vec<Vec<String>> = serde_json::from_str(
        &std::fs::read_to_string(data("regtest/floresta_regtest_reorg.json")).unwrap(),
    )
    .unwrap();
    let genesis =
        std::fs::read_to_string(data("regtest/floresta_regtest_blocks_h0-150.hexlines.txt"))
            .unwrap();
    let genesis = genesis.lines().next().unwrap().to_string();
    let blocks = tempfile::tempdir().unwrap();
    let write = |name: &str, hexes: &[String]| {
        let mut f = std::fs::File::create(blocks.path().join(name)).unwrap();
        for h in hexes {
            let b = hex::decode(h).unwrap();
            f.write_all(&[0xfa, 0xbf, 0xb5, 0xda]).unwrap();
            f.write_all(&(b.len() as u32).to_le_bytes()).unwrap();
            f.write_all(&b).unwrap();
        }
    };
    let mut a = vec![genesis];
    a.extend(chains[0].iter().cloned());
    write("blk00000.dat", &a);
    let db = tempfile::tempdir().unwrap();
    let first = index(blocks.path(), db.path());
    assert_eq!(
        first.tip_hash.unwrap().to_string(),
        "6e9c49a19038f7db8d13f6c2e70566385536ea11975528b557799e08a014e784"
    );
    assert_eq!(first.tip_height, Some(10));

    write("blk00001.dat", &chains[1]);
    let second = index(blocks.path(), db.path());
    assert_eq!(
        second.tip_hash.unwrap().to_string(),
        "4572ac401b94915dde6c4957b706abdb13b5824b000cad7f6065ebd9aea6dad1"
    );
    assert_eq!(
        (
            second.tip_height,
            second.blocks_undone,
            second.blocks_applied
        ),
        (Some(16), 5, 11)
    );
    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(fresh.path()));
}

#[test]
fn a_growing_file_is_picked_up_where_the_last_run_stopped() {
    let full = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let blocks = tempfile::tempdir().unwrap();
    let path = blocks.path().join("blk00000.dat");
    // A node mid-write: the cut falls inside a record.
    std::fs::write(&path, &full[..400_001]).unwrap();
    let db = tempfile::tempdir().unwrap();
    let first = index(blocks.path(), db.path());
    let partial_tip = first.tip_height.unwrap();
    assert!(partial_tip > 1000 && partial_tip < 4521, "{partial_tip}");
    assert!(first
        .notes
        .iter()
        .any(|n| n.contains("still being written")));

    std::fs::write(&path, &full).unwrap();
    let second = index(blocks.path(), db.path());
    assert_eq!(second.blocks_applied, 4521 - u64::from(partial_tip));
    assert_eq!(
        second.records_found as u64, second.blocks_applied,
        "only the new bytes are scanned"
    );
    let again = index(blocks.path(), db.path());
    assert_eq!((again.blocks_applied, again.records_found), (0, 0));

    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(fresh.path()));
}
