//! gRPC load on `satflow serve` over loopback: requests/s and latency
//! percentiles per call, and the cost of a deep history page.
//!
//!     cargo bench --bench serve_load -- [--size 4GB] [--db DIR] [--work DIR]
//!                 [--clients 8] [--seconds 10] [--runs 3] [--readers N]
//!
//! The index is a generated chain of --size (seed 7), built once under
//! --work, or --db as is. The server runs as its own process; the load
//! comes from this one, on the same machine (so both share its cores).
//! Each call is driven by --clients concurrent callers for --seconds after a
//! 5 s warm-up, --runs times (medians shown), over 4 HTTP/2 connections,
//! on addresses and txids sampled across the whole chain.

mod common;
#[path = "../tests/common/mod.rs"]
mod testkit;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use testkit::server::Server;

use clap::Parser;
use common::{drive, figures, spread, Common, IndexChoice};
use satflow_indexer::{address, Access, Store};
use satflow_proto::v1 as pb;
use satflow_query::client::Clients;
use satflow_query::{chain, BlockId, Index};
use satflow_schema::{cf, AddrId};

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

/// What the load is made of, sampled from the index before the server starts.
struct Sample {
    addresses: Vec<String>,
    txids: Vec<String>,
}

fn sample(db: &Path) -> Sample {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let network = store.network().unwrap().unwrap();
    let address_of = |id: AddrId| {
        let key = store.need::<cf::Addrs>(&id).unwrap();
        address::encode(&key, network)
    };
    let next = store.tip_block().unwrap().unwrap().next_ids();
    let addresses = (0..10_000)
        .map(|i| address_of(AddrId(spread(i, next.addr.0))))
        .collect();
    let tip = store.tip().unwrap().unwrap().height.0;
    drop(store);
    let index = Index::open(db, Access::ReadOnly).unwrap();
    let txids = (0..2_000)
        .flat_map(|i| {
            let height = spread(i, tip as u64 + 1) as u32;
            let block = chain::block(&index, &BlockId::Height(height), 5, "").unwrap();
            block.txids
        })
        .collect();
    Sample { addresses, txids }
}

/// The calls measured, each on addresses or txids sampled across the chain.
#[derive(Clone, Copy)]
enum Call {
    Summary,
    History,
    Transaction,
    Cluster,
}

impl Call {
    const ALL: [Call; 4] = [
        Call::Summary,
        Call::History,
        Call::Transaction,
        Call::Cluster,
    ];

    fn name(self) -> &'static str {
        match self {
            Call::Summary => "address summary",
            Call::History => "address history, page 1",
            Call::Transaction => "transaction",
            Call::Cluster => "cluster of an address",
        }
    }

    async fn make(self, mut c: Clients, sample: &Sample, n: usize) {
        let address = sample.addresses[n % sample.addresses.len()].clone();
        let done = match self {
            Call::Summary => c
                .addresses
                .get_address_summary(pb::GetAddressSummaryRequest { address })
                .await
                .map(drop),
            Call::History => c
                .addresses
                .list_address_history(pb::ListAddressHistoryRequest {
                    address,
                    page_size: 25,
                    order: pb::Order::NewestFirst.into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Call::Transaction => {
                let txid = sample.txids[n % sample.txids.len()].clone();
                c.chain
                    .get_transaction(pb::GetTransactionRequest { txid })
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
        };
        done.unwrap();
    }
}

fn main() {
    let args = Args::parse();
    let db = args.index.path(&args.common.work);
    let sample = Arc::new(sample(&db));
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
        let mut runs: Vec<Vec<[f64; 4]>> = vec![Vec::new(); Call::ALL.len()];
        for _ in 0..args.common.runs {
            for (i, call) in Call::ALL.into_iter().enumerate() {
                let sample = sample.clone();
                let (lat, window) = drive(&conns, args.clients, args.seconds, move |c, n| {
                    let sample = sample.clone();
                    async move { call.make(c, &sample, n).await }
                })
                .await;
                runs[i].push(figures(lat, window));
            }
        }
        println!(
            "index {} · {} clients · {} s per call · medians of {} runs\n{:<28} {:>9} {:>9} {:>9} {:>9}",
            db.display(),
            args.clients,
            args.seconds,
            args.common.runs,
            "call",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms"
        );
        for (call, figures) in Call::ALL.into_iter().zip(runs) {
            let median = |k: usize| {
                let mut v: Vec<f64> = figures.iter().map(|f| f[k]).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{:<28} {:>9.0} {:>9.2} {:>9.2} {:>9.2}   req/s per run: {:?}",
                call.name(),
                median(0),
                median(1),
                median(2),
                median(3),
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
    let done = db.join("satflow-bench-complete");
    if done.exists() {
        return (db, address);
    }
    let _ = std::fs::remove_dir_all(&blocks);
    let _ = std::fs::remove_dir_all(&db);
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
    let mut cmd = common::satflow();
    cmd.args(["index", "--quiet", "--blocks-dir"])
        .arg(&blocks)
        .arg("--db")
        .arg(&db)
        .stdout(std::process::Stdio::null());
    common::timed(cmd);
    std::fs::write(&done, "").unwrap();
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
