//! Keeps the flow graph equal to the index: appends the blocks the index
//! gained, first undoing those a reorg removed (`update`), or, on the bulk
//! path, each epoch as it is built (`Appender`). A run that dies midway
//! leaves a `dirty` marker, and the next one rebuilds from scratch.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use satflow_schema::{cf, AddrId, Height, OutNum, TxNum};

use super::files::ArrayFile;
use super::{
    spender_word, Tip, BLOCK_WORDS, DIR, FILES, INPUT_WORDS, NONE, OUTPUT_WORDS, TX_WORDS,
};
use crate::progress::Progress;
use crate::store::{Direction, Store};

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

    fn block_hash(&self, i: usize) -> [u8; 32] {
        let mut hash = [0u8; 32];
        for w in 0..4 {
            hash[w * 8..w * 8 + 8]
                .copy_from_slice(&self.blocks.get(i * BLOCK_WORDS + 1 + w).to_le_bytes());
        }
        hash
    }
}

/// Brings the flow graph to the index tip.
pub fn update(store: &Store, quiet: bool) -> Result<()> {
    let dir = store.path().join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dirty = dir.join("dirty");
    let base = store.base_height()?.0;
    let fresh = Tip {
        base,
        ..Tip::default()
    };
    let recorded = match Tip::read(&dir) {
        Ok(Some(t)) if !dirty.exists() && t.base == base => t,
        Ok(None) => fresh,
        // Interrupted, another start, or another version.
        _ => {
            tracing::info!("{}: rebuilding the flow graph", dir.display());
            // Readers see no graph rather than one being rewritten.
            let tip = dir.join("tip");
            std::fs::remove_file(&tip).with_context(|| format!("removing {}", tip.display()))?;
            fresh
        }
    };
    let Some(tip) = store.tip()? else {
        return Ok(());
    };
    let (index_tip, index_hash) = (tip.height.0, tip.hash);
    if recorded.height() == Some(index_tip) && recorded.block_hash() == index_hash {
        return Ok(());
    }
    let mut graph = Appender::open(dir, base, &recorded)?;
    let kept = undo_to_fork(store, &mut graph.a, base, &graph.dir)?;
    let from = base + kept as u32;
    let bytes = (from..=index_tip)
        .map(|h| Ok(store.block(Height(h))?.map_or(0, |b| u64::from(b.loc.len))))
        .sum::<Result<u64>>()?;
    let mut progress = Progress::new(bytes, quiet);
    append(store, &mut graph, from, index_tip, &mut progress)?;
    progress.finish();
    graph.finish()
}

/// The flow graph open for appending, marked dirty (to be rebuilt by the
/// next `update`) until `finish`: `update` appends the rows the index
/// gained, the bulk path appends each epoch from memory.
pub struct Appender {
    dir: PathBuf,
    base: u32,
    a: Arrays,
}

impl Appender {
    /// Opens the graph as `recorded` describes it.
    fn open(dir: PathBuf, base: u32, recorded: &Tip) -> Result<Appender> {
        // On disk before any mapped page can be: after a power loss, either
        // the marker is there or nothing was changed.
        durable_write(&dir.join("dirty"), b"")?;
        let a = Arrays::open(&dir, recorded)?;
        Ok(Appender { dir, base, a })
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
        let mut row = vec![first_tx.0];
        row.extend(
            hash.as_byte_array()
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().expect("8"))),
        );
        self.a.blocks.push(&row)
    }

    pub fn tx(&mut self, first_output: OutNum) -> Result<()> {
        let first_input = (self.a.inputs.len() / INPUT_WORDS) as u64;
        self.a.txs.push(&[first_input, first_output.0])
    }

    /// Input `vin` of `tx` spends `spent`: one of the graph's outputs, which
    /// it marks spent, or a coin from before the index's start, whose value
    /// `outside` gives.
    pub fn input(
        &mut self,
        tx: TxNum,
        vin: u32,
        spent: OutNum,
        outside: impl FnOnce() -> Result<u64>,
    ) -> Result<()> {
        let value = match spent.is_outside() {
            false => {
                let word = spender_word(tx.0, vin);
                self.a
                    .outputs
                    .set(spent.0 as usize * OUTPUT_WORDS + 1, word);
                self.a.outputs.get(spent.0 as usize * OUTPUT_WORDS)
            }
            true => outside()?,
        };
        self.a.inputs.push(&[spent.0, value])
    }

    pub fn output(&mut self, value: u64, addr: Option<AddrId>) -> Result<()> {
        self.a
            .outputs
            .push(&[value, NONE, addr.map_or(NONE, |a| a.0)])
    }

    /// Makes what was appended durable and visible to readers.
    pub fn finish(self) -> Result<()> {
        for f in [&self.a.blocks, &self.a.txs, &self.a.inputs, &self.a.outputs] {
            f.sync()?;
        }
        write_tip(&self.dir, &self.a.tip(self.base))?;
        let dirty = self.dir.join("dirty");
        std::fs::remove_file(&dirty).with_context(|| format!("removing {}", dirty.display()))
    }
}

/// Replaces the tip file at once (by rename), so readers see the old or the new.
fn write_tip(dir: &Path, tip: &Tip) -> Result<()> {
    let tmp = dir.join("tip.new");
    durable_write(&tmp, &tip.encode())?;
    std::fs::rename(&tmp, dir.join("tip")).context("replacing the flow tip")?;
    sync_dir(dir)
}

/// Writes `path` and syncs it and its directory.
fn durable_write(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut f, bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// Drops the blocks that are no longer on the index's chain; returns how
/// many blocks are kept.
fn undo_to_fork(store: &Store, a: &mut Arrays, base: u32, dir: &Path) -> Result<usize> {
    let mut kept = a.blocks.len() / BLOCK_WORDS;
    while kept > 0 {
        let height = base + kept as u32 - 1;
        let same = store
            .block(Height(height))?
            .is_some_and(|b| *b.hash.as_byte_array() == a.block_hash(kept - 1));
        if same {
            break;
        }
        kept -= 1;
    }
    if kept == a.blocks.len() / BLOCK_WORDS {
        return Ok(kept);
    }
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
    let inputs_before = a.inputs.len() / INPUT_WORDS;
    a.blocks.truncate(kept * BLOCK_WORDS);
    a.txs.truncate(first_gone_tx * TX_WORDS);
    a.inputs.truncate(first_input * INPUT_WORDS);
    a.outputs.truncate(first_output as usize * OUTPUT_WORDS);
    // Readers stop at the fork before anything below it is touched.
    write_tip(dir, &a.tip(base))?;
    // Coins that the removed transactions spent are unspent again (the
    // truncated words are still there to say which).
    for i in first_input..inputs_before {
        let spent = a.inputs.get(i * INPUT_WORDS);
        if spent < first_output {
            a.outputs.set(spent as usize * OUTPUT_WORDS + 1, NONE);
        }
    }
    Ok(kept)
}

/// Appends heights `from..=to` from the index's rows, read in key order.
fn append(
    store: &Store,
    graph: &mut Appender,
    from: u32,
    to: u32,
    progress: &mut Progress,
) -> Result<()> {
    let first = store.block(Height(from))?.with_context(|| {
        format!("the index has no block at height {from} to add to the flow graph")
    })?;
    let mut txs = store.scan::<cf::Txs>(&first.first_tx, Direction::Forward);
    let mut ins = store.scan::<cf::Inputs>(&first.first_tx, Direction::Forward);
    let mut outs = store.scan::<cf::Outputs>(&first.first_output, Direction::Forward);
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
    }
    Ok(())
}

/// The value of a coin from before the index's start, if it is known.
fn outside_value(store: &Store, n: OutNum) -> Result<u64> {
    Ok(store.need::<cf::Outputs>(&n)?.known_value().unwrap_or(NONE))
}
