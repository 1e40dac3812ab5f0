//! Taint traces on a multi-GB generated index: transactions visited per
//! second, wall time and peak heap, in process and over gRPC.
//!
//!     cargo bench --bench taint_trace -- [--size 4GB] [--db DIR] [--work DIR] [--runs 3]
//!
//! The index is a generated chain of --size (seed 7), built once under
//! --work, or --db as is. Each trace starts from every output of the
//! transactions of one early block (--source-height, default a twentieth of
//! the way up the chain), follows at most 1,000 hops, and stops at its
//! budget of 10k, 100k or 1M visited transactions. The in-process figures
//! time `satflow_query::taint::trace` alone, on one core; the gRPC figures
//! are a `satflow serve` process streaming every hit to this one, then
//! stopping at the 100 largest clusters: their members listed up front,
//! then (`--max-stop-listed 0`) each coin reached looked up in the
//! clusters, as for stop sets too large to list. The first
//! run of each row reads the flow graph from disk; the medians are of the
//! runs after it, with the graph in the page cache.

mod common;
#[path = "../tests/common/mod.rs"]
mod testkit;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{median, Common, IndexChoice};
use satflow_indexer::flow::{Flow, FlowView};
use satflow_indexer::{Access, Store};
use satflow_proto::v1 as pb;
use satflow_query::taint::{trace_with, Direction, End, Event, Limits, PolicyName, Sink};
use satflow_schema::{cf, Height, OutNum};
use testkit::server::Server;

/// Counts heap bytes, to report a trace's peak heap apart from the mapped
/// flow graph (which the page cache holds, not the trace).
struct Counting;

static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = NOW.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        NOW.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as given.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Taint traces: transactions visited per second and memory.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    index: IndexChoice,
    /// Height of the block whose transactions' outputs are the sources.
    #[arg(long)]
    source_height: Option<u32>,
    #[command(flatten)]
    common: Common,
}

/// Counts events, keeps none.
struct Count(u64);

impl Sink for Count {
    fn event(&mut self, _: Event) -> bool {
        self.0 += 1;
        true
    }
}

fn main() {
    let args = Args::parse();
    let db = args.index.path(&args.common.work);
    let flow = Flow::open(&db)
        .unwrap()
        .expect("the index has a flow graph");
    let g = flow.view();
    let height = args.source_height.unwrap_or(g.tip_height() / 20);
    let sources = block_outputs(&db, &g, height);
    println!(
        "index {} · {} transactions · sources: {} outputs of block {height}",
        db.display(),
        g.tx_count(),
        sources.len()
    );
    println!(
        "{:<8} {:<9} {:>9} {:>10} {:>11} {:>9} {:>10} {:>9}   runs",
        "policy", "direction", "budget", "visited", "first s", "median s", "tx/s", "heap MiB"
    );
    let rows = [
        (PolicyName::Haircut, Direction::Forward, 10_000),
        (PolicyName::Haircut, Direction::Forward, 100_000),
        (PolicyName::Haircut, Direction::Forward, 1_000_000),
        (PolicyName::Poison, Direction::Forward, 1_000_000),
        (PolicyName::Fifo, Direction::Forward, 1_000_000),
        (PolicyName::Haircut, Direction::Backward, 1_000_000),
    ];
    for (policy, direction, budget) in rows {
        // Backward from the last block's coins: everything before is an ancestor.
        let from = match direction {
            Direction::Forward => sources.clone(),
            Direction::Backward => block_outputs(&db, &g, g.tip_height()),
        };
        let limits = Limits {
            max_hops: 1000,
            max_txs: budget,
            ..Limits::default()
        };
        let mut walls = Vec::new();
        let (mut visited, mut heap) = (0, 0);
        for _ in 0..args.common.runs + 1 {
            PEAK.store(NOW.load(Ordering::Relaxed), Ordering::Relaxed);
            let before = NOW.load(Ordering::Relaxed);
            let started = Instant::now();
            let (totals, end) =
                trace_with(policy, g, direction, &from, &limits, &mut Count(0)).unwrap();
            walls.push(started.elapsed());
            heap = heap.max(PEAK.load(Ordering::Relaxed) - before);
            visited = totals.visited;
            assert!(end == End::Budget || end == End::Complete);
        }
        let first = walls.remove(0);
        let wall = median(walls);
        println!(
            "{:<8} {:<9} {:>9} {:>10} {:>11.3} {:>9.3} {:>10.0} {:>9.1}   {}",
            policy.name(),
            format!("{direction:?}").to_lowercase(),
            budget,
            visited,
            first.as_secs_f64(),
            wall.as_secs_f64(),
            visited as f64 / wall.as_secs_f64(),
            heap as f64 / (1 << 20) as f64,
            args.common.runs
        );
    }
    grpc(&db, &sources, args.common.runs);
}

/// Every output of the transactions of the block at `height`.
fn block_outputs(db: &std::path::Path, g: &FlowView<'_>, height: u32) -> Vec<u64> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let block = store
        .block(Height(height))
        .unwrap()
        .expect("a block at that height");
    block.txs().flat_map(|t| g.outputs(t)).collect()
}

/// The 1M haircut trace over gRPC, every hit streamed to this process.
fn grpc(db: &std::path::Path, sources: &[u64], runs: usize) {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let outpoints: Vec<pb::TraceSource> = sources
        .iter()
        .map(|&o| {
            let row = store.need::<cf::Outputs>(&OutNum(o)).unwrap();
            let creator = row.tx.expect("a coin created inside the index");
            let tx = store.need::<cf::Txs>(&creator).unwrap();
            pb::TraceSource {
                source: Some(pb::trace_source::Source::Outpoint(format!(
                    "{}:{}",
                    tx.txid, row.vout
                ))),
            }
        })
        .collect();
    drop(store);
    let server = Server::start(db, &[]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let request = pb::TraceRequest {
        sources: outpoints,
        max_hops: 1000,
        max_transactions: 1_000_000,
        ..Default::default()
    };
    grpc_row(&rt, &server, "", &request, runs);
    // Stopping at the largest clusters: each coin reached is checked
    // against them.
    let largest = rt.block_on(async {
        let mut c = server.connect().await;
        c.clusters
            .list_largest_clusters(pb::ListLargestClustersRequest {
                by: pb::ClusterRanking::Size.into(),
                page_size: STOP_CLUSTERS,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .clusters
    });
    let members: u64 = largest.iter().map(|c| c.size).sum();
    let stopping = pb::TraceRequest {
        stop_cluster_ids: largest.iter().map(|c| c.id).collect(),
        ..request
    };
    let what = format!(
        ", stopping at the {} largest clusters ({members} addresses) listed",
        largest.len()
    );
    grpc_row(&rt, &server, &what, &stopping, runs);
    drop(server);
    // The same, each coin's cluster looked up (as for more members than
    // the server lists up front: a category on mainnet).
    let server = Server::start(db, &["--max-stop-listed", "0"]);
    let what = format!(
        ", stopping at the {} largest clusters ({members} addresses) looked up per coin",
        largest.len()
    );
    grpc_row(&rt, &server, &what, &stopping, runs);
}

/// Clusters a gRPC trace stops at, the largest.
const STOP_CLUSTERS: u32 = 100;

/// Times `request` over gRPC, every hit streamed to this process.
fn grpc_row(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    what: &str,
    request: &pb::TraceRequest,
    runs: usize,
) {
    let mut walls: Vec<Duration> = Vec::new();
    let (mut hits, mut stopped) = (0, 0);
    for _ in 0..runs + 1 {
        let started = Instant::now();
        (hits, stopped) = rt.block_on(async {
            let mut c = server.connect().await;
            let mut stream = c.taint.trace(request.clone()).await.unwrap().into_inner();
            let (mut n, mut stopped) = (0u64, 0u64);
            // Ends with RESOURCE_EXHAUSTED at the budget.
            while let Ok(Some(e)) = stream.message().await {
                n += 1;
                if let Some(pb::trace_event::Event::Summary(s)) = e.event {
                    stopped = s.stopped;
                }
            }
            (n, stopped)
        });
        walls.push(started.elapsed());
    }
    let first = walls.remove(0);
    println!(
        "gRPC: haircut forward, budget 1000000{what}, {hits} events streamed ({stopped} sat stopped): first {:.3} s, median {:.3} s ({runs} runs)",
        first.as_secs_f64(),
        median(walls).as_secs_f64()
    );
}
