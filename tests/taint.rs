//! Taint tracing end to end: a real `satflow serve` over a generated chain
//! whose ground truth plants illicit flows (theft or ransom → split →
//! merge → CoinJoin → post-mix → exchange deposit). The expected amount at
//! each deposit is worked out here, along the planted hops only, by a
//! separate and much plainer implementation of each policy.

mod common;

use std::collections::HashMap;

use common::server::{get_tx, Server};
use common::*;
use satflow_proto::v1 as pb;
use satflow_query::client::Clients;
use tonic::Code;

/// A coin: "txid:vout".
type Coin = String;

fn coin(txid: &str, vout: u64) -> Coin {
    format!("{txid}:{vout}")
}

/// The planted flows that reached their exchange deposit.
fn complete_flows(blocks: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(blocks.join("truth/flows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|f| f["complete"] == true)
        .collect()
}

fn outpoints(v: &serde_json::Value) -> Vec<Coin> {
    v["outpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| coin(o["txid"].as_str().unwrap(), o["vout"].as_u64().unwrap()))
        .collect()
}

/// Taint per coin after the planted hops, each policy written plainly:
/// amounts for poison, haircut and TIHO; satoshi ranges for FIFO and LIFO.
async fn along_the_hops(
    c: &mut Clients,
    flow: &serde_json::Value,
    policy: pb::TaintPolicy,
) -> HashMap<Coin, u64> {
    let mut ranges: HashMap<Coin, Vec<(u64, u64)>> = HashMap::new();
    for o in flow["source"]["outpoints"].as_array().unwrap() {
        let value = o["value"].as_u64().unwrap();
        ranges.insert(
            coin(o["txid"].as_str().unwrap(), o["vout"].as_u64().unwrap()),
            vec![(0, value)],
        );
    }
    for hop in flow["hops"].as_array().unwrap() {
        for txid in hop["txids"].as_array().unwrap() {
            let t = get_tx(c, txid.as_str().unwrap()).await;
            let ins: Vec<u64> = t.inputs.iter().map(|i| i.value.unwrap()).collect();
            let outs: Vec<u64> = t.outputs.iter().map(|o| o.value).collect();
            let marks: Vec<Vec<(u64, u64)>> = t
                .inputs
                .iter()
                .map(|i| {
                    ranges
                        .get(&coin(&i.prev_txid, u64::from(i.prev_vout)))
                        .cloned()
                        .unwrap_or_default()
                })
                .collect();
            let tainted: u64 = marks.iter().flatten().map(|(a, b)| b - a).sum();
            let total_in: u64 = ins.iter().sum();
            let got: Vec<Vec<(u64, u64)>> = match policy {
                pb::TaintPolicy::Poison => outs
                    .iter()
                    .map(|&v| if tainted > 0 { vec![(0, v)] } else { vec![] })
                    .collect(),
                pb::TaintPolicy::Haircut => outs
                    .iter()
                    .map(|&v| {
                        vec![(
                            0,
                            (u128::from(tainted) * u128::from(v) / u128::from(total_in)) as u64,
                        )]
                    })
                    .collect(),
                pb::TaintPolicy::Tiho => {
                    let mut left = tainted;
                    let mut order: Vec<usize> = (0..outs.len()).collect();
                    order.sort_by_key(|&j| (std::cmp::Reverse(outs[j]), j));
                    let mut got = vec![vec![]; outs.len()];
                    for j in order {
                        let take = left.min(outs[j]);
                        got[j] = vec![(0, take)];
                        left -= take;
                    }
                    got
                }
                pb::TaintPolicy::Fifo | pb::TaintPolicy::Lifo => {
                    // Satoshi positions of each input in the stream.
                    let mut order: Vec<usize> = (0..ins.len()).collect();
                    if policy == pb::TaintPolicy::Lifo {
                        order.reverse();
                    }
                    let mut start = vec![0; ins.len()];
                    let mut at = 0;
                    for i in order {
                        start[i] = at;
                        at += ins[i];
                    }
                    let mut got = vec![vec![]; outs.len()];
                    let mut out_start = 0;
                    for (j, &v) in outs.iter().enumerate() {
                        for (i, spans) in marks.iter().enumerate() {
                            for &(a, b) in spans {
                                let (x, y) = (
                                    (start[i] + a).max(out_start),
                                    (start[i] + b).min(out_start + v),
                                );
                                if x < y {
                                    got[j].push((x - out_start, y - out_start));
                                }
                            }
                        }
                        out_start += v;
                    }
                    got
                }
            };
            for (vout, spans) in got.into_iter().enumerate() {
                ranges.insert(coin(&t.txid, vout as u64), spans);
            }
        }
    }
    ranges
        .into_iter()
        .map(|(c, spans)| (c, spans.iter().map(|(a, b)| b - a).sum()))
        .collect()
}

/// Every event of a trace, and the status it ended with.
async fn trace(
    c: &mut Clients,
    r: pb::TraceRequest,
) -> (Vec<pb::TraceHit>, Option<pb::TraceSummary>, Code) {
    let mut stream = match c.taint.trace(r).await {
        Ok(s) => s.into_inner(),
        Err(status) => return (vec![], None, status.code()),
    };
    let (mut hits, mut summary) = (Vec::new(), None);
    loop {
        match stream.message().await {
            Ok(Some(pb::TraceEvent {
                event: Some(pb::trace_event::Event::Hit(h)),
            })) => hits.push(h),
            Ok(Some(pb::TraceEvent {
                event: Some(pb::trace_event::Event::Summary(s)),
            })) => summary = Some(s),
            Ok(Some(_)) => panic!("an empty event"),
            Ok(None) => return (hits, summary, Code::Ok),
            Err(status) => return (hits, summary, status.code()),
        }
    }
}

fn sources(coins: &[Coin]) -> Vec<pb::TraceSource> {
    coins
        .iter()
        .map(|c| pb::TraceSource {
            source: Some(pb::trace_source::Source::Outpoint(c.clone())),
        })
        .collect()
}

fn accounted(s: &pb::TraceSummary) -> u64 {
    s.unspent
        + s.stopped
        + s.beyond_hops
        + s.outside_window
        + s.below_min
        + s.mined
        + s.before_start
        + s.unknown_value
        + s.to_fees
        + s.rounding
        + s.unfinished
}

#[tokio::test]
async fn planted_flows_reach_their_exchange_deposit_under_every_policy() {
    let (blocks, db) = synth_chain(11, 60_000_000);
    let flows = complete_flows(blocks.path());
    assert!(
        flows.len() >= 2,
        "the chain holds {} complete flows",
        flows.len()
    );
    let server = Server::start(db.path(), &[]);
    let mut c = server.connect().await;
    for flow in &flows {
        let deposit = &flow["deposit"]["outpoint"];
        let deposit_coin = coin(
            deposit["txid"].as_str().unwrap(),
            deposit["vout"].as_u64().unwrap(),
        );
        let deposit_tx = get_tx(&mut c, deposit["txid"].as_str().unwrap()).await;
        let deposit_address = deposit_tx.outputs[deposit["vout"].as_u64().unwrap() as usize]
            .address
            .clone();
        let exchange = c
            .clusters
            .get_cluster(pb::GetClusterRequest {
                id: Some(pb::get_cluster_request::Id::Address(deposit_address)),
            })
            .await
            .unwrap()
            .into_inner()
            .id;
        let source = outpoints(&flow["source"]);
        for policy in [
            pb::TaintPolicy::Poison,
            pb::TaintPolicy::Haircut,
            pb::TaintPolicy::Fifo,
            pb::TaintPolicy::Lifo,
            pb::TaintPolicy::Tiho,
        ] {
            let expected = along_the_hops(&mut c, flow, policy).await[&deposit_coin];
            // LIFO and TIHO may hand the criminal's satoshis to other
            // CoinJoin participants; the others always carry some along.
            if matches!(
                policy,
                pb::TaintPolicy::Poison | pb::TaintPolicy::Haircut | pb::TaintPolicy::Fifo
            ) {
                assert!(expected > 0, "{policy:?}: no taint planted at the deposit");
            }
            let (hits, summary, code) = trace(
                &mut c,
                pb::TraceRequest {
                    sources: sources(&source),
                    policy: policy.into(),
                    max_hops: 10,
                    stop_cluster_ids: vec![exchange],
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(code, Code::Ok);
            let summary = summary.unwrap();
            let at_deposit: Vec<_> = hits
                .iter()
                .filter(|h| coin(&h.txid, u64::from(h.vout)) == deposit_coin)
                .map(|h| {
                    (
                        pb::ReachKind::try_from(h.kind).unwrap(),
                        h.amount,
                        h.cluster_id,
                    )
                })
                .collect();
            let want: &[_] = match expected {
                0 => &[],
                _ => &[(pb::ReachKind::Stopped, expected, Some(exchange))],
            };
            assert_eq!(
                at_deposit, want,
                "flow {} under {policy:?}",
                flow["flow_id"]
            );
            let reaching: u64 = summary
                .clusters
                .iter()
                .filter(|a| a.cluster_id == exchange)
                .map(|a| a.amount)
                .sum();
            assert!(reaching >= expected, "{policy:?}: {reaching} < {expected}");
            if policy != pb::TaintPolicy::Poison {
                assert_eq!(
                    accounted(&summary),
                    summary.source_amount,
                    "{policy:?}: {summary:?}"
                );
            }
        }

        // Backward from the deposit, stopping at the criminal's coins:
        // part of what was deposited is traced to each of them.
        let stop_addresses = source_addresses(&mut c, &source).await;
        let (hits, summary, code) = trace(
            &mut c,
            pb::TraceRequest {
                sources: sources(std::slice::from_ref(&deposit_coin)),
                direction: pb::TraceDirection::Backward.into(),
                policy: pb::TaintPolicy::Fifo.into(),
                max_hops: 10,
                stop_addresses,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(code, Code::Ok);
        let summary = summary.unwrap();
        assert_eq!(accounted(&summary), summary.source_amount);
        for s in &source {
            let reached: u64 = hits
                .iter()
                .filter(|h| {
                    coin(&h.txid, u64::from(h.vout)) == *s
                        && h.kind == pb::ReachKind::Stopped as i32
                })
                .map(|h| h.amount)
                .sum();
            assert!(reached > 0, "the deposit's value is not traced back to {s}");
        }
    }
}

async fn source_addresses(c: &mut Clients, coins: &[Coin]) -> Vec<String> {
    let mut out = Vec::new();
    for co in coins {
        let (txid, vout) = co.split_once(':').unwrap();
        let t = get_tx(c, txid).await;
        out.push(t.outputs[vout.parse::<usize>().unwrap()].address.clone());
    }
    out
}

#[tokio::test]
async fn budgets_bad_requests_and_cancelled_calls() {
    let (blocks, db) = synth_chain(11, 60_000_000);
    let flow = &complete_flows(blocks.path())[0];
    let source = outpoints(&flow["source"]);
    let server = Server::start(db.path(), &["--max-traces", "1"]);
    let mut c = server.connect().await;
    let request = pb::TraceRequest {
        sources: sources(&source),
        policy: pb::TaintPolicy::Poison.into(),
        max_hops: 1000,
        ..Default::default()
    };

    // Over budget: what was found, a summary, then RESOURCE_EXHAUSTED.
    let (_, summary, code) = trace(
        &mut c,
        pb::TraceRequest {
            max_transactions: 3,
            ..request.clone()
        },
    )
    .await;
    assert_eq!(code, Code::ResourceExhausted);
    let summary = summary.expect("a summary before the error");
    assert_eq!((summary.complete, summary.transactions_visited), (false, 3));
    assert!(summary.unfinished > 0);

    // Bad requests name their field.
    for (bad, code, field) in [
        (
            pb::TraceRequest {
                sources: vec![],
                ..request.clone()
            },
            Code::InvalidArgument,
            "sources",
        ),
        (
            pb::TraceRequest {
                direction: pb::TraceDirection::Backward.into(),
                policy: pb::TaintPolicy::Tiho.into(),
                ..request.clone()
            },
            Code::InvalidArgument,
            "policy",
        ),
        (
            pb::TraceRequest {
                sources: sources(&["nope:0".into()]),
                ..request.clone()
            },
            Code::InvalidArgument,
            "sources[0]",
        ),
        (
            pb::TraceRequest {
                sources: sources(&[format!("{}:0", "00".repeat(32))]),
                ..request.clone()
            },
            Code::NotFound,
            "sources[0]",
        ),
        (
            pb::TraceRequest {
                max_transactions: u64::MAX,
                ..request.clone()
            },
            Code::ResourceExhausted,
            "max_transactions",
        ),
    ] {
        let status = c.taint.trace(bad).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
    }

    // A trace whose reader stops reading holds its slot; dropping the call
    // frees it. Everything an early coinbase ever paid for, passed through
    // and reported, makes tens of thousands of hits, far more than the
    // stream buffers.
    let early = c
        .chain
        .get_block(pb::GetBlockRequest {
            id: Some(pb::get_block_request::Id::Height(5)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let everything = pb::TraceRequest {
        sources: vec![pb::TraceSource {
            source: Some(pb::trace_source::Source::Txid(early.txids[0].clone())),
        }],
        include_transit: true,
        ..request.clone()
    };
    let mut held = c.taint.trace(everything).await.unwrap().into_inner();
    held.message().await.unwrap().expect("a first hit");
    let busy = c
        .taint
        .trace(request.clone())
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(busy.code(), Code::ResourceExhausted, "{busy:?}");
    drop(held);
    let started = std::time::Instant::now();
    loop {
        let (_, summary, code) = trace(
            &mut c,
            pb::TraceRequest {
                max_hops: 1,
                ..request.clone()
            },
        )
        .await;
        if code == Code::Ok {
            assert!(summary.unwrap().complete);
            break;
        }
        assert_eq!(code, Code::ResourceExhausted);
        assert!(
            started.elapsed().as_secs() < 20,
            "the cancelled trace kept its slot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[test]
fn the_cli_prints_hits_and_a_summary() {
    let (blocks, db) = synth_chain(11, 60_000_000);
    let flow = &complete_flows(blocks.path())[0];
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_satflow"))
        .args(["trace", "--db"])
        .arg(db.path())
        .args([
            "--from",
            &outpoints(&flow["source"])[0],
            "--policy",
            "fifo",
            "--hops",
            "10",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("complete trace over the chain up to height"),
        "{text}"
    );
    assert!(text.lines().any(|l| l.starts_with("unspent ")), "{text}");
}

/// Labels one address of each exchange of the generated chain (category
/// exchange) and the first source address of `flow` (category theft), the
/// way an analyst would; returns the labelled addresses.
fn label_exchanges_and_thief(
    blocks: &std::path::Path,
    db: &std::path::Path,
    flow: &serde_json::Value,
    thief: &str,
) -> Vec<String> {
    let truth = blocks.join("truth");
    let actors = std::fs::read_to_string(truth.join("actors.csv")).unwrap();
    let exchanges: HashMap<&str, &str> = actors
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            let (id, kind, name) = (f.next()?, f.next()?, f.next()?);
            (kind == "exchange").then_some((id, name))
        })
        .collect();
    let addresses = std::fs::read_to_string(truth.join("addresses.csv")).unwrap();
    let mut first: HashMap<&str, &str> = HashMap::new();
    for l in addresses.lines().skip(1) {
        let (address, actor) = l.split_once(',').unwrap();
        if exchanges.contains_key(actor) {
            first.entry(actor).or_insert(address);
        }
    }
    assert!(first.len() >= 2, "exchanges with addresses: {first:?}");
    let mut csv = String::new();
    let mut labelled = Vec::new();
    for (actor, address) in &first {
        csv += &format!("{address},{},exchange,test\n", exchanges[actor]);
        labelled.push(address.to_string());
    }
    csv += &format!("{thief},Thief of flow {},theft,test\n", flow["flow_id"]);
    labelled.push(thief.to_string());
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), csv).unwrap();
    import_labels(
        db,
        file.path(),
        satflow_indexer::labels::Format::Csv,
        satflow_indexer::labels::Defaults::default(),
    );
    labelled
}

async fn cluster_of(c: &mut Clients, address: &str) -> u64 {
    c.clusters
        .get_cluster(pb::GetClusterRequest {
            id: Some(pb::get_cluster_request::Id::Address(address.into())),
        })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// Every address of cluster `id`, page by page.
async fn members(c: &mut Clients, id: u64) -> Vec<String> {
    let (mut out, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = c
            .clusters
            .list_cluster_members(pb::ListClusterMembersRequest {
                cluster_id: id,
                page_size: 10_000,
                page_token,
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.addresses);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

/// A trace's hits as comparable rows (sorted), and its summary with its
/// label list in a fixed order.
type Found = (
    Vec<(i32, String, u32, u32, u64, Option<u64>)>,
    pb::TraceSummary,
    Code,
);

/// What trace `r` finds, checked to be what it finds given `addresses` as
/// its stop addresses instead.
async fn found_as_listed(
    c: &mut Clients,
    r: pb::TraceRequest,
    addresses: &[String],
    what: &str,
) -> Found {
    let listed = pb::TraceRequest {
        stop_addresses: addresses.to_vec(),
        stop_cluster_ids: Vec::new(),
        stop_categories: Vec::new(),
        stop_labels: Vec::new(),
        ..r.clone()
    };
    let (by_rule, by_list) = (found(c, r).await, found(c, listed).await);
    assert_eq!(by_rule, by_list, "{what}");
    by_rule
}

async fn found(c: &mut Clients, r: pb::TraceRequest) -> Found {
    let (hits, summary, code) = trace(c, r).await;
    let mut rows: Vec<_> = hits
        .into_iter()
        .map(|h| (h.kind, h.txid, h.vout, h.hop, h.amount, h.cluster_id))
        .collect();
    rows.sort();
    let mut summary = summary.expect("a summary");
    summary
        .labels
        .sort_by(|a, b| (&a.label, &a.category, a.amount).cmp(&(&b.label, &b.category, b.amount)));
    (rows, summary, code)
}

/// A generated chain whose exchanges and first theft's thief are
/// labelled: its blocks, index, complete thefts, and the labelled
/// addresses (the thief's last).
async fn labelled_chain() -> (
    tempfile::TempDir,
    tempfile::TempDir,
    Vec<serde_json::Value>,
    Vec<String>,
) {
    let (blocks, db) = synth_chain(11, 60_000_000);
    let flows = complete_flows(blocks.path());
    let thief = {
        let server = Server::start(db.path(), &[]);
        let mut c = server.connect().await;
        source_addresses(&mut c, &outpoints(&flows[0]["source"])).await[0].clone()
    };
    let labelled = label_exchanges_and_thief(blocks.path(), db.path(), &flows[0], &thief);
    (blocks, db, flows, labelled)
}

/// Stopping at clusters (named, or by label category) is checked per coin
/// against the cluster of its address: the trace stops at exactly the
/// coins it stops at given every member address of those clusters.
#[tokio::test]
async fn stop_clusters_and_categories_stop_where_their_member_addresses_do() {
    let (_blocks, db, flows, labelled) = labelled_chain().await;
    // The clusters' members listed up front (as for a few clusters), and
    // each coin's cluster looked up (as for many).
    for flags in [&[][..], &["--max-stop-listed", "0"][..]] {
        let server = Server::start(db.path(), flags);
        let mut c = server.connect().await;
        let mut exchange_members = Vec::new();
        for a in &labelled[..labelled.len() - 1] {
            let id = cluster_of(&mut c, a).await;
            exchange_members.extend(members(&mut c, id).await);
        }
        exchange_members.sort();
        exchange_members.dedup();
        assert!(
            exchange_members.len() > labelled.len(),
            "exchanges of one address"
        );

        let mut stopped_somewhere = false;
        for flow in &flows {
            let deposit = &flow["deposit"]["outpoint"];
            let deposit_tx = get_tx(&mut c, deposit["txid"].as_str().unwrap()).await;
            let deposit_address = deposit_tx.outputs[deposit["vout"].as_u64().unwrap() as usize]
                .address
                .clone();
            let exchange = cluster_of(&mut c, &deposit_address).await;
            let exchange_addresses = members(&mut c, exchange).await;
            for policy in [pb::TaintPolicy::Haircut, pb::TaintPolicy::Poison] {
                let request = pb::TraceRequest {
                    sources: sources(&outpoints(&flow["source"])),
                    policy: policy.into(),
                    max_hops: 10,
                    max_transactions: 20_000,
                    ..Default::default()
                };
                let what = format!("flow {} under {policy:?}, {flags:?}", flow["flow_id"]);
                let named = found_as_listed(
                    &mut c,
                    pb::TraceRequest {
                        stop_cluster_ids: vec![exchange],
                        ..request.clone()
                    },
                    &exchange_addresses,
                    &what,
                )
                .await;
                assert!(
                    named.1.stopped > 0,
                    "flow {}: nothing stopped",
                    flow["flow_id"]
                );
                let by_category = found_as_listed(
                    &mut c,
                    pb::TraceRequest {
                        stop_categories: vec!["exchange".into()],
                        ..request.clone()
                    },
                    &exchange_members,
                    &what,
                )
                .await;
                stopped_somewhere |= by_category.1.stopped > 0;
            }
        }
        assert!(stopped_somewhere);
    }
}

/// Exposure stops at every address of a labelled cluster but the
/// subject's own, asked per coin: its figures are those of traces given
/// every such address. The subject is the labelled address of the largest
/// exchange: its coins go on through its own (labelled) cluster, where
/// they do not stop.
#[tokio::test]
async fn exposure_is_what_traces_stopping_at_every_labelled_member_find() {
    let (_blocks, db, _, labelled) = labelled_chain().await;
    // The clusters' members listed up front (as for a few clusters), and
    // each coin's cluster looked up (as for many).
    for flags in [&[][..], &["--max-stop-listed", "0"][..]] {
        let server = Server::start(db.path(), flags);
        let mut c = server.connect().await;
        let mut sizes = Vec::new();
        for a in &labelled {
            let id = cluster_of(&mut c, a).await;
            sizes.push((members(&mut c, id).await.len(), a.clone(), id));
        }
        let (_, subject, own) = sizes.into_iter().max().unwrap();
        let own_labels: Vec<String> = c
            .clusters
            .get_cluster(pb::GetClusterRequest {
                id: Some(pb::get_cluster_request::Id::ClusterId(own)),
            })
            .await
            .unwrap()
            .into_inner()
            .labels
            .into_iter()
            .map(|l| l.label)
            .collect();
        assert_eq!(own_labels.len(), 1, "the deposit's exchange is labelled");
        let mut stop_addresses = Vec::new();
        for a in &labelled {
            let id = cluster_of(&mut c, a).await;
            if id != own {
                stop_addresses.extend(members(&mut c, id).await);
            }
        }
        stop_addresses.sort();
        stop_addresses.dedup();

        let hops = 10;
        let e = c
            .risk
            .get_exposure(pb::ExposureRequest {
                subject: Some(pb::exposure_request::Subject::Address(subject.clone())),
                hops,
                max_transactions: 20_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        // The entities a side reaches, from its stopped hits: each hit's
        // amount once per distinct label of its cluster.
        let mut traced = Vec::new();
        let mut complete = true;
        let mut summed_labels = 0;
        for (direction, max_hops) in [
            (pb::TraceDirection::Backward, 1),
            (pb::TraceDirection::Forward, 1),
            (pb::TraceDirection::Backward, hops),
            (pb::TraceDirection::Forward, hops),
        ] {
            let (hits, summary, code) = trace(
                &mut c,
                pb::TraceRequest {
                    sources: vec![pb::TraceSource {
                        source: Some(pb::trace_source::Source::Address(subject.clone())),
                    }],
                    direction: direction.into(),
                    policy: pb::TaintPolicy::Haircut.into(),
                    max_hops,
                    max_transactions: 20_000,
                    stop_addresses: stop_addresses.clone(),
                    ..Default::default()
                },
            )
            .await;
            assert!(
                matches!(code, Code::Ok | Code::ResourceExhausted),
                "{code:?}"
            );
            complete &= code == Code::Ok;
            let by = by_label(
                hits.iter()
                    .filter(|h| h.kind == pb::ReachKind::Stopped as i32),
            );
            let summary = summary.unwrap();
            // The summary sums what ended under each label, as the hits do.
            let summed: std::collections::BTreeMap<_, _> = summary
                .labels
                .iter()
                .map(|l| ((l.category.clone(), l.label.clone()), l.amount))
                .collect();
            assert_eq!(
                summed,
                by_label(
                    hits.iter()
                        .filter(|h| h.kind != pb::ReachKind::Transit as i32)
                ),
                "{direction:?}"
            );
            summed_labels += summed.len();
            // A hit names its coin as the transaction does.
            for h in hits.iter().step_by(hits.len() / 20 + 1) {
                let tx = c
                    .chain
                    .get_transaction(pb::GetTransactionRequest {
                        txid: h.txid.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let out = &tx.outputs[h.vout as usize];
                assert_eq!(
                    (h.height, &h.address, h.value),
                    (tx.height, &out.address, out.value),
                    "{h:?}"
                );
            }
            traced.push((summary.source_amount, by));
        }
        assert!(summed_labels > 0, "the traces reach labelled clusters");
        let entities = |list: &[pb::CategoryExposure]| {
            list.iter()
                .filter(|x| !x.label.is_empty())
                .map(|x| ((x.category.clone(), x.label.clone()), x.amount))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        assert_eq!(entities(&e.direct_received), traced[0].1, "{flags:?}");
        assert_eq!(entities(&e.direct_sent), traced[1].1);
        assert_eq!(entities(&e.indirect_received), traced[2].1);
        assert_eq!(entities(&e.indirect_sent), traced[3].1);
        assert_eq!((e.received, e.sent), (traced[2].0, traced[3].0));
        assert_eq!(e.complete, complete);
        // The exchange's own label is no exposure; other entities are.
        let all = [
            &e.direct_received,
            &e.direct_sent,
            &e.indirect_received,
            &e.indirect_sent,
        ];
        assert!(
            all.iter()
                .all(|l| l.iter().all(|x| x.label != own_labels[0])),
            "{e:?}"
        );
        assert!(all.iter().any(|l| !l.is_empty()), "{e:?}");
    }
}

/// Satoshis of `hits` by (category, label): a hit's amount once for each
/// distinct label of its cluster.
fn by_label<'a>(
    hits: impl Iterator<Item = &'a pb::TraceHit>,
) -> std::collections::BTreeMap<(String, String), u64> {
    let mut by = std::collections::BTreeMap::new();
    for h in hits {
        let mut seen = std::collections::BTreeSet::new();
        for l in &h.labels {
            if seen.insert((l.category.clone(), l.label.clone())) {
                *by.entry((l.category.clone(), l.label.clone())).or_default() += h.amount;
            }
        }
    }
    by
}

/// The operator's ceiling on max_transactions, and sources too large for
/// the budget, are RESOURCE_EXHAUSTED: the message names the limit.
#[tokio::test]
async fn requests_above_the_servers_limits_are_resource_exhausted() {
    let (blocks, db) = synth_chain(11, 60_000_000);
    let flow = &complete_flows(blocks.path())[0];
    let server = Server::start(db.path(), &["--max-trace-transactions", "5000"]);
    let mut c = server.connect().await;
    let request = pb::TraceRequest {
        sources: sources(&outpoints(&flow["source"])),
        max_hops: 1000,
        ..Default::default()
    };
    // A trace the server refuses outright, as RESOURCE_EXHAUSTED.
    let tracer = c.clone();
    let refused = |r: pb::TraceRequest| {
        let mut c = tracer.clone();
        async move {
            let status = c.taint.trace(r).await.unwrap_err();
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            status
        }
    };
    let status = refused(pb::TraceRequest {
        max_transactions: 5001,
        ..request.clone()
    })
    .await;
    assert_eq!(
        status.message(),
        "max_transactions 5001 is above this server's limit of 5000 (satflow serve --max-trace-transactions)"
    );
    // At the limit, and by default (the limit when lower than 1,000,000),
    // the trace runs.
    for max_transactions in [5000, 0] {
        let (_, summary, code) = trace(
            &mut c,
            pb::TraceRequest {
                max_transactions,
                policy: pb::TaintPolicy::Poison.into(),
                ..request.clone()
            },
        )
        .await;
        let summary = summary.unwrap();
        assert!(summary.transactions_visited <= 5000);
        if code == Code::ResourceExhausted {
            assert_eq!(summary.transactions_visited, 5000);
        } else {
            assert_eq!(code, Code::Ok);
        }
    }
    let thief = source_addresses(&mut c, &outpoints(&flow["source"])).await[0].clone();
    let clients = c.clone();
    let exposure = |max_transactions: u64, subject: pb::exposure_request::Subject| {
        let mut c = clients.clone();
        async move {
            c.risk
                .get_exposure(pb::ExposureRequest {
                    subject: Some(subject),
                    max_transactions,
                    ..Default::default()
                })
                .await
        }
    };
    let status = exposure(6000, pb::exposure_request::Subject::Address(thief.clone()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("max_transactions 6000 ")
            && status
                .message()
                .ends_with("(satflow serve --max-trace-transactions)"),
        "{status:?}"
    );
    exposure(0, pb::exposure_request::Subject::Address(thief))
        .await
        .unwrap();

    // A cluster with more coins than the budget allows is refused, as a
    // source and as an exposure subject.
    let deposit = &flow["deposit"]["outpoint"];
    let deposit_tx = get_tx(&mut c, deposit["txid"].as_str().unwrap()).await;
    let deposit_address = deposit_tx.outputs[deposit["vout"].as_u64().unwrap() as usize]
        .address
        .clone();
    let exchange = cluster_of(&mut c, &deposit_address).await;
    let size = c
        .clusters
        .get_cluster(pb::GetClusterRequest {
            id: Some(pb::get_cluster_request::Id::ClusterId(exchange)),
        })
        .await
        .unwrap()
        .into_inner()
        .size;
    assert!(size > 10, "the exchange has {size} addresses");
    let cluster = pb::TraceSource {
        source: Some(pb::trace_source::Source::ClusterId(exchange)),
    };
    // So is a txid named again and again: each brings all its outputs.
    let txid = pb::TraceSource {
        source: Some(pb::trace_source::Source::Txid(deposit_tx.txid.clone())),
    };
    for sources in [vec![cluster], vec![txid; 11]] {
        let status = refused(pb::TraceRequest {
            sources,
            max_transactions: 10,
            ..request.clone()
        })
        .await;
        assert!(
            status.message().contains("more than 10 coins"),
            "{status:?}"
        );
    }
    let status = exposure(10, pb::exposure_request::Subject::ClusterId(exchange))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}
