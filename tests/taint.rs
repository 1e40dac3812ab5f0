//! Taint tracing end to end: a real `satflow serve` over a generated chain
//! whose ground truth plants illicit flows (theft or ransom → split →
//! merge → CoinJoin → post-mix → exchange deposit). The expected amount at
//! each deposit is worked out here, along the planted hops only, by a
//! separate and much plainer implementation of each policy.

mod common;

use std::collections::HashMap;

use common::server::Server;
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

async fn tx(c: &mut Clients, txid: &str) -> pb::Transaction {
    c.chain
        .get_transaction(pb::GetTransactionRequest { txid: txid.into() })
        .await
        .unwrap()
        .into_inner()
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
            let t = tx(c, txid.as_str().unwrap()).await;
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
        let deposit_tx = tx(&mut c, deposit["txid"].as_str().unwrap()).await;
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
        let t = tx(c, txid).await;
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
            Code::InvalidArgument,
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
