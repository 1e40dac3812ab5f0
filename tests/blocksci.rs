//! BlockSci's regtest chain (Core-written blk file with a zero-padded tail)
//! against BlockSci's own expected values.

mod common;

use std::collections::BTreeMap;

use common::query::Q;
use common::*;
use serde_json::Value;

#[test]
fn blocksci_regtest_chain_matches_its_expected_output() {
    let blocks = blocks_dir(&["regtest/blocksci_regtest_blk00000.dat"]);
    let db = tempfile::tempdir().unwrap();
    let s = index(blocks.path(), db.path());
    // BlockSci: "Chain contains 202 blocks, 356 txes, 178 inputs, 693 outputs".
    assert_eq!(
        (s.blocks_applied, s.txs, s.inputs, s.outputs),
        (202, 356, 178, 693)
    );
    assert_eq!(
        s.tip_hash.unwrap().to_string(),
        "477cc9149649ede38b9f1794c8b2eac236ce3c35e1c7914afa141ab19c86512c"
    );
    assert!(
        s.notes.is_empty(),
        "a zero tail is not garbage: {:?}",
        s.notes
    );

    let q = Q::open(db.path());
    let expected: BTreeMap<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(data("regtest/blocksci_regtest_expected_output.json")).unwrap(),
    )
    .unwrap();
    let mut txids = 0;
    for (k, v) in &expected {
        if let Some(txid) = v.as_str().filter(|s| s.len() == 64 && k.contains("tx")) {
            assert_eq!(q.tx(txid).txid, txid, "{k}");
            txids += 1;
        }
    }
    assert!(txids >= 81, "{txids}");
    let mut spends = 0;
    for (k, v) in &expected {
        let Some(case) = k.strip_suffix("-tx").filter(|c| c.starts_with("address-")) else {
            continue;
        };
        let address = expected[case].as_str().unwrap();
        let height = expected[&format!("{case}-height")].as_u64().unwrap() as u32;
        let tx = q.tx(v.as_str().unwrap());
        assert_eq!(tx.height, height, "{case}");
        assert!(
            tx.outputs.iter().any(|o| o.address == address),
            "{case}: {address} not paid"
        );
        let history = q.history(address);
        assert!(
            history.iter().any(|h| h.txid == tx.txid && h.received > 0),
            "{case}: not in history"
        );
        spends += 1;
    }
    assert_eq!(spends, 12);
    let multisig = q.tx(expected["raw-multisig-tx"].as_str().unwrap());
    assert!(multisig
        .outputs
        .iter()
        .any(|o| o.script_type == "multisig" && o.address.starts_with("script-sha256:")));
    let op_return = q.tx(expected["op-return-tx"].as_str().unwrap());
    assert!(op_return
        .outputs
        .iter()
        .any(|o| o.script_type == "op_return" && o.address.is_empty()));
    // The coinbases at 189/190 claim less than subsidy + fees: still indexed as they are.
    assert_eq!(q.block(189).height, 189);
}

#[test]
fn blocksci_utxo_set_matches_a_replay() {
    let blocks = blocks_dir(&["regtest/blocksci_regtest_blk00000.dat"]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    // MANIFEST: UTXO set at h201 = 515 outputs, 878,999,980,000 sat.
    assert_eq!(utxo_set(db.path()), (515, 878_999_980_000));
}
