//! Real raw mainnet blocks indexed on their own: an index that starts at
//! the block (`--start-at`), with the coins it spends described by the
//! block's prevouts file where one ships with it (block 866342), unknown
//! where none does (block 540107). Expected figures are computed here from
//! the raw block and the prevouts file with rust-bitcoin, apart from
//! satflow's parser and writer.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use bitcoin::{Address, Amount, Network, ScriptBuf};
use common::query::Q;
use common::server::Server;
use common::*;
use satflow_indexer::cluster::{self, Heuristics};
use satflow_indexer::{address, Access, IndexOptions, Store};
use satflow_proto::v1 as pb;
use satflow_query::{clusters, Index};
use satflow_schema::ClusterId;

const TAPROOT: u32 = 866342;
const TAPROOT_HASH: &str = "000000000000000000014ce9ba7c6760053c3c82ce6ab43d60afb101d3c8f1f1";
const NONSTANDARD: u32 = 540107;
const NONSTANDARD_HASH: &str = "00000000000000000021868c2cefc52a480d173c849412fe81c4e5ab806f94ab";

/// Block 866342's prevouts file, read with serde_json: one (value, script)
/// per non-coinbase input, in input order.
fn taproot_prevouts() -> Vec<(u64, ScriptBuf)> {
    let text =
        std::fs::read_to_string(data(&format!("mainnet/prevouts/{TAPROOT_HASH}.json"))).unwrap();
    let list: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    list.iter()
        .map(|e| {
            let out = &e["txout"];
            let script = hex::decode(out["script_pubkey"].as_str().unwrap()).unwrap();
            (
                out["value"].as_u64().unwrap(),
                ScriptBuf::from_bytes(script),
            )
        })
        .collect()
}

fn addr_of(script: &ScriptBuf) -> String {
    Address::from_script(script, Network::Bitcoin)
        .unwrap_or_else(|e| panic!("{script}: {e}"))
        .to_string()
}

#[test]
fn every_input_of_the_taproot_block_resolves_from_its_prevouts() {
    let (_blocks, db, summary) = window(TAPROOT, TAPROOT_HASH, true);
    assert_eq!(
        (summary.blocks_applied, summary.tip_height),
        (1, Some(TAPROOT))
    );
    let block = raw_block(TAPROOT);
    let coins = taproot_prevouts();
    let q = Q::open(db.path());
    assert_eq!(q.status().first_height, TAPROOT);

    // Per tx: satflow's fee and resolved inputs against the prevouts file.
    let (mut next, mut fees, mut p2tr_spends) = (0, 0u64, 0);
    let mut expected_sent: BTreeMap<String, u64> = BTreeMap::new();
    for tx in &block.txdata[1..] {
        let spent = &coins[next..next + tx.input.len()];
        next += tx.input.len();
        let paid: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        let fee = spent.iter().map(|(v, _)| v).sum::<u64>() - paid;
        fees += fee;
        let got = q.tx(&tx.compute_txid().to_string());
        assert_eq!(got.fee, Some(fee), "{}", got.txid);
        for ((input, (value, script)), txin) in got.inputs.iter().zip(spent).zip(&tx.input) {
            assert_eq!(
                (
                    input.prev_txid.clone(),
                    input.prev_vout,
                    input.value,
                    input.address.clone()
                ),
                (
                    txin.previous_output.txid.to_string(),
                    txin.previous_output.vout,
                    Some(*value),
                    addr_of(script)
                )
            );
            p2tr_spends += usize::from(script.is_p2tr());
            assert_eq!(input.script_type == "p2tr", script.is_p2tr());
            *expected_sent.entry(addr_of(script)).or_default() += value;
        }
    }
    assert_eq!(next, coins.len(), "one prevout per non-coinbase input");
    assert!(p2tr_spends > 2000, "a taproot-era block: {p2tr_spends}");
    // Consensus, not satflow: the coinbase claims the subsidy plus the fees.
    let claimed: Amount = block.txdata[0].output.iter().map(|o| o.value).sum();
    assert_eq!(claimed.to_sat() - 312_500_000, fees);
    assert_eq!(q.block(TAPROOT).fees, Some(fees));

    // Every address: sent is what its coins were worth; balance is what the
    // block left it (coins from before the block are booked in as they go).
    let spent_here: BTreeSet<_> = block
        .txdata
        .iter()
        .flat_map(|t| t.input.iter().map(|i| i.previous_output))
        .collect();
    let mut expected_balance: BTreeMap<String, u64> = BTreeMap::new();
    for tx in &block.txdata {
        for (vout, o) in tx.output.iter().enumerate() {
            let Ok(a) = Address::from_script(&o.script_pubkey, Network::Bitcoin) else {
                continue;
            };
            let point = bitcoin::OutPoint::new(tx.compute_txid(), vout as u32);
            let left = if spent_here.contains(&point) {
                0
            } else {
                o.value.to_sat()
            };
            *expected_balance.entry(a.to_string()).or_default() += left;
        }
    }
    for a in expected_sent.keys() {
        expected_balance.entry(a.clone()).or_default();
    }
    for (a, balance) in &expected_balance {
        let s = q.summary(a).unwrap().unwrap();
        let sent = expected_sent.get(a).copied().unwrap_or(0);
        assert_eq!(
            (s.sent, s.balance, s.received - s.sent),
            (sent, *balance, *balance),
            "{a}"
        );
    }
}

#[test]
fn inputs_without_prevouts_are_indexed_with_unknown_values() {
    let (_blocks, db, _) = window(NONSTANDARD, NONSTANDARD_HASH, false);
    let block = raw_block(NONSTANDARD);
    let q = Q::open(db.path());
    assert_eq!(q.block(NONSTANDARD).fees, None);
    let coinbase = q.tx(&block.txdata[0].compute_txid().to_string());
    assert_eq!(coinbase.fee, Some(0));
    // Coins made inside the block are known; the others are not.
    let made_here: HashMap<_, _> = block
        .txdata
        .iter()
        .flat_map(|t| {
            let txid = t.compute_txid();
            t.output
                .iter()
                .enumerate()
                .map(move |(v, o)| (bitcoin::OutPoint::new(txid, v as u32), o.value.to_sat()))
        })
        .collect();
    let mut known_fees = 0;
    for tx in &block.txdata[1..] {
        let got = q.tx(&tx.compute_txid().to_string());
        let values: Vec<Option<u64>> = tx
            .input
            .iter()
            .map(|i| made_here.get(&i.previous_output).copied())
            .collect();
        let paid: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        let fee = values
            .iter()
            .copied()
            .sum::<Option<u64>>()
            .map(|v| v - paid);
        known_fees += usize::from(fee.is_some());
        assert_eq!(got.fee, fee, "{}", got.txid);
        let expected: Vec<_> = tx
            .input
            .iter()
            .zip(&values)
            .map(|(i, v)| {
                let outpoint = i.previous_output;
                let kind = if v.is_some() { "known" } else { "unknown" };
                (outpoint.txid.to_string(), outpoint.vout, *v, kind)
            })
            .collect();
        let inputs: Vec<_> = got
            .inputs
            .iter()
            .map(|i| {
                let kind = if i.script_type == "unknown" {
                    "unknown"
                } else {
                    "known"
                };
                (i.prev_txid.clone(), i.prev_vout, i.value, kind)
            })
            .collect();
        assert_eq!(inputs, expected);
    }
    assert!(known_fees > 0, "some tx spends only coins of its own block");
}

async fn summary_of(c: &mut satflow_query::client::Clients, address: &str) -> pb::AddressSummary {
    c.addresses
        .get_address_summary(pb::GetAddressSummaryRequest {
            address: address.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_taproot_address_and_a_nonstandard_script_over_grpc() {
    let (_b1, taproot_db, _) = window(TAPROOT, TAPROOT_HASH, true);
    let (_b2, nonstandard_db, _) = window(NONSTANDARD, NONSTANDARD_HASH, false);
    let taproot = Server::start(taproot_db.path(), &[]);
    let nonstandard = Server::start(nonstandard_db.path(), &[]);

    // The first P2TR output of block 866342, and the taproot coin it came from.
    let mut c = taproot.connect().await;
    let paid = "bc1p3p9z690l0ne2er7plv7w33ef2duxht580d4vg0dcexv5ke8q78aqg9lz7w";
    let summary = summary_of(&mut c, paid).await;
    assert_eq!(
        (
            summary.script_type.as_str(),
            summary.tx_count,
            summary.received,
            summary.balance
        ),
        ("p2tr", 1, 44_906_470, 44_906_470)
    );
    let payment = "82b597dc67d0a236bcdb042430a81e32951fabc3707e2f623ddafe72b335d763";
    let tx = c
        .chain
        .get_transaction(pb::GetTransactionRequest {
            txid: payment.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tx.outputs[1].address, paid);
    let payer = &tx.inputs[0];
    assert_eq!(payer.script_type, "p2tr");
    let history = c
        .addresses
        .list_address_history(pb::ListAddressHistoryRequest {
            address: payer.address.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let entries: Vec<_> = history
        .entries
        .iter()
        .map(|e| (e.txid.as_str(), e.height, e.net))
        .collect();
    assert_eq!(
        entries,
        [(payment, TAPROOT, -(payer.value.unwrap() as i64))]
    );

    // Block 540107's coinbase pays 0 sat to a merge-mining tag that is no
    // standard script: it is found by its hex scriptPubKey.
    let mut c = nonstandard.connect().await;
    let block = raw_block(NONSTANDARD);
    let tag = &block.txdata[0].output[2].script_pubkey;
    assert!(tag.as_bytes().starts_with(b"RSKBLOCK:"));
    let summary = summary_of(&mut c, &tag.to_hex_string()).await;
    assert_eq!(
        (
            summary.script_type.as_str(),
            summary.tx_count,
            summary.received
        ),
        ("script", 1, 0)
    );
    let history = c
        .addresses
        .list_address_history(pb::ListAddressHistoryRequest {
            address: tag.to_hex_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let coinbase = block.txdata[0].compute_txid().to_string();
    assert_eq!(history.entries[0].txid, coinbase);
    let tx = c
        .chain
        .get_transaction(pb::GetTransactionRequest {
            txid: coinbase,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            tx.outputs[2].script_type.as_str(),
            tx.outputs[2].address.as_str()
        ),
        ("nonstandard", summary.address.as_str())
    );
    let status = c
        .chain
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (status.first_height, status.tip_height),
        (NONSTANDARD, NONSTANDARD)
    );
}

/// Written apart from satflow's clustering: the input addresses of each
/// transaction, from the prevouts file, are one entity.
fn plain_union_find(block: &bitcoin::Block, coins: &[(u64, ScriptBuf)]) -> HashMap<String, String> {
    let mut parent: HashMap<String, String> = HashMap::new();
    fn root(p: &HashMap<String, String>, mut x: String) -> String {
        while let Some(up) = p.get(&x).filter(|up| **up != x) {
            x = up.clone();
        }
        x
    }
    let mut next = 0;
    for tx in &block.txdata[1..] {
        let addrs: Vec<String> = coins[next..next + tx.input.len()]
            .iter()
            .map(|(_, s)| addr_of(s))
            .collect();
        next += tx.input.len();
        for a in &addrs {
            parent.entry(a.clone()).or_insert_with(|| a.clone());
        }
        for w in addrs.windows(2) {
            let (a, b) = (root(&parent, w[0].clone()), root(&parent, w[1].clone()));
            let (low, high) = if a < b { (a, b) } else { (b, a) };
            parent.insert(high, low);
        }
    }
    let keys: Vec<String> = parent.keys().cloned().collect();
    keys.into_iter()
        .map(|k| (k.clone(), root(&parent, k)))
        .collect()
}

#[test]
fn multi_input_clusters_of_the_taproot_block_equal_a_plain_union_find() {
    let (_blocks, db, _) = window(TAPROOT, TAPROOT_HASH, true);
    {
        let store = Store::open(db.path(), Access::Write).unwrap();
        cluster::rebuild(&store, "multi-input".parse::<Heuristics>().unwrap(), true).unwrap();
    }
    let expected = plain_union_find(&raw_block(TAPROOT), &taproot_prevouts());
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let id_of = |a: &str| {
        clusters::cluster_id_of(
            &index,
            &address::parse(a, satflow_indexer::Network::Main).unwrap(),
        )
        .unwrap()
    };
    // The same partition of the input addresses: one satflow id per
    // union-find class, and as many ids as classes.
    let mut id_of_class: HashMap<&str, ClusterId> = HashMap::new();
    for (a, class) in &expected {
        let id = *id_of_class.entry(class).or_insert_with(|| id_of(class));
        assert_eq!(id_of(a), id, "{a} is in {class}'s class");
    }
    let ids: BTreeSet<ClusterId> = id_of_class.values().copied().collect();
    assert_eq!(ids.len(), id_of_class.len(), "two classes share a cluster");
    let merged = expected.iter().filter(|(a, c)| a != c).count();
    assert!(
        merged > 100,
        "only {merged} addresses merged: the check proves little"
    );
}

#[test]
fn an_index_started_at_a_block_keeps_its_start() {
    let blocks = raw_blocks_dir(&[TAPROOT]);
    let db = tempfile::tempdir().unwrap();
    let opts = window_options(blocks.path(), db.path(), TAPROOT_HASH, true);
    satflow_indexer::run(&opts).unwrap();
    let before = dump_all(db.path());
    // Again, with or without --start-at: nothing new, nothing changed.
    let again = satflow_indexer::run(&opts).unwrap();
    let plain = satflow_indexer::run(&options(blocks.path(), db.path())).unwrap();
    assert_eq!((again.blocks_applied, plain.blocks_applied), (0, 0));
    assert_same(&before, &dump_all(db.path()));
    let err = satflow_indexer::run(&window_options(
        blocks.path(),
        db.path(),
        NONSTANDARD_HASH,
        false,
    ))
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(&format!(
            "starts at block {TAPROOT_HASH} (height {TAPROOT})"
        )),
        "{err}"
    );
}

#[test]
fn a_prevouts_file_that_does_not_fit_the_block_is_refused_by_name() {
    let blocks = raw_blocks_dir(&[TAPROOT]);
    let db = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut coins: Vec<serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(data(&format!("mainnet/prevouts/{TAPROOT_HASH}.json"))).unwrap(),
    )
    .unwrap();
    coins.pop();
    let file = dir.path().join(format!("{TAPROOT_HASH}.json"));
    std::fs::write(&file, serde_json::to_string(&coins).unwrap()).unwrap();
    let opts = IndexOptions {
        prevouts: Some(dir.path().to_owned()),
        ..window_options(blocks.path(), db.path(), TAPROOT_HASH, false)
    };
    let err = format!("{:#}", satflow_indexer::run(&opts).unwrap_err());
    assert!(
        err.contains(&file.display().to_string())
            && err.contains("7971 prevouts for a block with 7972"),
        "{err}"
    );
    // Nothing of the block was kept.
    assert_eq!(
        Store::open(db.path(), Access::ReadOnly)
            .unwrap()
            .tip()
            .unwrap(),
        None
    );
}

/// Prevouts files, in the layout `satflow index --prevouts` reads, for
/// every block of `blocks` that spends coins.
fn write_prevouts(blocks: &[bitcoin::Block], dir: &Path) {
    let coins: HashMap<bitcoin::OutPoint, &bitcoin::TxOut> = blocks
        .iter()
        .flat_map(|b| &b.txdata)
        .flat_map(|t| {
            let txid = t.compute_txid();
            t.output
                .iter()
                .enumerate()
                .map(move |(v, o)| (bitcoin::OutPoint::new(txid, v as u32), o))
        })
        .collect();
    for b in blocks {
        let entries: Vec<serde_json::Value> = b.txdata[1..]
            .iter()
            .flat_map(|t| &t.input)
            .map(|i| {
                let o = coins[&i.previous_output];
                serde_json::json!({"txout": {
                    "value": o.value.to_sat(),
                    "script_pubkey": o.script_pubkey.to_hex_string(),
                }})
            })
            .collect();
        let path = dir.join(format!("{}.json", b.block_hash()));
        std::fs::write(path, serde_json::to_string(&entries).unwrap()).unwrap();
    }
}

#[test]
fn a_window_of_a_generated_chain_agrees_with_the_full_index_and_follows_reorgs() {
    let (blocks, full) = synth_chain(11, 3_000_000);
    let f = Q::open(full.path());
    let tip = f.status().tip_height;
    let start = tip - 40;
    let prevouts = tempfile::tempdir().unwrap();
    write_prevouts(&all_blocks(blocks.path()), prevouts.path());
    let window_at = |db: &Path| {
        let opts = IndexOptions {
            start_at: Some(f.block(start).hash.parse().unwrap()),
            prevouts: Some(prevouts.path().to_owned()),
            ..options(blocks.path(), db)
        };
        satflow_indexer::run(&opts).unwrap()
    };
    let db = tempfile::tempdir().unwrap();
    window_at(db.path());

    // Every window tx reads as in the full index; every address it touches
    // has the full index's history from the start height on.
    let w = Q::open(db.path());
    let txids: Vec<String> = (start..=tip).flat_map(|h| w.block(h).txids).collect();
    let in_window: BTreeSet<&String> = txids.iter().collect();
    let (mut addresses, mut outside) = (BTreeSet::new(), 0);
    for txid in &txids {
        let (mine, theirs) = (w.tx(txid), f.tx(txid));
        assert_eq!(mine, theirs, "{txid}");
        outside += theirs
            .inputs
            .iter()
            .filter(|i| !in_window.contains(&i.prev_txid))
            .count();
        addresses.extend(theirs.outputs.iter().map(|o| o.address.clone()));
        addresses.extend(theirs.inputs.iter().map(|i| i.address.clone()));
    }
    assert!(
        outside > 100,
        "only {outside} inputs spend coins from before the window"
    );
    addresses.remove("");
    for a in &addresses {
        let theirs: Vec<_> = f
            .history(a)
            .into_iter()
            .filter(|e| e.height >= start)
            .collect();
        assert_eq!(w.history(a), theirs, "{a}");
    }
    drop(w);

    // Three blocks on top of tip - 2 replace the last two, whose spends of
    // older coins are undone: the result equals a fresh window.
    let mut prev: bitcoin::BlockHash = f.block(tip - 2).hash.parse().unwrap();
    let mut fork = Vec::new();
    for i in 0..3u8 {
        let b = build::block(
            prev,
            2_000_000_000 + u32::from(i),
            vec![build::coinbase(&[i, 7], &[(1, build::p2pkh(i))])],
        );
        prev = b.block_hash();
        fork.push(b);
    }
    build::write_blk(&blocks.path().join("blk09999.dat"), &fork);
    let again = window_at(db.path());
    assert_eq!((again.blocks_undone, again.blocks_applied), (2, 3));
    let fresh = tempfile::tempdir().unwrap();
    window_at(fresh.path());
    assert_same(&dump_all(db.path()), &dump_all(fresh.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(fresh.path()));
}

/// Traces in an index that starts later: value from before the start is
/// reported as such, and value that cannot be known stops the trace.
#[test]
fn traces_stop_at_the_start_of_the_index() {
    use satflow_indexer::flow::Flow;
    use satflow_query::taint::{trace_with, Direction, Event, Kind, Limits, PolicyName};

    let trace = |db: &Path, txid: bitcoin::Txid, direction, policy| {
        let store = Store::open(db, Access::ReadOnly).unwrap();
        let txnum = store.find_tx(&txid).unwrap().unwrap();
        drop(store);
        let flow = Flow::open(db).unwrap().unwrap();
        let g = flow.view();
        let sources: Vec<u64> = g.outputs(txnum.0).collect();
        let mut events: Vec<Event> = Vec::new();
        let (totals, _) = trace_with(
            policy,
            g,
            direction,
            &sources,
            &Limits::default(),
            &mut events,
        )
        .unwrap();
        (totals, events)
    };

    // Block 866342 with its prevouts: backward, every satoshi of a payment
    // is traced to coins from before the block (FIFO keeps them whole).
    let (_b, db, _) = window(TAPROOT, TAPROOT_HASH, true);
    let payment: bitcoin::Txid = "82b597dc67d0a236bcdb042430a81e32951fabc3707e2f623ddafe72b335d763"
        .parse()
        .unwrap();
    let (totals, events) = trace(db.path(), payment, Direction::Backward, PolicyName::Fifo);
    assert_eq!(totals.source, 330 + 44_906_470);
    assert_eq!(totals.before_start, totals.source);
    assert!(events.iter().all(|e| e.kind == Kind::BeforeStart));

    // Block 540107 without prevouts: a transaction whose inputs' values are
    // unknown cannot be traced through.
    let (_b, db, _) = window(NONSTANDARD, NONSTANDARD_HASH, false);
    let block = raw_block(NONSTANDARD);
    let tx = block.txdata[1].compute_txid();
    let (totals, events) = trace(db.path(), tx, Direction::Backward, PolicyName::Haircut);
    assert_eq!(totals.unknown_value, totals.source);
    assert!(!events.is_empty() && events.iter().all(|e| e.kind == Kind::UnknownValue));
}
