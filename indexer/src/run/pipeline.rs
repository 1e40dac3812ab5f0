//! Applying the new part of the best chain: parse, apply and commit as a
//! pipeline of threads with bounded channels between them.

use anyhow::{anyhow, Result};
use rayon::prelude::*;
use satflow_schema::Height;

use super::scan::read_raw;
use super::{IndexOptions, Summary};
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
                    writer.apply(
                        &mut batch,
                        Height(height),
                        node.loc,
                        block,
                        prevouts.as_ref(),
                    )?;
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
