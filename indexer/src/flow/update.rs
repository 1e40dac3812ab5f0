//! Keeps the flow graph equal to the index: appends the blocks the index
//! gained, first undoing those a reorg removed (`update`), or, on the bulk
//! path, each epoch as it is built (`Appender`).
//!
//! Crash safety, a batch at a time. Entries appended past the tip are
//! invisible to readers, and the next run appends over them. Only two
//! writes touch words below the tip: an input marking the output it
//! spends, and a reorg unmarking the outputs its removed inputs spent.
//! Both are journalled first, in `dirty` (the output numbers, u64 LE,
//! replaced by rename and synced):
//! - `input` only records the mark; `Appender::checkpoint` journals the
//!   recorded outputs (when there are any), marks them, syncs the arrays
//!   and then writes the tip (by rename). `update` checkpoints every
//!   `batch_bytes` of blk data, the bulk path an epoch behind each epoch
//!   (`Appender::checkpoint_behind`). The bulk path's inputs record no
//!   mark (`Appender::room`): `set_spenders` marks them all from `spends`
//!   at the run's end, each word naming a tx below the tip.
//! - `undo_to_fork` journals the outputs to unmark, lowers the tip, then
//!   unmarks them and syncs.
//!
//! A spender word below the tip that names a tx at or past the tip is
//! thus always a write the tip does not cover, and every such word is in
//! the journal. The next run resets those to unspent (`recover`) and goes
//! on from the tip: a kill costs at most a batch (two epochs on the bulk
//! path). The journal stays until the next one replaces it; `finish`
//! removes it. Only a graph without a readable tip of this version and
//! base is rebuilt from scratch.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use rayon::prelude::*;
use satflow_schema::{cf, AddrId, Height, OutNum, TxNum};

use super::files::ArrayFile;
use super::room::{Room, Shape};
use super::{block_entry, input_entry, output_entry, tx_entry};
use super::{
    spender_tx, spender_word, Tip, BLOCK_WORDS, DIR, FILES, INPUT_WORDS, NONE, OUTPUT_WORDS,
    TX_WORDS,
};
use crate::progress::Progress;
use crate::ranges;
use crate::stop::Stop;
use crate::store::{Direction, Spill, Store};

struct Arrays {
    blocks: ArrayFile,
    txs: ArrayFile,
    inputs: ArrayFile,
    outputs: ArrayFile,
}

impl Arrays {
    fn open(dir: &Path, tip: &Tip) -> Result<Arrays> {
        let counts = [tip.blocks, tip.txs, tip.inputs, tip.outputs];
        let mut files = FILES
            .iter()
            .zip(counts)
            .map(|((name, words), n)| ArrayFile::open(&dir.join(name), n as usize * words));
        let mut next = || files.next().expect("four files");
        Ok(Arrays {
            blocks: next()?,
            txs: next()?,
            inputs: next()?,
            outputs: next()?,
        })
    }

    fn tip(&self, base: u32) -> Tip {
        let blocks = self.blocks.len() / BLOCK_WORDS;
        let mut hash = [0u8; 32];
        if blocks > 0 {
            for i in 0..4 {
                let w = self.blocks.get((blocks - 1) * BLOCK_WORDS + 1 + i);
                hash[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
        }
        Tip {
            base,
            blocks: blocks as u64,
            txs: (self.txs.len() / TX_WORDS) as u64,
            inputs: (self.inputs.len() / INPUT_WORDS) as u64,
            outputs: (self.outputs.len() / OUTPUT_WORDS) as u64,
            hash,
        }
    }

    fn files(&self) -> [&ArrayFile; 4] {
        [&self.blocks, &self.txs, &self.inputs, &self.outputs]
    }

    /// Words in use in each array.
    fn lens(&self) -> [usize; 4] {
        self.files().map(ArrayFile::len)
    }

    fn block_hash(&self, i: usize) -> [u8; 32] {
        let mut hash = [0u8; 32];
        for w in 0..4 {
            hash[w * 8..w * 8 + 8]
                .copy_from_slice(&self.blocks.get(i * BLOCK_WORDS + 1 + w).to_le_bytes());
        }
        hash
    }
}

/// Brings the flow graph to the index tip, checkpointing it every
/// `batch_bytes` of blk data; a stop ends it at a checkpoint, to go on
/// from next run.
pub fn update(store: &Store, quiet: bool, batch_bytes: u64, stop: &Stop) -> Result<()> {
    let dir = store.path().join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let base = store.base_height()?.0;
    let recorded = recover(&dir, base)?;
    let Some(tip) = store.tip()? else {
        return Ok(());
    };
    let (index_tip, index_hash) = (tip.height.0, tip.hash);
    if recorded.height() == Some(index_tip) && recorded.block_hash() == index_hash {
        return Ok(());
    }
    let mut graph = Appender::open(dir, base, &recorded)?;
    let kept = undo_to_fork(store, &mut graph)?;
    let from = base + kept as u32;
    let bytes = (from..=index_tip)
        .map(|h| Ok(store.block(Height(h))?.map_or(0, |b| u64::from(b.loc.len))))
        .sum::<Result<u64>>()?;
    let mut progress = Progress::new(bytes, quiet);
    let all = append(
        store,
        &mut graph,
        (from, index_tip),
        batch_bytes,
        stop,
        &mut progress,
    )?;
    progress.finish();
    match all {
        true => graph.finish(),
        false => graph.checkpoint(),
    }
}

/// The tip to go on from: the recorded one, repaired if a run died after
/// changing words below it; an empty graph when there is none, or none of
/// this version and base.
fn recover(dir: &Path, base: u32) -> Result<Tip> {
    let fresh = Tip {
        base,
        ..Tip::default()
    };
    match Tip::read(dir) {
        Ok(Some(tip)) if tip.base == base => {
            if let Some(journal) = read_journal(dir)? {
                repair(dir, &tip, &journal)?;
            }
            Ok(tip)
        }
        Ok(None) => Ok(fresh),
        // Another start, or another version (version 1 kept no journal).
        _ => {
            tracing::info!("{}: rebuilding the flow graph", dir.display());
            // Readers see no graph rather than one being rewritten.
            let tip = dir.join("tip");
            std::fs::remove_file(&tip).with_context(|| format!("removing {}", tip.display()))?;
            Ok(fresh)
        }
    }
}

/// Resets the journalled outputs whose spender is at or past the tip: the
/// marks of a checkpoint whose tip was never written, or those a reorg
/// had still to remove.
fn repair(dir: &Path, tip: &Tip, journal: &[u64]) -> Result<()> {
    tracing::info!(
        "{}: repairing the flow graph from {} journalled outputs",
        dir.display(),
        journal.len()
    );
    let words = tip.outputs as usize * OUTPUT_WORDS;
    let mut outputs = ArrayFile::open(&dir.join("outputs"), words)?;
    // Outputs past the tip are appended over, spender word included.
    for &n in journal.iter().filter(|&&n| n < tip.outputs) {
        let at = n as usize * OUTPUT_WORDS + 1;
        let word = outputs.get(at);
        if word != NONE && spender_tx(word) >= tip.txs {
            outputs.set(at, NONE);
        }
    }
    outputs.sync()?;
    // Not synced: found again after a power loss, it repairs nothing more.
    let path = dir.join("dirty");
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))
}

/// The output numbers in `dirty`; None when there is no journal.
fn read_journal(dir: &Path) -> Result<Option<Vec<u64>>> {
    let path = dir.join("dirty");
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    // Written whole (by rename): a partial word is damage, not a crash.
    if bytes.len() % 8 != 0 {
        bail!(
            "{}: {} bytes, not a flow graph journal; remove {} and `satflow index` rebuilds the graph",
            path.display(),
            bytes.len(),
            dir.display()
        );
    }
    let words = bytes.chunks_exact(8);
    Ok(Some(
        words
            .map(|w| u64::from_le_bytes(w.try_into().expect("8")))
            .collect(),
    ))
}

/// Replaces the journal with `outputs`, durably.
fn write_journal(dir: &Path, outputs: &[u64]) -> Result<()> {
    let bytes: Vec<u8> = outputs.iter().flat_map(|n| n.to_le_bytes()).collect();
    replace(dir, "dirty", &bytes)
}

/// The flow graph open for appending: `update` appends the rows the index
/// gained, the bulk path appends each epoch from memory. What is appended
/// becomes visible, and survives a crash, at `checkpoint` (and `finish`).
pub struct Appender {
    dir: PathBuf,
    base: u32,
    a: Arrays,
    /// Spender words to set at the next checkpoint: (output number, word).
    marks: Vec<(u64, u64)>,
    /// Words of each array that the tip on disk covers.
    durable: [usize; 4],
    /// What `checkpoint_behind` left to make durable at its next call:
    /// the tip at the end of the last epoch, and the words it covers.
    behind: Option<(Tip, [usize; 4])>,
}

impl Appender {
    /// Opens the graph as `recorded` describes it.
    fn open(dir: PathBuf, base: u32, recorded: &Tip) -> Result<Appender> {
        let a = Arrays::open(&dir, recorded)?;
        Ok(Appender {
            dir,
            base,
            durable: a.lens(),
            a,
            marks: Vec::new(),
            behind: None,
        })
    }

    /// A new, empty graph for an index being built from empty.
    pub fn create(store: &Store) -> Result<Appender> {
        let dir = store.path().join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Readers see no graph rather than one being written.
        let tip = dir.join("tip");
        match std::fs::remove_file(&tip) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", tip.display()))
            }
            _ => {}
        }
        let base = store.base_height()?.0;
        let fresh = Tip {
            base,
            ..Tip::default()
        };
        Appender::open(dir, base, &fresh)
    }

    /// The next tx number and output number.
    pub fn next(&self) -> (TxNum, OutNum) {
        (
            TxNum((self.a.txs.len() / TX_WORDS) as u64),
            OutNum((self.a.outputs.len() / OUTPUT_WORDS) as u64),
        )
    }

    pub fn block(&mut self, first_tx: TxNum, hash: &BlockHash) -> Result<()> {
        self.a.blocks.push(&block_entry(first_tx, hash))
    }

    pub fn tx(&mut self, first_output: OutNum) -> Result<()> {
        let first_input = (self.a.inputs.len() / INPUT_WORDS) as u64;
        self.a.txs.push(&tx_entry(first_input, first_output))
    }

    /// Input `vin` of `tx` spends `spent`: one of the graph's outputs, which
    /// it marks spent at the next checkpoint, or a coin from before the
    /// index's start, whose value `outside` gives.
    pub fn input(
        &mut self,
        tx: TxNum,
        vin: u32,
        spent: OutNum,
        outside: impl FnOnce() -> Result<u64>,
    ) -> Result<()> {
        let value = match spent.is_outside() {
            false => {
                // Nothing reads spender words while appending.
                self.marks.push((spent.0, spender_word(tx.0, vin)));
                self.a.outputs.get(spent.0 as usize * OUTPUT_WORDS)
            }
            true => outside()?,
        };
        self.a.inputs.push(&input_entry(spent, value))
    }

    pub fn output(&mut self, value: u64, addr: Option<AddrId>) -> Result<()> {
        self.a.outputs.push(&output_entry(value, addr))
    }

    /// Room for a bulk run's epoch of `shape`, appended after what the
    /// graph holds, for its workers to write in parallel. Its inputs
    /// record no spender mark: `set_spenders` makes them all at the run's
    /// end, in output order, where marks made at each checkpoint would
    /// write back a page of `outputs` for every page holding a coin the
    /// epoch spends (1.3 M pages, 5.4 GB, over the 4 GB generated chain's
    /// 118 epochs, for a 528 MB file; at mainnet's size terabytes).
    pub fn room(&mut self, shape: Shape) -> Result<Room<'_>> {
        let first_input = (self.a.inputs.len() / INPUT_WORDS) as u64;
        let a = &mut self.a;
        Ok(Room::new(
            first_input,
            [
                a.blocks.extend(shape.blocks * BLOCK_WORDS)?,
                a.txs.extend(shape.txs * TX_WORDS)?,
                a.inputs.extend(shape.inputs * INPUT_WORDS)?,
                a.outputs.extend(shape.outputs * OUTPUT_WORDS)?,
            ],
        ))
    }

    /// Makes what was appended durable and visible to readers; a crash
    /// from here on costs only what is appended after it.
    pub fn checkpoint(&mut self) -> Result<()> {
        // Without marks no word below the tip changes, and the journal
        // there is (the last marks', all below the tip now) can stay: a
        // bulk run's epochs sync four files less each.
        if !self.marks.is_empty() {
            self.journal()?;
        }
        self.mark();
        self.sync()?;
        write_tip(&self.dir, &self.a.tip(self.base))?;
        self.durable = self.a.lens();
        self.behind = None;
        Ok(())
    }

    /// A bulk epoch's checkpoint, an epoch behind: the words the epoch
    /// appended start going to disk, and the epoch before, whose words
    /// started an epoch ago, is synced and becomes the tip. Syncing each
    /// epoch as it ends waited for its writes on the resolving path (1.9 s
    /// of a 4 GB run's `msync`s); this waits for little more than the
    /// disk's flush. A kill costs at most two epochs of the graph, which
    /// the next run appends again from the rows. No marks: a bulk epoch
    /// makes none (`Appender::room`).
    pub fn checkpoint_behind(&mut self) -> Result<()> {
        debug_assert!(self.marks.is_empty(), "a bulk epoch marks no spender");
        let lens = self.a.lens();
        if let Some((tip, covered)) = self.behind.take() {
            for ((f, from), to) in self.a.files().into_iter().zip(self.durable).zip(covered) {
                f.sync_range(from..to)?;
            }
            write_tip(&self.dir, &tip)?;
            self.durable = covered;
        }
        for ((f, from), to) in self.a.files().into_iter().zip(self.durable).zip(lens) {
            f.start_writeback(from..to);
        }
        self.behind = Some((self.a.tip(self.base), lens));
        Ok(())
    }

    /// A checkpoint, and the journal removed: the graph is whole.
    pub fn finish(mut self) -> Result<()> {
        self.checkpoint()?;
        let dirty = self.dir.join("dirty");
        match std::fs::remove_file(&dirty) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dirty.display()))
            }
            _ => Ok(()),
        }
    }

    /// The outputs the recorded marks change, journalled before any is.
    fn journal(&self) -> Result<()> {
        let outputs: Vec<u64> = self.marks.iter().map(|&(n, _)| n).collect();
        write_journal(&self.dir, &outputs)
    }

    fn mark(&mut self) {
        for (n, word) in self.marks.drain(..) {
            self.a.outputs.set(n as usize * OUTPUT_WORDS + 1, word);
        }
    }

    fn sync(&self) -> Result<()> {
        self.a.files().into_iter().try_for_each(ArrayFile::sync)
    }
}

/// Outputs `set_spenders` marks before letting their pages go: 192 MB of
/// `outputs`.
const MARK_WINDOW: usize = 8 << 20;

/// Marks every output of the graph that `spends` says is spent, in output
/// ranges on every worker, each writing its own stretch of `outputs`: the
/// end of a bulk run, whose inputs went in unmarked (`Appender::room`). Words
/// name txs below both the graph's tip and the index's, as the journal's
/// rule wants; setting one twice is harmless, so a run killed part way is
/// finished by doing it again. Nothing without a graph.
///
/// Once marked, a window's words say which outputs no input spends, with
/// their value and address: when the graph holds every output and tx of
/// the index, those with an address go to `unspent` on the way, and it
/// returns true. `addr_utxos` is then built without reading `outputs` and
/// `spends` from the index again (4 of the 21 s of a 4 GB run's totals).
pub fn set_spenders(store: &Store, unspent: &Spill<'_, cf::AddrUtxos>) -> Result<bool> {
    let dir = store.path().join(DIR);
    if !dir.join("tip").exists() {
        return Ok(false);
    }
    let started = std::time::Instant::now();
    let tip = recover(&dir, store.base_height()?.0)?;
    let next = store.tip_block()?.map(|b| b.next_ids()).unwrap_or_default();
    let (outputs, txs) = (tip.outputs.min(next.output.0), tip.txs.min(next.tx.0));
    // Below a tip that lags the index's, some spenders go unmarked.
    let whole = tip.outputs >= next.output.0 && tip.txs >= next.tx.0;
    let mut a = Arrays::open(&dir, &tip)?;
    const OUTPUT_BYTES: usize = OUTPUT_WORDS * 8;
    let parts = ranges::parts();
    // Writers not in use: each part takes one and gives it back, so there
    // are at most as many as workers (each holds up to ~64 MB of rows), and
    // each writes runs of ~1 M rows rather than a small run per window.
    let idle = Mutex::new(Vec::new());
    let mut marked = 0;
    // A window at a time, its pages let go after it: the whole file's
    // would all be resident (2 GB at 16 GB of blk data).
    for first in (0..outputs).step_by(MARK_WINDOW) {
        let last = (first + MARK_WINDOW as u64).min(outputs);
        let words = first as usize * OUTPUT_WORDS..last as usize * OUTPUT_WORDS;
        let bytes = a.outputs.bytes_mut(words.clone());
        let per_part = (last - first).div_ceil(parts as u64).max(1) as usize;
        marked += bytes
            .par_chunks_mut(per_part * OUTPUT_BYTES)
            .enumerate()
            .map(|(i, part)| {
                let from = first + (i * per_part) as u64;
                let to = from + (part.len() / OUTPUT_BYTES) as u64;
                let mut marked = 0;
                for row in store.scan_range::<cf::Spends>(&OutNum(from), &OutNum(to)) {
                    let (output, spender) = row?;
                    if spender.tx.0 < txs {
                        // The output's second word.
                        let at = (output.0 - from) as usize * OUTPUT_BYTES + 8;
                        let word = spender_word(spender.tx.0, spender.vin);
                        part[at..at + 8].copy_from_slice(&word.to_ne_bytes());
                        marked += 1;
                    }
                }
                if whole {
                    let taken = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
                    let mut writer = taken.unwrap_or_else(|| unspent.writer());
                    for (n, o) in (from..).zip(part.chunks_exact(OUTPUT_BYTES)) {
                        let word = |i: usize| {
                            u64::from_ne_bytes(o[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
                        };
                        let (spender, addr) = (word(1), word(2));
                        if spender == NONE && addr != NONE {
                            writer.put(&(AddrId(addr), OutNum(n)), &word(0))?;
                        }
                    }
                    idle.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(writer);
                }
                anyhow::Ok(marked)
            })
            .sum::<Result<u64>>()?;
        a.outputs.sync_range(words)?;
    }
    for writer in idle.into_inner().unwrap_or_else(PoisonError::into_inner) {
        writer.finish()?;
    }
    tracing::info!(
        "{}: {marked} spent outputs marked in {:.1} s{}",
        dir.display(),
        started.elapsed().as_secs_f64(),
        match whole {
            true => ", the unspent ones with an address put by address",
            false => "; the graph lags the index, so its unspent outputs are not used",
        }
    );
    Ok(whole)
}

/// Replaces the tip file at once, so readers see the old or the new.
fn write_tip(dir: &Path, tip: &Tip) -> Result<()> {
    replace(dir, "tip", &tip.encode())
}

/// Replaces `dir/name` at once (by rename), durably: after a crash it
/// holds the old bytes or the new, whole. The new file is synced before
/// the rename and the directory after it; the temporary name need not
/// last.
fn replace(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.new"));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name))
        .with_context(|| format!("replacing {}", dir.join(name).display()))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Drops the blocks that are no longer on the index's chain; returns how
/// many blocks are kept.
fn undo_to_fork(store: &Store, graph: &mut Appender) -> Result<usize> {
    let a = &graph.a;
    let mut kept = a.blocks.len() / BLOCK_WORDS;
    while kept > 0 {
        let height = graph.base + kept as u32 - 1;
        let same = store
            .block(Height(height))?
            .is_some_and(|b| *b.hash.as_byte_array() == a.block_hash(kept - 1));
        if same {
            break;
        }
        kept -= 1;
    }
    if kept < a.blocks.len() / BLOCK_WORDS {
        let unspent = lower_to(graph, kept)?;
        unmark(graph, &unspent)?;
    }
    Ok(kept)
}

/// Truncates the graph to its first `kept` blocks and writes that tip;
/// returns the outputs the removed inputs spent, journalled, for `unmark`.
fn lower_to(graph: &mut Appender, kept: usize) -> Result<Vec<u64>> {
    let a = &mut graph.a;
    let first_gone_tx = match kept {
        0 => 0,
        k => a.blocks.get(k * BLOCK_WORDS) as usize,
    };
    let txs_now = a.txs.len() / TX_WORDS;
    let (first_input, first_output) = match first_gone_tx < txs_now {
        true => (
            a.txs.get(first_gone_tx * TX_WORDS) as usize,
            a.txs.get(first_gone_tx * TX_WORDS + 1),
        ),
        false => (
            a.inputs.len() / INPUT_WORDS,
            (a.outputs.len() / OUTPUT_WORDS) as u64,
        ),
    };
    // Coins that the removed transactions spent are unspent again (outside
    // coins and the removed outputs have no word below the new tip).
    let unspent: Vec<u64> = (first_input..a.inputs.len() / INPUT_WORDS)
        .map(|i| a.inputs.get(i * INPUT_WORDS))
        .filter(|&spent| spent < first_output)
        .collect();
    // Journalled before the tip is lowered: from then on the words name
    // txs past the tip, which the next run resets if this one dies.
    write_journal(&graph.dir, &unspent)?;
    a.blocks.truncate(kept * BLOCK_WORDS);
    a.txs.truncate(first_gone_tx * TX_WORDS);
    a.inputs.truncate(first_input * INPUT_WORDS);
    a.outputs.truncate(first_output as usize * OUTPUT_WORDS);
    // Readers stop at the fork before anything below it is touched.
    write_tip(&graph.dir, &a.tip(graph.base))?;
    Ok(unspent)
}

/// Marks `outputs` unspent, durably before the next checkpoint replaces
/// the journal that lists them.
fn unmark(graph: &mut Appender, outputs: &[u64]) -> Result<()> {
    for &n in outputs {
        graph.a.outputs.set(n as usize * OUTPUT_WORDS + 1, NONE);
    }
    graph.a.outputs.sync()
}

/// Appends heights `from..=to` from the index's rows, read in key order,
/// with a checkpoint every `batch_bytes` of blk data (the caller's
/// `finish` makes the last). Returns false when it stopped at one first.
fn append(
    store: &Store,
    graph: &mut Appender,
    (from, to): (u32, u32),
    batch_bytes: u64,
    stop: &Stop,
    progress: &mut Progress,
) -> Result<bool> {
    // The graph may have held blocks past the index (checkpointed by a
    // killed bulk run whose rows were lost), now undone.
    if from > to {
        return Ok(true);
    }
    tracing::debug!("appending heights {from}..={to} to the flow graph");
    let first = store.block(Height(from))?.with_context(|| {
        format!("the index has no block at height {from} to add to the flow graph")
    })?;
    let mut txs = store.scan::<cf::Txs>(&first.first_tx, Direction::Forward);
    let mut ins = store.scan::<cf::Inputs>(&first.first_tx, Direction::Forward);
    let mut outs = store.scan::<cf::Outputs>(&first.first_output, Direction::Forward);
    let mut unsaved = 0u64;
    for height in from..=to {
        let block = store.need_block(Height(height))?;
        let (have, _) = graph.next();
        if have != block.first_tx {
            bail!(
                "flow graph out of step with the index at height {height}: it holds {have} txs, the block starts at tx {}",
                block.first_tx
            );
        }
        graph.block(block.first_tx, &block.hash)?;
        for txnum in block.txs().map(TxNum) {
            let (_, tx) = txs.next().context("txs ended early")??;
            let (_, outputs_now) = graph.next();
            if tx.first_output != outputs_now {
                bail!(
                    "tx {txnum} at height {height} starts at output {}, the flow graph holds {outputs_now}",
                    tx.first_output
                );
            }
            graph.tx(tx.first_output)?;
            if !tx.is_coinbase() {
                let (k, spent_outputs) = ins.next().context("inputs ended early")??;
                if k != txnum {
                    bail!("inputs row of tx {txnum} is missing");
                }
                for (vin, spent) in spent_outputs.into_iter().enumerate() {
                    if !spent.is_outside() && spent >= outputs_now {
                        bail!("tx {txnum} at height {height} input {vin} spends output {spent}, which the flow graph does not hold");
                    }
                    graph.input(txnum, vin as u32, spent, || outside_value(store, spent))?;
                }
            }
            for _ in 0..tx.output_count {
                let (_, o) = outs.next().context("outputs ended early")??;
                graph.output(o.value, o.addr)?;
            }
        }
        progress.advance(1, u64::from(block.loc.len), height);
        // A kill loses at most the blocks since the last checkpoint.
        unsaved += u64::from(block.loc.len);
        if unsaved >= batch_bytes && height < to {
            graph.checkpoint()?;
            unsaved = 0;
            if stop.requested() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The value of a coin from before the index's start, if it is known.
fn outside_value(store: &Store, n: OutNum) -> Result<u64> {
    Ok(store.need::<cf::Outputs>(&n)?.known_value().unwrap_or(NONE))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A generated block: its hash and, per tx, the outputs it spends and
    /// its outputs' values.
    struct TestBlock {
        hash: BlockHash,
        txs: Vec<(Vec<u64>, Vec<u64>)>,
    }

    /// `n` blocks from height 0, spending earlier outputs at random; from
    /// height `fork` on drawn from `branch` (the same up to it).
    fn chain(n: u32, fork: u32, branch: u64) -> Vec<TestBlock> {
        let (mut unspent, mut next_output) = (Vec::new(), 0u64);
        let mut blocks = Vec::new();
        for h in 0..n {
            let tag = if h < fork { 0 } else { branch };
            let mut state = (tag << 32 | u64::from(h)) * 2 + 1;
            let mut below = |n: usize| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 33) as usize % n.max(1)
            };
            let mut txs = Vec::new();
            for t in 0..1 + below(4) {
                let mut ins = Vec::new();
                // The first tx is the coinbase.
                for _ in 0..(t > 0) as usize * (1 + below(3)) {
                    if !unspent.is_empty() {
                        ins.push(unspent.swap_remove(below(unspent.len())));
                    }
                }
                let outs: Vec<u64> = (0..1 + below(3)).map(|_| below(1000) as u64).collect();
                unspent.extend(next_output..next_output + outs.len() as u64);
                next_output += outs.len() as u64;
                txs.push((ins, outs));
            }
            let mut hash = [0u8; 32];
            hash[..4].copy_from_slice(&h.to_le_bytes());
            hash[4..12].copy_from_slice(&tag.to_le_bytes());
            blocks.push(TestBlock {
                hash: BlockHash::from_byte_array(hash),
                txs,
            });
        }
        blocks
    }

    fn append(g: &mut Appender, blocks: &[TestBlock]) {
        for b in blocks {
            g.block(g.next().0, &b.hash).unwrap();
            for (ins, outs) in &b.txs {
                let (tx, first_output) = g.next();
                g.tx(first_output).unwrap();
                for (vin, &spent) in ins.iter().enumerate() {
                    g.input(tx, vin as u32, OutNum(spent), || Ok(NONE)).unwrap();
                }
                for &value in outs {
                    g.output(value, Some(AddrId(value % 7))).unwrap();
                }
            }
        }
    }

    fn empty(dir: &Path) -> Appender {
        Appender::open(dir.to_owned(), 0, &Tip::default()).unwrap()
    }

    /// The graph of `blocks`, built without interruption.
    fn built(blocks: &[TestBlock]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut g = empty(dir.path());
        append(&mut g, blocks);
        g.finish().unwrap();
        dir
    }

    /// Opened as the next run does.
    fn reopen(dir: &Path) -> Appender {
        let tip = recover(dir, 0).unwrap();
        Appender::open(dir.to_owned(), 0, &tip).unwrap()
    }

    /// The tip and the arrays' bytes up to it: what a reader can see.
    fn snapshot(dir: &Path) -> (Tip, Vec<Vec<u8>>) {
        let tip = Tip::read(dir).unwrap().expect("a tip");
        let counts = [tip.blocks, tip.txs, tip.inputs, tip.outputs];
        let arrays = FILES
            .iter()
            .zip(counts)
            .map(|((name, words), n)| {
                let bytes = std::fs::read(dir.join(name)).unwrap();
                bytes[..n as usize * words * 8].to_vec()
            })
            .collect();
        (tip, arrays)
    }

    /// Killed after the journal (and the marks, synced, when `marked`) but
    /// before the tip: the next run repairs the graph to the last
    /// checkpoint and goes on from there, on this branch or another.
    fn killed_mid_checkpoint(marked: bool) {
        let main = chain(40, 40, 0);
        let dir = tempfile::tempdir().unwrap();
        let mut g = empty(dir.path());
        append(&mut g, &main[..20]);
        g.checkpoint().unwrap();
        append(&mut g, &main[20..30]);
        g.journal().unwrap();
        if marked {
            g.mark();
            g.sync().unwrap();
        }
        drop(g);
        let at_checkpoint = snapshot(built(&main[..20]).path());
        // Not vacuous: the marks below the tip show until repaired.
        assert_eq!(snapshot(dir.path()) != at_checkpoint, marked);

        let mut g = reopen(dir.path());
        assert!(!dir.path().join("dirty").exists());
        assert_eq!(snapshot(dir.path()), at_checkpoint);
        let fork = chain(40, 20, 7);
        append(&mut g, &fork[20..]);
        g.finish().unwrap();
        assert_eq!(snapshot(dir.path()), snapshot(built(&fork).path()));
    }

    #[test]
    fn flow_killed_after_marking_is_repaired_to_the_last_checkpoint() {
        killed_mid_checkpoint(true);
    }

    #[test]
    fn flow_killed_after_journalling_goes_on_from_the_last_checkpoint() {
        killed_mid_checkpoint(false);
    }

    /// Killed in a reorg after the tip was lowered, before the outputs the
    /// removed inputs spent were unmarked: the next run unmarks them.
    #[test]
    fn flow_killed_mid_reorg_is_repaired_to_the_fork() {
        let main = chain(40, 40, 0);
        let dir = built(&main);
        let mut g = reopen(dir.path());
        let unspent = lower_to(&mut g, 25).unwrap();
        drop(g);
        let at_fork = snapshot(built(&main[..25]).path());
        assert!(!unspent.is_empty());
        assert_ne!(snapshot(dir.path()), at_fork);

        let mut g = reopen(dir.path());
        assert_eq!(snapshot(dir.path()), at_fork);
        let fork = chain(45, 25, 9);
        append(&mut g, &fork[25..]);
        g.finish().unwrap();
        assert_eq!(snapshot(dir.path()), snapshot(built(&fork).path()));
    }

    /// How many entries `blocks` add to the graph.
    fn shape(blocks: &[TestBlock]) -> Shape {
        let txs = blocks.iter().flat_map(|b| &b.txs);
        Shape {
            blocks: blocks.len(),
            txs: txs.clone().count(),
            inputs: txs.clone().map(|(ins, _)| ins.len()).sum(),
            outputs: txs.map(|(_, outs)| outs.len()).sum(),
        }
    }

    /// The values of `blocks`' outputs, by output number.
    fn values(blocks: &[TestBlock]) -> Vec<u64> {
        blocks
            .iter()
            .flat_map(|b| &b.txs)
            .flat_map(|(_, outs)| outs.iter().copied())
            .collect()
    }

    /// Appends `epoch` as a bulk run does: through a room cut into three
    /// parts of consecutive blocks, the parts written last to first.
    fn write_epoch(g: &mut Appender, epoch: &[TestBlock], values: &[u64]) {
        let cuts = [0, epoch.len() / 3, epoch.len() / 2, epoch.len()];
        let parts: Vec<&[TestBlock]> = cuts.windows(2).map(|w| &epoch[w[0]..w[1]]).collect();
        let shapes: Vec<Shape> = parts.iter().map(|p| shape(p)).collect();
        // Where each part's txs and outputs start.
        let (mut tx, mut output) = g.next();
        let mut starts = Vec::new();
        for s in &shapes {
            starts.push((tx, output));
            tx = TxNum(tx.0 + s.txs as u64);
            output = OutNum(output.0 + s.outputs as u64);
        }
        let rooms = g.room(shape(epoch)).unwrap().split(&shapes);
        for ((mut room, part), (mut tx, mut output)) in
            rooms.into_iter().zip(parts).zip(starts).rev()
        {
            for b in part {
                room.block(tx, &b.hash);
                for (ins, outs) in &b.txs {
                    room.tx(output);
                    for &spent in ins {
                        room.input(OutNum(spent), values[spent as usize]).unwrap();
                    }
                    for &value in outs {
                        room.output(value, Some(AddrId(value % 7)));
                    }
                    tx = TxNum(tx.0 + 1);
                    output = OutNum(output.0 + outs.len() as u64);
                }
            }
            assert!(room.full());
        }
    }

    /// Outputs' spender words set aside: a bulk run's epochs mark none
    /// (`set_spenders` does at its end). How many were marked.
    fn unmarked(outputs: &mut [u8]) -> usize {
        let mut marked = 0;
        for entry in outputs.chunks_exact_mut(OUTPUT_WORDS * 8) {
            marked += usize::from(entry[8..16] != NONE.to_ne_bytes());
            entry[8..16].copy_from_slice(&[0; 8]);
        }
        marked
    }

    /// A bulk run's epochs, each written through a room cut into parts:
    /// the graph of the same blocks appended entry by entry, its spender
    /// marks aside.
    #[test]
    fn epochs_written_in_parts_through_rooms_equal_entries_appended_one_by_one() {
        let blocks = chain(40, 40, 0);
        let values = values(&blocks);
        let dir = tempfile::tempdir().unwrap();
        let mut g = empty(dir.path());
        for epoch in [&blocks[..13], &blocks[13..]] {
            write_epoch(&mut g, epoch, &values);
            g.checkpoint().unwrap();
        }
        g.finish().unwrap();

        let (tip, mut arrays) = snapshot(dir.path());
        let (want_tip, mut want) = snapshot(built(&blocks).path());
        assert_eq!(tip, want_tip);
        assert_eq!(unmarked(&mut arrays[3]), 0);
        assert!(unmarked(&mut want[3]) > 0);
        assert_eq!(arrays, want);
    }

    /// Checkpoints an epoch behind: the tip on disk is always the epoch
    /// before the last, and a run killed there goes on from it into the
    /// graph of the whole chain.
    #[test]
    fn checkpoints_an_epoch_behind_leave_the_epoch_before_the_last_to_go_on_from() {
        let blocks = chain(40, 40, 0);
        let values = values(&blocks);
        let ends = [9, 17, 26, 33];
        let dir = tempfile::tempdir().unwrap();
        let mut g = empty(dir.path());
        let mut from = 0;
        for (i, &end) in ends.iter().enumerate() {
            write_epoch(&mut g, &blocks[from..end], &values);
            g.checkpoint_behind().unwrap();
            from = end;
            match i {
                0 => assert!(Tip::read(dir.path()).unwrap().is_none()),
                _ => {
                    let (tip, mut arrays) = snapshot(dir.path());
                    let (want_tip, mut want) = snapshot(built(&blocks[..ends[i - 1]]).path());
                    assert_eq!(tip, want_tip);
                    unmarked(&mut arrays[3]);
                    unmarked(&mut want[3]);
                    assert_eq!(arrays, want);
                }
            }
        }
        // Killed: the next run opens the graph at the epoch before the
        // last, and appends the rest as `update` does.
        drop(g);
        let mut g = reopen(dir.path());
        assert_eq!(g.next().0, TxNum(shape(&blocks[..ends[2]]).txs as u64));
        append(&mut g, &blocks[ends[2]..]);
        g.finish().unwrap();
        let (tip, mut arrays) = snapshot(dir.path());
        let (want_tip, mut want) = snapshot(built(&blocks).path());
        assert_eq!(tip, want_tip);
        // The rooms' epochs are unmarked, the appended blocks marked.
        unmarked(&mut arrays[3]);
        unmarked(&mut want[3]);
        assert_eq!(arrays, want);
    }
}
