//! gRPC load on `satflow serve` over loopback: requests/s, latency
//! percentiles and the server's CPU time per call, and the cost of a deep
//! history page.
//!
//!     cargo bench --bench serve_load -- [--size 4GB] [--db DIR] [--work DIR]
//!                 [--clients 8] [--seconds 10] [--runs 3] [--readers N]
//!
//! The index is a generated chain of --size (seed 7), built once under
//! --work, or --db as is. The server runs as its own process; the load
//! comes from this one, on the same machine (so both share its cores).
//! Each call is driven by --clients concurrent callers for --seconds after a
//! 5 s warm-up, --runs times (medians shown), over 4 HTTP/2 connections,
//! on addresses and txids sampled across the whole chain. Screenings are of
//! payments not mined, each spending two sampled coins, by at most 2
//! callers (the server's default `--max-traces`). The server's CPU time
//! (user and system, read from /proc over the measured window) per call
//! answered is the figure to compare builds by: the load generator shares
//! the cores, so rates and latencies move with whatever else runs.

mod common;
#[path = "../tests/common/mod.rs"]
mod testkit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use testkit::server::Server;

use clap::Parser;
use common::{drive, history_page_1, sample, Common, IndexChoice, Sample};
use satflow_proto::v1 as pb;
use satflow_query::client::Clients;

/// gRPC load on `satflow serve` over loopback.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    index: IndexChoice,
    /// Concurrent callers.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured seconds per call.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Passed to `satflow serve --readers`.
    #[arg(long)]
    readers: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// The calls measured, each on addresses or txids sampled across the chain.
#[derive(Clone, Copy)]
enum Call {
    Summary,
    History,
    Transaction,
    Cluster,
    Screen,
}

impl Call {
    const ALL: [Call; 5] = [
        Call::Summary,
        Call::History,
        Call::Transaction,
        Call::Cluster,
        Call::Screen,
    ];

    fn name(self) -> &'static str {
        match self {
            Call::Summary => "address summary",
            Call::History => "address history, page 1",
            Call::Transaction => "transaction",
            Call::Cluster => "cluster of an address",
            Call::Screen => "screen a 2-input payment",
        }
    }

    /// Callers at once: a screening runs traces, and the server runs two
    /// at a time by default (`--max-traces`); more would be refused.
    fn clients(self, asked: usize) -> usize {
        match self {
            Call::Screen => asked.min(2),
            _ => asked,
        }
    }

    async fn make(self, mut c: Clients, sample: &Load, n: usize) {
        let address = sample.addresses[n % sample.addresses.len()].clone();
        let done = match self {
            Call::Summary => c
                .addresses
                .get_address_summary(pb::GetAddressSummaryRequest { address })
                .await
                .map(drop),
            Call::History => c
                .addresses
                .list_address_history(history_page_1(address))
                .await
                .map(drop),
            Call::Transaction => {
                let txid = sample.txids[n % sample.txids.len()].clone();
                c.chain
                    .get_transaction(pb::GetTransactionRequest {
                        txid,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
            }
            Call::Cluster => c
                .clusters
                .get_cluster(pb::GetClusterRequest {
                    id: Some(pb::get_cluster_request::Id::Address(address)),
                })
                .await
                .map(drop),
            Call::Screen => c
                .risk
                .screen_transaction(pb::ScreenTransactionRequest {
                    raw_transaction: sample.payments[n % sample.payments.len()].clone(),
                    ..Default::default()
                })
                .await
                .map(drop),
        };
        done.unwrap();
    }
}

/// The sample, and payments not mined to screen.
struct Load {
    sample: Sample,
    payments: Vec<String>,
}

impl std::ops::Deref for Load {
    type Target = Sample;

    fn deref(&self) -> &Sample {
        &self.sample
    }
}

/// Payments as a wallet would send them, not mined: each spends the first
/// output of two sampled transactions other than coinbases (whose coins
/// trace back nowhere) and pays a fresh address, with change.
fn payments(db: &Path, sample: &Sample) -> Vec<String> {
    use bitcoin::hashes::Hash;
    use bitcoin::{absolute, transaction, Amount, OutPoint, ScriptBuf, TxIn, TxOut, WPubkeyHash};
    use satflow_indexer::{Access, Store};
    use satflow_schema::cf;
    let pay = |tag: u8| ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([tag; 20]));
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let paid: Vec<&String> = sample
        .txids
        .iter()
        .filter(|t| {
            let n = store.find_tx(&t.parse().unwrap()).unwrap().unwrap();
            !store.need::<cf::Txs>(&n).unwrap().is_coinbase()
        })
        .collect();
    paid.chunks_exact(2)
        .map(|pair| {
            let input = |txid: &&String| TxIn {
                previous_output: OutPoint {
                    txid: txid.parse().unwrap(),
                    vout: 0,
                },
                ..Default::default()
            };
            let tx = bitcoin::Transaction {
                version: transaction::Version::TWO,
                lock_time: absolute::LockTime::ZERO,
                input: pair.iter().map(input).collect(),
                output: vec![
                    TxOut {
                        value: Amount::from_sat(10_000),
                        script_pubkey: pay(0xfe),
                    },
                    TxOut {
                        value: Amount::from_sat(5_000),
                        script_pubkey: pay(0xfd),
                    },
                ],
            };
            bitcoin::consensus::encode::serialize_hex(&tx)
        })
        .collect()
}

fn main() {
    let args = Args::parse();
    let db = args.index.path(&args.common.work);
    let sample = sample(&db);
    let sample = Arc::new(Load {
        payments: payments(&db, &sample),
        sample,
    });
    let readers: Vec<&str> = match &args.readers {
        Some(n) => vec!["--readers", n],
        None => vec![],
    };
    let server = Server::start(&db, &readers);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(server.connect().await);
        }
        let mut runs: Vec<Vec<[f64; 5]>> = vec![Vec::new(); Call::ALL.len()];
        for _ in 0..args.common.runs {
            for (i, call) in Call::ALL.into_iter().enumerate() {
                let sample = sample.clone();
                let clients = call.clients(args.clients);
                let driven = drive(&conns, server.pid(), clients, args.seconds, move |c, n| {
                    let sample = sample.clone();
                    async move { call.make(c, &sample, n).await }
                })
                .await;
                runs[i].push(driven.figures());
            }
        }
        println!(
            "index {} · {} clients · {} s per call · medians of {} runs\n{:<28} {:>9} {:>9} {:>9} {:>9} {:>14}",
            db.display(),
            args.clients,
            args.seconds,
            args.common.runs,
            "call",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "server µs/call"
        );
        for (call, figures) in Call::ALL.into_iter().zip(runs) {
            let median = |k: usize| {
                let mut v: Vec<f64> = figures.iter().map(|f| f[k]).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{:<28} {:>9.0} {:>9.2} {:>9.2} {:>9.2} {:>14.0}   req/s per run: {:?}",
                call.name(),
                median(0),
                median(1),
                median(2),
                median(3),
                median(4),
                figures.iter().map(|f| f[0].round()).collect::<Vec<_>>()
            );
        }
    });
    drop(server);
    let (db, address) = hot_address_index(&args.common.work);
    let server = Server::start(&db, &readers);
    rt.block_on(async { deep_pages(&server.connect().await, &address).await });
}

/// 101 regtest blocks in which 100,000 transactions pay one address, each
/// spending its own coinbase output: an address as busy as an exchange's.
fn hot_address_index(work: &Path) -> (PathBuf, String) {
    use testkit::build::{block, coinbase, p2pkh, regtest_genesis, tx, write_blk};
    let hot = p2pkh(0xaa);
    let address = bitcoin::Address::from_script(&hot, bitcoin::Network::Regtest)
        .unwrap()
        .to_string();
    let (blocks, db) = (work.join("hot-address"), work.join("hot-address.db"));
    common::cached_index(&db, || {
        let _ = std::fs::remove_dir_all(&blocks);
        std::fs::create_dir_all(&blocks).unwrap();
        let mut chain = vec![regtest_genesis()];
        for height in 1..=101u32 {
            let funding = chain.last().unwrap().txdata[0].compute_txid();
            let mut txs = vec![coinbase(
                &height.to_le_bytes(),
                &vec![(10_000, p2pkh(1)); 1000],
            )];
            if height > 1 {
                txs.extend((0..1000).map(|vout| {
                    tx(
                        &[bitcoin::OutPoint {
                            txid: funding,
                            vout,
                        }],
                        &[(9_000, hot.clone())],
                    )
                }));
            }
            chain.push(block(chain.last().unwrap().block_hash(), height, txs));
        }
        write_blk(&blocks.join("blk00000.dat"), &chain);
        common::timed(common::index_command(&blocks, &db));
    });
    (db, address)
}

/// Page 1 against page 1,000 of a 100,000-tx address, 100 entries a page,
/// one caller: a seek costs the same anywhere.
async fn deep_pages(c: &Clients, address: &str) {
    let request = |token: String| pb::ListAddressHistoryRequest {
        address: address.to_string(),
        page_size: 100,
        page_token: token,
        ..Default::default()
    };
    let mut c = c.clone();
    let mut token = String::new();
    let mut page = 1;
    while page < 1000 {
        let next = c
            .addresses
            .list_address_history(request(token.clone()))
            .await
            .unwrap()
            .into_inner()
            .next_page_token;
        if next.is_empty() {
            break;
        }
        token = next;
        page += 1;
    }
    let time = |token: String| {
        let mut c = c.clone();
        async move {
            let mut lat = Vec::new();
            for _ in 0..2000 {
                let t = Instant::now();
                let r = c
                    .addresses
                    .list_address_history(request(token.clone()))
                    .await
                    .unwrap();
                assert!(!r.into_inner().entries.is_empty());
                lat.push(t.elapsed().as_micros() as u32);
            }
            lat.sort_unstable();
            (
                lat[lat.len() / 2] as f64 / 1000.0,
                lat[lat.len() * 99 / 100] as f64 / 1000.0,
            )
        }
    };
    let first = time(String::new()).await;
    let deep = time(token).await;
    println!(
        "history of a 100,000-tx address, 100 per page, one caller:\n  page 1: p50 {:.2} ms, p99 {:.2} ms\n  page {page}: p50 {:.2} ms, p99 {:.2} ms",
        first.0, first.1, deep.0, deep.1
    );
}
