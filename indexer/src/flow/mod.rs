//! The value-flow graph: every transaction, the coins it spends and the
//! coins it makes, as flat arrays of u64 words in files beside the index
//! (`<db>/flow/`). Taint tracing walks millions of transactions a second
//! through it; RocksDB lookups (about ten per transaction) would manage a
//! tenth of that. It is derived from the index's rows, kept current by
//! `satflow index` (`update`), and memory-mapped read-only by servers
//! (`Flow`), so its resident size is what the page cache can spare.
//!
//! | file | words per entry | entry |
//! |---|---|---|
//! | `blocks` | 5 | first tx number, block hash (4 words) — one per height from the index's first block |
//! | `txs` | 2 | first input (index into `inputs`), first output number |
//! | `inputs` | 2 | spent output number (≥ 2^63: a coin from before the index's start), its value (`u64::MAX`: unknown) |
//! | `outputs` | 3 | value, spender (`u64::MAX`: unspent): its tx number in the low 40 bits and the input index above, address number (`u64::MAX`: none) |
//!
//! Words are native-endian. Files only grow: a reorg rewrites entries in
//! place and lowers the counts in `tip`, so a reader's mapping stays valid.
//! Readers see only what `tip` counts; the writer moves it a batch at a
//! time and journals (in `dirty`) the words it changes below it, so a
//! writer killed mid-batch leaves a few words to repair, not a rebuild
//! (see `update`).

mod files;
mod room;
mod update;

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use memmap2::Mmap;
use satflow_schema::{AddrId, OutNum, TxNum};

pub use room::{Room, Shape};
pub use update::{set_spenders, update, Appender};

/// Subdirectory of the database directory.
pub const DIR: &str = "flow";
/// `outputs` spender of an unspent output, and `inputs` value of an
/// unknown coin.
pub const NONE: u64 = u64::MAX;

/// Bits of a spender word that hold the tx number (a trillion txs); the
/// input index (at most ~25,000 in a 4 MB block) takes the rest.
const SPENDER_TX_BITS: u32 = 40;

/// The `outputs` spender word of input `vin` of tx `tx`.
pub fn spender_word(tx: u64, vin: u32) -> u64 {
    debug_assert!(tx < 1 << SPENDER_TX_BITS);
    tx | u64::from(vin) << SPENDER_TX_BITS
}

/// The tx number in a spender word.
fn spender_tx(word: u64) -> u64 {
    word & ((1 << SPENDER_TX_BITS) - 1)
}

const BLOCK_WORDS: usize = 5;
const TX_WORDS: usize = 2;
const INPUT_WORDS: usize = 2;
const OUTPUT_WORDS: usize = 3;

/// A block's entry: its first tx, then its hash.
fn block_entry(first_tx: TxNum, hash: &BlockHash) -> [u64; BLOCK_WORDS] {
    let mut entry = [first_tx.0; BLOCK_WORDS];
    for (word, bytes) in entry[1..]
        .iter_mut()
        .zip(hash.as_byte_array().chunks_exact(8))
    {
        *word = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    }
    entry
}

/// A tx's entry: its first input's index into `inputs`, its first output.
fn tx_entry(first_input: u64, first_output: OutNum) -> [u64; TX_WORDS] {
    [first_input, first_output.0]
}

/// An input's entry: the output it spends, and that output's value.
fn input_entry(spent: OutNum, value: u64) -> [u64; INPUT_WORDS] {
    [spent.0, value]
}

/// An output's entry, unspent.
fn output_entry(value: u64, addr: Option<AddrId>) -> [u64; OUTPUT_WORDS] {
    [value, NONE, addr.map_or(NONE, |a| a.0)]
}

/// The `tip` file: what the arrays hold, written last (by rename) so that
/// it only ever names complete entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tip {
    /// Height of the first block.
    pub base: u32,
    pub blocks: u64,
    pub txs: u64,
    pub inputs: u64,
    pub outputs: u64,
    pub hash: [u8; 32],
}

/// Layout version of the files, first in `tip`: a graph of another
/// version is rebuilt by the next `satflow index`. 2: `dirty` is a journal
/// of outputs (in version 1, an empty marker that asked for a rebuild).
const VERSION: u32 = 2;

impl Tip {
    const LEN: usize = 4 + 4 + 4 * 8 + 32;

    fn encode(&self) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        v.extend_from_slice(&self.base.to_le_bytes());
        for n in [self.blocks, self.txs, self.inputs, self.outputs] {
            v.extend_from_slice(&n.to_le_bytes());
        }
        v.extend_from_slice(&self.hash);
        v
    }

    fn decode(b: &[u8], path: &Path) -> Result<Tip> {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
        if b.len() != Tip::LEN || u32_at(0) != VERSION {
            bail!(
                "{}: not a version {VERSION} flow graph; `satflow index` rebuilds it",
                path.display()
            );
        }
        let word = |i: usize| u64::from_le_bytes(b[8 + 8 * i..16 + 8 * i].try_into().expect("8"));
        Ok(Tip {
            base: u32_at(4),
            blocks: word(0),
            txs: word(1),
            inputs: word(2),
            outputs: word(3),
            hash: b[40..].try_into().expect("32"),
        })
    }

    /// Height of the last block; None when empty.
    pub fn height(&self) -> Option<u32> {
        (self.blocks > 0).then(|| self.base + self.blocks as u32 - 1)
    }

    pub fn block_hash(&self) -> BlockHash {
        BlockHash::from_byte_array(self.hash)
    }

    fn read(dir: &Path) -> Result<Option<Tip>> {
        let path = dir.join("tip");
        match std::fs::read(&path) {
            Ok(b) => Tip::decode(&b, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// One spent coin as a transaction's input sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Input {
    /// ≥ 2^63 for a coin from before the index's start.
    pub output: u64,
    /// None when unknown (a coin from before the start without prevouts).
    pub value: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    pub value: u64,
    /// The spending tx and the input index there, if spent on the chain
    /// the view holds.
    pub spender: Option<(u64, u32)>,
    pub addr: Option<u64>,
}

/// The graph as of one tip: slices of the arrays cut at the tip's counts.
#[derive(Clone, Copy, Debug)]
pub struct FlowView<'a> {
    base: u32,
    blocks: &'a [u64],
    txs: &'a [u64],
    inputs: &'a [u64],
    outputs: &'a [u64],
}

impl<'a> FlowView<'a> {
    /// A view over arrays laid out as the files are (see the module docs),
    /// e.g. built in memory by tests.
    pub fn new(
        base: u32,
        blocks: &'a [u64],
        txs: &'a [u64],
        inputs: &'a [u64],
        outputs: &'a [u64],
    ) -> FlowView<'a> {
        FlowView {
            base,
            blocks,
            txs,
            inputs,
            outputs,
        }
    }

    pub fn tx_count(&self) -> u64 {
        (self.txs.len() / TX_WORDS) as u64
    }

    pub fn output_count(&self) -> u64 {
        (self.outputs.len() / OUTPUT_WORDS) as u64
    }

    /// Height of the first block.
    pub fn base_height(&self) -> u32 {
        self.base
    }

    /// Height of the last block.
    pub fn tip_height(&self) -> u32 {
        self.base + self.block_count().saturating_sub(1) as u32
    }

    fn tx_word(&self, tx: u64, i: usize) -> u64 {
        self.txs[tx as usize * TX_WORDS + i]
    }

    /// Indices into the input array of `tx`'s inputs.
    fn input_range(&self, tx: u64) -> Range<usize> {
        let start = self.tx_word(tx, 0) as usize;
        let end = match tx + 1 < self.tx_count() {
            true => self.tx_word(tx + 1, 0) as usize,
            false => self.inputs.len() / INPUT_WORDS,
        };
        start..end
    }

    /// `tx`'s inputs in input order; empty for a coinbase.
    pub fn inputs(&self, tx: u64) -> impl ExactSizeIterator<Item = Input> + 'a {
        let r = self.input_range(tx);
        self.inputs[r.start * INPUT_WORDS..r.end * INPUT_WORDS]
            .chunks_exact(INPUT_WORDS)
            .map(|w| Input {
                output: w[0],
                value: Some(w[1]).filter(|&v| v != NONE),
            })
    }

    /// Output numbers of `tx`'s outputs.
    pub fn outputs(&self, tx: u64) -> Range<u64> {
        let start = self.tx_word(tx, 1);
        let end = match tx + 1 < self.tx_count() {
            true => self.tx_word(tx + 1, 1),
            false => self.output_count(),
        };
        start..end
    }

    pub fn output(&self, n: u64) -> Output {
        let w = &self.outputs[n as usize * OUTPUT_WORDS..(n as usize + 1) * OUTPUT_WORDS];
        Output {
            value: w[0],
            // A spender past the view's tip belongs to a later state.
            spender: Some(w[1])
                .filter(|&s| s != NONE)
                .map(|s| (spender_tx(s), (s >> SPENDER_TX_BITS) as u32))
                .filter(|&(tx, _)| tx < self.tx_count()),
            addr: Some(w[2]).filter(|&a| a != NONE),
        }
    }

    /// Whether output number `n` is in the view (not from before the start,
    /// not from after the tip).
    pub fn has_output(&self, n: u64) -> bool {
        n < self.output_count()
    }

    /// The tx that made output `n`.
    pub fn creator(&self, n: u64) -> u64 {
        self.creator_among(n, 0..self.tx_count()).unwrap_or(0)
    }

    /// The tx among `txs` that made output `n`; None when no tx of the
    /// range did. A search over a few recent blocks stays in memory the
    /// caller has just read, where one over the whole chain would not.
    pub fn creator_among(&self, n: u64, txs: Range<u64>) -> Option<u64> {
        if txs.is_empty() || n < self.tx_word(txs.start, 1) || n >= self.outputs(txs.end - 1).end {
            return None;
        }
        let (mut lo, mut hi) = (txs.start, txs.end);
        // The last tx whose first output is at most n (txs without outputs
        // cannot exist, so this is the one holding it).
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.tx_word(mid, 1) <= n {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    fn block_count(&self) -> usize {
        self.blocks.len() / BLOCK_WORDS
    }

    /// The first tx number of the `b`th block of the view.
    fn first_tx(&self, b: usize) -> u64 {
        self.blocks[b * BLOCK_WORDS]
    }

    /// The tx numbers of the block at `height`; None outside the view.
    pub fn block_txs(&self, height: u32) -> Option<Range<u64>> {
        let b = height.checked_sub(self.base)? as usize;
        match b + 1 {
            n if n < self.block_count() => Some(self.first_tx(b)..self.first_tx(n)),
            n if n == self.block_count() => Some(self.first_tx(b)..self.tx_count()),
            _ => None,
        }
    }

    /// Height of the block holding `tx`.
    pub fn height(&self, tx: u64) -> u32 {
        let (mut lo, mut hi) = (0usize, self.block_count());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.first_tx(mid) <= tx {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.base + lo as u32
    }
}

/// The flow graph of a database, mapped read-only.
pub struct Flow {
    dir: PathBuf,
    tip: Tip,
    maps: [Option<Mmap>; 4],
}

const FILES: [(&str, usize); 4] = [
    ("blocks", BLOCK_WORDS),
    ("txs", TX_WORDS),
    ("inputs", INPUT_WORDS),
    ("outputs", OUTPUT_WORDS),
];

impl Flow {
    /// None when `satflow index` has not built it yet.
    pub fn open(db: &Path) -> Result<Option<Flow>> {
        let dir = db.join(DIR);
        if Tip::read(&dir)?.is_none() {
            return Ok(None);
        }
        let mut flow = Flow {
            dir,
            tip: Tip::default(),
            maps: Default::default(),
        };
        flow.refresh()?;
        Ok(Some(flow))
    }

    /// Follows the writer: re-reads the tip and maps what grew.
    pub fn refresh(&mut self) -> Result<()> {
        let tip = Tip::read(&self.dir)?
            .with_context(|| format!("{}: the flow graph's tip has gone", self.dir.display()))?;
        let counts = [tip.blocks, tip.txs, tip.inputs, tip.outputs];
        for ((map, (name, words)), count) in self.maps.iter_mut().zip(FILES).zip(counts) {
            let need = count as usize * words * 8;
            if map.as_ref().is_some_and(|m| m.len() >= need) {
                continue;
            }
            let path = self.dir.join(name);
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            // SAFETY: the writer only appends and rewrites words in place;
            // files never shrink, so the mapping stays backed.
            let m = unsafe { Mmap::map(&file) }
                .with_context(|| format!("mapping {}", path.display()))?;
            if m.len() < need {
                bail!(
                    "{}: {} bytes, the tip needs {need}",
                    path.display(),
                    m.len()
                );
            }
            *map = Some(m);
        }
        self.tip = tip;
        Ok(())
    }

    pub fn tip(&self) -> Tip {
        self.tip
    }

    pub fn view(&self) -> FlowView<'_> {
        let counts = [
            self.tip.blocks,
            self.tip.txs,
            self.tip.inputs,
            self.tip.outputs,
        ];
        let mut slices = self
            .maps
            .iter()
            .zip(FILES)
            .zip(counts)
            .map(|((m, (_, words)), n)| {
                let bytes = m.as_ref().map_or(&[][..], |m| &m[..n as usize * words * 8]);
                words_of(bytes)
            });
        let mut next = || slices.next().expect("four files");
        FlowView::new(self.tip.base, next(), next(), next(), next())
    }
}

/// The bytes of a mapping as u64 words.
fn words_of(bytes: &[u8]) -> &[u64] {
    // SAFETY: any bit pattern is a valid u64; mappings are page-aligned,
    // so the prefix is empty (checked).
    let (prefix, words, _) = unsafe { bytes.align_to::<u64>() };
    assert!(prefix.is_empty(), "mappings are page-aligned");
    words
}
