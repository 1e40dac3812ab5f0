//! A `satflow index` run: `scan` the blk files for new records, choose the
//! best chain, roll back blocks that left it (`reorg`), then parse the new
//! blocks in parallel and apply them: into an empty index in epochs, every
//! stage on every worker (`bulk`), or else in height order (`pipeline`),
//! both reading each batch's blk bytes a file stretch at a time
//! (`stretches`). `Indexer` keeps what one run learnt for the next, for a follower.

mod bulk;
mod pipeline;
mod reorg;
mod scan;
mod stretches;
mod timings;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bitcoin::BlockHash;
use satflow_schema::block::ChainPoint;
use satflow_schema::{meta, Height};

use crate::blkfiles::BlocksDir;
use crate::chain::{BestChain, Detached, HeaderTree};
use crate::network::Network;
use crate::store::{Access, Store};
use crate::writer::{Caches, Writer};

pub use crate::stop::Stop;
use timings::Clock;
pub use timings::Stage;

#[derive(Clone, Debug)]
pub struct IndexOptions {
    pub blocks_dir: PathBuf,
    pub db: PathBuf,
    /// Checked against the magic bytes when given.
    pub network: Option<Network>,
    pub threads: Option<usize>,
    /// Memory for the bulk path's maps (beyond it, they go to disk, and
    /// when what stays in memory still outgrows it, the run goes on block
    /// by block); block by block, half of it budgets the unspent-output
    /// and address-id caches.
    pub cache_mb: usize,
    /// Blk data per committed batch (per epoch on the bulk path): larger
    /// batches write faster, smaller ones lose less work to a crash.
    pub batch_bytes: u64,
    pub quiet: bool,
    /// Keep address clusters current (see `cluster`).
    pub cluster: bool,
    /// Keep the value-flow graph current (see `flow`).
    pub flow: bool,
    /// Index an empty index in parallel epochs (see `bulk`); off, block by
    /// block, the way a non-empty index grows.
    pub bulk: bool,
    /// Start a new index at this block instead of genesis (a pruned node's
    /// directory, a few raw blocks); its height comes from its coinbase
    /// (BIP34). Later runs continue from where the index starts.
    pub start_at: Option<BlockHash>,
    /// Directory of prevouts files (see `prevouts`) for the coins from
    /// before the start that the blocks spend.
    pub prevouts: Option<PathBuf>,
    /// Headers must carry valid proof of work to join the chain; off only
    /// for generated chains whose proof of work is not real.
    pub check_pow: bool,
    /// Checked between batches: once requested, the run commits what it
    /// has and returns (`Summary::stopped`).
    pub stop: Stop,
}

impl IndexOptions {
    pub fn new(blocks_dir: impl Into<PathBuf>, db: impl Into<PathBuf>) -> IndexOptions {
        IndexOptions {
            blocks_dir: blocks_dir.into(),
            db: db.into(),
            network: None,
            threads: None,
            cache_mb: 2560,
            batch_bytes: 32 << 20,
            quiet: false,
            cluster: true,
            flow: true,
            bulk: true,
            start_at: None,
            prevouts: None,
            check_pow: true,
            stop: Stop::default(),
        }
    }
}

#[derive(Debug, Default)]
pub struct Summary {
    pub network: Option<Network>,
    pub tip_height: Option<u32>,
    pub tip_hash: Option<bitcoin::BlockHash>,
    pub records_found: usize,
    pub blocks_applied: u64,
    pub blocks_undone: u64,
    pub txs: u64,
    pub inputs: u64,
    pub outputs: u64,
    pub stale_blocks: usize,
    pub detached: Vec<Detached>,
    pub notes: Vec<String>,
    pub blk_bytes: u64,
    pub elapsed: Duration,
    /// Of `elapsed`, the time spent bringing clusters up to date.
    pub cluster_elapsed: Duration,
    /// Of `elapsed`, the time spent bringing the flow graph up to date.
    pub flow_elapsed: Duration,
    /// Wall and CPU time per stage, in the order they ran.
    pub stages: Vec<Stage>,
    pub db_bytes: u64,
    /// The run ended early on request (`IndexOptions::stop`), at a batch
    /// boundary; clusters and the flow graph catch up next run.
    pub stopped: bool,
}

impl Summary {
    pub fn mb_per_sec(&self) -> f64 {
        self.blk_bytes as f64 / 1e6 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Indexes what the blocks directory holds that the index does not.
pub fn run(opts: &IndexOptions) -> Result<Summary> {
    Indexer::open(opts.clone())?.run()
}

/// An index open for writing, for one run or, following a node, many.
/// Between runs it keeps the header tree and the writer's caches, so a run
/// that finds one new block reads little more than that block. A run that
/// fails drops both: the next reads the tree again and starts its caches
/// empty. While open it holds the database's write lock.
pub struct Indexer {
    opts: IndexOptions,
    pool: rayon::ThreadPool,
    store: Store,
    /// Kept only after a run that applied the whole best chain.
    tree: Option<HeaderTree>,
    caches: Option<Caches>,
    tails: scan::Tails,
}

/// Records the best chain's tip as `meta::BestHeader`, for readers' lag.
/// It becomes visible with the run's first flush, with the blocks.
fn record_best_header(store: &Store, best: &BestChain) -> Result<()> {
    let Some(last) = best.blocks.last() else {
        return Ok(());
    };
    let point = ChainPoint {
        height: Height(best.base + best.blocks.len() as u32 - 1),
        hash: last.hash,
    };
    if store.meta(meta::BestHeader)? == Some(point) {
        return Ok(());
    }
    let mut batch = store.batch();
    batch.put_meta(meta::BestHeader, &point);
    store.write(batch)
}

impl Indexer {
    pub fn open(opts: IndexOptions) -> Result<Indexer> {
        // A mistyped directory must not leave an empty database behind.
        BlocksDir::open(&opts.blocks_dir)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.threads.unwrap_or(0))
            .thread_name(|i| format!("parse-{i}"))
            .build()
            .context("starting worker threads")?;
        let store = Store::open(&opts.db, Access::Write)?;
        Ok(Indexer {
            opts,
            pool,
            store,
            tree: None,
            caches: None,
            tails: scan::Tails::default(),
        })
    }

    pub fn options(&self) -> &IndexOptions {
        &self.opts
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Progress bars and per-file notes on or off, for the runs to come.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.opts.quiet = quiet;
    }

    /// Scans the blk files for new records, rolls back blocks that left the
    /// best chain and applies the new ones.
    pub fn run(&mut self) -> Result<Summary> {
        // A kept tree means the last run applied all of it: if no record
        // joins it now, there is nothing to do, and nothing is written.
        let settled = self.tree.is_some();
        let mut tree = match self.tree.take() {
            Some(t) => t,
            None => scan::load_tree(&self.store)?,
        };
        let caches = self
            .caches
            .take()
            // Their tables cost about twice the entries they are budgeted
            // for (README, Memory): half of --cache-mb keeps them within it.
            .unwrap_or_else(|| Caches::new(self.opts.cache_mb << 19));
        let mut tails = std::mem::take(&mut self.tails);
        let (summary, caches) = self.run_with(&mut tree, caches, &mut tails, settled)?;
        self.tails = tails;
        if !summary.stopped {
            self.tree = Some(tree);
        }
        self.caches = Some(caches);
        Ok(summary)
    }

    fn run_with(
        &self,
        tree: &mut HeaderTree,
        caches: Caches,
        tails: &mut scan::Tails,
        settled: bool,
    ) -> Result<(Summary, Caches)> {
        let started = Instant::now();
        let (opts, store, pool) = (&self.opts, &self.store, &self.pool);
        let dir = BlocksDir::open(&opts.blocks_dir)?;
        if dir.files.is_empty() {
            bail!("{}: no blk*.dat files", dir.path.display());
        }
        let mut summary = Summary::default();
        let clock = Clock::start();
        let offsets = scan::load_offsets(store, &dir, tree, &mut summary)?;
        let scans = pool.install(|| scan::scan_new(&dir, &offsets.at, tails))?;
        let network = scan::settle_network(store, opts.network, &dir, &scans)?;
        summary.network = Some(network);
        let grew = scan::record_scans(
            store,
            &dir,
            network,
            opts.check_pow,
            &offsets,
            &scans,
            tree,
            &mut summary,
        )?;
        if settled && !grew {
            let tip = store.tip()?;
            summary.tip_height = tip.map(|t| t.height.0);
            summary.tip_hash = tip.map(|t| t.hash);
            summary.elapsed = started.elapsed();
            return Ok((summary, caches));
        }
        let start = scan::settle_start(store, opts.start_at, network, &dir, tree)?;
        let best = tree.best_chain(start.hash, start.height.0)?;
        record_best_header(store, &best)?;
        summary.stale_blocks = best.stale;
        summary.detached = best.detached.clone();
        summary.stages.push(clock.stop("scan"));
        let mut writer = Writer::new(store, caches)?;
        // A bulk run that was killed leaves its address totals to this one.
        let clock = Clock::start();
        if bulk::finish(store, pool, None)? {
            summary.stages.push(clock.stop("address totals"));
        }
        let (clock, at) = (Clock::start(), summary.stages.len());
        // The sets the bulk path's cluster links form, and the height from
        // which the blocks it left to the block-by-block path begin.
        let mut links = None;
        let applied =
            reorg::undo_to_fork(store, &mut writer, &best, &mut summary).and_then(|mut from| {
                if bulk::applies(store, opts)? {
                    let done =
                        bulk::apply_chain(store, &dir, pool, &best, from, opts, &mut summary)?;
                    from = done.next;
                    links = done.links.map(|sets| (sets, Height(from)));
                    if (from - best.base) as usize == best.blocks.len() {
                        return Ok(());
                    }
                    // The bulk maps outgrew their budget: on from its tip,
                    // with its totals built.
                    bulk::finish(store, pool, None)?;
                    writer.reload()?;
                }
                pipeline::apply_chain(
                    store,
                    &mut writer,
                    &dir,
                    pool,
                    &best,
                    from,
                    opts,
                    &mut summary,
                )
            });
        summary.stages.insert(at, clock.stop("index"));
        // A whole cluster build's first passes come before the totals, so
        // that their pass over `history` hands the members' rows on to its
        // last.
        let clock = Clock::start();
        let build = match &applied {
            Ok(()) if opts.cluster && !opts.stop.requested() => {
                pool.install(|| crate::cluster::start_build(store, &mut links, opts.quiet))
            }
            _ => Ok(None),
        };
        let members = clock.stop("cluster members");
        // Whatever was committed before an error is kept, with its totals.
        let clock = Clock::start();
        let waiting = build.as_ref().ok().and_then(Option::as_ref);
        let finished = bulk::finish(store, pool, waiting);
        store.flush()?;
        applied?;
        let build = build?;
        if build.is_some() {
            summary.cluster_elapsed = members.wall;
            summary.stages.push(members);
        }
        if finished? {
            summary.stages.push(clock.stop("address totals"));
        }
        let caches = writer.into_caches();
        // Stopped, the run ends with what it committed; the clusters and
        // the flow graph follow the index in the next run. A cluster build
        // that has begun runs to its end first.
        summary.stopped = opts.stop.requested();
        if opts.cluster && (build.is_some() || !summary.stopped) {
            let clock = Clock::start();
            pool.install(|| match build {
                Some(build) => crate::cluster::finish_build(store, Some(build)),
                None => crate::cluster::update(store, links, opts.quiet),
            })?;
            // Servers see only flushed rows: a follower's clusters must be
            // theirs before the flow graph (written next) shows the blocks.
            store.flush()?;
            let stage = clock.stop("clusters");
            summary.cluster_elapsed += stage.wall;
            summary.stages.push(stage);
        }
        if opts.flow && !summary.stopped {
            let clock = Clock::start();
            crate::flow::update(store, opts.quiet, opts.batch_bytes, &opts.stop)?;
            let stage = clock.stop("flow graph");
            summary.flow_elapsed = stage.wall;
            summary.stages.push(stage);
        }
        // A stop during the flow graph's update left it at a checkpoint.
        summary.stopped |= opts.stop.requested();
        if let Some(tip) = store.tip()? {
            summary.tip_height = Some(tip.height.0);
            summary.tip_hash = Some(tip.hash);
        }
        summary.elapsed = started.elapsed();
        summary.db_bytes = store.size_on_disk();
        Ok((summary, caches))
    }
}
