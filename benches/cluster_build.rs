//! Clustering a whole index: wall time and peak memory of `satflow cluster`
//! for each heuristics set.
//!
//!     cargo bench --bench cluster_build -- [--size 4GB] [--db DIR] [--work DIR] [--runs 3]
//!
//! The index is a generated chain of --size (seed 7), built once under
//! --work, or --db as is. Each run is a separate `satflow cluster` process
//! rebuilding every cluster from the index; the median wall time is shown.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{median, satflow, timed, Common, IndexChoice};
use satflow_indexer::{Access, Store};
use satflow_schema::cf;

/// Clustering a whole index: wall time and peak memory of `satflow cluster`.
#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    index: IndexChoice,
    #[command(flatten)]
    common: Common,
}

fn main() {
    let args = Args::parse();
    let runs = args.common.runs;
    let db = args.index.path(&args.common.work);
    let (txs, addrs) = {
        let store = Store::open(&db, Access::ReadOnly).unwrap();
        let tip = store.tip().unwrap().unwrap();
        let next = store.block(tip.height).unwrap().unwrap().next_ids();
        (next.tx.0, next.addr.0)
    };
    println!(
        "index {} · {txs} transactions · {addrs} addresses",
        db.display()
    );
    println!(
        "{:<24} {:>9} {:>10} {:>12} {:>10}   runs",
        "heuristics", "wall s", "peak MiB", "tx/s", "clusters ≥2"
    );
    for heuristics in ["multi-input", "multi-input,coinjoin"] {
        let mut walls = Vec::new();
        let mut peak = 0;
        for _ in 0..runs {
            let mut cmd = satflow();
            cmd.args(["cluster", "--quiet", "--heuristics", heuristics, "--db"])
                .arg(&db)
                .stdout(std::process::Stdio::null());
            let (wall, rss) = timed(cmd);
            walls.push(wall);
            peak = peak.max(rss);
        }
        let multi = {
            let store = Store::open(&db, Access::ReadOnly).unwrap();
            let count = store
                .scan_all::<cf::ClusterStats>()
                .try_fold(0, |n, r| r.map(|_| n + 1));
            count.unwrap()
        };
        let wall: Duration = median(walls.clone());
        println!(
            "{heuristics:<24} {:>9.1} {:>10.0} {:>12.0} {:>10}   {:?}",
            wall.as_secs_f64(),
            peak as f64 / 1024.0,
            txs as f64 / wall.as_secs_f64(),
            multi,
            walls
                .iter()
                .map(|w| format!("{:.1}s", w.as_secs_f64()))
                .collect::<Vec<_>>()
        );
    }
}
