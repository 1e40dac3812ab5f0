//! Pattern detectors over a whole generated index: transactions scanned
//! per second on one core, and precision and recall of each detector
//! against the patterns the generator planted.
//!
//!     cargo bench --bench pattern_scan -- [--size 512MB] [--seed 11] [--runs 3]
//!
//! The chain is generated with `--plant-patterns` (synth/README.md says
//! what each planted kind looks like) under --work, indexed once, and its
//! exchanges' addresses (from the generator's truth) imported as labels,
//! so that CoinJoin coins reaching an exchange can be seen. The detectors'
//! thresholds are their defaults, which were set before any generated
//! chain was scanned and are not fitted to it (one rule, layering's fresh
//! address, was added after the first scan: README "Patterns"); seed 11
//! is not a seed the tests use. This is self-consistency (the generator's idea of each
//! pattern against the detectors'), not a measure on real crime.
//!
//! A report is right when one of its transactions belongs to a planted
//! instance of its kind; an instance is found when a report of its kind
//! holds one of its transactions. Reports of other planted kinds are
//! counted apart (a peel step paying under 2% is also a layering hop), and
//! the other wrong ones by the kind of actor whose coins the completing
//! transaction spends: an exchange sweeping its deposit addresses, say, is
//! the generator's ordinary behaviour, which a fan-in detector cannot tell
//! from a collector's consolidation.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use common::{exchange_labels, labels_import, median_f64, satflow, timed, truth_rows, Common};
use satflow_indexer::flow::FlowView;
use satflow_indexer::{Access, Store};
use satflow_query::patterns::{Found, Kind, Params, Scanner};
use satflow_query::Index;
use satflow_schema::cf;

#[derive(clap::Parser)]
struct Args {
    /// Size of the generated chain.
    #[arg(long, default_value = "512MB")]
    size: String,
    /// Its seed.
    #[arg(long, default_value_t = 11)]
    seed: u64,
    #[command(flatten)]
    common: Common,
}

fn main() {
    let args = Args::parse();
    let work = &args.common.work;
    std::fs::create_dir_all(work).unwrap();
    let (blocks, db) = prepared(work, &args.size, args.seed);
    let index = Index::open(&db, Access::ReadOnly).unwrap();
    let flow = index.flow().unwrap();
    let g = flow.view();
    let (first, tip) = (g.base_height(), g.tip_height());
    let txs = g.tx_count();

    // Whole scans, all detectors, then each alone: medians of --runs.
    let scan = |kinds: &[Kind]| -> (f64, Vec<Found>) {
        let mut times = Vec::new();
        let mut found = Vec::new();
        for _ in 0..args.common.runs.max(1) {
            let start = Instant::now();
            let mut s = Scanner::new(&index, g, Params::default(), kinds).unwrap();
            found = (first..=tip).flat_map(|h| s.block(h).unwrap()).collect();
            times.push(start.elapsed().as_secs_f64());
        }
        (median_f64(&times), found)
    };
    let (all_s, found) = scan(&[]);
    println!(
        "chain: {} (seed {}), {txs} transactions, heights {first}..={tip}",
        args.size, args.seed
    );
    println!(
        "all detectors, one core: {all_s:.2} s, {:.2} M tx/s (median of {})",
        txs as f64 / all_s / 1e6,
        args.common.runs
    );
    println!("\n| detector | alone, s | M tx/s |\n|---|---|---|");
    for k in Kind::ALL {
        let (s, _) = scan(&[k]);
        println!("| {k} | {s:.2} | {:.2} |", txs as f64 / s / 1e6);
    }

    // Precision and recall against the planted truth.
    let store = Store::open(&db, Access::ReadOnly).unwrap();
    let truth = Truth::read(&blocks.join("truth"), &store);
    println!("\n| pattern | planted | found | recall | reports | right | precision | wrong, of another planted kind | other wrong, by who spends |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for k in Kind::ALL {
        let reports: Vec<&Found> = found.iter().filter(|f| f.kind == k).collect();
        let instances = truth.instances.get(k.name()).map_or(0, HashSet::len);
        let mut hit: HashSet<u64> = HashSet::new();
        let (mut right, mut other) = (0, 0);
        let mut spenders: BTreeMap<String, usize> = BTreeMap::new();
        for f in &reports {
            let planted: Vec<&(String, u64)> = f
                .txs
                .iter()
                .flat_map(|t| truth.of_tx.get(t))
                .flatten()
                .collect();
            let same: Vec<u64> = planted
                .iter()
                .filter(|(kind, _)| kind == k.name())
                .map(|&&(_, i)| i)
                .collect();
            if same.is_empty() {
                other += usize::from(!planted.is_empty());
                if planted.is_empty() {
                    *spenders.entry(truth.spender(&g, f)).or_default() += 1;
                }
            } else {
                right += 1;
                hit.extend(same);
            }
        }
        let pct = |a: usize, b: usize| match b {
            0 => "—".to_string(),
            _ => format!("{:.1}%", 100.0 * a as f64 / b as f64),
        };
        let mut spenders: Vec<(usize, String)> =
            spenders.into_iter().map(|(who, n)| (n, who)).collect();
        spenders.sort_unstable_by(|a, b| b.cmp(a));
        let spenders: Vec<String> = spenders
            .iter()
            .map(|(n, who)| format!("{who} {n}"))
            .collect();
        println!(
            "| {k} | {instances} | {} | {} | {} | {right} | {} | {other} | {} |",
            hit.len(),
            pct(hit.len(), instances),
            reports.len(),
            pct(right, reports.len()),
            spenders.join(", "),
        );
    }
}

/// The chain of `size` and `seed` with patterns planted, and its index
/// with the exchanges labelled, made once under `work`.
fn prepared(work: &Path, size: &str, seed: u64) -> (PathBuf, PathBuf) {
    let blocks = work.join(format!("synth-{size}-seed{seed}-patterns"));
    if !blocks.join("truth").join("summary.json").exists() {
        let _ = std::fs::remove_dir_all(&blocks);
        let mut cmd = satflow();
        cmd.args(["synth", "--plant-patterns", "--quiet", "--size", size])
            .args(["--seed", &seed.to_string(), "--out"])
            .arg(&blocks);
        timed(cmd);
    }
    let db = work.join(format!("synth-{size}-seed{seed}-patterns.db"));
    common::cached_index(&db, || {
        timed(common::index_command(&blocks, &db));
        let labels = work.join(format!("synth-{size}-seed{seed}-patterns.exchanges.csv"));
        std::fs::write(&labels, exchange_labels(&blocks.join("truth"), usize::MAX)).unwrap();
        timed(labels_import(&db, &labels));
    });
    (blocks, db)
}

/// The planted patterns by transaction number, and who owns each address.
struct Truth {
    /// Per transaction: the (kind, instance) it belongs to.
    of_tx: HashMap<u64, Vec<(String, u64)>>,
    instances: BTreeMap<String, HashSet<u64>>,
    /// Per address number: the kind of actor owning it (user, exchange, …),
    /// as an index into `kinds`.
    owner: HashMap<u64, u8>,
    kinds: Vec<String>,
}

impl Truth {
    fn read(dir: &Path, store: &Store) -> Truth {
        let mut t = Truth {
            of_tx: HashMap::new(),
            instances: BTreeMap::new(),
            owner: HashMap::new(),
            kinds: Vec::new(),
        };
        for r in truth_rows(&dir.join("patterns.csv")) {
            let (kind, instance) = (r[0].clone(), r[1].parse::<u64>().unwrap());
            t.instances
                .entry(kind.clone())
                .or_default()
                .insert(instance);
            if let Some(n) = store.find_tx(&r[3].parse().unwrap()).unwrap() {
                t.of_tx.entry(n.0).or_default().push((kind, instance));
            }
        }
        let mut kinds: HashMap<String, u8> = HashMap::new();
        for r in truth_rows(&dir.join("actors.csv")) {
            let k = match t.kinds.iter().position(|k| *k == r[1]) {
                Some(k) => k,
                None => {
                    t.kinds.push(r[1].clone());
                    t.kinds.len() - 1
                }
            };
            kinds.insert(r[0].clone(), k as u8);
        }
        let network = store.network().unwrap().expect("an indexed chain");
        for r in truth_rows(&dir.join("addresses.csv")) {
            // Scripts without an address are written `script:<hex>`.
            let address = r[0].strip_prefix("script:").unwrap_or(&r[0]);
            let key = satflow_indexer::address::parse(address, network).unwrap();
            if let Some(id) = store.get::<cf::AddrIds>(&key).unwrap() {
                t.owner.insert(id.0, kinds[&r[1]]);
            }
        }
        t
    }

    /// The kind of actor whose coin the transaction completing `f` spends
    /// first ("?" for a coin the truth does not name).
    fn spender(&self, g: &FlowView, f: &Found) -> String {
        g.inputs(f.last())
            .find(|i| g.has_output(i.output))
            .and_then(|i| g.output(i.output).addr)
            .and_then(|a| self.owner.get(&a))
            .map(|&k| self.kinds[k as usize].clone())
            .unwrap_or_else(|| "?".into())
    }
}
