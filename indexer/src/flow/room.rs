//! Room for a bulk epoch's entries, appended to the graph at once and then
//! written by the epoch's workers, each in its own part, where `Appender`
//! appends one entry at a time on one thread.

use anyhow::{bail, Result};
use bitcoin::BlockHash;
use satflow_schema::{AddrId, OutNum, TxNum};

use super::{block_entry, input_entry, output_entry, tx_entry};
use super::{BLOCK_WORDS, INPUT_WORDS, OUTPUT_WORDS, TX_WORDS};

/// How many entries of each kind a room, or a part of one, holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub blocks: usize,
    pub txs: usize,
    pub inputs: usize,
    pub outputs: usize,
}

/// Words appended to one array, written from the front.
struct Cursor<'a> {
    words: &'a mut [u64],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(words: &'a mut [u64]) -> Cursor<'a> {
        Cursor { words, at: 0 }
    }

    fn put(&mut self, entry: &[u64]) {
        self.words[self.at..self.at + entry.len()].copy_from_slice(entry);
        self.at += entry.len();
    }

    /// The first `words` words not written yet, as a cursor of their own.
    fn take(&mut self, words: usize) -> Cursor<'a> {
        let rest = std::mem::take(&mut self.words);
        let (head, tail) = rest.split_at_mut(self.at + words);
        let (_, taken) = head.split_at_mut(self.at);
        self.words = tail;
        self.at = 0;
        Cursor::new(taken)
    }

    fn full(&self) -> bool {
        self.at == self.words.len()
    }
}

/// Entries appended to the graph, in its order, to be written in place:
/// blocks, and each tx followed by its inputs and outputs, as `Appender`
/// takes them. Every entry must be written before the next checkpoint.
pub struct Room<'a> {
    /// The index into `inputs` of the next input written.
    next_input: u64,
    blocks: Cursor<'a>,
    txs: Cursor<'a>,
    inputs: Cursor<'a>,
    outputs: Cursor<'a>,
}

impl<'a> Room<'a> {
    pub(super) fn new(
        first_input: u64,
        [blocks, txs, inputs, outputs]: [&'a mut [u64]; 4],
    ) -> Room<'a> {
        Room {
            next_input: first_input,
            blocks: Cursor::new(blocks),
            txs: Cursor::new(txs),
            inputs: Cursor::new(inputs),
            outputs: Cursor::new(outputs),
        }
    }

    /// The room cut into consecutive parts of the given shapes, which
    /// together must be this room's, to be written on as many threads.
    pub fn split(mut self, shapes: &[Shape]) -> Vec<Room<'a>> {
        let parts = shapes
            .iter()
            .map(|s| Room {
                next_input: {
                    let first = self.next_input;
                    self.next_input += s.inputs as u64;
                    first
                },
                blocks: self.blocks.take(s.blocks * BLOCK_WORDS),
                txs: self.txs.take(s.txs * TX_WORDS),
                inputs: self.inputs.take(s.inputs * INPUT_WORDS),
                outputs: self.outputs.take(s.outputs * OUTPUT_WORDS),
            })
            .collect();
        assert!(self.full(), "the parts' shapes add up to the room's");
        parts
    }

    pub fn block(&mut self, first_tx: TxNum, hash: &BlockHash) {
        self.blocks.put(&block_entry(first_tx, hash));
    }

    /// A tx, whose inputs and outputs come next.
    pub fn tx(&mut self, first_output: OutNum) {
        self.txs.put(&tx_entry(self.next_input, first_output));
    }

    /// An input that spends `spent`, one of the graph's outputs, worth
    /// `value`. Its spender mark is left to `set_spenders` (see
    /// `Appender::room`).
    pub fn input(&mut self, spent: OutNum, value: u64) -> Result<()> {
        if spent.is_outside() {
            bail!("{spent}: a coin from before the index's start in a bulk run");
        }
        self.inputs.put(&input_entry(spent, value));
        self.next_input += 1;
        Ok(())
    }

    pub fn output(&mut self, value: u64, addr: Option<AddrId>) {
        self.outputs.put(&output_entry(value, addr));
    }

    /// Whether every entry has been written.
    pub fn full(&self) -> bool {
        [&self.blocks, &self.txs, &self.inputs, &self.outputs]
            .iter()
            .all(|c| c.full())
    }
}
