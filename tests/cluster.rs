//! Address clusters: an independent union-find agrees with `multi-input`;
//! precision and recall against a generated chain's ground truth; CoinJoins
//! kept apart; a reorg that removes a merging transaction; the gRPC
//! answers on real mainnet blocks; and clusters behind the index.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bitcoin::{OutPoint, ScriptBuf};
use common::build::*;
use common::server::Server;
use common::*;
use satflow_indexer::cluster::{self, view, Heuristics};
use satflow_indexer::{address, Access, Store};
use satflow_proto::v1 as pb;
use satflow_schema::script::{AddrKey, ScriptType};
use satflow_schema::{cf, meta, AddrId, ClusterId, ClusterKey, Height, TxNum};

/// Cluster id of every address, by address number.
fn clusters(db: &Path) -> Vec<ClusterId> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let tip = store.tip().unwrap().unwrap();
    let n = store.block(tip.height).unwrap().unwrap().next_ids().addr;
    (0..n.0)
        .map(|a| {
            let key = view::cluster_of(&store, AddrId(a)).unwrap();
            view::id_of(&store, key).unwrap()
        })
        .collect()
}

/// The cluster named after address `a`: its own when it is alone, or the
/// one whose oldest member it is.
fn cluster_named(a: u64) -> ClusterId {
    ClusterId::of(AddrId(a))
}

fn recluster(db: &Path, heuristics: &str) {
    let store = Store::open(db, Access::Write).unwrap();
    cluster::rebuild(&store, heuristics.parse().unwrap(), true).unwrap();
}

/// Written apart from satflow's clustering on purpose: every tx's input
/// addresses are one entity; nothing else. Classes are named after their
/// lowest address number, as satflow's clusters are after their oldest.
fn plain_union_find(db: &Path) -> Vec<ClusterId> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let tip = store.tip().unwrap().unwrap();
    let next = store.block(tip.height).unwrap().unwrap().next_ids();
    let mut parent: Vec<u64> = (0..next.addr.0).collect();
    fn root(p: &mut [u64], mut x: u64) -> u64 {
        while p[x as usize] != x {
            x = p[x as usize];
        }
        x
    }
    for txnum in (0..next.tx.0).map(TxNum) {
        let tx = store.need::<cf::Txs>(&txnum).unwrap();
        if tx.is_coinbase() {
            continue;
        }
        let spent = store.need::<cf::Inputs>(&txnum).unwrap();
        // Coins no key signs for (anchors, OP_TRUE) say nothing of the spender.
        let addrs: Vec<u64> = spent
            .iter()
            .map(|o| store.need::<cf::Outputs>(o).unwrap())
            .filter(|o| {
                !matches!(
                    o.script_type,
                    ScriptType::WitnessUnknown | ScriptType::AnyoneCanSpend
                )
            })
            .filter_map(|o| o.addr.map(|a| a.0))
            .collect();
        for w in addrs.windows(2) {
            let (a, b) = (root(&mut parent, w[0]), root(&mut parent, w[1]));
            parent[a.max(b) as usize] = a.min(b);
        }
    }
    (0..next.addr.0)
        .map(|a| cluster_named(root(&mut parent, a)))
        .collect()
}

#[test]
fn multi_input_clusters_equal_a_plain_union_find() {
    for (name, blocks, db) in [
        {
            let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
            let db = tempfile::tempdir().unwrap();
            index(blocks.path(), db.path());
            ("mainnet 0-4521", blocks, db)
        },
        {
            let (blocks, db) = synth_chain(5, 8_000_000);
            ("generated", blocks, db)
        },
    ] {
        recluster(db.path(), "multi-input");
        let expected = plain_union_find(db.path());
        assert_eq!(clusters(db.path()), expected, "{name}");
        let merged = expected
            .iter()
            .enumerate()
            .filter(|(a, r)| cluster_named(*a as u64) != **r)
            .count();
        assert!(
            merged > 0,
            "{name}: no address was merged, the check proves nothing"
        );
        drop(blocks);
    }
}

/// Addresses whose cluster's most common owner is someone else.
fn misplaced(clusters: &[ClusterId], owner: &HashMap<AddrId, u64>) -> u64 {
    let mut counts: HashMap<ClusterId, HashMap<u64, u64>> = HashMap::new();
    for (&a, &o) in owner {
        *counts
            .entry(clusters[a.0 as usize])
            .or_default()
            .entry(o)
            .or_default() += 1;
    }
    counts
        .values()
        .map(|by_owner| by_owner.values().sum::<u64>() - by_owner.values().max().unwrap())
        .sum()
}

/// Pairwise precision and recall of `clusters` against the truth's owners.
fn pairwise(clusters: &[ClusterId], owner: &HashMap<AddrId, u64>) -> (f64, f64) {
    let pairs = |n: u64| n * n.saturating_sub(1) / 2;
    let (mut by_cluster, mut by_owner, mut both) = (HashMap::new(), HashMap::new(), HashMap::new());
    for (&a, &o) in owner {
        let c = clusters[a.0 as usize];
        *by_cluster.entry(c).or_insert(0u64) += 1;
        *by_owner.entry(o).or_insert(0u64) += 1;
        *both.entry((c, o)).or_insert(0u64) += 1;
    }
    let same_both: u64 = both.values().map(|&n| pairs(n)).sum();
    let same_cluster: u64 = by_cluster.values().map(|&n| pairs(n)).sum();
    let same_owner: u64 = by_owner.values().map(|&n| pairs(n)).sum();
    (
        same_both as f64 / same_cluster.max(1) as f64,
        same_both as f64 / same_owner.max(1) as f64,
    )
}

#[test]
fn coinjoin_detection_keeps_participants_apart_and_raises_precision() {
    let (blocks, db) = synth_chain(7, 100_000_000);
    let store = Store::open(db.path(), Access::ReadOnly).unwrap();
    let id_of = |addr: &str| -> Option<AddrId> {
        let key: AddrKey = address::parse(
            addr.strip_prefix("script:").unwrap_or(addr),
            store.network().unwrap().unwrap(),
        )
        .ok()?;
        store.get::<cf::AddrIds>(&key).unwrap()
    };
    let truth = std::fs::read_to_string(blocks.path().join("truth/addresses.csv")).unwrap();
    let owner: HashMap<AddrId, u64> = truth
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (a, o) = l.split_once(',')?;
            Some((id_of(a)?, o.parse().ok()?))
        })
        .collect();
    let coinjoins: Vec<(String, String)> =
        std::fs::read_to_string(blocks.path().join("truth/coinjoins.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].to_string(), f[1].to_string())
            })
            .collect();
    assert!(coinjoins.len() > 10, "{} coinjoins", coinjoins.len());
    drop(store);

    let mut results = BTreeMap::new();
    for heuristics in ["multi-input", "multi-input,coinjoin"] {
        recluster(db.path(), heuristics);
        let c = clusters(db.path());
        let (precision, recall) = pairwise(&c, &owner);
        let wrong = misplaced(&c, &owner);
        // How many CoinJoins ended with participants of different owners in one cluster.
        let store = Store::open(db.path(), Access::ReadOnly).unwrap();
        let merged_joins = coinjoins
            .iter()
            .filter(|(txid, _)| {
                let txnum = store.find_tx(&txid.parse().unwrap()).unwrap().unwrap();
                let tx = view::load_tx(&store, txnum).unwrap();
                let mut owners_per_cluster: HashMap<ClusterId, std::collections::HashSet<u64>> =
                    HashMap::new();
                for a in tx.inputs.iter().filter_map(|s| s.addr) {
                    if let Some(&o) = owner.get(&a) {
                        owners_per_cluster
                            .entry(c[a.0 as usize])
                            .or_default()
                            .insert(o);
                    }
                }
                owners_per_cluster.values().any(|o| o.len() > 1)
            })
            .count();
        eprintln!(
            "{heuristics:<22} pairwise precision {precision:.6} recall {recall:.6}; misplaced addresses {wrong}/{}; CoinJoins whose participants share a cluster: {merged_joins}/{}",
            owner.len(),
            coinjoins.len()
        );
        results.insert(heuristics, (precision, recall, merged_joins, wrong));
    }
    let plain = results["multi-input"];
    let detected = results["multi-input,coinjoin"];
    assert!(
        plain.2 > coinjoins.len() / 2,
        "without detection, CoinJoins merge their participants: {plain:?}"
    );
    assert_eq!(
        detected.2, 0,
        "with detection no CoinJoin merges its participants: {detected:?}"
    );
    assert!(
        detected.3 < plain.3,
        "detection misplaces fewer addresses: {plain:?} -> {detected:?}"
    );
    assert!(
        detected.0 >= plain.0,
        "detection does not lower precision: {plain:?} -> {detected:?}"
    );
}

#[test]
fn a_reorg_that_removes_a_merging_transaction_equals_a_fresh_build() {
    // a1, a2 pay P1 and P2; a3 spends both (merging them); b3, b4 replace a3.
    let g = regtest_genesis();
    let a1 = block(
        g.block_hash(),
        1,
        vec![coinbase(b"a1", &[(50_0000_0000, p2pkh(1))])],
    );
    let a2 = block(
        a1.block_hash(),
        2,
        vec![coinbase(b"a2", &[(50_0000_0000, p2pkh(2))])],
    );
    let spend = tx(
        &[
            OutPoint {
                txid: a1.txdata[0].compute_txid(),
                vout: 0,
            },
            OutPoint {
                txid: a2.txdata[0].compute_txid(),
                vout: 0,
            },
        ],
        &[(99_9990_0000, p2pkh(3))],
    );
    let a3 = block(
        a2.block_hash(),
        3,
        vec![coinbase(b"a3", &[(50_0000_0000, p2pkh(4))]), spend],
    );
    // b4 spends a1's output alone: nothing merges on this branch.
    let b3 = block(
        a2.block_hash(),
        33,
        vec![coinbase(b"b3", &[(50_0000_0000, p2pkh(5))])],
    );
    let lone = tx(
        &[OutPoint {
            txid: a1.txdata[0].compute_txid(),
            vout: 0,
        }],
        &[(49_0000_0000, p2pkh(6))],
    );
    let b4 = block(
        b3.block_hash(),
        34,
        vec![coinbase(b"b4", &[(50_0000_0000, p2pkh(7))]), lone],
    );

    let blocks = tempfile::tempdir().unwrap();
    write_blk(
        &blocks.path().join("blk00000.dat"),
        &[g.clone(), a1.clone(), a2.clone(), a3.clone()],
    );
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let before = clusters(db.path());
    assert_eq!(
        (before[1], before[2]),
        (cluster_named(1), cluster_named(1)),
        "a3 merged P2 into the cluster of the older P1"
    );

    write_blk(&blocks.path().join("blk00001.dat"), &[b3, b4]);
    let s = index(blocks.path(), db.path());
    assert_eq!((s.blocks_undone, s.tip_height), (1, Some(4)));
    let after = clusters(db.path());
    assert_ne!(after[1], after[2], "the merge left with a3");

    let fresh = tempfile::tempdir().unwrap();
    index(blocks.path(), fresh.path());
    assert_same(
        &dump(db.path(), &LOCATION_FREE),
        &dump(fresh.path(), &LOCATION_FREE),
    );
}

#[test]
fn an_older_address_joining_a_larger_cluster_moves_only_itself_and_undoes_exactly() {
    // a1 pays L (address 1); a2 pays E's three addresses (2–4) and 2 again;
    // a3 spends 2, 3 and 4 together: E is a cluster of three, keyed by 2.
    // In a later run, a4 spends L's coin beside E's: the older L joins the
    // larger E, which keeps its rows. a5 pays 3, touching E. b5 and b6
    // then replace a5.
    let g = regtest_genesis();
    let a1 = block(
        g.block_hash(),
        1,
        vec![coinbase(b"a1", &[(50_0000_0000, p2pkh(1))])],
    );
    let e_coins = coinbase(
        b"a2",
        &[
            (10_0000_0000, p2pkh(2)),
            (10_0000_0000, p2pkh(3)),
            (10_0000_0000, p2pkh(4)),
            (10_0000_0000, p2pkh(2)),
        ],
    );
    let a2 = block(a1.block_hash(), 2, vec![e_coins.clone()]);
    let coin = |txid, vout| OutPoint { txid, vout };
    let e = e_coins.compute_txid();
    let a3 = block(
        a2.block_hash(),
        3,
        vec![
            coinbase(b"a3", &[(50_0000_0000, p2pkh(5))]),
            tx(
                &[coin(e, 0), coin(e, 1), coin(e, 2)],
                &[(29_0000_0000, p2pkh(6))],
            ),
        ],
    );
    let l = a1.txdata[0].compute_txid();
    let a4 = block(
        a3.block_hash(),
        4,
        vec![
            coinbase(b"a4", &[(50_0000_0000, p2pkh(7))]),
            tx(&[coin(l, 0), coin(e, 3)], &[(59_0000_0000, p2pkh(8))]),
        ],
    );
    let a5 = block(
        a4.block_hash(),
        5,
        vec![coinbase(b"a5", &[(50_0000_0000, p2pkh(3))])],
    );
    let b5 = block(
        a4.block_hash(),
        55,
        vec![coinbase(b"b5", &[(50_0000_0000, p2pkh(9))])],
    );
    let b6 = block(
        b5.block_hash(),
        56,
        vec![coinbase(b"b6", &[(50_0000_0000, p2pkh(10))])],
    );

    let blocks = tempfile::tempdir().unwrap();
    write_blk(&blocks.path().join("blk00000.dat"), &[g, a1, a2, a3]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let fresh_equal = || {
        let fresh = tempfile::tempdir().unwrap();
        index(blocks.path(), fresh.path());
        assert_same(
            &dump(db.path(), &LOCATION_FREE),
            &dump(fresh.path(), &LOCATION_FREE),
        );
    };
    // Where L's cluster keeps its rows, and what it is known as.
    let l_cluster = || {
        let store = Store::open(db.path(), Access::ReadOnly).unwrap();
        let key = view::cluster_of(&store, AddrId(1)).unwrap();
        let s = view::stats(&store, key).unwrap().unwrap();
        let recorded = |h| store.get::<cf::ClusterUndo>(&Height(h)).unwrap().is_some();
        (key, s.id, s.size, [4, 5].map(recorded))
    };

    write_blk(&blocks.path().join("blk00001.dat"), &[a4, a5]);
    index(blocks.path(), db.path());
    assert_eq!(
        l_cluster(),
        (ClusterKey::of(AddrId(2)), cluster_named(1), 4, [true, true]),
        "E kept its rows, known by L, the oldest; both blocks recorded"
    );
    for a in 1..=4 {
        assert_eq!(clusters(db.path())[a], cluster_named(1), "address {a}");
    }
    fresh_equal();

    write_blk(&blocks.path().join("blk00002.dat"), &[b5, b6]);
    let s = index(blocks.path(), db.path());
    assert_eq!((s.blocks_undone, s.tip_height), (1, Some(6)));
    // Undone from a5's record: a recompute would have keyed the cluster by
    // its lowest member, L.
    assert_eq!(
        l_cluster(),
        (ClusterKey::of(AddrId(2)), cluster_named(1), 4, [true, true])
    );
    fresh_equal();
}

#[test]
fn wallets_spending_anchors_beside_their_own_coins_stay_apart() {
    // Block 1 pays ten wallets one coin each (addresses 1–10) and eight
    // keyless coins: three pay-to-anchor, three OP_TRUE, two empty scripts,
    // each kind one shared address. In block 2, wallets 1–8 each spend their
    // coin beside one keyless coin, as fee-bumping children do; wallets 9
    // and 10 spend theirs together, the ordinary link the rule must keep.
    let keyless = [
        ScriptBuf::from_bytes(vec![0x51, 0x02, 0x4e, 0x73]),
        ScriptBuf::from_bytes(vec![0x51]),
        ScriptBuf::new(),
    ];
    let mut paid: Vec<(u64, ScriptBuf)> = (1..=10).map(|w| (10_000, p2pkh(w))).collect();
    paid.extend((0..8).map(|i| (240, keyless[[0, 0, 0, 1, 1, 1, 2, 2][i]].clone())));
    let g = regtest_genesis();
    let funding = coinbase(b"fund", &paid);
    let b1 = block(g.block_hash(), 1, vec![funding.clone()]);
    let coin = |vout| OutPoint {
        txid: funding.compute_txid(),
        vout,
    };
    let mut spends = vec![coinbase(b"spend", &[(50_0000_0000, p2pkh(100))])];
    spends.extend((0..8).map(|w| tx(&[coin(w), coin(10 + w)], &[(9_000, p2pkh(20 + w as u8))])));
    spends.push(tx(&[coin(8), coin(9)], &[(19_000, p2pkh(30))]));
    let b2 = block(b1.block_hash(), 2, spends);
    let blocks = tempfile::tempdir().unwrap();
    write_blk(&blocks.path().join("blk00000.dat"), &[g, b1, b2]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());

    // Address 0 is genesis's, 1–10 the wallets, 11–13 the keyless scripts.
    let check = |how: &str| {
        let c = clusters(db.path());
        for w in 1..=8u64 {
            assert_eq!(
                c[w as usize],
                cluster_named(w),
                "{how}: wallet {w} joined another entity"
            );
        }
        assert_eq!(
            (c[9], c[10]),
            (cluster_named(9), cluster_named(9)),
            "{how}: wallets 9 and 10 were not linked"
        );
        for k in 11..=13u64 {
            assert_eq!(
                c[k as usize],
                cluster_named(k),
                "{how}: keyless address {k} was clustered"
            );
        }
    };
    check("block by block");
    recluster(db.path(), "multi-input,coinjoin,change-fresh,change-round");
    check("full build");

    // The keyless addresses keep their histories: received once, spent by
    // as many children as they had coins.
    let store = Store::open(db.path(), Access::ReadOnly).unwrap();
    let key = AddrKey::for_script(keyless[0].as_bytes());
    let id = store.need::<cf::AddrIds>(&key).unwrap();
    let stats = store.need::<cf::AddrStats>(&id).unwrap();
    assert_eq!((stats.tx_count, stats.received, stats.sent), (4, 720, 720));
}

#[tokio::test]
async fn clusters_of_real_mainnet_blocks_over_grpc() {
    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let server = Server::start(db.path(), &[]);
    let mut c = server.connect().await;
    let largest = c
        .clusters
        .list_largest_clusters(pb::ListLargestClustersRequest {
            by: pb::ClusterRanking::Size.into(),
            page_size: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        !largest.clusters.is_empty(),
        "early mainnet has multi-input spends"
    );
    assert!(largest.clusters.windows(2).all(|w| w[0].size >= w[1].size));
    let top = &largest.clusters[0];
    assert_eq!(top.heuristics, Heuristics::DEFAULT.to_string());
    assert_eq!(top.as_of_height, 4521);

    // Every member, page by page, points back at the cluster.
    let (mut members, mut token) = (Vec::new(), String::new());
    loop {
        let page = c
            .clusters
            .list_cluster_members(pb::ListClusterMembersRequest {
                cluster_id: top.id,
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        members.extend(page.addresses);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(members.len() as u64, top.size);
    assert_eq!(members[0], top.oldest_address);
    for m in &members {
        let of = c
            .clusters
            .get_cluster(pb::GetClusterRequest {
                id: Some(pb::get_cluster_request::Id::Address(m.clone())),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(of, *top);
    }

    // The cluster's history sums to its figures.
    let history = c
        .clusters
        .list_cluster_history(pb::ListClusterHistoryRequest {
            cluster_id: top.id,
            page_size: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.entries.len() as u64, top.tx_count);
    assert_eq!(
        history.entries.iter().map(|e| e.received).sum::<u64>(),
        top.received
    );
    assert_eq!(
        history.entries.iter().map(|e| e.net).sum::<i64>(),
        top.balance as i64
    );

    // The link between the first and last member: every step checks out
    // against the transaction it names.
    let path = c
        .clusters
        .explain_link(pb::ExplainLinkRequest {
            from_address: members[0].clone(),
            to_address: members.last().unwrap().clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(path.steps.first().unwrap().address, members[0]);
    assert_eq!(&path.steps.last().unwrap().address, members.last().unwrap());
    for w in path.steps.windows(2) {
        let tx = c
            .chain
            .get_transaction(pb::GetTransactionRequest {
                txid: w[0].txid.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let inputs: Vec<&str> = tx.inputs.iter().map(|i| i.address.as_str()).collect();
        assert_eq!(w[0].reason, "common input");
        assert!(
            inputs.contains(&w[0].address.as_str()) && inputs.contains(&w[1].address.as_str()),
            "{w:?}"
        );
    }

    // Genesis's coinbase can never be spent: its address is a cluster of
    // one, linked to nothing.
    let genesis = "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa";
    let alone = c
        .clusters
        .get_cluster(pb::GetClusterRequest {
            id: Some(pb::get_cluster_request::Id::Address(genesis.into())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            alone.id,
            alone.size,
            alone.oldest_address.as_str(),
            alone.first_seen_height
        ),
        (0, 1, genesis, 0)
    );
    let e = c
        .clusters
        .explain_link(pb::ExplainLinkRequest {
            from_address: genesis.into(),
            to_address: members[0].clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

#[test]
fn an_interrupted_rebuild_is_redone_with_the_heuristics_asked_for() {
    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    {
        // What `satflow cluster --heuristics multi-input` leaves when killed
        // mid-build: the heuristics asked for, no tip.
        let store = Store::open(db.path(), Access::Write).unwrap();
        let mut batch = store.batch();
        batch.put_meta(meta::ClusterHeuristics, &"multi-input".to_string());
        batch.delete_meta(meta::ClusterTip);
        store.write(batch).unwrap();
        store.flush().unwrap();
    }
    index(blocks.path(), db.path());
    let store = Store::open(db.path(), Access::ReadOnly).unwrap();
    assert_eq!(
        cluster::heuristics(&store).unwrap().unwrap().to_string(),
        "multi-input"
    );
    assert_eq!(
        cluster::tip(&store).unwrap().map(|p| p.height),
        Some(Height(4521))
    );
    drop(store);
    assert_eq!(clusters(db.path()), plain_union_find(db.path()));
}

/// A run with `--no-cluster` leaves the clusters behind the index. A lone
/// address then answers as it did at the cluster tip (its running totals
/// less its rows past the tip): equal, for every cluster, to an index that
/// stopped there.
#[test]
fn clusters_behind_the_index_answer_as_of_their_tip() {
    let raw = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let recs = mainnet_records(&raw);
    let blocks = tempfile::tempdir().unwrap();
    let file = blocks.path().join("blk00000.dat");
    std::fs::write(&file, recs[..3000].concat()).unwrap();
    let (at_tip, behind) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    index(blocks.path(), at_tip.path());
    index(blocks.path(), behind.path());
    std::fs::write(&file, recs.concat()).unwrap();
    let s = satflow_indexer::run(&satflow_indexer::IndexOptions {
        cluster: false,
        ..options(blocks.path(), behind.path())
    })
    .unwrap();
    assert_eq!((s.tip_height, s.blocks_applied), (Some(4521), 1522));

    let ids: std::collections::BTreeSet<ClusterId> = clusters(at_tip.path()).into_iter().collect();
    let (then, now) = (
        satflow_query::Index::open(at_tip.path(), Access::ReadOnly).unwrap(),
        satflow_query::Index::open(behind.path(), Access::ReadOnly).unwrap(),
    );
    let store = Store::open(behind.path(), Access::ReadOnly).unwrap();
    let mut lone_and_active_since = 0;
    for &id in &ids {
        let answer = satflow_query::clusters::cluster(&now, id).unwrap();
        assert_eq!(answer, satflow_query::clusters::cluster(&then, id).unwrap());
        assert_eq!(answer.as_of_height, 2999);
        let totals = store.need::<cf::AddrStats>(&id.named_after()).unwrap();
        if answer.size == 1 && totals.tx_count as u64 > answer.tx_count {
            lone_and_active_since += 1;
        }
    }
    // Lone addresses that spent or received past the cluster tip: the rows
    // taken back out of their totals.
    assert!(lone_and_active_since > 10, "{lone_and_active_since}");
}
