//! The bulk path: a new index built in epochs of consecutive blocks, each
//! stage on every worker, each row written once, as sorted table files.
//! It produces exactly the rows the block-by-block path (`pipeline`) does.
//!
//! Per epoch (`--batch-mb` of blk data): the pool parses epoch k+1 while
//! this thread resolves epoch k (`epoch`: ids by prefix sums, address ids
//! from `addrs`, inputs from the complete unspent map in `coins`) and a
//! writer thread ingests epoch k-1's rows (`SortedBatch::ingest_all`).
//! The flow graph grows from each epoch in memory (`flow::Appender`), and
//! the clustering heuristics' links are found there too, for the cluster
//! build that follows, which then need not read the rows back.
//! No stage reads the database, and nothing is compacted until the end.
//! The families whose keys fall among every epoch's (`txids`, `addr_ids`,
//! `spends`, `history`) go to sorted run files instead of table files, and
//! are merged once at the end; `addr_utxos` and `addr_stats` are built
//! then too (`totals`), while the `bulk` meta row says these are behind.
//!
//! It runs when the index is empty and starts at genesis; an index that
//! holds blocks grows block by block. Its maps hold every address and
//! every unspent output. When they outgrow `--cache-mb`, each that is a
//! good part of it goes to disk (`frozen`) and starts again; the budget
//! then holds the maps and the generations' fences (0.13 B a key on disk),
//! while their filters (1.25 B a key) live in the page cache. Only when
//! what the budget holds still outgrows it (a budget of a few MB) does the
//! bulk path stop after the epoch, and the run go on block by block. A bulk
//! run that is killed is finished by the next run: its rows above the tip
//! are removed (`recover`), its totals built, and the rest indexed block
//! by block.

mod addrs;
mod coins;
mod epoch;
mod frozen;
mod ordered;
mod totals;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use satflow_schema::{meta, Height, NextIds};

pub(super) use totals::finish;

use super::pipeline::{parse_ahead, split_by_bytes, Committed};
use super::{IndexOptions, Stage, Summary};
use crate::blkfiles::BlocksDir;
use crate::chain::{BestChain, Node};
use crate::cluster::{self, UnionFind};
use crate::flow;
use crate::parse::ParsedBlock;
use crate::progress::Progress;
use crate::store::{Landing, SortedBatch, Store};

/// Whether this run takes the bulk path: it is allowed, and the index is
/// empty and starts at genesis (no `--start-at`, no prevouts files).
pub(super) fn applies(store: &Store, opts: &IndexOptions) -> Result<bool> {
    Ok(opts.bulk
        && store.tip()?.is_none()
        && store.start()?.is_none()
        && opts.start_at.is_none()
        && opts.prevouts.is_none())
}

/// How far a bulk run got.
pub(super) struct Done {
    /// The height to go on from block by block: past the tip, unless the
    /// maps outgrew their budget first.
    pub next: u32,
    /// When clusters are kept: the sets the heuristics' links form in the
    /// blocks below `next`, for the cluster build.
    pub links: Option<UnionFind>,
}

/// Indexes the chain from height `from` into an empty index.
pub(super) fn apply_chain(
    store: &Store,
    dir: &BlocksDir,
    pool: &rayon::ThreadPool,
    chain: &BestChain,
    from: u32,
    opts: &IndexOptions,
    summary: &mut Summary,
) -> Result<Done> {
    let blocks = &chain.blocks[(from - chain.base) as usize..];
    if blocks.is_empty() {
        return Ok(Done {
            next: from,
            links: None,
        });
    }
    let budget = opts.cache_mb << 20;
    // Durable before the first table file is.
    let mut batch = store.batch();
    batch.put_meta(meta::Bulk, &());
    store.write(batch)?;
    store.flush()?;
    for family in totals::compacted() {
        store.pause_compactions(family, true)?;
    }
    let total: u64 = blocks.iter().map(|n| u64::from(n.loc.len)).sum();
    let mut progress = Progress::new(total, opts.quiet);
    let batches = split_by_bytes(blocks, opts.batch_bytes.max(1));
    let (mut addrs, mut coins) = (
        addrs::AddrMap::new(store.path()),
        coins::Coins::new(store.path()),
    );
    // From here on no txid repeats while an earlier output of it is
    // unspent: the unspent-output map may go to disk (see `coins`).
    let bip34 = summary.network.map_or(u32::MAX, |n| n.bip34_height());
    // Appended from each epoch in memory and checkpointed an epoch behind
    // (in `epoch`): a run that fails leaves the next to go on from there.
    let mut graph = opts
        .flow
        .then(|| flow::Appender::create(store))
        .transpose()?;
    let heuristics = opts
        .cluster
        .then(|| cluster::heuristics_in_force(store))
        .transpose()?;
    // In a scratch file the page cache holds, outside the budget: the
    // cluster build goes on with it.
    let mut links = UnionFind::new(store.path(), 0)?;
    // The epochs' rows, with the height each ends at.
    let (write_tx, write_rx) = crossbeam_channel::bounded::<(SortedBatch, Committed, u32)>(1);
    // Each epoch's batch comes back empty, for a later epoch to fill.
    type Ingested = (Committed, Duration, SortedBatch);
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Result<Ingested>>();
    let mut epoch_batches = epoch::Batches::default();
    let (mut parse_busy, mut resolve_busy, mut ingest_busy) = Default::default();
    let mut notes = Vec::new();
    let next = std::thread::scope(|s| {
        let parsed_rx = parse_ahead(s, pool, dir, &batches, None);
        std::thread::Builder::new()
            .name("ingest".into())
            .spawn_scoped(s, move || {
                for (mut batch, done, last) in write_rx {
                    let started = Instant::now();
                    let landing = |family: &str| match totals::IN_RUNS.contains(&family) {
                        true => Landing::Run(last),
                        false => Landing::Compacted,
                    };
                    let written = pool
                        .install(|| batch.ingest_all(store, landing))
                        .map(|()| (done, started.elapsed(), batch));
                    let failed = written.is_err();
                    if ack_tx.send(written).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the ingest thread");
        let mut await_write = || -> Result<SortedBatch> {
            let (done, took, emptied) = ack_rx
                .recv()
                .map_err(|_| anyhow!("the ingest thread stopped"))??;
            ingest_busy += took;
            done.count(summary, &mut progress);
            Ok(emptied)
        };
        let result = (|| -> Result<u32> {
            let (mut height, mut ids) = (Height(from), NextIds::default());
            let (mut in_flight, mut failed, mut full) = (0, None, false);
            // Addresses and unspent outputs written to disk.
            let mut frozen = (0, 0);
            for (parsed, took) in parsed_rx.iter() {
                if opts.stop.requested() {
                    break;
                }
                parse_busy += took;
                let mut ok: Vec<(Node, ParsedBlock)> = Vec::with_capacity(parsed.len());
                for item in parsed {
                    match item {
                        Ok((node, block, _)) => ok.push((node, block)),
                        Err(e) => failed = Some(e),
                    }
                }
                if !ok.is_empty() {
                    let started = Instant::now();
                    let derived = epoch::Derived {
                        graph: graph.as_mut(),
                        heuristics,
                    };
                    let mut epoch = pool.install(|| {
                        epoch::build(
                            &ok,
                            height,
                            ids,
                            &mut addrs,
                            &mut coins,
                            &mut epoch_batches,
                            derived,
                        )
                    })?;
                    resolve_busy += started.elapsed();
                    if heuristics.is_some() {
                        links.grow(epoch.next.addr.0)?;
                        for (a, b) in epoch.links.drain(..) {
                            links.union(a.0, b.0);
                        }
                    }
                    height = Height(height.0 + ok.len() as u32);
                    // Over budget: a map that is a good part of it goes to
                    // disk, the address map (mainnet's largest by far)
                    // first.
                    let (started, before) = (Instant::now(), frozen);
                    let held = |a: &addrs::AddrMap, c: &coins::Coins| a.bytes() + c.bytes();
                    if held(&addrs, &coins) > budget && addrs.map_bytes() > budget / 4 {
                        frozen.0 += addrs.freeze(epoch.next.addr)?;
                    }
                    if held(&addrs, &coins) > budget
                        && coins.map_bytes() > budget / 4
                        && height.0 >= bip34
                    {
                        frozen.1 += coins.freeze()?;
                    }
                    if frozen != before {
                        tracing::info!(
                            "maps written out in {:.1?}: {} generations of addresses, {} of unspent outputs ({} not spent yet) on disk; their filters {} MiB, in the page cache",
                            started.elapsed(),
                            addrs.generations(),
                            coins.generations(),
                            coins.on_disk(),
                            (addrs.filter_bytes() + coins.filter_bytes()) >> 20
                        );
                        resolve_busy += started.elapsed();
                    }
                    full = held(&addrs, &coins) > budget;
                    ids = epoch.next;
                    write_tx
                        .send((epoch.batch, epoch.done, height.0 - 1))
                        .map_err(|_| anyhow!("the ingest thread stopped"))?;
                    in_flight += 1;
                }
                // Keep one epoch ingesting while the next is resolved.
                while in_flight > 1 {
                    epoch_batches.give_back(await_write()?);
                    in_flight -= 1;
                }
                if failed.is_some() || full {
                    break;
                }
            }
            drop(write_tx);
            for _ in 0..in_flight {
                await_write()?;
            }
            if frozen != (0, 0) {
                let unspent = match frozen.1 {
                    0 => String::new(),
                    _ => format!(" ({} of them not spent by the end)", coins.on_disk()),
                };
                notes.push(format!(
                    "maps written to disk to stay within --cache-mb {}: {} addresses and {} unspent outputs{unspent}, now in {} and {} generations",
                    opts.cache_mb,
                    frozen.0,
                    frozen.1,
                    addrs.generations(),
                    coins.generations()
                ));
            }
            if full {
                let note = format!(
                    "the bulk path's maps ({} addresses, {} unspent outputs in memory) outgrew --cache-mb {}: indexing on block by block from height {height}",
                    ids.addr.0,
                    coins.len(),
                    opts.cache_mb
                );
                tracing::warn!("{note}");
                notes.push(note);
            }
            failed.map_or(Ok(height.0), Err)
        })();
        drop(parsed_rx); // stops the parser if we failed or stopped early
        progress.finish();
        result
    })?;
    drop(epoch_batches);
    give_back_freed_memory();
    if let Some(graph) = graph {
        graph.finish()?;
    }
    summary.notes.extend(notes);
    summary.stages.extend([
        Stage::busy("parse", parse_busy),
        Stage::busy("resolve", resolve_busy),
        Stage::busy("ingest", ingest_busy),
    ]);
    Ok(Done {
        next,
        links: opts.cluster.then_some(links),
    })
}

/// Returns the heap's free pages to the system. The epochs' batches were
/// kept from epoch to epoch by the workers that filled them; freed, their
/// memory would otherwise stay in those threads' heaps (glibc gives back
/// only the top of a heap), resident under the end of the run.
fn give_back_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
