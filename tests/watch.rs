//! Live monitoring: watch rules over the real block 574200 flag its
//! payment to an OFAC-listed address; on a generated chain, a watched
//! theft's coins reaching an exchange deposit raise an alert with the
//! path, live over `Subscribe` while a second process indexes; a reorg
//! retracts it, and a subscriber resuming from an id misses nothing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::query::Q;
use common::server::Server;
use common::*;
use satflow_indexer::labels::{Category, Defaults, Format};
use satflow_indexer::Access;
use satflow_proto::v1 as pb;
use satflow_query::watch::{Monitor, Update};
use satflow_query::Index;
use tonic::Code;

use pb::watch::{Rule, Subject};

const SANCTIONED_BLOCK: u32 = 574200;
const SANCTIONED_HASH: &str = "0000000000000000001602407ac49862a7bca9d00f7f402db20b7be2f5de59d2";
const OFAC_PAYEE: &str = "1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d";
/// What block 574200 paid it.
const OFAC_PAID: u64 = 38_796_959;

fn watch(name: &str, subject: Subject, rule: Rule) -> pb::Watch {
    pb::Watch {
        name: name.into(),
        subject: Some(subject),
        rule: Some(rule),
    }
}

fn any() -> Rule {
    Rule::AnyActivity(pb::AnyActivity {})
}

#[test]
fn watch_rules_flag_the_ofac_payment_in_block_574200() {
    let (_blocks, db, _) = window(SANCTIONED_BLOCK, SANCTIONED_HASH, false);
    import_labels(
        db.path(),
        &data("labels/ofac_sanctioned_addresses_XBT.txt"),
        Format::List,
        Defaults {
            label: Some("OFAC SDN".into()),
            category: Some(Category::Sanctioned),
            ..Defaults::default()
        },
    );
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let alerts = tempfile::tempdir().unwrap();
    let m = Monitor::open(alerts.path(), Some(SANCTIONED_BLOCK)).unwrap();
    for w in [
        watch("sanctioned", Subject::Category("sanctioned".into()), any()),
        watch(
            "sdn",
            Subject::Label("OFAC SDN".into()),
            Rule::IncomingAbove(1),
        ),
        watch(
            "payee at",
            Subject::Address(OFAC_PAYEE.into()),
            Rule::IncomingAbove(OFAC_PAID),
        ),
        watch(
            "payee above",
            Subject::Address(OFAC_PAYEE.into()),
            Rule::IncomingAbove(OFAC_PAID + 1),
        ),
        watch("mixers", Subject::Category("mixer".into()), any()),
        // Watches of a subject already watched share its cluster set:
        // each still raises its own alert, by its own rule.
        watch(
            "sanctioned too",
            Subject::Category("sanctioned".into()),
            Rule::IncomingAbove(OFAC_PAID),
        ),
        watch(
            "sanctioned above",
            Subject::Category("sanctioned".into()),
            Rule::IncomingAbove(OFAC_PAID + 1),
        ),
        watch("sdn too", Subject::Label("OFAC SDN".into()), any()),
    ] {
        m.put_watch(&index, w).unwrap();
    }

    let done = m.update(&index).unwrap();
    assert_eq!(
        done,
        Update {
            evaluated_blocks: 1,
            height: Some(SANCTIONED_BLOCK),
            ..Update::default()
        }
    );
    // The paying transaction, found here from the raw block itself.
    let paying = txids_paying(SANCTIONED_BLOCK, OFAC_PAYEE);
    assert_eq!(paying.len(), 1);

    let raised = m.store().alerts_after(0, 100).unwrap();
    /// txid, received, addresses.
    type Hit<'a> = (&'a str, u64, &'a [String]);
    let by_watch: BTreeMap<&str, Vec<Hit>> = raised.iter().fold(BTreeMap::new(), |mut acc, a| {
        acc.entry(a.watch.as_ref().unwrap().name.as_str())
            .or_default()
            .push((a.txid.as_str(), a.received, &a.addresses[..]));
        acc
    });
    let payee_only = [OFAC_PAYEE.to_string()];
    let hit = vec![(paying[0].as_str(), OFAC_PAID, &payee_only[..])];
    assert_eq!(
        by_watch,
        BTreeMap::from([
            ("sanctioned", hit.clone()),
            ("sanctioned too", hit.clone()),
            ("sdn", hit.clone()),
            ("sdn too", hit.clone()),
            ("payee at", hit),
        ])
    );
    assert_eq!(
        raised.iter().map(|a| a.id).collect::<Vec<_>>(),
        (1..=5).collect::<Vec<_>>()
    );
    assert!(raised.iter().all(|a| a.height == SANCTIONED_BLOCK
        && a.block_hash == SANCTIONED_HASH
        && a.kind() == pb::AlertKind::AlertRaised));

    // Evaluated once: nothing new the second time.
    assert_eq!(m.update(&index).unwrap().evaluated_blocks, 0);
    assert_eq!(m.store().newest_id().unwrap(), 5);
}

/// The next alert on `stream`, within a minute.
async fn next(stream: &mut tonic::Streaming<pb::Alert>) -> pb::Alert {
    tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("an alert within a minute")
        .unwrap()
        .expect("the stream goes on")
}

/// Reads `stream` up to and including the first alert `stop` accepts.
async fn until(
    stream: &mut tonic::Streaming<pb::Alert>,
    stop: impl Fn(&pb::Alert) -> bool,
) -> Vec<pb::Alert> {
    let mut seen = Vec::new();
    loop {
        let a = next(stream).await;
        let done = stop(&a);
        seen.push(a);
        if done {
            return seen;
        }
    }
}

fn name(a: &pb::Alert) -> &str {
    &a.watch.as_ref().unwrap().name
}

#[tokio::test(flavor = "multi_thread")]
async fn a_watched_theft_reaching_an_exchange_deposit_raises_an_alert_with_its_path() {
    let (blocks, full) = synth_chain(11, 60_000_000);
    let truth = blocks.path().join("truth");
    let flow = std::fs::read_to_string(truth.join("flows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|f| f["complete"] == true && f["kind"] == "theft")
        .expect("a theft that reached an exchange");
    let source_height = flow["source"]["height"].as_u64().unwrap() as usize;
    let deposit = &flow["deposit"]["outpoint"];
    let (deposit_txid, deposit_vout) = (
        deposit["txid"].as_str().unwrap().to_string(),
        deposit["vout"].as_u64().unwrap() as u32,
    );
    let sources: Vec<(String, u32)> = flow["source"]["outpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["txid"].as_str().unwrap().to_string(),
                o["vout"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let f = Q::open(full.path());
    let thief = f.tx(&sources[0].0).outputs[sources[0].1 as usize]
        .address
        .clone();

    // An index of the chain before the theft, and the exchange's addresses
    // (from the generator's truth) as a label set.
    let chain = best_chain(blocks.path(), full.path());
    let live = tempfile::tempdir().unwrap();
    build::write_blk(&live.path().join("blk00000.dat"), &chain[..source_height]);
    let db = tempfile::tempdir().unwrap();
    index(live.path(), db.path());
    let exchange = flow["deposit"]["exchange"].as_u64().unwrap().to_string();
    let label = format!("Exchange {exchange}");
    let csv: String = std::fs::read_to_string(truth.join("addresses.csv"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(','))
        .filter(|(_, actor)| *actor == exchange)
        .map(|(address, _)| format!("{address},{label},exchange,synth truth\n"))
        .collect();
    let labels_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(labels_file.path(), csv).unwrap();
    import_labels(
        db.path(),
        labels_file.path(),
        Format::Csv,
        Defaults::default(),
    );

    // Alerts from the theft's block on, whenever the server first looks.
    let server = Server::start(
        db.path(),
        &[
            "--follow-ms",
            "50",
            "--alerts-from",
            &source_height.to_string(),
        ],
    );
    let mut c = server.connect().await.watches;
    let theft = watch(
        "theft",
        Subject::Address(thief.clone()),
        Rule::Exposure(pb::ExposureRule {
            category: "exchange".into(),
            max_hops: 6,
            direction: pb::ExposureDirection::ExposureToCategory.into(),
        }),
    );
    c.put_watch(theft.clone()).await.unwrap();
    c.put_watch(watch("thief", Subject::Address(thief.clone()), any()))
        .await
        .unwrap();
    let refused = |w: pb::Watch| {
        let mut c = c.clone();
        async move { c.put_watch(w).await.unwrap_err() }
    };
    let e = refused(watch("x", Subject::Address("1NpHuti9".into()), any())).await;
    assert_eq!(
        (e.code(), e.message().split(':').next()),
        (Code::InvalidArgument, Some("address"))
    );
    let e = refused(watch("x", Subject::ClusterId(u64::MAX >> 1), any())).await;
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    let mut stream = c
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    // The node appends the rest of the chain; the indexer picks it up.
    build::write_blk(&live.path().join("blk00001.dat"), &chain[source_height..]);
    index(live.path(), db.path());

    let seen = until(&mut stream, |a| {
        name(a) == "theft" && a.txid == deposit_txid
    })
    .await;
    let raised = seen.last().unwrap().clone();
    let ids: Vec<u64> = seen.iter().map(|a| a.id).collect();
    assert_eq!(ids, (1..=seen.len() as u64).collect::<Vec<_>>());
    assert_eq!(raised.watch.as_ref(), Some(&theft));
    assert_eq!(
        raised.height,
        flow["hops"].as_array().unwrap().last().unwrap()["height"]
            .as_u64()
            .unwrap() as u32
    );

    // The path: from one of the stolen coins, each coin spent by the
    // transaction making the next, to the deposit.
    let path = &raised.path;
    let first = &path[0];
    assert!(
        sources.contains(&(first.txid.clone(), first.vout)),
        "{first:?}"
    );
    assert_eq!(first.address, thief);
    let last = path.last().unwrap();
    assert_eq!((&last.txid, last.vout), (&deposit_txid, deposit_vout));
    assert!((2..=7).contains(&path.len()), "{} coins", path.len());
    for pair in path.windows(2) {
        let spender = f.tx(&pair[1].txid);
        assert!(
            spender
                .inputs
                .iter()
                .any(|i| i.prev_txid == pair[0].txid && i.prev_vout == pair[0].vout),
            "{} does not spend {}:{}",
            pair[1].txid,
            pair[0].txid,
            pair[0].vout
        );
        let made = &f.tx(&pair[0].txid).outputs[pair[0].vout as usize];
        assert_eq!(
            (made.value, &made.address),
            (pair[0].value, &pair[0].address)
        );
    }
    assert!(raised
        .counterparty_labels
        .iter()
        .any(|l| l.label == label && l.category == "exchange"));

    // The thief's own activity: paid by the theft, spending in the split.
    let thief_txs: Vec<&str> = seen
        .iter()
        .filter(|a| name(a) == "thief")
        .map(|a| a.txid.as_str())
        .collect();
    for (txid, _) in &sources {
        assert!(thief_txs.contains(&txid.as_str()), "no alert for {txid}");
    }
    let split = &flow["hops"][0]["txids"];
    assert!(split
        .as_array()
        .unwrap()
        .iter()
        .any(|t| thief_txs.contains(&t.as_str().unwrap())));

    // A longer branch replaces the blocks from the deposit's on: the alert
    // is retracted.
    let tip = chain.len() - 1;
    let deposit_height = raised.height as usize;
    let mut prev = chain[deposit_height - 1].block_hash();
    let fork: Vec<_> = (0..tip - deposit_height + 2)
        .map(|i| {
            let b = build::block(
                prev,
                chain[tip].header.time + 1 + i as u32,
                vec![build::coinbase(
                    &(i as u32).to_le_bytes(),
                    &[(1, build::p2pkh(9))],
                )],
            );
            prev = b.block_hash();
            b
        })
        .collect();
    build::write_blk(&live.path().join("blk09999.dat"), &fork);
    index(live.path(), db.path());
    let after = until(&mut stream, |a| a.retracts == raised.id).await;
    let retraction = after.last().unwrap();
    assert_eq!(retraction.kind(), pb::AlertKind::AlertRetracted);
    assert_eq!(
        (&retraction.txid, retraction.height, &retraction.path),
        (&raised.txid, raised.height, &raised.path)
    );
    // Exactly the alerts of the blocks that left are retracted, newest
    // first.
    let retracted: Vec<u64> = after
        .iter()
        .filter(|a| a.kind() == pb::AlertKind::AlertRetracted)
        .map(|a| a.retracts)
        .collect();
    let mut departed: Vec<u64> = seen
        .iter()
        .chain(&after)
        .filter(|a| a.kind() == pb::AlertKind::AlertRaised && a.height >= raised.height)
        .map(|a| a.id)
        .collect();
    departed.reverse();
    assert_eq!(retracted, departed);

    // Reconnecting with the last id seen misses nothing, with or without
    // a filter.
    let for_resume = c.clone();
    let resume = move |after_id, watches: Vec<String>| {
        let mut c = for_resume.clone();
        async move {
            c.subscribe(pb::SubscribeRequest { after_id, watches })
                .await
                .map(|r| r.into_inner())
        }
    };
    let mut again = resume(raised.id, vec![]).await.unwrap();
    let mut replayed = Vec::new();
    for _ in 0..after.len() {
        replayed.push(next(&mut again).await);
    }
    assert_eq!(replayed, after);
    let mut only_theft = resume(raised.id, vec!["theft".into()]).await.unwrap();
    let theft_after: Vec<_> = after.iter().filter(|a| name(a) == "theft").collect();
    for want in theft_after {
        assert_eq!(&next(&mut only_theft).await, want);
    }

    let listing = c
        .list_watches(pb::ListWatchesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listing.watches.len(), 2);
    assert!(listing.newest_alert_id >= retraction.id);
    let e = resume(listing.newest_alert_id + 1, vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let e = c
        .delete_watch(pb::DeleteWatchRequest {
            name: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    c.delete_watch(pb::DeleteWatchRequest {
        name: "thief".into(),
    })
    .await
    .unwrap();

    // The CLI over the same server.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_satflow"))
            .args(["watch", "--server", &server.url()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    cli(&[
        "add",
        "big",
        "--label",
        &label,
        "--incoming-above",
        "100000000",
    ]);
    let listed: serde_json::Value = serde_json::from_str(&cli(&["list", "--json"])).unwrap();
    let names: Vec<&str> = listed["watches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["big", "theft"]);
    assert!(cli(&["remove", "big"]).contains("removed big"));

    // A subscriber does not hold the server up at shutdown: its stream
    // ends with UNAVAILABLE.
    let mut tail = resume(0, vec![]).await.unwrap();
    next(&mut tail).await;
    let mut server = server;
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let end = loop {
        match tail.message().await {
            Ok(Some(_)) => continue,
            other => break other,
        }
    };
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
}
