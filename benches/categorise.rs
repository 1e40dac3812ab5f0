//! Services from behaviour (`satflow categorise`): how fast the whole
//! categorisation runs, and its precision and recall per category against
//! the actors the generator planted.
//!
//!     cargo bench --bench categorise -- [--size 512MB] [--seed 13] [--runs 3]
//!
//! The chain is generated with `--plant-services --plant-patterns` under
//! --work and indexed once. Its truth names every address's actor and
//! each actor's kind: exchanges, mining pools, CoinJoin coordinators
//! (`mixer`), gambling services and payment processors are the services;
//! every other kind (users, merchants, the planted criminals) is an
//! ordinary wallet. The rules' thresholds were set on seed 7 (README
//! "Services from behaviour"); seed 13 is used by no test. This is
//! self-consistency: the generator's idea of each service against the
//! rules', not a measure on the real economy.
//!
//! An actor is found when the cluster holding most of its addresses (its
//! main cluster) is given its category; a cluster given a category is
//! right when most of its truth-named addresses belong to actors of that
//! category. A main cluster below the rules' minimum of transactions is
//! not categorised: it counts as found for an ordinary actor, and as
//! missed for a service.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use common::{median_f64, satflow, timed, truth_rows, Common};
use satflow_indexer::services::{self, Inferred, Service};
use satflow_indexer::{Access, Store};
use satflow_schema::{cf, ClusterKey};

#[derive(clap::Parser)]
struct Args {
    /// Size of the generated chain.
    #[arg(long, default_value = "512MB")]
    size: String,
    /// Its seed.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// Print the features of every service actor's main cluster.
    #[arg(long)]
    features: bool,
    #[command(flatten)]
    common: Common,
}

fn main() {
    let args = Args::parse();
    let work = &args.common.work;
    std::fs::create_dir_all(work).unwrap();
    let (blocks, db) = prepared(work, &args.size, args.seed);
    let store = Store::open(&db, Access::ReadOnly).unwrap();

    let mut times = Vec::new();
    let mut summary = None;
    for _ in 0..args.common.runs.max(1) {
        let start = Instant::now();
        summary = Some(services::categorise(&store, &db, true).unwrap());
        times.push(start.elapsed().as_secs_f64());
    }
    let summary = summary.expect("one run");
    let secs = median_f64(&times);
    println!(
        "chain: {} (seed {}), {} cluster history rows, {} cores",
        args.size,
        args.seed,
        summary.rows,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "categorise: {secs:.2} s, {:.2} M history rows/s (median of {})",
        summary.rows as f64 / secs / 1e6,
        times.len()
    );

    let inferred = services::Store::open(&db).unwrap().expect("just written");
    let truth = Truth::read(&blocks.join("truth"), &store);
    let clusters = truth.clusters();
    println!("\n| category | actors | found | recall | clusters given it | right | precision | wrong ones, by who owns most of them |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut wrongly = Vec::new();
    for service in Service::ALL {
        let actors: Vec<&Actor> = truth
            .actors
            .iter()
            .filter(|a| a.service == service && a.main.is_some())
            .collect();
        let given = |key: ClusterKey| {
            inferred
                .get(key)
                .map_or(Service::Ordinary, |r: Inferred| r.service)
        };
        let found = actors
            .iter()
            .filter(|a| given(a.main.expect("filtered")) == service)
            .count();
        let given_it: Vec<ClusterKey> = inferred
            .iter()
            .filter(|r| r.service == service)
            .map(|r| r.key)
            .collect();
        let mut right = 0;
        let mut wrong: BTreeMap<String, usize> = BTreeMap::new();
        for key in &given_it {
            let owner = clusters.get(key).map(|&owner| &truth.actors[owner]);
            let kind = match owner {
                Some(owner) if owner.service == service => {
                    right += 1;
                    continue;
                }
                Some(owner) => owner.kind.clone(),
                None => "no named address".into(),
            };
            let n = wrong.entry(kind.clone()).or_default();
            *n += 1;
            if args.features && *n <= 3 {
                let r = inferred.get(*key).expect("listed");
                wrongly.push(format!(
                    "{} given to {kind}'s: {:?}",
                    service.name(),
                    r.features
                ));
            }
        }
        let pct = |a: usize, b: usize| match b {
            0 => "—".to_string(),
            _ => format!("{:.1}%", 100.0 * a as f64 / b as f64),
        };
        let wrong: Vec<String> = wrong.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "| {} | {} | {found} | {} | {} | {right} | {} | {} |",
            service.name(),
            actors.len(),
            pct(found, actors.len()),
            given_it.len(),
            pct(right, given_it.len()),
            wrong.join(", ")
        );
    }
    if args.features {
        println!("\nwrong categories, the first 3 of each owner:");
        for w in wrongly {
            println!("{w}");
        }
        println!("\nservice actors' main clusters:");
        for a in truth
            .actors
            .iter()
            .filter(|a| a.service != Service::Ordinary)
        {
            let r = a.main.and_then(|k| inferred.get(k));
            println!(
                "{} ({}): {}",
                a.name,
                a.kind,
                r.map_or("not categorised".into(), |r| format!(
                    "{} {}%, {:?}",
                    r.service.name(),
                    r.confidence,
                    r.features
                ))
            );
        }
    }
}

/// The chain of `size` and `seed` with services and patterns planted, and
/// its index, made once under `work`.
fn prepared(work: &Path, size: &str, seed: u64) -> (PathBuf, PathBuf) {
    let name = format!("synth-{size}-seed{seed}-services");
    let blocks = work.join(&name);
    if !blocks.join("truth").join("summary.json").exists() {
        let _ = std::fs::remove_dir_all(&blocks);
        let mut cmd = satflow();
        cmd.args(["synth", "--plant-services", "--plant-patterns", "--quiet"])
            .args(["--size", size, "--seed", &seed.to_string(), "--out"])
            .arg(&blocks);
        timed(cmd);
    }
    let db = work.join(format!("{name}.db"));
    common::cached_index(&db, || {
        timed(common::index_command(&blocks, &db));
    });
    (blocks, db)
}

struct Actor {
    name: String,
    kind: String,
    service: Service,
    /// The cluster holding most of its addresses the index has seen.
    main: Option<ClusterKey>,
}

/// Who owns each address, and in which cluster it is.
struct Truth {
    actors: Vec<Actor>,
    /// Per cluster: addresses held, per actor (index into `actors`).
    held: HashMap<ClusterKey, HashMap<usize, u64>>,
}

/// The category a generated actor of `kind` is a service of.
fn service_of(kind: &str) -> Service {
    match kind {
        "exchange" => Service::Exchange,
        "pool" => Service::MiningPool,
        "mixer" => Service::Mixer,
        "gambling" => Service::Gambling,
        "processor" => Service::PaymentProcessor,
        _ => Service::Ordinary,
    }
}

impl Truth {
    fn read(dir: &Path, store: &Store) -> Truth {
        let mut by_id: HashMap<String, usize> = HashMap::new();
        let mut actors = Vec::new();
        for r in truth_rows(&dir.join("actors.csv")) {
            by_id.insert(r[0].clone(), actors.len());
            actors.push(Actor {
                service: service_of(&r[1]),
                kind: r[1].clone(),
                name: r[2].clone(),
                main: None,
            });
        }
        let network = store.network().unwrap().expect("an indexed chain");
        let mut held: HashMap<ClusterKey, HashMap<usize, u64>> = HashMap::new();
        for r in truth_rows(&dir.join("addresses.csv")) {
            let address = r[0].strip_prefix("script:").unwrap_or(&r[0]);
            let key = satflow_indexer::address::parse(address, network).unwrap();
            let Some(id) = store.get::<cf::AddrIds>(&key).unwrap() else {
                continue;
            };
            let cluster = store
                .get::<cf::ClusterOf>(&id)
                .unwrap()
                .unwrap_or(ClusterKey::of(id));
            *held
                .entry(cluster)
                .or_default()
                .entry(by_id[&r[1]])
                .or_default() += 1;
        }
        let mut most: HashMap<usize, (u64, ClusterKey)> = HashMap::new();
        for (&cluster, owners) in &held {
            for (&actor, &n) in owners {
                let m = most.entry(actor).or_insert((0, cluster));
                if (n, std::cmp::Reverse(cluster)) > (m.0, std::cmp::Reverse(m.1)) {
                    *m = (n, cluster);
                }
            }
        }
        for (actor, (_, cluster)) in most {
            actors[actor].main = Some(cluster);
        }
        Truth { actors, held }
    }

    /// Each cluster with the actor owning most of its addresses.
    fn clusters(&self) -> HashMap<ClusterKey, usize> {
        self.held
            .iter()
            .map(|(&k, owners)| {
                let (&actor, _) = owners
                    .iter()
                    .max_by_key(|(&a, &n)| (n, std::cmp::Reverse(a)))
                    .expect("a cluster held by someone");
                (k, actor)
            })
            .collect()
    }
}
