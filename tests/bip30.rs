//! BIP30: a txid that occurs twice (mainnet has two, d5d2…8599 and
//! e3bf…b468). Both occurrences are kept; spends refer to the latest; undo
//! removes exactly one.

mod common;

use bitcoin::OutPoint;
use common::build::*;
use common::query::Q;
use common::*;

#[test]
fn duplicate_coinbase_txids_are_both_indexed_and_undo_cleanly() {
    let genesis = regtest_genesis();
    let dup = coinbase(b"same", &[(50_0000_0000, p2pkh(1))]);
    let b1 = block(genesis.block_hash(), 1, vec![dup.clone()]);
    let b2 = block(b1.block_hash(), 2, vec![dup.clone()]);
    let spend = tx(
        &[OutPoint {
            txid: dup.compute_txid(),
            vout: 0,
        }],
        &[(49_9999_0000, p2pkh(2))],
    );
    let b3 = block(
        b2.block_hash(),
        3,
        vec![coinbase(b"b3", &[(50_0001_0000, p2pkh(3))]), spend.clone()],
    );

    let blocks = tempfile::tempdir().unwrap();
    write_blk(
        &blocks.path().join("blk00000.dat"),
        &[genesis.clone(), b1.clone(), b2.clone(), b3],
    );
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    assert_eq!(s.tip_height, Some(3));
    {
        let store =
            satflow_indexer::Store::open(db.path(), satflow_indexer::Access::ReadOnly).unwrap();
        assert_eq!(store.tx_numbers(&dup.compute_txid()).unwrap().len(), 2);
    }
    let q = Q::open(db.path());
    let latest = q.tx(&dup.compute_txid().to_string());
    assert_eq!(latest.height, 2, "lookup finds the latest");
    let spent = q.tx(&spend.compute_txid().to_string());
    assert_eq!(
        (spent.fee, spent.inputs[0].value),
        (Some(10_000), Some(50_0000_0000))
    );
    let owner = q.history(&latest.outputs[0].address);
    let heights: Vec<_> = owner.iter().map(|h| (h.height, h.net)).collect();
    assert_eq!(
        heights,
        vec![(1, 50_0000_0000), (2, 50_0000_0000), (3, -50_0000_0000)]
    );
    drop(q);

    // A branch that replaces b2 and b3 rolls back the duplicate occurrence.
    let b2b = block(
        b1.block_hash(),
        22,
        vec![coinbase(b"other", &[(50_0000_0000, p2pkh(4))])],
    );
    let b3b = block(
        b2b.block_hash(),
        23,
        vec![coinbase(b"x", &[(50_0000_0000, p2pkh(5))])],
    );
    let b4b = block(
        b3b.block_hash(),
        24,
        vec![coinbase(b"y", &[(50_0000_0000, p2pkh(6))])],
    );
    write_blk(&blocks.path().join("blk00001.dat"), &[b2b, b3b, b4b]);
    let again = index(blocks.path(), db.path());
    assert_eq!(
        (again.blocks_undone, again.blocks_applied, again.tip_height),
        (2, 3, Some(4))
    );
    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(fresh.path()));
}
