//! Exporting a whole index to Parquet: wall time, peak memory and output
//! size of `satflow export`, and the cost of exporting again with nothing new.
//!
//!     cargo bench --bench export_throughput -- [--size 4GB] [--db DIR] [--work DIR] [--runs 3]
//!
//! The index is a generated chain of --size (seed 7), built once under
//! --work, or --db as is. Each run is a separate `satflow export` process
//! into an empty directory; the median wall time is shown.

mod common;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use common::{median, satflow, timed, Common, IndexChoice};
use satflow_indexer::{Access, Store};
use satflow_schema::Height;

#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    index: IndexChoice,
    #[command(flatten)]
    common: Common,
}

fn main() {
    let args = Args::parse();
    let db = args.index.path(&args.common.work);
    let (blk_bytes, txs) = {
        let store = Store::open(&db, Access::ReadOnly).unwrap();
        let tip = store.tip().unwrap().unwrap().height;
        let blk: u64 = (0..=tip.0)
            .map(|h| u64::from(store.block(Height(h)).unwrap().unwrap().loc.len))
            .sum();
        (blk, store.block(tip).unwrap().unwrap().next_ids().tx.0)
    };
    println!(
        "index {} · {:.0} MB of blk data · {txs} transactions",
        db.display(),
        blk_bytes as f64 / 1e6
    );
    let out = args.common.work.join("export-bench");
    let export = |out: &Path| {
        let mut cmd = satflow();
        cmd.args(["export", "--quiet", "--db"])
            .arg(&db)
            .arg("--out")
            .arg(out)
            .stdout(std::process::Stdio::null());
        timed(cmd)
    };
    let (mut walls, mut again, mut peak) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.common.runs {
        let _ = std::fs::remove_dir_all(&out);
        let (wall, rss) = export(&out);
        walls.push(wall);
        peak = peak.max(rss);
        again.push(export(&out).0);
    }
    let wall: Duration = median(walls.clone());
    let size = satflow_indexer::store::dir_size(&out);
    println!(
        "{:>9} {:>10} {:>12} {:>10} {:>12} {:>14}   runs",
        "wall s", "MB/s blk", "tx/s", "peak MiB", "Parquet MB", "again (none new)"
    );
    println!(
        "{:>9.1} {:>10.1} {:>12.0} {:>10.0} {:>12.1} {:>13.2}s   {:?}",
        wall.as_secs_f64(),
        blk_bytes as f64 / 1e6 / wall.as_secs_f64(),
        txs as f64 / wall.as_secs_f64(),
        peak as f64 / 1024.0,
        size as f64 / 1e6,
        median(again).as_secs_f64(),
        walls
            .iter()
            .map(|w| format!("{:.1}s", w.as_secs_f64()))
            .collect::<Vec<_>>()
    );
}
