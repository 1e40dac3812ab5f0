//! A `satflow index` run: scan the blk files for new records, choose the
//! best chain, roll back blocks that left it, then parse the new blocks in
//! parallel and apply them in height order. `Indexer` keeps what one run
//! learnt for the next, for a follower.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rayon::prelude::*;
use rocksdb::{IteratorMode, WriteBatch};

use crate::batch::SortedBatch;
use crate::blkfiles::{scan_file, BlocksDir, FileScan, ScanNote};
use crate::chain::{BestChain, Detached, HeaderTree, Node};
use crate::network::Network;
use crate::parse::{parse_block, ParsedBlock};
use crate::prevouts::{self, Prevouts};
use crate::progress::Progress;
use crate::schema::{cf, decode_block_index, encode_block_index, meta, Dec};
use crate::store::{Access, Store};
use crate::writer::{Caches, Writer};

#[derive(Clone, Debug)]
pub struct IndexOptions {
    pub blocks_dir: PathBuf,
    pub db: PathBuf,
    /// Checked against the magic bytes when given.
    pub network: Option<Network>,
    pub threads: Option<usize>,
    /// Memory for the unspent-output and address-id caches.
    pub cache_mb: usize,
    /// Blk data per committed batch: larger batches write faster, smaller
    /// ones lose less work to a crash.
    pub batch_bytes: u64,
    pub quiet: bool,
    /// Keep address clusters current (see `cluster`).
    pub cluster: bool,
    /// Keep the value-flow graph current (see `flow`).
    pub flow: bool,
    /// Start a new index at this block instead of genesis (a pruned node's
    /// directory, a few raw blocks); its height comes from its coinbase
    /// (BIP34). Later runs continue from where the index starts.
    pub start_at: Option<BlockHash>,
    /// Directory of prevouts files (see `prevouts`) for the coins from
    /// before the start that the blocks spend.
    pub prevouts: Option<PathBuf>,
}

impl IndexOptions {
    pub fn new(blocks_dir: impl Into<PathBuf>, db: impl Into<PathBuf>) -> IndexOptions {
        IndexOptions {
            blocks_dir: blocks_dir.into(),
            db: db.into(),
            network: None,
            threads: None,
            cache_mb: 1024,
            batch_bytes: 32 << 20,
            quiet: false,
            cluster: true,
            flow: true,
            start_at: None,
            prevouts: None,
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
    pub db_bytes: u64,
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
    tree: Option<HeaderTree>,
    caches: Option<Caches>,
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
        })
    }

    pub fn options(&self) -> &IndexOptions {
        &self.opts
    }

    /// Progress bars and per-file notes on or off, for the runs to come.
    pub fn set_quiet(&mut self, quiet: bool) {
        self.opts.quiet = quiet;
    }

    /// Scans the blk files for new records, rolls back blocks that left the
    /// best chain and applies the new ones.
    pub fn run(&mut self) -> Result<Summary> {
        let mut tree = match self.tree.take() {
            Some(t) => t,
            None => load_tree(&self.store)?,
        };
        let caches = self
            .caches
            .take()
            .unwrap_or_else(|| Caches::new(self.opts.cache_mb << 20));
        let (summary, caches) = self.run_with(&mut tree, caches)?;
        self.tree = Some(tree);
        self.caches = Some(caches);
        Ok(summary)
    }

    fn run_with(&self, tree: &mut HeaderTree, caches: Caches) -> Result<(Summary, Caches)> {
        let started = Instant::now();
        let (opts, store, pool) = (&self.opts, &self.store, &self.pool);
        let dir = BlocksDir::open(&opts.blocks_dir)?;
        if dir.files.is_empty() {
            bail!("{}: no blk*.dat files", dir.path.display());
        }
        let mut summary = Summary::default();
        let offsets = load_offsets(store)?;
        let scans = pool.install(|| {
            dir.files
                .par_iter()
                .map(|f| {
                    let start = offsets.get(&f.number).copied().unwrap_or(0);
                    if f.len() < start {
                        bail!(
                            "{} is {} bytes, shorter than the {start} bytes already indexed: the blocks directory was rewritten; index it into a new --db",
                            f.path.display(),
                            f.len()
                        );
                    }
                    scan_file(f, dir.key, start)
                })
                .collect::<Result<Vec<FileScan>>>()
        })?;
        let network = settle_network(store, opts.network, &dir, &scans)?;
        summary.network = Some(network);
        record_scans(store, &dir, network, &scans, tree, &mut summary)?;

        let (base, root) = settle_start(store, opts.start_at, network, &dir, tree)?;
        let best = tree.best_chain(root, base)?;
        summary.stale_blocks = best.stale;
        summary.detached = best.detached.clone();
        let mut writer = Writer::new(store, caches)?;
        let applied = undo_to_fork(store, &mut writer, &best, &mut summary).and_then(|from| {
            apply_chain(
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
        // Whatever was committed before an error is kept: flush it either way.
        store.flush()?;
        applied?;
        let caches = writer.into_caches();
        if opts.cluster {
            let t = Instant::now();
            crate::cluster::update(store, opts.quiet)?;
            // Servers see only flushed rows: a follower's clusters must be
            // theirs before the flow graph (written next) shows the blocks.
            store.flush()?;
            summary.cluster_elapsed = t.elapsed();
        }
        if opts.flow {
            let t = Instant::now();
            crate::flow::update(store, opts.quiet)?;
            summary.flow_elapsed = t.elapsed();
        }
        if let Some((h, hash)) = store.tip()? {
            summary.tip_height = Some(h);
            summary.tip_hash = Some(hash);
        }
        summary.elapsed = started.elapsed();
        summary.db_bytes = store.size_on_disk();
        Ok((summary, caches))
    }
}

/// Headers of every record seen by earlier runs.
fn load_tree(store: &Store) -> Result<HeaderTree> {
    let mut tree = HeaderTree::default();
    for item in store
        .db()
        .iterator_cf(store.cf(cf::BLOCK_INDEX), IteratorMode::Start)
    {
        let (_, v) = item.context("reading block_index")?;
        let (header, loc) = decode_block_index(&v)?;
        tree.insert(header, loc);
    }
    Ok(tree)
}

/// Where each file's next scan starts.
fn load_offsets(store: &Store) -> Result<BTreeMap<u32, u64>> {
    let mut offsets = BTreeMap::new();
    for item in store
        .db()
        .prefix_iterator_cf(store.cf(cf::META), meta::SCAN_PREFIX)
    {
        let (k, v) = item.context("reading scan offsets")?;
        let Some(file) = k.strip_prefix(meta::SCAN_PREFIX) else {
            break;
        };
        offsets.insert(
            Dec::new("scan key", file).u32()?,
            Dec::new("scan offset", &v).u64()?,
        );
    }
    Ok(offsets)
}

/// The one network of the directory, the DB and the command line.
fn settle_network(
    store: &Store,
    wanted: Option<Network>,
    dir: &BlocksDir,
    scans: &[FileScan],
) -> Result<Network> {
    let mut found: Option<(Network, String)> = store
        .network()?
        .map(|n| (n, format!("the index at {}", store.path().display())));
    for (file, scan) in dir.files.iter().zip(scans) {
        let Some(n) = scan.network else { continue };
        match &found {
            Some((seen, source)) if *seen != n => {
                bail!("{} holds {n} blocks but {source} is {seen}: one network per blocks directory and index", file.path.display())
            }
            Some(_) => {}
            None => found = Some((n, file.path.display().to_string())),
        }
    }
    match (found, wanted) {
        (Some((n, source)), Some(w)) if n != w => {
            bail!("--network {w} was given but {source} is {n}")
        }
        (Some((n, _)), _) => Ok(n),
        (None, _) => bail!(
            "{}: no block records found in the blk files",
            dir.path.display()
        ),
    }
}

/// Adds the newly found records to the header tree and commits them with
/// the new scan offsets, before any block is applied.
fn record_scans(
    store: &Store,
    dir: &BlocksDir,
    network: Network,
    scans: &[FileScan],
    tree: &mut HeaderTree,
    summary: &mut Summary,
) -> Result<()> {
    let mut batch = WriteBatch::default();
    batch.put_cf(store.cf(cf::META), meta::NETWORK, network.name());
    batch.put_cf(store.cf(cf::META), meta::XOR_KEY, dir.key.0);
    let path = std::fs::canonicalize(&dir.path).unwrap_or_else(|_| dir.path.clone());
    batch.put_cf(
        store.cf(cf::META),
        meta::BLOCKS_DIR,
        path.into_os_string().into_vec(),
    );
    for (file, scan) in dir.files.iter().zip(scans) {
        for note in &scan.notes {
            if matches!(note, ScanNote::Garbage { .. }) {
                tracing::warn!("{note}");
            } else {
                tracing::info!("{note}");
            }
            summary.notes.push(note.to_string());
        }
        for record in &scan.records {
            let header: bitcoin::block::Header =
                deserialize(&record.header).expect("80 bytes decode as a header");
            summary.records_found += 1;
            if tree.insert(header, record.loc) {
                batch.put_cf(
                    store.cf(cf::BLOCK_INDEX),
                    header.block_hash().as_byte_array(),
                    encode_block_index(&header, &record.loc),
                );
            }
        }
        let mut key = meta::SCAN_PREFIX.to_vec();
        key.extend_from_slice(&file.number.to_be_bytes());
        batch.put_cf(store.cf(cf::META), key, scan.resume_at.to_be_bytes());
    }
    store.write(batch)?;
    store.flush()
}

/// Where the chain starts: (height, hash) of genesis, or of the block an
/// index that starts later was started at (recorded in meta by its first
/// run).
fn settle_start(
    store: &Store,
    wanted: Option<BlockHash>,
    network: Network,
    dir: &BlocksDir,
    tree: &HeaderTree,
) -> Result<(u32, BlockHash)> {
    let genesis = network.genesis_hash();
    let recorded = store.start()?;
    let current = recorded.unwrap_or((0, genesis));
    let Some(wanted) = wanted.filter(|&w| w != current.1) else {
        if recorded.is_none() && tree.get(&genesis).is_none() {
            bail!(
                "the {network} genesis block {genesis} is not in {}: to index a directory that begins later (a pruned node, a few raw blocks), give --start-at <hash of the block to start at>",
                dir.path.display()
            );
        }
        return Ok(current);
    };
    if recorded.is_some() || store.tip()?.is_some() {
        bail!(
            "the index at {} starts at block {} (height {}), not {wanted}: index into a new --db",
            store.path().display(),
            current.1,
            current.0
        );
    }
    if wanted == genesis {
        return Ok(current);
    }
    let node = tree
        .get(&wanted)
        .with_context(|| format!("--start-at {wanted}: no such block in the blocks directory"))?;
    let block: bitcoin::Block = deserialize(&read_raw(dir, node)?)
        .with_context(|| format!("--start-at {wanted}: the block does not decode"))?;
    let height = block.bip34_block_height().map_err(|e| {
        anyhow!("--start-at {wanted}: its height cannot be read from its coinbase (BIP34): {e}")
    })?;
    let height = u32::try_from(height)
        .with_context(|| format!("--start-at {wanted}: coinbase height {height} is too large"))?;
    if height < network.bip34_height() {
        // Before BIP34 a coinbase may begin with any number: not a height.
        bail!(
            "--start-at {wanted}: its coinbase says height {height}, below {network}'s BIP34 height {}, from which on coinbases must hold their height; start at a later block",
            network.bip34_height()
        );
    }
    let mut v = height.to_be_bytes().to_vec();
    v.extend_from_slice(wanted.as_byte_array());
    let mut batch = WriteBatch::default();
    batch.put_cf(store.cf(cf::META), meta::START, v);
    store.write(batch)?;
    tracing::info!("starting a new index at block {wanted}, height {height}");
    Ok((height, wanted))
}

/// Rolls back indexed blocks that are not on the best chain; returns the
/// height of the first block to apply.
fn undo_to_fork(
    store: &Store,
    writer: &mut Writer,
    best: &BestChain,
    summary: &mut Summary,
) -> Result<u32> {
    let Some((tip, _)) = store.tip()? else {
        return Ok(best.base);
    };
    let fork = fork_height(store, best, tip)?;
    let first_gone = fork.map_or(best.base, |f| f + 1);
    if first_gone > tip {
        return Ok(first_gone);
    }
    // The clusters learn what is leaving while its rows are still there.
    crate::cluster::forget_above(store, fork)?;
    for height in (first_gone..=tip).rev() {
        let hash = store
            .block(height)?
            .with_context(|| format!("block row at height {height} is missing"))?
            .hash;
        tracing::info!("rolling back block {hash} at height {height}: no longer on the best chain");
        let mut batch = SortedBatch::default();
        writer.undo_tip(&mut batch)?;
        batch.commit(store)?;
        summary.blocks_undone += 1;
    }
    // The undone rows' deletions must not wait in a memtable: ingesting
    // new rows over them would make RocksDB flush that family alone,
    // persisting it apart from the tip.
    store.flush()?;
    Ok(first_gone)
}

/// The highest indexed height still on the best chain; None if even the
/// index's first block is not.
fn fork_height(store: &Store, best: &BestChain, tip: u32) -> Result<Option<u32>> {
    for height in (best.base..=tip).rev() {
        let row = store
            .block(height)?
            .with_context(|| format!("block row at height {height} is missing"))?;
        if best
            .blocks
            .get((height - best.base) as usize)
            .map(|n| n.hash)
            == Some(row.hash)
        {
            return Ok(Some(height));
        }
    }
    Ok(None)
}

/// Three stages, bounded channels between them: the pool parses the chain
/// from height `from` a batch ahead; this thread applies blocks in height
/// order into a batch; a writer thread sorts and commits the previous batch
/// meanwhile.
#[allow(clippy::too_many_arguments)]
fn apply_chain(
    store: &Store,
    writer: &mut Writer,
    dir: &BlocksDir,
    pool: &rayon::ThreadPool,
    chain: &BestChain,
    from: u32,
    opts: &IndexOptions,
    summary: &mut Summary,
) -> Result<()> {
    let blocks = &chain.blocks[(from - chain.base) as usize..];
    let total: u64 = blocks.iter().map(|n| u64::from(n.loc.len)).sum();
    let mut progress = Progress::new(total, opts.quiet);
    let batches = split_by_bytes(blocks, opts.batch_bytes.max(1));
    type Parsed = (ParsedBlock, Option<Prevouts>);
    let (parsed_tx, parsed_rx) = crossbeam_channel::bounded::<Result<Vec<Parsed>>>(2);
    let (commit_tx, commit_rx) = crossbeam_channel::bounded::<(SortedBatch, Committed)>(1);
    // A committed batch comes back empty, its allocations reused.
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Result<(Committed, SortedBatch)>>();
    std::thread::scope(|s| {
        s.spawn(|| {
            for batch in &batches {
                let parsed = pool.install(|| {
                    batch
                        .par_iter()
                        .map(|n| {
                            let prevouts = match &opts.prevouts {
                                Some(d) => prevouts::load(d, &n.hash)?,
                                None => None,
                            };
                            Ok((read_block(dir, n)?, prevouts))
                        })
                        .collect::<Result<Vec<_>>>()
                });
                let failed = parsed.is_err();
                if parsed_tx.send(parsed).is_err() || failed {
                    break;
                }
            }
        });
        std::thread::Builder::new()
            .name("commit".into())
            .spawn_scoped(s, move || {
                for (mut batch, done) in commit_rx {
                    let written = batch.commit(store).map(|()| (done, batch));
                    let failed = written.is_err();
                    if ack_tx.send(written).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the commit thread");
        let mut height = from;
        let mut in_flight = 0;
        let mut spare = None;
        // Waits for the oldest batch in flight to be committed.
        let mut await_commit = |writer: &mut Writer| -> Result<SortedBatch> {
            let (done, batch) = ack_rx
                .recv()
                .map_err(|_| anyhow!("the commit thread stopped"))??;
            // Whatever the caches forget now can be read back from the DB.
            writer.committed();
            summary.blocks_applied += done.blocks;
            summary.blk_bytes += done.bytes;
            progress.advance(done.blocks, done.bytes, done.tip);
            Ok(batch)
        };
        let result = (|| -> Result<()> {
            for (nodes, parsed) in batches.iter().zip(parsed_rx.iter()) {
                let parsed = parsed?;
                let mut batch: SortedBatch = spare.take().unwrap_or_default();
                let mut bytes = 0;
                for (node, (block, prevouts)) in nodes.iter().zip(&parsed) {
                    writer.apply(&mut batch, height, node.loc, block, prevouts.as_ref())?;
                    summary.txs += block.txs.len() as u64;
                    summary.inputs += block.txs.iter().map(|t| t.spends.len() as u64).sum::<u64>();
                    summary.outputs += block
                        .txs
                        .iter()
                        .map(|t| t.outputs.len() as u64)
                        .sum::<u64>();
                    bytes += u64::from(node.loc.len);
                    height += 1;
                }
                writer.finish_batch(&mut batch);
                let done = Committed {
                    blocks: nodes.len() as u64,
                    bytes,
                    tip: height - 1,
                };
                commit_tx
                    .send((batch, done))
                    .map_err(|_| anyhow!("the commit thread stopped"))?;
                in_flight += 1;
                // Keep one batch committing while the next is applied.
                while in_flight > 1 {
                    spare = Some(await_commit(writer)?);
                    in_flight -= 1;
                }
            }
            drop(commit_tx);
            for _ in 0..in_flight {
                await_commit(writer)?;
            }
            Ok(())
        })();
        drop(parsed_rx); // stops the parser if we failed early
        progress.finish();
        result
    })
}

/// What a committed batch brought.
struct Committed {
    blocks: u64,
    bytes: u64,
    tip: u32,
}

/// Consecutive runs of blocks of about `max_bytes` of blk data each.
fn split_by_bytes(blocks: &[Node], max_bytes: u64) -> Vec<&[Node]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, n) in blocks.iter().enumerate() {
        bytes += u64::from(n.loc.len);
        if bytes >= max_bytes {
            out.push(&blocks[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < blocks.len() {
        out.push(&blocks[start..]);
    }
    out
}

fn read_raw<'d>(dir: &'d BlocksDir, node: &Node) -> Result<Cow<'d, [u8]>> {
    let file = dir
        .file(node.loc.file)
        .ok_or_else(|| anyhow!("blk file {} has disappeared", node.loc.file))?;
    file.read(dir.key, node.loc.offset, node.loc.len as usize)
}

fn read_block(dir: &BlocksDir, node: &Node) -> Result<ParsedBlock> {
    let bytes = read_raw(dir, node)?;
    let file = dir.file(node.loc.file).expect("read_raw found it");
    parse_block(&bytes).map_err(|e| {
        anyhow!(
            "{}: corrupt block {} at offset {}: {e}",
            file.path.display(),
            node.hash,
            node.loc.offset + e.offset as u64
        )
    })
}
