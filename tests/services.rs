//! Services recognised from behaviour (`satflow categorise`): the features
//! of real 2009 miners against the raw blocks, the generated chain's pools
//! and exchanges against its truth, and inferences as served, apart from
//! labels or (opted in) as labels of set `inferred`.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;

use common::server::Server;
use common::*;
use satflow_indexer::labels::{Defaults, Format};
use satflow_indexer::services::{self, Inferred, Service};
use satflow_indexer::store::Direction;
use satflow_indexer::{address, Access, Store};
use satflow_proto::v1 as pb;
use satflow_schema::script::{classify, AddrKey};
use satflow_schema::{cf, AddrId};

fn categorise(db: &Path) -> Vec<Inferred> {
    let out = Command::new(env!("CARGO_BIN_EXE_satflow"))
        .args(["categorise", "--quiet", "--db"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    services::Store::open(db)
        .unwrap()
        .expect("written")
        .iter()
        .collect()
}

/// The addresses of the cluster `r` describes.
fn members(store: &Store, r: &Inferred) -> HashSet<AddrKey> {
    let ids: Vec<AddrId> = match r.features.size {
        1 => vec![r.key.holder()],
        _ => store
            .pairs::<cf::ClusterMembers, _, _>(r.key, AddrId(0), Direction::Forward)
            .map(|m| m.unwrap().0)
            .collect(),
    };
    ids.iter()
        .map(|id| store.need::<cf::Addrs>(id).unwrap())
        .collect()
}

/// Of the transactions of `blocks` touching `members`: how many, how many
/// are coinbases paying them, payments to them that spend none of their
/// coins, and spends of theirs into 5+ outputs paying others half or more.
fn counted(blocks: &[bitcoin::Block], members: &HashSet<AddrKey>) -> [u64; 4] {
    let key = |s: &bitcoin::ScriptBuf| classify(s.as_bytes()).1;
    let mut coins: HashMap<bitcoin::OutPoint, (Option<AddrKey>, u64)> = HashMap::new();
    let mut n = [0u64; 4];
    for tx in blocks.iter().flat_map(|b| &b.txdata) {
        let txid = tx.compute_txid();
        let spends = !tx.is_coinbase()
            && tx.input.iter().any(|i| {
                coins
                    .get(&i.previous_output)
                    .is_some_and(|(k, _)| k.is_some_and(|k| members.contains(&k)))
            });
        let paid: u64 = tx
            .output
            .iter()
            .filter(|o| key(&o.script_pubkey).is_some_and(|k| members.contains(&k)))
            .map(|o| o.value.to_sat())
            .sum();
        let pays = tx
            .output
            .iter()
            .any(|o| key(&o.script_pubkey).is_some_and(|k| members.contains(&k)));
        if spends || pays {
            n[0] += 1;
            let total: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
            match (tx.is_coinbase(), spends) {
                (true, _) => n[1] += 1,
                (false, false) => n[2] += 1,
                (false, true) => {
                    if tx.output.len() >= 5 && (total - paid) * 2 >= total {
                        n[3] += 1;
                    }
                }
            }
        }
        for (vout, o) in tx.output.iter().enumerate() {
            let point = bitcoin::OutPoint::new(txid, vout as u32);
            coins.insert(point, (key(&o.script_pubkey), o.value.to_sat()));
        }
    }
    n
}

#[test]
fn the_features_of_2009_miners_are_what_the_raw_blocks_hold_and_none_is_a_pool() {
    let (blocks, db, _) = indexed_blk00000();
    let found = categorise(db.path());
    // Three 2009 miners merged 20 or more of their block rewards.
    assert!(found.len() >= 3, "{found:?}");
    let chain = best_chain(blocks.path(), db.path());
    let store = Store::open(db.path(), Access::ReadOnly).unwrap();
    for r in &found {
        let f = &r.features;
        let [txs, coinbases, deposits, batches] = counted(&chain, &members(&store, r));
        assert_eq!(
            [f.txs, f.coinbase_txs, f.deposits, f.batch_payouts],
            [txs, coinbases, deposits, batches],
            "cluster {}",
            r.id.0
        );
        assert!(f.coinbase_txs >= 20, "{f:?}");
        // Pools came in late 2010: these are solo miners, who keep what
        // they mine rather than share it out in batches.
        assert_eq!(r.service, Service::Ordinary, "{f:?}");
    }
}

/// The kind of actor owning each generated address.
fn owners(truth: &Path) -> HashMap<String, String> {
    let kinds: HashMap<String, String> = csv_rows(&truth.join("actors.csv"))
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    csv_rows(&truth.join("addresses.csv"))
        .map(|r| (r[0].clone(), kinds[&r[1]].clone()))
        .collect()
}

fn csv_rows(path: &Path) -> impl Iterator<Item = Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    rows.into_iter()
}

#[tokio::test]
async fn a_generated_chain_s_pools_and_exchanges_are_recognised_and_served() {
    let (blocks, db) = synth_chain(21, 24 << 20);
    // A server running before the first categorisation picks it up at its
    // next catch-up.
    let server = Server::start(db.path(), &["--follow-ms", "50"]);
    let mut c = server.connect().await;
    let first = found_cluster(&c).await;
    assert_eq!(get_cluster(&c, first).await.inferred, None);
    let found = categorise(db.path());
    let store = Store::open(db.path(), Access::ReadOnly).unwrap();
    let network = store.network().unwrap().unwrap();
    let owner = owners(&blocks.path().join("truth"));
    let expected = |kind: &str| match kind {
        "exchange" => Service::Exchange,
        "pool" => Service::MiningPool,
        _ => Service::Ordinary,
    };
    let mut exchanges = HashSet::new();
    let mut pools = 0;
    for r in found.iter().filter(|r| r.service != Service::Ordinary) {
        // Most of the cluster's addresses are those of an actor of its kind.
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        for m in members(&store, r) {
            let a = address::encode(&m, network);
            *kinds
                .entry(owner.get(&a).map_or("?", String::as_str))
                .or_default() += 1;
        }
        let (kind, _) = kinds.iter().max_by_key(|(_, n)| **n).unwrap();
        assert_eq!(expected(kind), r.service, "cluster {}: {kinds:?}", r.id.0);
        assert!((50..=100).contains(&r.confidence));
        match r.service {
            Service::Exchange => {
                exchanges.insert(r.features.linked_to.map_or(r.id.0, |c| c.0));
            }
            _ => pools += 1,
        }
    }
    // The generator's 8 exchanges, each with its deposit addresses found;
    // pools that mined enough of the chain's 120 blocks.
    assert_eq!(exchanges.len(), 8, "{exchanges:?}");
    assert!(pools >= 3, "{pools}");
    drop(store);

    let exchange = found
        .iter()
        .find(|r| r.service == Service::Exchange && r.features.linked_to.is_none())
        .unwrap();
    // Shown apart from labels; no label unless the operator opts in.
    let mut got = get_cluster(&c, exchange.id.0).await;
    for _ in 0..200 {
        if got.inferred.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        got = get_cluster(&c, exchange.id.0).await;
    }
    let inferred = got.inferred.clone().expect("categorised");
    assert_eq!(inferred.category, "exchange");
    assert_eq!(inferred.confidence, u32::from(exchange.confidence));
    assert!(inferred
        .evidence
        .iter()
        .any(|e| e.contains("deposits from others")));
    assert!(got.labels.is_empty());
    let holder = address::encode(&id_key(db.path(), exchange.key.holder()), network);
    let summary = c
        .addresses
        .get_address_summary(pb::GetAddressSummaryRequest { address: holder })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.inferred, Some(inferred));
    // A customer's deposit: a transaction paying the deposit cluster.
    let deposit = c
        .clusters
        .list_cluster_history(pb::ListClusterHistoryRequest {
            cluster_id: exchange.id.0,
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .find(|e| e.net > 0)
        .unwrap()
        .txid;
    let exposure = |c: &satflow_query::client::Clients| {
        let mut risk = c.risk.clone();
        let txid = deposit.clone();
        async move {
            risk.get_exposure(pb::ExposureRequest {
                subject: Some(pb::exposure_request::Subject::Txid(txid)),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    let to_exchanges = |e: &pb::Exposure| {
        e.direct_sent
            .iter()
            .find(|x| x.category == "exchange" && x.label.is_empty())
            .map_or(0, |x| x.amount)
    };
    assert_eq!(to_exchanges(&exposure(&c).await), 0, "not opted in");
    drop(server);

    let server = Server::start(db.path(), &["--inferred-labels", "50"]);
    let c = server.connect().await;
    let got = get_cluster(&c, exchange.id.0).await;
    let l = &got.labels[0];
    assert_eq!(
        (l.set.as_str(), l.category.as_str()),
        ("inferred", "exchange")
    );
    assert!(l
        .source
        .contains(&format!("confidence {}%", exchange.confidence)));
    let e = exposure(&c).await;
    assert!(to_exchanges(&e) > 0, "{e:?}");
    let label = format!("exchange (inferred, cluster {})", exchange.id.0);
    assert!(e.direct_sent.iter().any(|x| x.label == label), "{e:?}");
}

/// The id of the largest cluster.
async fn found_cluster(c: &satflow_query::client::Clients) -> u64 {
    let mut clusters = c.clusters.clone();
    let largest = clusters
        .list_largest_clusters(pb::ListLargestClustersRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    largest.clusters[0].id
}

async fn get_cluster(c: &satflow_query::client::Clients, id: u64) -> pb::Cluster {
    let request = pb::GetClusterRequest {
        id: Some(pb::get_cluster_request::Id::ClusterId(id)),
    };
    let mut clusters = c.clusters.clone();
    clusters.get_cluster(request).await.unwrap().into_inner()
}

/// The address numbered `id` in the index at `db`.
fn id_key(db: &Path, id: AddrId) -> AddrKey {
    Store::open(db, Access::ReadOnly)
        .unwrap()
        .need::<cf::Addrs>(&id)
        .unwrap()
}

#[test]
fn bad_asks_are_refused_naming_what_is_wrong() {
    let (_blocks, db, _) = indexed_blk00000();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_satflow"))
            .args(args)
            .arg("--db")
            .arg(db.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["categorise", "--list"]);
    assert!(!ok && err.contains("not categorised yet"), "{err}");
    let (ok, err) = run(&["categorise", "--category", "exchange"]);
    assert!(!ok && err.contains("--category goes with --list"), "{err}");
    let (ok, _) = run(&["categorise", "--quiet"]);
    assert!(ok);
    let (ok, err) = run(&["categorise", "--list", "--category", "bank"]);
    assert!(!ok && err.contains("--category bank: not one of"), "{err}");
    let (ok, err) = run(&["serve", "--inferred-labels", "40"]);
    assert!(!ok && err.contains("inferred-labels"), "{err}");

    // A damaged store is named, and categorising again mends it.
    let file = db.path().join("services").join("inferred");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 7]).unwrap();
    let (ok, err) = run(&["categorise", "--list"]);
    assert!(!ok && err.contains(&file.display().to_string()), "{err}");
    assert!(run(&["categorise", "--quiet"]).0);
    assert!(run(&["categorise", "--list"]).0);

    // The set name `inferred` is kept for inferences.
    let list = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(list.path(), "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa\n").unwrap();
    let store = Store::open(db.path(), Access::Write).unwrap();
    let defaults = Defaults {
        set: Some("inferred".into()),
        label: Some("x".into()),
        category: Some(satflow_indexer::labels::Category::Other),
        ..Defaults::default()
    };
    let err =
        satflow_indexer::labels::import(&store, list.path(), Format::List, &defaults).unwrap_err();
    assert!(
        format!("{err:#}").contains("kept for the categories"),
        "{err:#}"
    );
}
