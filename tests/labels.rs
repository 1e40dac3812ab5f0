//! Labels from real label sets on real blocks: imports that skip what does
//! not belong (with its line), a sanctioned payment in block 574200,
//! labels inherited through clusters, and traces that stop at a category.

mod common;

use bitcoin::{Address, Network};
use common::server::Server;
use common::*;
use satflow_indexer::cluster;
use satflow_indexer::labels::{self, Category, Defaults, Format};
use satflow_indexer::{Access, Store};
use satflow_proto::v1 as pb;

const SANCTIONED_BLOCK: u32 = 574200;
const SANCTIONED_HASH: &str = "0000000000000000001602407ac49862a7bca9d00f7f402db20b7be2f5de59d2";
const OFAC_PAYEE: &str = "1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d";
const TAPROOT: u32 = 866342;
const TAPROOT_HASH: &str = "000000000000000000014ce9ba7c6760053c3c82ce6ab43d60afb101d3c8f1f1";

/// Line numbers (from 1) of the lines of `file` containing `needle`.
fn lines_with(file: &std::path::Path, needle: &str) -> Vec<usize> {
    std::fs::read_to_string(file)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect()
}

fn ofac_payee_script() -> bitcoin::ScriptBuf {
    OFAC_PAYEE
        .parse::<Address<bitcoin::address::NetworkUnchecked>>()
        .unwrap()
        .assume_checked()
        .script_pubkey()
}

/// A transaction not mined that spends block 574200's payment to the
/// OFAC-listed address into `outputs`.
fn spending_the_sanctioned_coin(outputs: Vec<bitcoin::TxOut>) -> bitcoin::Transaction {
    let paying = txids_paying(SANCTIONED_BLOCK, OFAC_PAYEE);
    let paid = raw_block(SANCTIONED_BLOCK)
        .txdata
        .into_iter()
        .find(|t| t.compute_txid().to_string() == paying[0])
        .unwrap();
    let script = ofac_payee_script();
    let vout = paid.output.iter().position(|o| o.script_pubkey == script);
    bitcoin::Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: bitcoin::OutPoint {
                txid: paid.compute_txid(),
                vout: vout.unwrap() as u32,
            },
            ..Default::default()
        }],
        output: outputs,
    }
}

#[tokio::test]
async fn the_ofac_list_flags_a_payment_in_block_574200() {
    let (_blocks, db, _) = window(SANCTIONED_BLOCK, SANCTIONED_HASH, false);
    let list = data("labels/ofac_sanctioned_addresses_XBT.txt");
    let parsed = import_labels(
        db.path(),
        &list,
        Format::List,
        Defaults {
            label: Some("OFAC SDN".into()),
            category: Some(Category::Sanctioned),
            ..Defaults::default()
        },
    );
    // 435 entries, one of them a Tron address: reported with its line.
    let tron = "TUCsTq7TofTCJRRoHk6RvhMoS2mJLm5Yzq";
    assert_eq!(parsed.labels.len(), 434);
    assert_eq!(
        parsed
            .skipped
            .iter()
            .map(|s| (s.line, s.entry.as_str()))
            .collect::<Vec<_>>(),
        [(lines_with(&list, tron)[0], tron)]
    );

    let server = Server::start(db.path(), &[]);
    let mut c = server.connect().await;
    let summary = c
        .addresses
        .get_address_summary(pb::GetAddressSummaryRequest {
            address: OFAC_PAYEE.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.received, 38_796_959);
    let labels: Vec<_> = summary
        .labels
        .iter()
        .map(|l| {
            (
                l.label.as_str(),
                l.category.as_str(),
                l.set.as_str(),
                l.inherited_from.as_str(),
            )
        })
        .collect();
    assert_eq!(
        labels,
        [(
            "OFAC SDN",
            "sanctioned",
            "ofac_sanctioned_addresses_XBT",
            ""
        )]
    );

    // The paying transaction, as a watcher sees it: one of its outputs
    // goes to a sanctioned address, found by the label alone.
    let paying = txids_paying(SANCTIONED_BLOCK, OFAC_PAYEE);
    assert_eq!(paying.len(), 1);
    let tx = c
        .chain
        .get_transaction(pb::GetTransactionRequest {
            txid: paying[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut flagged = Vec::new();
    for o in &tx.outputs {
        let s = c
            .addresses
            .get_address_summary(pb::GetAddressSummaryRequest {
                address: o.address.clone(),
            })
            .await;
        if let Ok(s) = s {
            if s.into_inner()
                .labels
                .iter()
                .any(|l| l.category == "sanctioned")
            {
                flagged.push(o.address.clone());
            }
        }
    }
    assert_eq!(flagged, [OFAC_PAYEE]);

    // Its risk view: the sanctioned payee is direct sent exposure, and the
    // default rules call that severe.
    let exposure = |rules: Vec<pb::RiskRule>| {
        let mut c = c.clone();
        let txid = paying[0].clone();
        async move {
            c.risk
                .get_exposure(pb::ExposureRequest {
                    subject: Some(pb::exposure_request::Subject::Txid(txid)),
                    rules,
                    ..Default::default()
                })
                .await
        }
    };
    let e = exposure(vec![]).await.unwrap().into_inner();
    let sanctioned: Vec<_> = e
        .direct_sent
        .iter()
        .map(|x| (x.category.as_str(), x.label.as_str(), x.amount))
        .collect();
    assert_eq!(
        sanctioned,
        [
            ("sanctioned", "", 38_796_959),
            ("sanctioned", "OFAC SDN", 38_796_959)
        ]
    );
    assert_eq!(e.risk, "severe", "{:?}", e.reasons);
    assert!(e.reasons[0].starts_with("sanctioned: "), "{:?}", e.reasons);
    // Rules are the analyst's: above this payment's size, nothing fires.
    let rule = |category: &str| pb::RiskRule {
        category: category.into(),
        min_share: 0.0,
        min_amount: 1_000_000_000,
        level: "severe".into(),
    };
    let e = exposure(vec![rule("sanctioned")])
        .await
        .unwrap()
        .into_inner();
    assert_eq!((e.risk.as_str(), e.reasons.len()), ("low", 0));
    let bad = exposure(vec![rule("sanctionned")]).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("rules[0].category"), "{bad:?}");

    // Screened from its raw bytes, as before it was mined: the same
    // payee exposure, the payee shown with its label.
    let screen = |raw: String| {
        let mut c = c.clone();
        async move {
            c.risk
                .screen_transaction(pb::ScreenTransactionRequest {
                    raw_transaction: raw,
                    ..Default::default()
                })
                .await
        }
    };
    let raw = c
        .clone()
        .chain
        .get_raw_transaction(pb::GetTransactionRequest {
            txid: paying[0].clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .raw;
    let s = screen(hex::encode(&raw)).await.unwrap().into_inner();
    let e = exposure(vec![]).await.unwrap().into_inner();
    assert_eq!(
        (s.txid.as_str(), s.mined_height),
        (paying[0].as_str(), Some(SANCTIONED_BLOCK))
    );
    assert_eq!(s.direct_sent, e.direct_sent);
    assert_eq!(
        (&s.direct_received, &s.indirect_received, s.received),
        (&e.direct_received, &e.indirect_received, e.received)
    );
    assert_eq!(s.risk, "severe", "{:?}", s.reasons);
    let payee = s.payees.iter().find(|p| p.address == OFAC_PAYEE).unwrap();
    assert!(payee.seen);
    assert_eq!(payee.labels[0].label, "OFAC SDN");
    assert_eq!(s.sent, tx.outputs.iter().map(|o| o.value).sum::<u64>());

    // A payment not mined: it spends the sanctioned coin to a fresh
    // address. Its coins came from the sanctioned address directly.
    let onward = spending_the_sanctioned_coin(vec![bitcoin::TxOut {
        value: bitcoin::Amount::from_sat(38_000_000),
        script_pubkey: build::p2pkh(0x5c),
    }]);
    let s = screen(bitcoin::consensus::encode::serialize_hex(&onward))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.mined_height, None);
    assert_eq!(s.received, 38_796_959);
    let received: Vec<_> = s
        .direct_received
        .iter()
        .map(|x| (x.category.as_str(), x.label.as_str(), x.amount, x.share))
        .collect();
    assert_eq!(
        received,
        [
            ("sanctioned", "", 38_796_959, 1.0),
            ("sanctioned", "OFAC SDN", 38_796_959, 1.0)
        ]
    );
    assert_eq!(s.risk, "severe");
    assert!(
        s.reasons[0].contains("received directly"),
        "{:?}",
        s.reasons
    );
    assert!(!s.payees[0].seen && s.payees[0].labels.is_empty());
    assert!(s.direct_sent.is_empty());

    // Bad bytes, and a coin the index does not hold, name what is wrong.
    let e = screen("zz".into()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("raw_transaction: "), "{e:?}");
    let mut unknown = onward.clone();
    unknown.input[0].previous_output.txid = "11".repeat(32).parse().unwrap();
    let e = screen(bitcoin::consensus::encode::serialize_hex(&unknown))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().starts_with("inputs[0]: "), "{e:?}");
    // Outputs paying more than there is, and ever so many hops (which
    // once overflowed for a mined transaction), are a caller's numbers,
    // not a failure of the server.
    let mut minted = onward.clone();
    minted.output.push(bitcoin::TxOut {
        value: bitcoin::Amount::MAX_MONEY,
        script_pubkey: build::p2pkh(0x5d),
    });
    let e = screen(bitcoin::consensus::encode::serialize_hex(&minted))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().starts_with("raw_transaction.outputs[1]: "),
        "{e:?}"
    );
    let far = c
        .clone()
        .risk
        .screen_transaction(pb::ScreenTransactionRequest {
            raw_transaction: hex::encode(&raw),
            hops: u32::MAX,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(far.mined_height, Some(SANCTIONED_BLOCK));
    assert_eq!(far.risk, "severe", "{:?}", far.reasons);
}

#[test]
fn tagpacks_and_csv_skip_what_is_not_a_bitcoin_address_by_line() {
    let (_blocks, db, _) = window(SANCTIONED_BLOCK, SANCTIONED_HASH, false);
    // GraphSense's OFAC pack lists other chains' addresses too.
    let pack = data("labels/graphsense_ofac.yaml");
    let parsed = import_labels(db.path(), &pack, Format::TagPack, Defaults::default());
    assert!(parsed.labels.len() > 300 && parsed.skipped.len() > 100);
    for s in &parsed.skipped {
        assert!(lines_with(&pack, &s.entry).contains(&s.line), "{s:?}");
        // Other chains' entries, and one Tron address filed as bitcoin.
        assert!(
            s.reason.contains("not bitcoin") || s.reason.contains("neither an address"),
            "{s:?}"
        );
    }
    // The pack's own category ("user") unless the import says otherwise.
    let store = Store::open(db.path(), Access::ReadOnly).unwrap();
    let stored = labels::all(&store).unwrap();
    assert_eq!(stored.len(), parsed.labels.len());
    assert!(stored.iter().all(|l| l.category == Category::Other));
    drop(store);

    let csv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        csv.path(),
        format!(
            "address,label,category,source\n{OFAC_PAYEE},Some desk,exchange,note\nnot-an-address,x,exchange,\n\
             tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx,testnet,exchange,\n{OFAC_PAYEE},No category,,\n"
        ),
    )
    .unwrap();
    let parsed = import_labels(db.path(), csv.path(), Format::Csv, Defaults::default());
    assert_eq!(parsed.labels.len(), 1);
    assert_eq!(
        parsed.skipped.iter().map(|s| s.line).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert!(
        parsed.skipped[1].reason.contains("main network"),
        "{:?}",
        parsed.skipped[1]
    );

    // Removing the set takes its labels away, and only them.
    let store = Store::open(db.path(), Access::Write).unwrap();
    let set = csv
        .path()
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(labels::remove_set(&store, &set).unwrap(), 1);
    assert!(labels::all(&store)
        .unwrap()
        .iter()
        .all(|l| l.set == "graphsense_ofac"));
}

#[tokio::test]
async fn labels_reach_the_whole_cluster_and_stop_traces() {
    let (_blocks, db, _) = window(TAPROOT, TAPROOT_HASH, true);
    let block = raw_block(TAPROOT);
    // A transaction with two input addresses, whose values the prevouts
    // file gives: a multi-input cluster. Label one input address.
    let server_db = db.path().to_owned();
    let (labeled, other) = {
        let server = Server::start(&server_db, &[]);
        let mut c = server.connect().await;
        let mut found = None;
        for t in &block.txdata[1..] {
            let tx = c
                .chain
                .get_transaction(pb::GetTransactionRequest {
                    txid: t.compute_txid().to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let mut addrs: Vec<String> = tx.inputs.iter().map(|i| i.address.clone()).collect();
            addrs.sort();
            addrs.dedup();
            if addrs.len() >= 2 && addrs.iter().all(|a| !a.is_empty()) {
                found = Some((addrs[0].clone(), addrs[1].clone()));
                break;
            }
        }
        found.expect("a multi-input transaction")
    };
    let csv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(csv.path(), format!("{labeled},Desk A,exchange,test\n")).unwrap();
    import_labels(db.path(), csv.path(), Format::Csv, Defaults::default());
    // Labels are keyed by address: a cluster rebuild leaves them be.
    {
        let store = Store::open(db.path(), Access::Write).unwrap();
        cluster::rebuild(&store, "multi-input".parse().unwrap(), true).unwrap();
    }

    let server = Server::start(db.path(), &[]);
    let mut c = server.connect().await;
    let summary = |a: String| {
        let mut c = c.clone();
        async move {
            c.addresses
                .get_address_summary(pb::GetAddressSummaryRequest { address: a })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let own = summary(labeled.clone()).await.labels;
    assert_eq!((own.len(), own[0].inherited_from.as_str()), (1, ""));
    let inherited = summary(other.clone()).await.labels;
    assert_eq!(
        inherited
            .iter()
            .map(|l| (l.label.as_str(), l.inherited_from.as_str()))
            .collect::<Vec<_>>(),
        [("Desk A", labeled.as_str())]
    );
    let cluster = c
        .clusters
        .get_cluster(pb::GetClusterRequest {
            id: Some(pb::get_cluster_request::Id::Address(other.clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cluster.labels.len(), 1);

    // Tx B spends a coin tx A made in the same block; B pays an address
    // labelled "Desk B" (an exchange). A trace forward from A's outputs,
    // stopping at exchanges, stops there and names the label.
    let made_here: std::collections::HashMap<_, _> =
        block.txdata.iter().map(|t| (t.compute_txid(), t)).collect();
    let (a, b_coin, desk_b) = block.txdata[1..]
        .iter()
        .find_map(|b| {
            let a = b
                .input
                .iter()
                .find_map(|i| made_here.get(&i.previous_output.txid))?;
            let (vout, addr) = b.output.iter().enumerate().find_map(|(v, o)| {
                Some((
                    v,
                    Address::from_script(&o.script_pubkey, Network::Bitcoin).ok()?,
                ))
            })?;
            Some((
                a.compute_txid(),
                format!("{}:{vout}", b.compute_txid()),
                addr.to_string(),
            ))
        })
        .expect("a coin made and spent inside the block");
    drop(server);
    let csv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(csv.path(), format!("{desk_b},Desk B,exchange,test\n")).unwrap();
    import_labels(db.path(), csv.path(), Format::Csv, Defaults::default());
    let server = Server::start(db.path(), &[]);
    let mut c = server.connect().await;
    let (mut hits, mut summary) = (Vec::new(), None);
    let mut stream = c
        .taint
        .trace(pb::TraceRequest {
            sources: vec![pb::TraceSource {
                source: Some(pb::trace_source::Source::Txid(a.to_string())),
            }],
            max_hops: 3,
            stop_categories: vec!["exchange".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(e) = stream.message().await.unwrap() {
        match e.event.unwrap() {
            pb::trace_event::Event::Hit(h) => hits.push(h),
            pb::trace_event::Event::Summary(s) => summary = Some(s),
        }
    }
    let stopped: Vec<_> = hits
        .iter()
        .filter(|h| h.kind == pb::ReachKind::Stopped as i32)
        .collect();
    assert_eq!(
        stopped
            .iter()
            .map(|h| (format!("{}:{}", h.txid, h.vout), h.labels[0].label.as_str()))
            .collect::<Vec<_>>(),
        [(b_coin, "Desk B")]
    );
    assert!(stopped[0].amount > 0);
    let summary = summary.unwrap();
    let desk: u64 = summary
        .labels
        .iter()
        .filter(|l| l.label == "Desk B")
        .map(|l| l.amount)
        .sum();
    assert_eq!(
        (summary.stopped, desk),
        (stopped[0].amount, stopped[0].amount)
    );

    // As exposure: A's direct payees are its outputs in Desk B's cluster
    // (the label reaches them through it), worth what those outputs hold.
    let clients = c.clone();
    let cluster_of = |address: String| {
        let mut c = clients.clone();
        async move {
            c.clusters
                .get_cluster(pb::GetClusterRequest {
                    id: Some(pb::get_cluster_request::Id::Address(address)),
                })
                .await
                .unwrap()
                .into_inner()
                .id
        }
    };
    let desk_cluster = cluster_of(desk_b.clone()).await;
    let a_tx = c
        .chain
        .get_transaction(pb::GetTransactionRequest {
            txid: a.to_string(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut direct = 0;
    for o in a_tx.outputs.iter().filter(|o| !o.address.is_empty()) {
        if cluster_of(o.address.clone()).await == desk_cluster {
            direct += o.value;
        }
    }
    let e = c
        .risk
        .get_exposure(pb::ExposureRequest {
            subject: Some(pb::exposure_request::Subject::Txid(a.to_string())),
            hops: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let desk = |list: &[pb::CategoryExposure]| -> u64 {
        list.iter()
            .filter(|x| x.label == "Desk B")
            .map(|x| x.amount)
            .sum()
    };
    assert_eq!(desk(&e.direct_sent), direct);
    assert!(
        desk(&e.indirect_sent) >= direct.max(1),
        "{:?}",
        e.indirect_sent
    );
    assert_eq!(e.risk, "low", "an exchange is no risk by the default rules");

    // A category name that is not in the vocabulary is refused.
    let e = c
        .taint
        .trace(pb::TraceRequest {
            sources: vec![pb::TraceSource {
                source: Some(pb::trace_source::Source::Address(other)),
            }],
            stop_categories: vec!["exchanges and friends".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("stop_categories[0]"), "{e:?}");
}

/// The pools the testdata manifest names for these real blocks, found from
/// the bitcoin-data/mining-pools list: by coinbase tag, or (Poolin, block
/// 713126) by payout address.
#[tokio::test]
async fn mining_pools_are_recognised_by_coinbase_tag_and_payout_address() {
    for (height, hash, pool) in [
        (SANCTIONED_BLOCK, SANCTIONED_HASH, "BTC.com"),
        (
            540107,
            "00000000000000000021868c2cefc52a480d173c849412fe81c4e5ab806f94ab",
            "BTC.com",
        ),
        (
            713126,
            "0000000000000000000593310d3b0cdc082af49f38b8a1611239072aef8433a8",
            "Poolin",
        ),
        (TAPROOT, TAPROOT_HASH, "MARA Pool"),
    ] {
        let (_blocks, db, _) = window(height, hash, false);
        let parsed = import_labels(
            db.path(),
            &data("labels/mining_pools_pools.json"),
            Format::Pools,
            Defaults::default(),
        );
        assert!(parsed.tags.len() > 100 && parsed.labels.len() > 100);
        let server = Server::start(db.path(), &[]);
        let mut c = server.connect().await;
        let block = c
            .chain
            .get_block(pb::GetBlockRequest {
                id: Some(pb::get_block_request::Id::Height(height)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(block.pool, pool, "block {height}");
    }
}

/// A label imported while the server runs is served after its next
/// catch-up. Screened, a payee carrying many labels lists at most 100 of
/// them, and one answer at most 10,000 in all; the rest are counted.
#[tokio::test]
async fn a_running_server_picks_up_new_labels() {
    let (_blocks, db, _) = window(SANCTIONED_BLOCK, SANCTIONED_HASH, false);
    let server = Server::start(db.path(), &["--follow-ms", "50"]);
    let mut c = server.connect().await;
    let labels_of = |c: &mut satflow_query::client::Clients| {
        let mut c = c.clone();
        async move {
            c.addresses
                .get_address_summary(pb::GetAddressSummaryRequest {
                    address: OFAC_PAYEE.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .labels
        }
    };
    assert!(labels_of(&mut c).await.is_empty());
    let csv = tempfile::NamedTempFile::new().unwrap();
    let rows: String = (0..150)
        .map(|i| format!("{OFAC_PAYEE},Late label {i},sanctioned,test\n"))
        .collect();
    std::fs::write(csv.path(), rows).unwrap();
    import_labels(db.path(), csv.path(), Format::Csv, Defaults::default());
    let started = std::time::Instant::now();
    loop {
        let labels = labels_of(&mut c).await;
        if !labels.is_empty() {
            assert_eq!(labels.len(), 150, "an address's own labels are all listed");
            assert_eq!(labels[0].label, "Late label 0");
            break;
        }
        assert!(
            started.elapsed().as_secs() < 20,
            "the new label never showed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // A payment not mined, of 101 outputs all to the labelled address.
    let fanned = spending_the_sanctioned_coin(vec![
        bitcoin::TxOut {
            value: bitcoin::Amount::from_sat(1_000),
            script_pubkey: ofac_payee_script(),
        };
        101
    ]);
    let s = c
        .risk
        .screen_transaction(pb::ScreenTransactionRequest {
            raw_transaction: bitcoin::consensus::encode::serialize_hex(&fanned),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let shown: Vec<(usize, u64)> = s
        .payees
        .iter()
        .map(|p| (p.labels.len(), p.labels_omitted))
        .collect();
    let mut expected = vec![(100, 50); 100];
    expected.push((0, 150));
    assert_eq!(shown, expected);
}

/// Every (cluster, member, label) a label index holds, in its order.
fn label_rows(l: &satflow_query::LabelIndex) -> Vec<(u64, u64, String)> {
    l.clusters_with_any()
        .flat_map(|c| {
            l.of_cluster(c)
                .iter()
                .map(move |(m, label)| (c.0, m.0, label.label.clone()))
        })
        .collect()
}

/// Between label imports, a catch-up moves the label index on (the labels
/// of the addresses new since, the clusters of the labelled ones looked up
/// again) instead of reading every label row: what it then holds equals a
/// whole rebuild, with labels on addresses that only appear in the new
/// blocks, and clusters the new blocks merged.
#[test]
fn a_label_index_moved_on_equals_one_read_whole() {
    use satflow_query::Index;
    use satflow_schema::cf;

    let (blocks, whole_db) = synth_chain(11, 3 << 20);
    let chain = best_chain(blocks.path(), whole_db.path());
    // Every 3rd address of the whole chain, under 40 entity names.
    let csv = tempfile::NamedTempFile::new().unwrap();
    let rows: Vec<String> = {
        let store = Store::open(whole_db.path(), Access::ReadOnly).unwrap();
        let network = store.network().unwrap().unwrap();
        store
            .scan_all::<cf::Addrs>()
            .map(|r| r.unwrap())
            .filter(|(id, _)| id.0 % 3 == 0)
            .map(|(id, key)| {
                let a = satflow_indexer::address::encode(&key, network);
                format!("{a},Entity {},exchange,test\n", id.0 % 40)
            })
            .collect()
    };
    std::fs::write(csv.path(), rows.concat()).unwrap();

    // Three quarters of the transactions first: fewer new addresses than
    // label rows after, or a whole rebuild would be the cheaper one.
    let txs: usize = chain.iter().map(|b| b.txdata.len()).sum();
    let mut seen = 0;
    let half = chain
        .iter()
        .position(|b| {
            seen += b.txdata.len();
            seen * 4 >= txs * 3
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    build::write_blk(&dir.path().join("blk00000.dat"), &chain[..half]);
    index(dir.path(), db.path());
    import_labels(db.path(), csv.path(), Format::Csv, Defaults::default());
    let live = Index::open(db.path(), Access::Follow).unwrap();
    assert!(!live.label_index().moved_on());

    let before = label_rows(&live.label_index());
    let first_new = satflow_query::chain::status(&live).unwrap().address_count;

    build::write_blk(&dir.path().join("blk00000.dat"), &chain);
    index(dir.path(), db.path());
    live.catch_up().unwrap();
    live.refresh().unwrap();
    let moved = live.label_index();
    assert!(moved.moved_on());
    let whole = Index::open(db.path(), Access::ReadOnly).unwrap();
    assert!(!whole.label_index().moved_on());
    let after = label_rows(&moved);
    assert_eq!(after, label_rows(&whole.label_index()));

    // The case is not trivial: new blocks brought labelled addresses, and
    // merged clusters holding labelled ones.
    assert!(
        after.len() > before.len(),
        "{} → {}",
        before.len(),
        after.len()
    );
    assert!(after.iter().any(|(_, m, _)| *m >= first_new));
    let cluster_then: std::collections::HashMap<u64, u64> =
        before.iter().map(|(c, m, _)| (*m, *c)).collect();
    assert!(
        after
            .iter()
            .any(|(c, m, _)| cluster_then.get(m).is_some_and(|then| then != c)),
        "no labelled address changed cluster"
    );
}

/// A reorg gives the address numbers above its fork out again. A label
/// index that a catch-up moves on past one (the writer undid blocks and
/// went beyond where it was) must not keep a label under a number that now
/// names another address: it equals one read whole, and a summary names
/// the member a label is inherited from by the address the number names
/// now, though a summary before the reorg made the old one.
#[test]
fn a_label_index_caught_up_past_a_reorg_equals_one_read_whole() {
    use bitcoin::{OutPoint, ScriptBuf};
    use build::*;
    use satflow_query::{addresses, Index};

    let (x, y, w, z, v) = (p2pkh(1), p2pkh(2), p2pkh(3), p2pkh(4), p2pkh(5));
    let coin = 50_0000_0000;
    let g = regtest_genesis();
    let next =
        |prev: &bitcoin::Block, tag: &[u8], txs: Vec<bitcoin::Transaction>, to: &ScriptBuf| {
            let txdata = [vec![coinbase(tag, &[(coin, to.clone())])], txs].concat();
            block(prev.block_hash(), prev.header.time + 1, txdata)
        };
    let out =
        |b: &bitcoin::Block, tx: usize, vout: u32| OutPoint::new(b.txdata[tx].compute_txid(), vout);
    let b1 = next(&g, b"1", vec![], &x);
    let b2 = block(
        b1.block_hash(),
        b1.header.time + 1,
        vec![coinbase(
            b"2",
            &[(coin / 2, y.clone()), (coin / 2, y.clone())],
        )],
    );
    // X and Y spent together: one cluster, which W joins later on either
    // branch.
    let joined = tx(&[out(&b1, 0, 0), out(&b2, 0, 0)], &[(coin, v.clone())]);
    // Numbers: genesis's address 0, X 1, Y 2, W 3, V 4.
    let b3 = next(&b2, b"3", vec![joined.clone()], &w);
    let b4 = next(
        &b3,
        b"4",
        vec![tx(&[out(&b2, 0, 1), out(&b3, 0, 0)], &[(coin, v.clone())])],
        &x,
    );
    // The longer branch from b2: Z takes number 3, V 4, W 5.
    let c3 = next(&b2, b"c3", vec![joined], &z);
    let c4 = next(&c3, b"c4", vec![], &w);
    let c5 = next(
        &c4,
        b"c5",
        vec![tx(&[out(&b2, 0, 1), out(&c4, 0, 0)], &[(coin, v.clone())])],
        &x,
    );
    let c6 = next(&c5, b"c6", vec![], &x);

    let dir = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    let blk = dir.path().join("blk00000.dat");
    write_blk(
        &blk,
        &[g.clone(), b1.clone(), b2.clone(), b3.clone(), b4.clone()],
    );
    index(dir.path(), db.path());
    let shown = |s: &ScriptBuf| {
        Address::from_script(s, Network::Regtest)
            .unwrap()
            .to_string()
    };
    let csv = tempfile::NamedTempFile::new().unwrap();
    let rows = format!(
        "{},Desk,exchange,test\n{},Payee,exchange,test\n",
        shown(&x),
        shown(&w)
    );
    std::fs::write(csv.path(), rows).unwrap();
    import_labels(db.path(), csv.path(), Format::Csv, Defaults::default());

    let key = |s: &ScriptBuf| {
        satflow_indexer::address::parse(&shown(s), satflow_indexer::Network::Regtest).unwrap()
    };
    let inherited = |index: &Index, s: &ScriptBuf| -> Vec<(String, String)> {
        let summary = addresses::summary(index, &key(s)).unwrap().unwrap();
        summary
            .labels
            .into_iter()
            .map(|l| (l.label, l.inherited_from))
            .collect()
    };
    let live = Index::open(db.path(), Access::Follow).unwrap();
    // Y inherits both: from X (number 1) and W (number 3).
    let want = vec![
        ("Desk".to_string(), shown(&x)),
        ("Payee".to_string(), shown(&w)),
    ];
    assert_eq!(inherited(&live, &y), want);

    write_blk(&blk, &[g, b1, b2, b3, b4, c3, c4, c5, c6]);
    let reorged = index(dir.path(), db.path());
    assert_eq!((reorged.blocks_undone, reorged.tip_height), (2, Some(6)));
    live.catch_up().unwrap();
    live.refresh().unwrap();

    let whole = Index::open(db.path(), Access::ReadOnly).unwrap();
    assert_eq!(
        label_rows(&live.label_index()),
        label_rows(&whole.label_index())
    );
    // Number 3 is Z's now: no label of W's under it.
    assert!(label_rows(&live.label_index())
        .iter()
        .all(|(_, m, _)| *m != 3));
    assert_eq!(inherited(&live, &y), want);
    assert_eq!(inherited(&live, &z), vec![]);
}

/// CSV through a real parser: quoted fields holding commas, doubled quotes
/// and a line break, CRLF line ends, a header row. Lines are the file's
/// own, a quoted line break counted.
#[test]
fn csv_quoted_fields_import_as_written() {
    let (_blocks, db, _) = window(SANCTIONED_BLOCK, SANCTIONED_HASH, false);
    let csv = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    std::fs::write(
        csv.path(),
        format!(
            "address,label,category,source\r\n\
             {OFAC_PAYEE},\"Desk \"\"North\"\", hot wallet\",exchange,\"https://example.org/?a=1,2\"\r\n\
             12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S,\"Two-line\r\nnote\",other,\r\n\
             not-an-address,\"x, y\",exchange,\r\n"
        ),
    )
    .unwrap();
    let parsed = import_labels(db.path(), csv.path(), Format::Csv, Defaults::default());
    assert_eq!(parsed.labels.len(), 2);
    assert_eq!(
        parsed
            .skipped
            .iter()
            .map(|s| (s.line, s.entry.as_str()))
            .collect::<Vec<_>>(),
        [(5, "not-an-address")]
    );
    let store = Store::open(db.path(), Access::ReadOnly).unwrap();
    let network = store.network().unwrap().unwrap();
    let of = |a: &str| {
        labels::of(
            &store,
            &satflow_indexer::address::parse(a, network).unwrap(),
        )
        .unwrap()
    };
    let desk = &of(OFAC_PAYEE)[0];
    assert_eq!(desk.label, "Desk \"North\", hot wallet");
    assert_eq!(desk.source, "https://example.org/?a=1,2");
    assert_eq!(desk.category, Category::Exchange);
    assert_eq!(
        of("12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S")[0].label,
        "Two-line\r\nnote"
    );
}

/// A quote left open swallows the lines after it into one field: the
/// import stops there with the file and line, the labels before it stored.
#[test]
fn a_malformed_csv_line_is_an_error_naming_file_and_line() {
    let (_blocks, db, _) = window(SANCTIONED_BLOCK, SANCTIONED_HASH, false);
    let csv = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    std::fs::write(
        csv.path(),
        format!(
            "address,label,category,source\n{OFAC_PAYEE},Before,exchange,s\n\
             {OFAC_PAYEE},\"Unclosed,exchange,s\n12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S,After,exchange,s\n"
        ),
    )
    .unwrap();
    let store = Store::open(db.path(), Access::Write).unwrap();
    let err = labels::import(&store, csv.path(), Format::Csv, &Defaults::default()).unwrap_err();
    assert_eq!(
        format!("{err:#}"),
        format!(
            "{}: line 3: 2 fields, where the first record has 4",
            csv.path().display()
        )
    );
    let stored: Vec<_> = labels::all(&store)
        .unwrap()
        .into_iter()
        .map(|l| l.label)
        .collect();
    assert_eq!(stored, ["Before"]);
}

/// A TagPack of 50,000 tags with bad entries near its end: each is named
/// with its own line. (Lines were once counted from the file's start for
/// every tag, which made such a pack take minutes.)
#[test]
fn a_large_tagpack_names_the_lines_of_its_bad_entries() {
    use bitcoin::hashes::Hash;
    let (_blocks, db, _) = window(SANCTIONED_BLOCK, SANCTIONED_HASH, false);
    const TAGS: usize = 50_000;
    let mut yaml = String::from(
        "title: generated\nlabel: Generated entity\ncategory: exchange\nsource: test\ncurrency: BTC\ntags:\n",
    );
    let mut line = yaml.lines().count();
    let mut planted = Vec::new();
    for i in 0..TAGS {
        let mut hash = [0u8; 20];
        hash[12..].copy_from_slice(&(i as u64).to_be_bytes());
        let address = match i {
            i if i == TAGS - 10 => "1BadChecksumBadChecksumBadChecksum".to_string(),
            i if i % 2 == 0 => {
                Address::p2pkh(bitcoin::PubkeyHash::from_byte_array(hash), Network::Bitcoin)
                    .to_string()
            }
            _ => Address::p2sh_from_hash(
                bitcoin::ScriptHash::from_byte_array(hash),
                Network::Bitcoin,
            )
            .to_string(),
        };
        line += 1;
        yaml += &format!("  - address: {address}\n");
        if i == TAGS - 10 {
            planted.push((line, address.clone(), "neither an address"));
        }
        if i == TAGS - 3 {
            line += 1;
            yaml += "    currency: ETH\n";
            planted.push((line - 1, address, "not bitcoin"));
        }
        if i % 3 == 0 {
            line += 1;
            yaml += &format!("    label: Entity {i}\n");
        }
    }
    let pack = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(pack.path(), &yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_satflow"))
        .args(["labels", "--db"])
        .arg(db.path())
        .args(["import", "--format", "tagpack"])
        .arg(pack.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next().unwrap(),
        format!(
            "{}: {} labels and 0 coinbase tags imported, 2 entries skipped",
            pack.path().display(),
            TAGS - 2
        )
    );
    for (line, address, reason) in planted {
        let reported = lines.next().unwrap();
        assert!(
            reported.starts_with(&format!("  line {line}: {address}: "))
                && reported.contains(reason),
            "{reported:?}, planted at line {line}"
        );
    }
}
