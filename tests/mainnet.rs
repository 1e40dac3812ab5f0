//! Real mainnet data: the first MiB of blk00000.dat (heights 0–4521) and
//! friends, checked against facts listed in testdata/MANIFEST.md.

mod common;

use common::query::Q;
use common::*;

const GENESIS: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";
const TIP_4521: &str = "00000000ac08f7d984f6b36027395e654a5f1e3bb006cd9df9c60b9897ea4c40";
const FIRST_PAYMENT: &str = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16";
const H9_COINBASE: &str = "0437cd7f8525ceed2324359c2d0ba26006d92d856a9c20fa0241106ee5a597c9";
const SATOSHI_H9: &str = "12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S";

#[test]
fn blk00000_prefix_indexes_heights_0_to_4521() {
    let (_blocks, db, s) = indexed_blk00000();
    assert_eq!(s.tip_height, Some(4521));
    assert_eq!(s.tip_hash.unwrap().to_string(), TIP_4521);
    assert_eq!(
        (s.blocks_applied, s.txs, s.inputs, s.outputs),
        (4522, 4583, 260, 4609)
    );
    assert_eq!(s.stale_blocks, 0);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("offset 1048537 declares 216 bytes but only 31 are present")),
        "{:?}",
        s.notes
    );

    let q = Q::open(db.path());
    assert_eq!(q.block(0).hash, GENESIS);
    assert_eq!(q.block(4521).hash, TIP_4521);
    let genesis_tx = q.tx("4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
    assert!(genesis_tx.coinbase);
    assert_eq!(
        genesis_tx.outputs[0].address,
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
    );
    assert_eq!(genesis_tx.outputs[0].script_type, "p2pk");
}

#[test]
fn satoshis_h9_address_history_and_balance_at_4521() {
    let (_blocks, db, _) = indexed_blk00000();
    let q = Q::open(db.path());
    let a = q.summary(SATOSHI_H9).unwrap().unwrap();
    let history = q.history(SATOSHI_H9);
    // Independently: walk every tx of the chain and sum what touches it.
    let (mut received, mut sent, mut txs) = (0u64, 0u64, Vec::new());
    for h in 0..=4521u32 {
        for txid in q.block(h).txids {
            let tx = q.tx(&txid);
            let paid: u64 = tx
                .outputs
                .iter()
                .filter(|o| o.address == SATOSHI_H9)
                .map(|o| o.value)
                .sum();
            let touching_inputs: Vec<u64> = tx
                .inputs
                .iter()
                .filter(|i| i.address == SATOSHI_H9)
                .map(|i| i.value.expect("genesis-rooted index knows every input"))
                .collect();
            let paid_to = tx.outputs.iter().any(|o| o.address == SATOSHI_H9);
            if paid_to || !touching_inputs.is_empty() {
                let spent: u64 = touching_inputs.iter().sum();
                received += paid;
                sent += spent;
                txs.push((h, txid, paid, spent));
            }
        }
    }
    let from_history: Vec<_> = history
        .iter()
        .map(|e| (e.height, e.txid.clone(), e.received, e.sent))
        .collect();
    assert_eq!(
        from_history, txs,
        "history = every tx touching the address, in chain order"
    );
    assert_eq!((txs[0].0, txs[0].1.as_str()), (9, H9_COINBASE));
    assert_eq!(
        (txs[1].0, txs[1].1.as_str(), txs[1].3),
        (170, FIRST_PAYMENT, 5_000_000_000)
    );
    assert_eq!(
        (a.received, a.sent, a.tx_count),
        (received, sent, history.len() as u64)
    );
    assert_eq!(a.balance, received - sent);
    assert_eq!(a.first_seen_height, 9);
}

#[test]
fn utxo_set_at_4521_matches_an_independent_replay() {
    let (_blocks, db, _) = indexed_blk00000();
    // MANIFEST: 4349 outputs worth 22,610,000,000,000 sat (4522 × 50 BTC).
    assert_eq!(utxo_set(db.path()), (4349, 22_610_000_000_000));
}

#[test]
fn a_block_without_ancestors_is_reported_with_its_missing_parent() {
    let blocks = blocks_dir(&[
        "mainnet/blk00000_first1MiB.dat",
        "mainnet/blk01234_first1457664B.dat",
    ]);
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    assert_eq!(s.tip_height, Some(4521));
    // The prev-hash field of block 518256, read straight from the file.
    let raw = std::fs::read(data("mainnet/blk01234_first1457664B.dat")).unwrap();
    let header: bitcoin::block::Header = bitcoin::consensus::deserialize(&raw[8..88]).unwrap();
    assert_eq!(
        header.block_hash().to_string(),
        "0000000000000000003e4380732d71704005146a6f425a203166e29b72fe2214"
    );
    assert_eq!(s.detached.len(), 1);
    assert_eq!(s.detached[0].missing_parent, header.prev_blockhash);
    assert_eq!(s.detached[0].blocks, 1);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("offset 996594") && n.contains("declares 1023042 bytes")),
        "{:?}",
        s.notes
    );
}

#[test]
fn a_record_seen_twice_counts_once() {
    // btcd's h1–255 file repeats blocks of blk00000's prefix.
    let blocks = blocks_dir(&[
        "mainnet/blk00000_first1MiB.dat",
        "mainnet/btcd_blocks_h1-255.dat",
    ]);
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    assert_eq!(s.records_found, 4522 + 255);
    assert_eq!((s.blocks_applied, s.txs, s.stale_blocks), (4522, 4583, 0));
}
