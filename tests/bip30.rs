//! BIP30: a txid that occurs twice (mainnet has two, d5d2…8599 and
//! e3bf…b468). Both occurrences are kept; spends refer to the latest; undo
//! removes exactly one. A coin of the earlier occurrence still unspent when
//! the later comes is overwritten, as in Bitcoin Core's UTXO set: it leaves
//! its address's balance and unspent outputs (its tx and history stay), and
//! comes back when the later occurrence is rolled back. The bulk path, the
//! block-by-block path, any batch size and any split into runs agree row
//! for row.

mod common;

use std::path::Path;

use bitcoin::{Block, OutPoint, Transaction};
use common::build::*;
use common::query::Q;
use common::*;
use satflow_indexer::{Access, IndexOptions, Store, Summary};
use satflow_schema::meta::{MetaKey, OverwrittenCoin};
use satflow_schema::{cf, AddrId, Codec, OutNum};

/// An index of `blocks` with the bulk path allowed or not, and the blk
/// data per batch (per epoch in bulk).
fn index_with(blocks: &Path, db: &Path, bulk: bool, batch_bytes: u64) -> Summary {
    satflow_indexer::run(&IndexOptions {
        bulk,
        batch_bytes,
        ..options(blocks, db)
    })
    .unwrap()
}

/// Every `meta::Overwritten` row: (address, output, value, overwriting tx).
fn overwritten(db: &Path) -> Vec<(u64, u64, u64, u64)> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    store
        .scan::<cf::Meta>(
            &MetaKey::Overwritten(AddrId(0), OutNum(0)),
            satflow_indexer::store::Direction::Forward,
        )
        .map(|r| r.unwrap())
        .map_while(|(k, v)| match k {
            MetaKey::Overwritten(a, o) => {
                let c = OverwrittenCoin::decode(&v.0).unwrap();
                Some((a.0, o.0, c.value, c.by.0))
            }
            _ => None,
        })
        .collect()
}

/// (balance, utxo count, received, sent) of a summary.
fn figures(q: &Q, addr: &str) -> (u64, u64, u64, u64) {
    let s = q.summary(addr).unwrap().unwrap();
    (s.balance, s.utxo_count, s.received, s.sent)
}

/// (txid, vout, height) of each unspent output, read a page of one and of
/// a thousand at a time (the two must agree).
fn unspent(q: &Q, addr: &str) -> Vec<(String, u32, u32)> {
    let all: Vec<_> = q
        .utxos(addr, 1000)
        .into_iter()
        .map(|u| (u.txid, u.vout, u.height))
        .collect();
    let paged: Vec<_> = q
        .utxos(addr, 1)
        .into_iter()
        .map(|u| (u.txid, u.vout, u.height))
        .collect();
    assert_eq!(all, paged);
    all
}

/// The balance of the cluster holding `addr`.
fn cluster_balance(q: &Q, addr: &str) -> u64 {
    let key = satflow_indexer::address::parse(addr, q.0.network()).unwrap();
    let id = satflow_query::clusters::cluster_id_of(&q.0, &key).unwrap();
    satflow_query::clusters::cluster(&q.0, id).unwrap().balance
}

fn history(q: &Q, addr: &str) -> Vec<(u32, i64)> {
    q.history(addr).iter().map(|h| (h.height, h.net)).collect()
}

const COIN: u64 = 50_0000_0000;

#[test]
fn duplicate_coinbase_txids_are_both_indexed_and_undo_cleanly() {
    let genesis = regtest_genesis();
    let dup = coinbase(b"same", &[(COIN, p2pkh(1))]);
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
    // A fresh index goes in bulk; the reference goes block by block.
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    assert_eq!(s.tip_height, Some(3));
    let by_block = tempfile::tempdir().unwrap();
    index_with(blocks.path(), by_block.path(), false, 32 << 20);
    assert_same(&dump_all(db.path()), &dump_all(by_block.path()));
    {
        let store =
            satflow_indexer::Store::open(db.path(), satflow_indexer::Access::ReadOnly).unwrap();
        assert_eq!(store.txs_with_id(&dup.compute_txid()).unwrap().len(), 2);
    }
    // The b1 coin (tx 1, output 1), overwritten by b2's coinbase (tx 2).
    let rows = overwritten(db.path());
    let picked: Vec<_> = rows.iter().map(|&(_, o, v, by)| (o, v, by)).collect();
    assert_eq!(picked, [(1, COIN, 2)]);
    let q = Q::open(db.path());
    let latest = q.tx(&dup.compute_txid().to_string());
    assert_eq!(latest.height, 2, "lookup finds the latest");
    let spent = q.tx(&spend.compute_txid().to_string());
    assert_eq!(
        (spent.fee, spent.inputs[0].value),
        (Some(10_000), Some(COIN))
    );
    let owner = &latest.outputs[0].address;
    assert_eq!(
        history(&q, owner),
        vec![(1, COIN as i64), (2, COIN as i64), (3, -(COIN as i64))]
    );
    // Received twice, sent once, and nothing left: the b1 coin is gone,
    // from its cluster's balance too.
    assert_eq!(figures(&q, owner), (0, 0, 2 * COIN, COIN));
    assert_eq!(unspent(&q, owner), []);
    assert_eq!(cluster_balance(&q, owner), 0);
    drop(q);

    // A branch that replaces b2 and b3 rolls back the duplicate occurrence:
    // the b1 coin is unspent again.
    let b2b = block(
        b1.block_hash(),
        22,
        vec![coinbase(b"other", &[(COIN, p2pkh(4))])],
    );
    let b3b = block(
        b2b.block_hash(),
        23,
        vec![coinbase(b"x", &[(COIN, p2pkh(5))])],
    );
    let b4b = block(
        b3b.block_hash(),
        24,
        vec![coinbase(b"y", &[(COIN, p2pkh(6))])],
    );
    write_blk(&blocks.path().join("blk00001.dat"), &[b2b, b3b, b4b]);
    let again = index(blocks.path(), db.path());
    assert_eq!(
        (again.blocks_undone, again.blocks_applied, again.tip_height),
        (2, 3, Some(4))
    );
    assert_eq!(overwritten(db.path()), []);
    let q = Q::open(db.path());
    assert_eq!(figures(&q, owner), (COIN, 1, COIN, 0));
    assert_eq!(cluster_balance(&q, owner), COIN);
    assert_eq!(unspent(&q, owner), [(dup.compute_txid().to_string(), 0, 1)]);
    assert_eq!(history(&q, owner), vec![(1, COIN as i64)]);
    drop(q);
    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(fresh.path()));
}

/// One coinbase four times over, its two coins spent or overwritten in
/// turn: E (b1), its second coin spent (b2) before L repeats it (b3: the
/// first coin is overwritten), both of L's spent (b4), M (b5: nothing left
/// to overwrite), N (b6: both of M's overwritten).
fn four_times() -> (Transaction, Vec<Block>) {
    let genesis = regtest_genesis();
    let dup = coinbase(b"again", &[(30, p2pkh(1)), (20, p2pkh(7))]);
    let point = |vout| OutPoint {
        txid: dup.compute_txid(),
        vout,
    };
    let filler = |tag: &[u8]| coinbase(tag, &[(COIN, p2pkh(3))]);
    let mut chain = vec![genesis];
    let mut add = |txdata: Vec<Transaction>| {
        let prev = chain.last().unwrap().block_hash();
        let b = block(prev, chain.len() as u32, txdata);
        chain.push(b);
    };
    add(vec![dup.clone()]);
    add(vec![filler(b"b2"), tx(&[point(1)], &[(19, p2pkh(8))])]);
    add(vec![dup.clone()]);
    add(vec![
        filler(b"b4"),
        tx(&[point(0), point(1)], &[(45, p2pkh(9))]),
    ]);
    add(vec![dup.clone()]);
    add(vec![dup.clone()]);
    add(vec![filler(b"b7")]);
    (dup, chain)
}

#[test]
fn every_path_and_batch_size_records_the_same_overwritten_coins() {
    let (dup, chain) = four_times();
    let blocks = tempfile::tempdir().unwrap();
    let (first, rest) = chain.split_at(2);
    write_blk(&blocks.path().join("blk00000.dat"), first);
    // Runs split after b1: the rest finds E's coins in the database only.
    let split: Vec<_> = [32 << 20, 1]
        .into_iter()
        .map(|batch| {
            let db = tempfile::tempdir().unwrap();
            index_with(blocks.path(), db.path(), true, 32 << 20);
            (db, batch)
        })
        .collect();
    write_blk(&blocks.path().join("blk00001.dat"), rest);
    let mut dbs = Vec::new();
    for (db, batch) in split {
        let s = index_with(blocks.path(), db.path(), false, batch);
        assert_eq!(s.tip_height, Some(7));
        dbs.push(db);
    }
    for (bulk, batch) in [(true, 32 << 20), (true, 1), (false, 32 << 20), (false, 1)] {
        let db = tempfile::tempdir().unwrap();
        index_with(blocks.path(), db.path(), bulk, batch);
        dbs.push(db);
    }
    let reference = dump_all(dbs[0].path());
    for db in &dbs[1..] {
        assert_same(&dump_all(db.path()), &reference);
        assert_eq!(flow_graph(db.path()), flow_graph(dbs[0].path()));
    }
    let db = dbs[0].path();
    // Tx numbers: E is 1, L 4, M 7, N 8 (genesis is 0, b2 and b4 hold
    // two each); E's coins are outputs 1 and 2, M's 9 and 10. E's first
    // coin gave way to L, both of M's to N.
    let rows = overwritten(db);
    let picked: Vec<_> = rows.iter().map(|&(_, o, v, by)| (o, v, by)).collect();
    assert_eq!(picked, [(1, 30, 4), (9, 30, 8), (10, 20, 8)]);

    let q = Q::open(db);
    let txid = dup.compute_txid().to_string();
    let n = q.tx(&txid);
    assert_eq!(n.height, 6);
    let (owner, other) = (&n.outputs[0].address, &n.outputs[1].address);
    assert_eq!(
        history(&q, owner),
        vec![(1, 30), (3, 30), (4, -30), (5, 30), (6, 30)]
    );
    assert_eq!(figures(&q, owner), (30, 1, 120, 30));
    assert_eq!(unspent(&q, owner), [(txid.clone(), 0, 6)]);
    assert_eq!(
        history(&q, other),
        vec![(1, 20), (2, -20), (3, 20), (4, -20), (5, 20), (6, 20)]
    );
    assert_eq!(figures(&q, other), (20, 1, 80, 40));
    assert_eq!(unspent(&q, other), [(txid.clone(), 1, 6)]);
    drop(q);

    // A longer branch from b5 rolls N back: M's coins are unspent again.
    let mut fork = vec![chain[5].clone()];
    for t in [66u32, 67, 68] {
        let prev = fork.last().unwrap().block_hash();
        let tag = t.to_le_bytes();
        fork.push(block(prev, t, vec![coinbase(&tag, &[(COIN, p2pkh(4))])]));
    }
    write_blk(&blocks.path().join("blk00002.dat"), &fork[1..]);
    for db in &dbs[..2] {
        let s = index(blocks.path(), db.path());
        assert_eq!((s.blocks_undone, s.tip_height), (2, Some(8)));
    }
    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    for db in &dbs[..2] {
        assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    }
    let rows = overwritten(fresh.path());
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [1]);
    let q = Q::open(fresh.path());
    assert_eq!(figures(&q, owner), (30, 1, 90, 30));
    assert_eq!(unspent(&q, owner), [(txid.clone(), 0, 5)]);
    assert_eq!(figures(&q, other), (20, 1, 60, 40));
    assert_eq!(unspent(&q, other), [(txid, 1, 5)]);
}

/// Clusters ranked by balance: one whose member holds an overwritten coin
/// is placed by its balance without it, in one page or many.
#[test]
fn largest_clusters_by_balance_leave_overwritten_coins_out() {
    let genesis = regtest_genesis();
    let dup = coinbase(b"same", &[(COIN, p2pkh(1))]);
    let b1 = block(genesis.block_hash(), 1, vec![dup.clone()]);
    let b2 = block(b1.block_hash(), 2, vec![dup.clone()]);
    let b3cb = coinbase(b"b3", &[(COIN, p2pkh(3))]);
    let b3 = block(b2.block_hash(), 3, vec![b3cb.clone()]);
    let b4cb = coinbase(
        b"b4",
        &[(60 * COIN / 50, p2pkh(5)), (60 * COIN / 50, p2pkh(6))],
    );
    let b4 = block(b3.block_hash(), 4, vec![b4cb.clone()]);
    let point = |t: &Transaction, vout| OutPoint {
        txid: t.compute_txid(),
        vout,
    };
    // Owner (1) and 3 spend together: a cluster holding 100 BTC, plus the
    // overwritten 50 of b1 that the ranking's figures still count.
    let t1 = tx(&[point(&dup, 0), point(&b3cb, 0)], &[(2 * COIN, p2pkh(1))]);
    // 5 and 6 spend together: a cluster holding 120 BTC.
    let t2 = tx(
        &[point(&b4cb, 0), point(&b4cb, 1)],
        &[(120 * COIN / 50, p2pkh(5))],
    );
    let b5 = block(
        b4.block_hash(),
        5,
        vec![coinbase(b"b5", &[(COIN, p2pkh(8))]), t1, t2],
    );
    let blocks = tempfile::tempdir().unwrap();
    write_blk(
        &blocks.path().join("blk00000.dat"),
        &[genesis, b1, b2, b3, b4, b5],
    );
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let q = Q::open(db.path());
    let owner = q.tx(&dup.compute_txid().to_string()).outputs[0]
        .address
        .clone();
    assert_eq!(cluster_balance(&q, &owner), 2 * COIN);
    let by_balance = |page_size: usize| {
        let (mut balances, mut token) = (Vec::new(), String::new());
        loop {
            let page = satflow_query::clusters::largest(
                &q.0,
                satflow_schema::cluster::Rank::Balance,
                page_size,
                &token,
            )
            .unwrap();
            balances.extend(page.clusters.iter().map(|c| c.balance));
            token = page.next_page_token;
            if token.is_empty() {
                return balances;
            }
        }
    };
    assert_eq!(by_balance(10), [120 * COIN / 50, 2 * COIN]);
    assert_eq!(by_balance(1), by_balance(10));
}
