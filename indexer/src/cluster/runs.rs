//! The cluster build's history rows on their way to `cluster_history`:
//! (cluster, tx) keys with the members' rows, gathered in address order,
//! sorted and summed a run at a time, and merged across runs into one
//! stream in key order. Runs stay in memory up to a budget; beyond it they
//! go to scratch files, so a mainnet build needs a bounded heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use satflow_schema::address::HistoryRow;

use super::unionfind::SCRATCH_PREFIX;

/// A cluster's root address number and a tx number: the order of
/// `cluster_history`'s keys.
pub type Key = (u32, u64);

/// Bytes of an entry in a scratch file: the key, then the row's three sums.
const ENTRY_BYTES: usize = 4 + 8 + 3 * 8;

/// One sorted run of summed entries, each key once.
pub enum Run {
    Memory(Vec<(Key, HistoryRow)>),
    Spilled {
        file: tempfile::NamedTempFile,
        len: usize,
    },
}

/// Where runs go: memory while `budget` entries (~40 bytes each) are not
/// all taken, scratch files in `dir` beyond.
pub struct Spill<'a> {
    dir: &'a Path,
    budget: usize,
    in_memory: AtomicUsize,
}

impl<'a> Spill<'a> {
    pub fn new(dir: &'a Path, budget: usize) -> Spill<'a> {
        Spill {
            dir,
            budget,
            in_memory: AtomicUsize::new(0),
        }
    }

    /// `entries` sorted and summed per key, as a run kept in memory while
    /// the budget allows and written to a scratch file otherwise.
    pub fn run(&self, mut entries: Vec<(Key, HistoryRow)>) -> Result<Run> {
        entries.sort_unstable_by_key(|(key, _)| *key);
        entries.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1.add(&later.1);
            }
            same
        });
        let size = entries.len();
        let held = self.in_memory.fetch_add(size, Ordering::Relaxed);
        if held + size <= self.budget {
            // What the budget counts is what the run holds.
            entries.shrink_to_fit();
            return Ok(Run::Memory(entries));
        }
        self.in_memory.fetch_sub(size, Ordering::Relaxed);
        self.write(&entries)
    }

    fn write(&self, entries: &[(Key, HistoryRow)]) -> Result<Run> {
        let mut out = self.writer()?;
        for entry in entries {
            out.push(entry)?;
        }
        out.finish()
    }

    fn writer(&self) -> Result<Writer> {
        let file = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempfile_in(self.dir)
            .with_context(|| format!("creating a scratch file in {}", self.dir.display()))?;
        let handle = file
            .as_file()
            .try_clone()
            .with_context(|| format!("opening scratch file {}", file.path().display()))?;
        let out = BufWriter::with_capacity(BUFFER, handle);
        Ok(Writer { file, out, len: 0 })
    }
}

/// Bytes of buffer per scratch file read or written.
const BUFFER: usize = 256 << 10;

/// A run being written to a scratch file, in key order.
struct Writer {
    file: tempfile::NamedTempFile,
    out: BufWriter<File>,
    len: usize,
}

impl Writer {
    fn push(&mut self, ((root, tx), row): &(Key, HistoryRow)) -> Result<()> {
        let mut bytes = [0u8; ENTRY_BYTES];
        bytes[..4].copy_from_slice(&root.to_le_bytes());
        for (i, n) in [*tx, row.received, row.sent, row.opened].iter().enumerate() {
            bytes[4 + i * 8..12 + i * 8].copy_from_slice(&n.to_le_bytes());
        }
        self.len += 1;
        self.out
            .write_all(&bytes)
            .with_context(|| format!("writing scratch file {}", self.file.path().display()))
    }

    fn finish(mut self) -> Result<Run> {
        self.out
            .flush()
            .with_context(|| format!("writing scratch file {}", self.file.path().display()))?;
        Ok(Run::Spilled {
            file: self.file,
            len: self.len,
        })
    }
}

/// Runs merged at most this many at a time, so that a merge holds a
/// bounded number of scratch files open (a mainnet build makes thousands).
const FAN_IN: usize = 64;

/// The runs merged into one stream: first `FAN_IN` at a time into longer
/// runs, until at most `FAN_IN` are left.
pub fn merge(spill: &Spill, mut runs: Vec<Run>) -> Result<Merged> {
    while runs.len() > FAN_IN {
        let mut merged = Merged::new(runs.drain(..FAN_IN).collect())?;
        let mut out = spill.writer()?;
        while let Some(entry) = merged.next()? {
            out.push(&entry)?;
        }
        runs.push(out.finish()?);
    }
    Merged::new(runs)
}

/// A run read back in order.
enum Reader {
    Memory(std::vec::IntoIter<(Key, HistoryRow)>),
    Spilled {
        input: BufReader<File>,
        left: usize,
        /// Deleted when the reader is dropped.
        file: tempfile::NamedTempFile,
    },
}

impl Reader {
    fn open(run: Run) -> Result<Reader> {
        Ok(match run {
            Run::Memory(entries) => Reader::Memory(entries.into_iter()),
            Run::Spilled { file, len } => {
                // A handle of its own, at the start: the written one is at the end.
                let input = File::open(file.path())
                    .with_context(|| format!("opening scratch file {}", file.path().display()))?;
                Reader::Spilled {
                    input: BufReader::with_capacity(BUFFER, input),
                    left: len,
                    file,
                }
            }
        })
    }

    fn next(&mut self) -> Result<Option<(Key, HistoryRow)>> {
        match self {
            Reader::Memory(entries) => Ok(entries.next()),
            Reader::Spilled { left: 0, .. } => Ok(None),
            Reader::Spilled { input, left, file } => {
                let mut bytes = [0u8; ENTRY_BYTES];
                input
                    .read_exact(&mut bytes)
                    .with_context(|| format!("reading scratch file {}", file.path().display()))?;
                *left -= 1;
                let word = |i: usize| {
                    u64::from_le_bytes(bytes[4 + i * 8..12 + i * 8].try_into().expect("8 bytes"))
                };
                let root = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
                let row = HistoryRow {
                    received: word(1),
                    sent: word(2),
                    opened: word(3),
                };
                Ok(Some(((root, word(0)), row)))
            }
        }
    }
}

/// Every key of `runs` once, in order, with its rows summed across runs.
pub struct Merged {
    readers: Vec<Reader>,
    /// Each reader's next entry, keyed by its key and reader.
    heads: BinaryHeap<Reverse<(Key, usize)>>,
    rows: Vec<HistoryRow>,
}

impl Merged {
    pub fn new(runs: Vec<Run>) -> Result<Merged> {
        let mut merged = Merged {
            readers: runs.into_iter().map(Reader::open).collect::<Result<_>>()?,
            heads: BinaryHeap::new(),
            rows: Vec::new(),
        };
        merged.rows = vec![HistoryRow::default(); merged.readers.len()];
        for i in 0..merged.readers.len() {
            merged.advance(i)?;
        }
        Ok(merged)
    }

    fn advance(&mut self, i: usize) -> Result<()> {
        if let Some((key, row)) = self.readers[i].next()? {
            self.rows[i] = row;
            self.heads.push(Reverse((key, i)));
        }
        Ok(())
    }

    pub fn next(&mut self) -> Result<Option<(Key, HistoryRow)>> {
        let Some(Reverse((key, i))) = self.heads.pop() else {
            return Ok(None);
        };
        let mut sum = self.rows[i];
        self.advance(i)?;
        while let Some(&Reverse((next, j))) = self.heads.peek() {
            if next != key {
                break;
            }
            self.heads.pop();
            sum.add(&self.rows[j]);
            self.advance(j)?;
        }
        Ok(Some((key, sum)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(received: u64, sent: u64) -> HistoryRow {
        HistoryRow {
            received,
            sent,
            opened: 1,
        }
    }

    fn drain(mut merged: Merged) -> Vec<(Key, HistoryRow)> {
        let mut all = Vec::new();
        while let Some(entry) = merged.next().unwrap() {
            all.push(entry);
        }
        all
    }

    #[test]
    fn runs_in_memory_and_spilled_merge_into_one_sum_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path(), 2);
        let kept = spill
            .run(vec![
                ((5, 9), row(1, 0)),
                ((2, 7), row(2, 0)),
                ((5, 9), row(4, 0)),
            ])
            .unwrap();
        assert!(matches!(kept, Run::Memory(ref e) if e.len() == 2));
        // Past the budget of 2 entries.
        let spilled = spill
            .run(vec![
                ((5, 9), row(0, 32)),
                ((3, 1), row(16, 0)),
                ((2, 7), row(0, 8)),
            ])
            .unwrap();
        assert!(matches!(spilled, Run::Spilled { len: 3, .. }));
        let all = drain(merge(&spill, vec![kept, spilled, Run::Memory(Vec::new())]).unwrap());
        let sum = |received, sent, opened| HistoryRow {
            received,
            sent,
            opened,
        };
        assert_eq!(
            all,
            [
                ((2, 7), sum(2, 8, 2)),
                ((3, 1), sum(16, 0, 1)),
                ((5, 9), sum(5, 32, 3)),
            ]
        );
    }

    #[test]
    fn more_runs_than_the_fan_in_are_merged_in_rounds() {
        let dir = tempfile::tempdir().unwrap();
        let spill = Spill::new(dir.path(), 0);
        // Run r holds keys r..r+3 of cluster 1, each received r + 1.
        let runs: Vec<Run> = (0..2 * FAN_IN as u64 + 5)
            .map(|r| {
                let entries = (r..r + 3).map(|tx| ((1, tx), row(r + 1, 0))).collect();
                spill.run(entries).unwrap()
            })
            .collect();
        let all = drain(merge(&spill, runs).unwrap());
        let last = 2 * FAN_IN as u64 + 4;
        assert_eq!(all.len() as u64, last + 3);
        for ((root, tx), sum) in all {
            // Key tx is in runs tx-2..=tx (those that exist).
            let runs = tx.saturating_sub(2)..=tx.min(last);
            assert_eq!(root, 1);
            assert_eq!(sum.received, runs.clone().map(|r| r + 1).sum::<u64>());
            assert_eq!(sum.opened, runs.count() as u64);
        }
        // Every scratch file is gone with its run.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
