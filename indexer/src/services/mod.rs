//! Services recognised from their behaviour: `satflow categorise` gives
//! every cluster (a lone address included) with at least `MIN_TXS`
//! transactions an *inferred* category (exchange, mining pool, mixer,
//! payment processor, gambling, or ordinary wallet), a confidence and the
//! features it was given for. Inferences are kept apart from imported
//! labels, in a store of their own (`file`), and used by readers only
//! where a caller or operator opts in.
//!
//! One pass over the clusters and lone addresses with enough transactions
//! (from `cluster_stats` and `addr_stats`), split into key ranges scanned
//! in parallel, reading their `cluster_history` or `history`: each row's
//! transaction is looked at in the flow graph (`features`), and each
//! cluster's features, once complete, go through the rules (`rules`).
//! Then a cluster no rule calls a service takes the category of the
//! service cluster it is tied to (`rules::Link`): the one most of its
//! forwards went to (its deposit addresses are swept there), or the one
//! that swept most of its deposits into it (it is that service's wallet).
//!
//! Memory is one cluster's features per worker, the records of the ranges
//! in flight, the services found and 40 bytes per possibly tied cluster,
//! so the pass scales to mainnet's clusters. Its cost is one flow-graph
//! read per history row, and a batched lookup of the counterpart's
//! cluster per forward or one-output deposit.

mod features;
mod file;
mod rules;

use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use satflow_schema::block::ChainPoint;
use satflow_schema::cf;
use satflow_schema::label::Category;
use satflow_schema::{AddrId, ClusterId, ClusterKey, Height, TxNum};

use features::Counterpart;
pub use features::Features;
pub use file::{path, Store};
pub use rules::MIN_TXS;
use rules::{classify, evidence, Link};

use crate::flow::{Flow, FlowView};
use crate::store::Direction;

/// The label set inferences appear under where an operator lets them act
/// as labels (`satflow serve --inferred-labels`); no import may use it.
pub const LABEL_SET: &str = "inferred";

/// What a cluster is inferred to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    MiningPool = 1,
    Mixer = 2,
    Exchange = 3,
    PaymentProcessor = 4,
    Gambling = 5,
    Ordinary = 6,
}

impl Service {
    /// The service categories, in the order their rules are tried.
    pub const SERVICES: [Service; 5] = [
        Service::MiningPool,
        Service::Mixer,
        Service::Exchange,
        Service::PaymentProcessor,
        Service::Gambling,
    ];
    pub const ALL: [Service; 6] = [
        Service::MiningPool,
        Service::Mixer,
        Service::Exchange,
        Service::PaymentProcessor,
        Service::Gambling,
        Service::Ordinary,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::MiningPool => "mining_pool",
            Service::Mixer => "mixer",
            Service::Exchange => "exchange",
            Service::PaymentProcessor => "payment_processor",
            Service::Gambling => "gambling",
            Service::Ordinary => "ordinary",
        }
    }

    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }

    fn from_u8(b: u8) -> Option<Service> {
        Service::ALL.into_iter().find(|s| *s as u8 == b)
    }

    /// The label category an inference stands in for where an operator
    /// lets inferences act as labels (stop sets, watches, exposure); None
    /// for an ordinary wallet.
    pub fn category(self) -> Option<Category> {
        match self {
            Service::MiningPool => Some(Category::MiningPool),
            Service::Mixer => Some(Category::Mixer),
            Service::Exchange => Some(Category::Exchange),
            Service::PaymentProcessor => Some(Category::Service),
            Service::Gambling => Some(Category::Gambling),
            Service::Ordinary => None,
        }
    }
}

/// What the categoriser inferred of one cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inferred {
    pub key: ClusterKey,
    pub id: ClusterId,
    pub service: Service,
    /// Percent, 50 to 100.
    pub confidence: u8,
    pub features: Features,
}

impl Inferred {
    /// Its features, readable.
    pub fn evidence(&self) -> Vec<String> {
        evidence(self.service, &self.features)
    }
}

/// Services whose customers get deposit addresses of their own, which
/// they sweep into their wallet.
const DEPOSIT_TAKERS: [Service; 3] = [
    Service::Exchange,
    Service::PaymentProcessor,
    Service::Gambling,
];

fn percent(confidence: f64) -> u8 {
    (confidence * 100.0).round() as u8
}

/// What one `categorise` run did.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub as_of: Option<ChainPoint>,
    /// Cluster history rows read.
    pub rows: u64,
    /// Clusters categorised (with at least `MIN_TXS` transactions), per
    /// service in the order of `Service::ALL`.
    pub per_service: [u64; 6],
    pub elapsed: Duration,
}

impl Summary {
    fn count(&mut self, service: Service, n: i64) {
        let i = Service::ALL
            .iter()
            .position(|s| *s == service)
            .expect("listed");
        self.per_service[i] = self.per_service[i].wrapping_add_signed(n);
    }
}

/// Key ranges per worker: enough that one range's clusters being busy
/// does not hold the others up.
const RANGES_PER_THREAD: usize = 64;
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Categorises every cluster of the index at `db` as of its clusters' tip,
/// and replaces the services store with the result.
pub fn categorise(store: &crate::Store, db: &Path, quiet: bool) -> Result<Summary> {
    let started = Instant::now();
    let Some(tip) = crate::cluster::tip(store)? else {
        bail!(
            "{}: no clusters to categorise; `satflow index` builds them (without --no-cluster)",
            db.display()
        );
    };
    let flow = Flow::open(db)?.with_context(|| {
        format!(
            "{}: no flow graph; `satflow index` builds it (without --no-flow)",
            db.display()
        )
    })?;
    let g = flow.view();
    // Rows past the graph's tip (a writer ahead of it) are left out.
    let as_of = match flow.tip().height() {
        Some(h) if h < tip.height.0 => ChainPoint {
            height: Height(h),
            hash: flow.tip().block_hash(),
        },
        _ => tip,
    };
    let keys = store.last::<cf::Addrs>()?.map_or(0, |(a, _)| a.0 + 1);
    let n = (rayon::current_num_threads() * RANGES_PER_THREAD) as u64;
    let step = keys.div_ceil(n).max(1);
    let ranges: Vec<(u64, u64)> = (0..keys)
        .step_by(step as usize)
        .map(|lo| (lo, (lo + step).min(keys)))
        .collect();
    let mut out = file::Writer::create(db, as_of)?;
    let mut summary = Summary {
        as_of: Some(as_of),
        ..Summary::default()
    };
    let rows = AtomicU64::new(0);
    // Clusters found to be services, and those tied to another cluster
    // that may be a service (record number, then the most common payee of
    // its forwards and payer of its deposits), settled once every cluster
    // has its category.
    let mut services: FxHashMap<ClusterKey, (ClusterId, Service, u8)> = FxHashMap::default();
    let mut tied: Vec<(u64, [Option<u64>; 2])> = Vec::new();
    let mut pushed = 0u64;
    let mut last_log = Instant::now();
    let mut done = 0;
    // A bar on a terminal, log lines otherwise.
    let bar = (!quiet && std::io::stderr().is_terminal())
        .then(|| indicatif::ProgressBar::new(ranges.len() as u64));
    // Ranges in groups, each group's records written in key order before
    // the next group starts: memory stays a group's records.
    for group in ranges.chunks(rayon::current_num_threads() * 4) {
        let found: Vec<Vec<Inferred>> = group
            .par_iter()
            .map(|&(lo, hi)| range(store, &g, lo..hi, &rows))
            .collect::<Result<_>>()?;
        for r in found.into_iter().flatten() {
            if r.service != Service::Ordinary {
                services.insert(r.key, (r.id, r.service, r.confidence));
            } else {
                let f = &r.features;
                let other = |v: Option<u64>, link| {
                    v.filter(|&k| k != r.key.0)
                        .filter(|_| rules::linked(f, link, 1.0).is_some())
                };
                let ties = [
                    other(f.forward_to.winner, Link::SweptTo),
                    other(f.fed_by.winner, Link::FedBy),
                ];
                if ties.iter().any(Option::is_some) {
                    tied.push((pushed, ties));
                }
            }
            summary.count(r.service, 1);
            out.push(&r)?;
            pushed += 1;
        }
        done += group.len();
        if let Some(bar) = &bar {
            bar.inc(group.len() as u64);
        } else if !quiet && last_log.elapsed() >= LOG_EVERY {
            last_log = Instant::now();
            tracing::info!(
                "categorise: {done} of {} key ranges, {} history rows",
                ranges.len(),
                rows.load(Ordering::Relaxed)
            );
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    for (i, ties) in tied {
        let mut r = out.read(i)?;
        let best = ties
            .into_iter()
            .zip([Link::SweptTo, Link::FedBy])
            .filter_map(|(holder, link)| {
                let &(id, service, c) = services.get(&ClusterKey(holder?))?;
                let c = rules::linked(&r.features, link, f64::from(c) / 100.0)?;
                DEPOSIT_TAKERS
                    .contains(&service)
                    .then_some((c, id, service))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((c, id, service)) = best else {
            continue;
        };
        summary.count(Service::Ordinary, -1);
        summary.count(service, 1);
        r.service = service;
        r.confidence = percent(c);
        r.features.linked_to = Some(id);
        out.patch(i, &r)?;
    }
    out.finish()?;
    summary.rows = rows.into_inner();
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// The records of the clusters keyed in `keys`, lone addresses included,
/// in key order.
fn range(
    store: &crate::Store,
    g: &FlowView<'_>,
    keys: std::ops::Range<u64>,
    rows: &AtomicU64,
) -> Result<Vec<Inferred>> {
    let mut acc = Accumulator::new(store, g);
    let mut clusters = Vec::new();
    for row in store.scan::<cf::ClusterStats>(&ClusterKey(keys.start), Direction::Forward) {
        let (key, stats) = row?;
        if key.0 >= keys.end {
            break;
        }
        if stats.tx_count < MIN_TXS {
            continue;
        }
        let mut f = Features {
            size: stats.size,
            ..Features::default()
        };
        for row in store.pairs::<cf::ClusterHistory, _, _>(key, TxNum(0), Direction::Forward) {
            let (tx, h) = row?;
            acc.add(&mut f, tx, &h)?;
        }
        acc.vote(&mut f)?;
        clusters.extend((f.txs >= MIN_TXS).then(|| record(key, stats.id, f)));
    }
    let lone = lone_addresses(store, &mut acc, keys)?;
    rows.fetch_add(acc.rows, Ordering::Relaxed);
    // Both in key order: merge them.
    let mut all = Vec::with_capacity(clusters.len() + lone.len());
    let (mut a, mut b) = (clusters.into_iter().peekable(), lone.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.key < y.key => a.next(),
            (Some(_), Some(_)) | (None, Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, None) => break,
        };
        all.extend(next);
    }
    Ok(all)
}

/// The records of addresses numbered in `keys` that are in no cluster of
/// two or more and have at least `MIN_TXS` transactions: a service may
/// use one address for years (a hot wallet, a dice game's).
fn lone_addresses(
    store: &crate::Store,
    acc: &mut Accumulator<'_, '_>,
    keys: std::ops::Range<u64>,
) -> Result<Vec<Inferred>> {
    let mut found = Vec::new();
    for row in store.scan::<cf::AddrStats>(&AddrId(keys.start), Direction::Forward) {
        let (a, stats) = row?;
        if a.0 >= keys.end {
            break;
        }
        if stats.tx_count < MIN_TXS as i64
            || store.get::<cf::ClusterOf>(&a)?.is_some()
            || store.get::<cf::ClusterStats>(&ClusterKey::of(a))?.is_some()
        {
            continue;
        }
        let mut f = Features {
            size: 1,
            ..Features::default()
        };
        for row in store.pairs::<cf::History, _, _>(a, TxNum(0), Direction::Forward) {
            let (tx, h) = row?;
            acc.add(&mut f, tx, &h)?;
        }
        acc.vote(&mut f)?;
        found.extend((f.txs >= MIN_TXS).then(|| record(ClusterKey::of(a), ClusterId::of(a), f)));
    }
    Ok(found)
}

/// Adds history rows to features, remembering the block of the last, and
/// looks up the clusters of counterparts in batches.
struct Accumulator<'g, 'a> {
    store: &'g crate::Store,
    g: &'g FlowView<'a>,
    block: (u32, std::ops::Range<u64>),
    rows: u64,
    /// Counterparts whose clusters are yet to be looked up and voted for:
    /// true for a forward's payee, false for a deposit's payer.
    pending: Vec<(bool, AddrId)>,
}

/// Counterparts looked up at once.
const LOOKUPS: usize = 4096;

impl<'g, 'a> Accumulator<'g, 'a> {
    fn new(store: &'g crate::Store, g: &'g FlowView<'a>) -> Self {
        Accumulator {
            store,
            g,
            block: (0, 0..0),
            rows: 0,
            pending: Vec::with_capacity(LOOKUPS),
        }
    }

    fn add(
        &mut self,
        f: &mut Features,
        tx: TxNum,
        h: &satflow_schema::address::HistoryRow,
    ) -> Result<()> {
        self.rows += 1;
        // Rows past the graph's tip (a writer ahead of it) are left out.
        if tx.0 >= self.g.tx_count() {
            return Ok(());
        }
        if !self.block.1.contains(&tx.0) {
            let height = self.g.height(tx.0);
            self.block = (height, self.g.block_txs(height).unwrap_or(tx.0..tx.0 + 1));
        }
        match f.add(self.g, tx.0, self.block.0, h) {
            Counterpart::None => return Ok(()),
            Counterpart::Payee(a) => self.pending.push((true, AddrId(a))),
            Counterpart::Payer(a) => self.pending.push((false, AddrId(a))),
        }
        if self.pending.len() >= LOOKUPS {
            self.vote(f)?;
        }
        Ok(())
    }

    /// Votes for the clusters of the pending counterparts; called before
    /// `f` is complete.
    fn vote(&mut self, f: &mut Features) -> Result<()> {
        let addrs: Vec<AddrId> = self.pending.iter().map(|(_, a)| *a).collect();
        let holders = self.store.multi_get::<cf::ClusterOf>(&addrs)?;
        for ((payee, a), holder) in self.pending.drain(..).zip(holders) {
            let holder = holder.unwrap_or(ClusterKey::of(a));
            match payee {
                true => f.forward_to.cast(holder.0),
                false => f.fed_by.cast(holder.0),
            }
        }
        Ok(())
    }
}

fn record(key: ClusterKey, id: ClusterId, f: Features) -> Inferred {
    let (service, confidence) = classify(&f);
    Inferred {
        key,
        id,
        service,
        confidence: percent(confidence),
        features: f,
    }
}
