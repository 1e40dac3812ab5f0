//! Applying the new part of the best chain: parse, apply and commit as a
//! pipeline of threads with bounded channels between them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rayon::prelude::*;
use satflow_schema::Height;

use super::scan::read_raw;
use super::stretches::Stretches;
use super::{IndexOptions, Stage, Summary};
use crate::blkfiles::BlocksDir;
use crate::chain::{BestChain, Node};
use crate::parse::{parse_block, ParsedBlock};
use crate::prevouts::{self, Prevouts};
use crate::progress::Progress;
use crate::store::{SortedBatch, Store};
use crate::writer::Writer;

/// Three stages, bounded channels between them: the pool parses the chain
/// from height `from` a batch ahead; this thread applies blocks in height
/// order into a batch; a writer thread sorts and commits the previous batch
/// meanwhile.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_chain(
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
    let (commit_tx, commit_rx) = crossbeam_channel::bounded::<(SortedBatch, Committed)>(1);
    // A committed batch comes back empty, its allocations reused.
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Result<(Committed, SortedBatch)>>();
    std::thread::scope(|s| {
        let parsed_rx = parse_ahead(s, pool, dir, &batches, opts.prevouts.as_deref());
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
        let mut parse_busy = Duration::ZERO;
        // Waits for the oldest batch in flight to be committed.
        let mut await_commit = |writer: &mut Writer| -> Result<SortedBatch> {
            let (done, batch) = ack_rx
                .recv()
                .map_err(|_| anyhow!("the commit thread stopped"))??;
            // Whatever the caches forget now can be read back from the DB.
            writer.committed();
            done.count(summary, &mut progress);
            Ok(batch)
        };
        let result = (|| -> Result<()> {
            let mut failed = None;
            for (parsed, took) in parsed_rx.iter() {
                if opts.stop.requested() {
                    break;
                }
                parse_busy += took;
                let mut batch: SortedBatch = spare.take().unwrap_or_default();
                let mut done = Committed::default();
                for item in parsed {
                    let (node, block, prevouts) = match item {
                        Ok(p) => p,
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    };
                    writer.apply(
                        &mut batch,
                        Height(height),
                        node.loc,
                        &block,
                        prevouts.as_ref(),
                    )?;
                    done.add(height, &node, &block);
                    height += 1;
                }
                if done.blocks > 0 {
                    writer.finish_batch(&mut batch);
                    commit_tx
                        .send((batch, done))
                        .map_err(|_| anyhow!("the commit thread stopped"))?;
                    in_flight += 1;
                }
                // Keep one batch committing while the next is applied.
                while in_flight > 1 {
                    spare = Some(await_commit(writer)?);
                    in_flight -= 1;
                }
                if failed.is_some() {
                    break;
                }
            }
            drop(commit_tx);
            for _ in 0..in_flight {
                await_commit(writer)?;
            }
            failed.map_or(Ok(()), Err)
        })();
        drop(parsed_rx); // stops the parser if we failed early
        progress.finish();
        summary.stages.push(Stage::busy("parse", parse_busy));
        result
    })
}

/// A block as the parser hands it on: where it lies, its contents, and
/// the coins from before the index's start it spends, when described.
pub(super) type Parsed = (Node, ParsedBlock, Option<Prevouts>);

/// Parses `batches` on the pool, one batch ahead of the receiver. Each
/// batch comes as its blocks in order, up to the first that failed to read
/// or parse (whose error ends the batch and the stream, so that the blocks
/// before it can still be indexed), with the time parsing it took.
pub(super) fn parse_ahead<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    pool: &'env rayon::ThreadPool,
    dir: &'env BlocksDir,
    batches: &'env [&'env [Node]],
    prevouts: Option<&'env Path>,
) -> crossbeam_channel::Receiver<(Vec<Result<Parsed>>, Duration)> {
    let (parsed_tx, parsed_rx) = crossbeam_channel::bounded(1);
    s.spawn(move || {
        for batch in batches {
            let started = Instant::now();
            let bytes = Stretches::read(dir, batch);
            let mut parsed: Vec<Result<Parsed>> = pool.install(|| {
                batch
                    .par_iter()
                    .map(|n| {
                        let given = match prevouts {
                            Some(d) => prevouts::load(d, &n.hash)?,
                            None => None,
                        };
                        let (n, block) = read_block(dir, &bytes, n)?;
                        Ok((n, block, given))
                    })
                    .collect()
            });
            let failed = parsed.iter().position(|p| p.is_err());
            if let Some(i) = failed {
                parsed.truncate(i + 1);
            }
            if parsed_tx.send((parsed, started.elapsed())).is_err() || failed.is_some() {
                break;
            }
        }
    });
    parsed_rx
}

/// What a batch brought, counted once it is committed.
#[derive(Default)]
pub(super) struct Committed {
    blocks: u64,
    bytes: u64,
    tip: u32,
    txs: u64,
    inputs: u64,
    outputs: u64,
}

impl Committed {
    pub(super) fn add(&mut self, height: u32, node: &Node, block: &ParsedBlock) {
        self.blocks += 1;
        self.bytes += u64::from(node.loc.len);
        self.tip = height;
        self.txs += block.txs.len() as u64;
        self.inputs += block.txs.iter().map(|t| t.spends.len() as u64).sum::<u64>();
        self.outputs += block
            .txs
            .iter()
            .map(|t| t.outputs.len() as u64)
            .sum::<u64>();
    }

    pub(super) fn count(&self, summary: &mut Summary, progress: &mut Progress) {
        summary.blocks_applied += self.blocks;
        summary.blk_bytes += self.bytes;
        summary.txs += self.txs;
        summary.inputs += self.inputs;
        summary.outputs += self.outputs;
        progress.advance(self.blocks, self.bytes, self.tip);
    }
}

/// Consecutive runs of blocks of about `max_bytes` of blk data each.
pub(super) fn split_by_bytes(blocks: &[Node], max_bytes: u64) -> Vec<&[Node]> {
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

/// The block `node` names, from the first of its records that reads,
/// parses and hashes to it (from `read` where it holds the record);
/// `node` comes back pointing at that record. A block none of whose
/// records does is an error naming each.
fn read_block(dir: &BlocksDir, read: &Stretches, node: &Node) -> Result<(Node, ParsedBlock)> {
    let mut errors = Vec::new();
    for loc in node.locs() {
        let copy = Node {
            loc,
            ..node.clone()
        };
        match parse_record(dir, read.get(loc), &copy) {
            Ok(block) => return Ok((copy, block)),
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == 1 {
        return Err(errors.remove(0));
    }
    let each: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
    bail!(
        "none of the {} records of block {} is whole: {}",
        each.len(),
        node.hash,
        each.join("; ")
    )
}

fn parse_record(dir: &BlocksDir, read: Option<&[u8]>, node: &Node) -> Result<ParsedBlock> {
    let own;
    let bytes = match read {
        Some(b) => b,
        None => {
            own = read_raw(dir, node)?;
            &own
        }
    };
    let file = dir
        .file(node.loc.file)
        .ok_or_else(|| anyhow!("blk file {} has disappeared", node.loc.file))?;
    let block = parse_block(bytes).map_err(|e| {
        anyhow!(
            "{}: corrupt block {} at offset {}: {e}",
            file.path.display(),
            node.hash,
            node.loc.offset + e.offset as u64
        )
    })?;
    // The header was read once by the scan and now again: a file that
    // changed in between must not pass another block off as this one.
    if block.hash != node.hash {
        bail!(
            "{}: the record at offset {} now holds block {}, not {}",
            file.path.display(),
            node.loc.offset,
            block.hash,
            node.hash
        );
    }
    Ok(block)
}
