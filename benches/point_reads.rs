//! What one lookup costs when the block cache does not hold it: addresses
//! and txs spread evenly over a whole index, each looked up once, on one
//! thread, through a freshly opened read-only handle per run (its block
//! cache empty, the page cache warm).
//!
//!     cargo bench --bench point_reads -- [--size 4GB] [--db DIR]
//!                 [--lookups 200000] [--runs 3] [--work DIR]
//!
//! A server's summaries and transactions start with these reads; at
//! mainnet's size no block cache holds `addr_ids` or `txids`, so their
//! cost past the cache is what a caller pays.

mod common;

use std::time::Instant;

use clap::Parser;
use common::{median_f64, Common, IndexChoice};
use satflow_indexer::store::{Access, Store};
use satflow_schema::script::AddrKey;
use satflow_schema::{cf, AddrId, TxNum};

/// One kind of lookup, done for every sampled address or tx.
type Lookups<'a> = dyn Fn(&Store) + 'a;

#[derive(clap::Parser)]
struct Args {
    #[command(flatten)]
    index: IndexChoice,
    /// Lookups of each kind per run.
    #[arg(long, default_value_t = 200_000)]
    lookups: u64,
    #[command(flatten)]
    common: Common,
}

fn main() {
    let args = Args::parse();
    let db = args.index.path(&args.common.work);
    let (addrs, txids) = {
        let store = Store::open(&db, Access::ReadOnly).unwrap();
        let next = store
            .tip_block()
            .unwrap()
            .expect("an index with blocks")
            .next_ids();
        let spread = |count: u64| (0..args.lookups).map(move |i| i * count / args.lookups);
        let addrs: Vec<(AddrId, AddrKey)> = spread(next.addr.0)
            .map(|n| (AddrId(n), store.need::<cf::Addrs>(&AddrId(n)).unwrap()))
            .collect();
        let txids: Vec<(TxNum, bitcoin::Txid)> = spread(next.tx.0)
            .map(|n| (TxNum(n), store.need::<cf::Txs>(&TxNum(n)).unwrap().txid))
            .collect();
        (addrs, txids)
    };
    let kinds: [(&str, &Lookups); 4] = [
        ("address id (addr_ids)", &|s| {
            for (id, key) in &addrs {
                assert_eq!(s.get::<cf::AddrIds>(key).unwrap(), Some(*id));
            }
        }),
        ("address's first and last tx (history)", &|s| {
            for (id, _) in &addrs {
                let range = s.first_and_last::<cf::History, _, _>(*id, TxNum(0), TxNum(u64::MAX));
                assert!(range.unwrap().is_some());
            }
        }),
        ("tx number by txid (txids, txs)", &|s| {
            for (n, txid) in &txids {
                assert_eq!(s.find_tx(txid).unwrap().map(|f| f >= *n), Some(true));
            }
        }),
        ("tx row by number (txs)", &|s| {
            for (n, _) in &txids {
                s.need::<cf::Txs>(n).unwrap();
            }
        }),
    ];
    println!(
        "{:<40} {:>12}   ({} lookups a run, {} runs, {})",
        "lookup",
        "µs each",
        args.lookups,
        args.common.runs,
        db.display()
    );
    for (name, look) in kinds {
        let per_run: Vec<f64> = (0..args.common.runs)
            .map(|_| {
                let store = Store::open(&db, Access::ReadOnly).unwrap();
                let started = Instant::now();
                look(&store);
                started.elapsed().as_secs_f64() * 1e6 / args.lookups as f64
            })
            .collect();
        println!(
            "{name:<40} {:>12.2}   runs: {:?}",
            median_f64(&per_run),
            per_run
                .iter()
                .map(|us| format!("{us:.2}"))
                .collect::<Vec<_>>()
        );
    }
}
