//! gRPC load on `satflow serve` over loopback: requests/s and latency
//! percentiles per call, and the cost of a deep history page.
//!
//!     cargo bench --bench serve_load -- [--size 4GB] [--db DIR] [--work DIR]
//!                 [--clients 8] [--seconds 10] [--readers N]
//!
//! The index is a generated chain of --size (seed 7), built once under
//! --work, or --db as is. The server runs as its own process; the load
//! comes from this one, on the same machine (so both share its cores).
//! Each call is driven by --clients concurrent callers for --seconds after a
//! 5 s warm-up, over 4 HTTP/2 connections, on addresses and txids sampled
//! across the whole chain.

mod common;
#[path = "../tests/common/mod.rs"]
mod testkit;

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::server::Server;

use common::synth_index;
use satflow_indexer::schema::{cf, key_u64};
use satflow_indexer::script::AddrKey;
use satflow_indexer::{address, Access, Store};
use satflow_proto::v1 as pb;
use satflow_query::client::Clients;
use satflow_query::{BlockId, Index};

struct Args {
    size: String,
    db: Option<PathBuf>,
    work: PathBuf,
    clients: usize,
    seconds: u64,
    /// Passed to `satflow serve --readers`.
    readers: Option<String>,
}

fn parse_args() -> Args {
    let mut a = Args {
        size: "4GB".into(),
        db: None,
        work: "target/bench-data".into(),
        clients: 8,
        seconds: 10,
        readers: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--size" => a.size = value(),
            "--db" => a.db = Some(value().into()),
            "--work" => a.work = value().into(),
            "--clients" => a.clients = value().parse().expect("--clients takes a number"),
            "--seconds" => a.seconds = value().parse().expect("--seconds takes a number"),
            "--readers" => a.readers = Some(value()),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// What the load is made of, sampled from the index before the server starts.
struct Sample {
    addresses: Vec<String>,
    txids: Vec<String>,
}

/// Deterministic spread over a range (splitmix64).
fn spread(i: u64, n: u64) -> u64 {
    let mut z = i
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 29)) % n
}

fn sample(db: &Path) -> Sample {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let network = store.network().unwrap().unwrap();
    let address_of = |id: u64| {
        let row = store.get(cf::ADDRS, &key_u64(id)).unwrap().unwrap();
        address::encode(&AddrKey::from_bytes(&row).unwrap(), network)
    };
    let next = store.tip_block().unwrap().unwrap().next_ids();
    let addresses = (0..10_000)
        .map(|i| address_of(spread(i, next.addr)))
        .collect();
    let (tip, _) = store.tip().unwrap().unwrap();
    drop(store);
    let index = Index::open(db, Access::ReadOnly).unwrap();
    let txids = (0..2_000)
        .flat_map(|i| {
            let block = index
                .block(&BlockId::Height(spread(i, tip as u64 + 1) as u32), 5, "")
                .unwrap();
            block.txids
        })
        .collect();
    Sample { addresses, txids }
}

/// Calls before measuring starts: the server's block cache fills up.
const WARM_UP: Duration = Duration::from_secs(5);

/// Latencies in microseconds of every call made in the measured window.
async fn drive<F, Fut>(
    conns: &[Clients],
    clients: usize,
    seconds: u64,
    call: F,
) -> (Vec<u32>, Duration)
where
    F: Fn(Clients, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let call = Arc::new(call);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (call, measuring, stop, counter) = (
            call.clone(),
            measuring.clone(),
            stop.clone(),
            counter.clone(),
        );
        let conn = conns[i % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                call(conn.clone(), n).await;
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t.elapsed().as_micros() as u32);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let window = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, window)
}

fn report(name: &str, mut lat: Vec<u32>, window: Duration) {
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    println!(
        "{name:<28} {:>9.0} {:>9.2} {:>9.2} {:>9.2}",
        lat.len() as f64 / window.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
}

fn main() {
    let args = parse_args();
    std::fs::create_dir_all(&args.work).unwrap();
    let db = args
        .db
        .clone()
        .unwrap_or_else(|| synth_index(&args.work, &args.size));
    let sample = sample(&db);
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
        let addresses = Arc::new(sample.addresses);
        let txids = Arc::new(sample.txids);
        println!(
            "index {} · {} clients · {} s per call\n{:<28} {:>9} {:>9} {:>9} {:>9}",
            db.display(),
            args.clients,
            args.seconds,
            "call",
            "req/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms"
        );
        let a = addresses.clone();
        let (lat, w) = drive(&conns, args.clients, args.seconds, move |mut c, n| {
            let address = a[n % a.len()].clone();
            async move {
                c.addresses
                    .get_address_summary(pb::GetAddressSummaryRequest { address })
                    .await
                    .unwrap();
            }
        })
        .await;
        report("address summary", lat, w);
        let a = addresses.clone();
        let (lat, w) = drive(&conns, args.clients, args.seconds, move |mut c, n| {
            let address = a[n % a.len()].clone();
            async move {
                c.addresses
                    .list_address_history(pb::ListAddressHistoryRequest {
                        address,
                        page_size: 25,
                        order: pb::Order::NewestFirst.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        })
        .await;
        report("address history, page 1", lat, w);
        let t = txids.clone();
        let (lat, w) = drive(&conns, args.clients, args.seconds, move |mut c, n| {
            let txid = t[n % t.len()].clone();
            async move {
                c.chain
                    .get_transaction(pb::GetTransactionRequest { txid })
                    .await
                    .unwrap();
            }
        })
        .await;
        report("transaction", lat, w);
        let a = addresses.clone();
        let (lat, w) = drive(&conns, args.clients, args.seconds, move |mut c, n| {
            let address = a[n % a.len()].clone();
            async move {
                c.clusters
                    .get_cluster(pb::GetClusterRequest {
                        id: Some(pb::get_cluster_request::Id::Address(address)),
                    })
                    .await
                    .unwrap();
            }
        })
        .await;
        report("cluster of an address", lat, w);
    });
    drop(server);
    let (db, address) = hot_address_index(&args.work);
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
