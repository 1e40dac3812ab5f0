//! Millions of labels: `satflow labels import` of a generated CSV (time,
//! peak RSS), and `satflow serve` with and without them (start-up, peak
//! RSS, GetAddressSummary req/s and latency).
//!
//!     cargo bench --bench label_import -- [--labels 10000000] [--seen-every 16]
//!                 [--entities 10000] [--size 512MB] [--db DIR] [--work DIR]
//!                 [--runs 3] [--clients 8] [--seconds 10]
//!
//! The index is a generated chain of --size (seed 7), built once under
//! --work, or --db as is; it is never written to. The label file is made
//! once under --work: every --seen-every'th address the index has seen
//! (none for 0), then made-up addresses of all five types in the index's
//! network up to --labels, each named after one of --entities entities in
//! turn (some names quoted, with a comma and quotes), in five categories:
//! with few entities, a big cluster's many labelled members carry few
//! distinct labels, as an exchange's deposit addresses do in real sets.
//! Each import (--runs, medians shown) runs on a fresh copy of the index,
//! its table files hard-linked. The server runs on the index
//! and on a copy with the labels; summaries are timed by --clients callers
//! for --seconds after a warm-up, on 10,000 addresses sampled across the
//! chain and on 10,000 labelled ones.

mod common;
#[path = "../tests/common/mod.rs"]
mod testkit;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{child_peak_rss, drive, median, spread, timed, Common};
use satflow_indexer::{address, Access, Network, Store};
use satflow_proto::v1 as pb;
use satflow_schema::script::{AddrKey, AddrKind};
use satflow_schema::{cf, AddrId};
use testkit::server::Server;

/// Millions of labels: import, and the server with them.
#[derive(clap::Parser)]
struct Args {
    /// Labelled addresses in the generated file.
    #[arg(long, default_value_t = 10_000_000)]
    labels: u64,
    /// Label every this many'th address the index has seen (0: none, all
    /// labelled addresses made up).
    #[arg(long, default_value_t = 16)]
    seen_every: u64,
    /// Entities the labels name, in turn.
    #[arg(long, default_value_t = 10_000)]
    entities: u64,
    /// Size of the generated chain (seed 7) whose index is used.
    #[arg(long, default_value = "512MB")]
    size: String,
    /// Use this index instead of a generated one.
    #[arg(long)]
    db: Option<PathBuf>,
    /// Concurrent callers of GetAddressSummary.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Measured seconds per figure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[command(flatten)]
    common: Common,
}

/// Addresses per summary sample.
const SAMPLE: u64 = 10_000;

/// The labels' CSV line for entry `i` at `address`: entity i % `entities`.
fn line(i: u64, entities: u64, address: &str) -> String {
    const CATEGORIES: [&str; 5] = ["exchange", "mixer", "service", "gambling", "other"];
    let entity = i % entities.max(1);
    let name = match entity % 7 {
        0 => format!("\"Entity {entity}, \"\"cold\"\" wallet\""),
        _ => format!("Entity {entity}"),
    };
    let category = CATEGORIES[(entity % 5) as usize];
    format!("{address},{name},{category},bench\n")
}

/// A made-up address of entry `i`: the five types in turn, hashes from `i`.
fn made_up(i: u64, network: Network) -> String {
    const KINDS: [AddrKind; 5] = [
        AddrKind::P2pkh,
        AddrKind::P2sh,
        AddrKind::P2wpkh,
        AddrKind::P2wsh,
        AddrKind::P2tr,
    ];
    let kind = KINDS[(i % 5) as usize];
    let mut hash = [0u8; 32];
    for (j, chunk) in hash.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&spread(i * 4 + j as u64, u64::MAX).to_le_bytes());
    }
    let key = AddrKey::new(kind, &hash[..kind.hash_len()]).unwrap();
    address::encode(&key, network)
}

/// The label file for `db`, made once: `n` lines, the labelled addresses
/// the index has seen first (returned, for the summary sample).
fn label_file(work: &Path, db: &Path, args: &Args) -> (PathBuf, Vec<String>) {
    let (n, every, entities) = (args.labels, args.seen_every, args.entities);
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let network = store.network().unwrap().unwrap();
    let addrs = store.tip_block().unwrap().unwrap().next_ids().addr.0;
    let seen_n = addrs.checked_div(every).unwrap_or(0).min(n);
    let seen: Vec<String> = (0..seen_n)
        .map(|k| {
            let key = store.need::<cf::Addrs>(&AddrId(k * every)).unwrap();
            address::encode(&key, network)
        })
        .collect();
    let name = db.file_name().unwrap().to_string_lossy();
    let file = match entities {
        10_000 => work.join(format!("labels-{n}-every{every}-{name}.csv")),
        _ => work.join(format!(
            "labels-{n}-every{every}-entities{entities}-{name}.csv"
        )),
    };
    if !file.exists() {
        let t = Instant::now();
        let part = file.with_extension("part");
        let mut out = BufWriter::new(std::fs::File::create(&part).unwrap());
        out.write_all(b"address,label,category,source\n").unwrap();
        for (i, a) in seen.iter().enumerate() {
            out.write_all(line(i as u64, entities, a).as_bytes())
                .unwrap();
        }
        for i in seen_n..n {
            out.write_all(line(i, entities, &made_up(i, network)).as_bytes())
                .unwrap();
        }
        out.flush().unwrap();
        std::fs::rename(&part, &file).unwrap();
        eprintln!(
            "generated {} in {:.1} s",
            file.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let sample = (0..SAMPLE.min(seen_n))
        .map(|i| seen[spread(i, seen_n) as usize].clone())
        .collect();
    (file, sample)
}

/// 10,000 addresses spread over all the index has seen.
fn chain_sample(db: &Path) -> Vec<String> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let network = store.network().unwrap().unwrap();
    let addrs = store.tip_block().unwrap().unwrap().next_ids().addr.0;
    (0..SAMPLE)
        .map(|i| {
            let key = store.need::<cf::Addrs>(&AddrId(spread(i, addrs))).unwrap();
            address::encode(&key, network)
        })
        .collect()
}

/// A copy of index `from` at `to`, its table files hard-linked (RocksDB
/// never rewrites one, and removes only its own link), the rest copied.
fn copy_index(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_index(&src, &dst);
        } else if src.extension().is_some_and(|x| x == "sst") {
            std::fs::hard_link(&src, &dst).unwrap();
        } else if e.file_name() != "LOCK" {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| match e.file_type().unwrap().is_dir() {
            true => dir_bytes(&e.path()),
            false => e.metadata().unwrap().len(),
        })
        .sum()
}

/// A named list of addresses whose summaries are timed.
type Sample = (&'static str, Arc<Vec<String>>);

/// What a server on one index does: start-up (the label index is read
/// before it listens), peak RSS, its log line on the label index, and per
/// sample the labels in a summary on average and the median req/s, p50,
/// p99 and p99.9 (ms) and server CPU per call (µs) of `runs` windows.
struct Served {
    start: Duration,
    rss_kib: Option<i64>,
    label_index: String,
    samples: Vec<(f64, [f64; 5])>,
}

fn serve(db: &Path, samples: &[Sample], args: &Args) -> Served {
    let t = Instant::now();
    let server = Server::start(db, &[]);
    let start = t.elapsed();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let figures = rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(server.connect().await);
        }
        let mut out = Vec::new();
        for (_, sample) in samples {
            let mut labels = 0;
            let counted = sample.len().min(1000);
            for a in &sample[..counted] {
                let request = pb::GetAddressSummaryRequest { address: a.clone() };
                let mut c = conns[0].clone();
                let s = c.addresses.get_address_summary(request).await.unwrap();
                labels += s.into_inner().labels.len();
            }
            let mut runs = Vec::new();
            for _ in 0..args.common.runs {
                let sample = sample.clone();
                let driven = drive(
                    &conns,
                    server.pid(),
                    args.clients,
                    args.seconds,
                    move |mut c, n| {
                        let address = sample[n % sample.len()].clone();
                        async move {
                            c.addresses
                                .get_address_summary(pb::GetAddressSummaryRequest { address })
                                .await
                                .unwrap();
                        }
                    },
                )
                .await;
                runs.push(driven.figures());
            }
            let median_of = |k: usize| {
                let mut v: Vec<f64> = runs.iter().map(|f| f[k]).collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            out.push((
                labels as f64 / counted as f64,
                std::array::from_fn(median_of),
            ));
        }
        out
    });
    let rss_kib = child_peak_rss(&db.to_string_lossy());
    let log = std::fs::read_to_string(server.log.path()).unwrap();
    let label_index = log
        .lines()
        .find_map(|l| l.split_once("label index: "))
        .map_or("no labels".into(), |(_, rest)| rest.to_string());
    drop(server);
    Served {
        start,
        rss_kib,
        label_index,
        samples: figures,
    }
}

fn main() {
    let args = Args::parse();
    let work = &args.common.work;
    std::fs::create_dir_all(work).unwrap();
    let db = match &args.db {
        Some(db) => db.clone(),
        None => common::synth_index(work, &args.size),
    };
    let (file, labelled) = label_file(work, &db, &args);
    let copy = work.join("label-import.db");

    let mut walls = Vec::new();
    let mut rss = 0;
    for _ in 0..args.common.runs {
        copy_index(&db, &copy);
        let (wall, peak) = timed(common::labels_import(&copy, &file));
        walls.push(wall);
        rss = rss.max(peak);
    }
    let wall = median(walls.clone());
    let added = dir_bytes(&copy) as f64 - dir_bytes(&db) as f64;

    let mut samples: Vec<Sample> = vec![("chain sample", Arc::new(chain_sample(&db)))];
    if !labelled.is_empty() {
        samples.push(("labelled sample", Arc::new(labelled)));
    }
    let without = serve(&db, &samples, &args);
    let with = serve(&copy, &samples, &args);

    let seen = match args.seen_every {
        0 => "none of the index's addresses".to_string(),
        n => format!("every {n}th address of the index"),
    };
    println!(
        "index {} · {} labels, {seen} among them ({} MB of CSV) · medians of {} runs",
        db.display(),
        args.labels,
        std::fs::metadata(&file).unwrap().len() / 1_000_000,
        args.common.runs
    );
    println!(
        "import: {:.1} s ({:.0} labels/s), peak RSS {} MiB, index +{:.0} MB; per run {:?} s",
        wall.as_secs_f64(),
        args.labels as f64 / wall.as_secs_f64(),
        rss / 1024,
        added / 1e6,
        walls
            .iter()
            .map(|w| (w.as_secs_f64() * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    println!(
        "serve, GetAddressSummary by {} clients for {} s:",
        args.clients, args.seconds
    );
    println!(
        "  {:<15} {:<16} {:>7} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>7}",
        "",
        "",
        "start s",
        "RSS MiB",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "server µs",
        "labels"
    );
    for (name, s) in [("without labels", &without), ("with labels", &with)] {
        for ((sample, _), (labels, f)) in samples.iter().zip(&s.samples) {
            println!(
                "  {name:<15} {sample:<16} {:>7.2} {:>8} {:>8.0} {:>7.2} {:>7.2} {:>8.2} {:>9.0} {:>7.1}",
                s.start.as_secs_f64(),
                s.rss_kib.map_or("?".into(), |k| (k / 1024).to_string()),
                f[0],
                f[1],
                f[2],
                f[3],
                f[4],
                labels
            );
        }
        println!("  {name:<15} label index: {}", s.label_index);
    }
}
