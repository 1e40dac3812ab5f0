//! The cluster build's history rows on their way to `cluster_history`:
//! (cluster, tx) keys with the members' rows, gathered in address order,
//! sorted and summed a run at a time, and merged across runs in key order,
//! a range of cluster roots at a time on every worker. Runs stay in memory
//! up to a budget; beyond it they go to scratch files, so a mainnet build
//! needs a bounded heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use rayon::prelude::*;
use satflow_schema::address::HistoryRow;

use super::unionfind::SCRATCH_PREFIX;
use crate::store::group_sizes;

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

/// Runs one merge reads at once, at most (fewer where the open-file limit
/// is low: `Store::merge_fan_in`): a mainnet build makes thousands, and
/// each worker merges a range of every run at once.
pub const FAN_IN: usize = 64;

/// The runs merged in groups, on every worker, until at most `fan_in` are
/// left: each group becomes one run in a scratch file. The groups are as
/// `store::group_sizes` has them, so that only as many runs are merged as
/// that takes; the others are kept as they are.
pub fn narrow(spill: &Spill, mut runs: Vec<Run>, fan_in: usize) -> Result<Vec<Run>> {
    while runs.len() > fan_in {
        let sizes = group_sizes(runs.len(), fan_in);
        let mut merging = runs
            .split_off(runs.len() - sizes.iter().sum::<usize>())
            .into_iter();
        let groups: Vec<Vec<Run>> = sizes
            .iter()
            .map(|&size| merging.by_ref().take(size).collect())
            .collect();
        let merged: Vec<Run> = groups
            .into_par_iter()
            .map(|group| {
                let mut merged = Merged::range(&group, ALL_ROOTS)?;
                let mut out = spill.writer()?;
                while let Some(entry) = merged.next()? {
                    out.push(&entry)?;
                }
                out.finish()
            })
            .collect::<Result<_>>()?;
        runs.extend(merged);
    }
    Ok(runs)
}

/// Cluster roots from the first up to the second (u64: the end may be
/// past every u32 root).
pub type RootRange = (u64, u64);
/// The range every root is in.
pub const ALL_ROOTS: RootRange = (0, u32::MAX as u64 + 1);

/// Root ranges that cut the runs' merged entries into about `parts` of
/// equal size, in order, together covering `ALL_ROOTS`: each can be merged
/// on its own, and a cluster's entries all fall in one. Sizes are judged
/// from a few keys read at even steps of every run.
pub fn split(runs: &[Run], parts: usize) -> Result<Vec<RootRange>> {
    const SAMPLES_PER_PART: usize = 8;
    // (root, entries of its run from there to the next sample)
    let mut samples = Vec::new();
    for run in runs {
        let len = run.len();
        let steps = (parts * SAMPLES_PER_PART).min(len);
        for s in 0..steps {
            let (at, next) = (s * len / steps, (s + 1) * len / steps);
            samples.push((run.root_at(at)?, next - at));
        }
    }
    samples.sort_unstable();
    let total: usize = samples.iter().map(|(_, n)| n).sum();
    let mut cuts = vec![ALL_ROOTS.0];
    let mut seen = 0;
    for (root, n) in samples {
        let root = u64::from(root);
        if seen * parts >= total * cuts.len() && root > *cuts.last().expect("not empty") {
            cuts.push(root);
        }
        seen += n;
    }
    cuts.push(ALL_ROOTS.1);
    Ok(cuts.windows(2).map(|w| (w[0], w[1])).collect())
}

impl Run {
    fn len(&self) -> usize {
        match self {
            Run::Memory(entries) => entries.len(),
            Run::Spilled { len, .. } => *len,
        }
    }

    /// The root of the `i`th entry.
    fn root_at(&self, i: usize) -> Result<u32> {
        match self {
            Run::Memory(entries) => Ok(entries[i].0 .0),
            Run::Spilled { file, .. } => {
                let mut bytes = [0u8; 4];
                file.as_file()
                    .read_exact_at(&mut bytes, (i * ENTRY_BYTES) as u64)
                    .with_context(|| format!("reading scratch file {}", file.path().display()))?;
                Ok(u32::from_le_bytes(bytes))
            }
        }
    }

    /// Where the entries whose roots are at least `root` start.
    fn find(&self, root: u64) -> Result<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match u64::from(self.root_at(mid)?) < root {
                true => lo = mid + 1,
                false => hi = mid,
            }
        }
        Ok(lo)
    }

    /// The entries whose roots lie in `roots`, read in order.
    fn read(&self, (from, to): RootRange) -> Result<Reader<'_>> {
        let (start, end) = (self.find(from)?, self.find(to)?);
        Ok(match self {
            Run::Memory(entries) => Reader::Memory(entries[start..end].iter()),
            Run::Spilled { file, .. } => {
                // A handle of its own, at the range's start.
                let path = file.path();
                let mut input = File::open(path)
                    .with_context(|| format!("opening scratch file {}", path.display()))?;
                input
                    .seek(SeekFrom::Start((start * ENTRY_BYTES) as u64))
                    .with_context(|| format!("reading scratch file {}", path.display()))?;
                Reader::Spilled {
                    input: BufReader::with_capacity(BUFFER, input),
                    left: end - start,
                    path,
                }
            }
        })
    }
}

/// A range of a run, read in order.
enum Reader<'r> {
    Memory(std::slice::Iter<'r, (Key, HistoryRow)>),
    Spilled {
        input: BufReader<File>,
        left: usize,
        path: &'r Path,
    },
}

impl Reader<'_> {
    fn next(&mut self) -> Result<Option<(Key, HistoryRow)>> {
        match self {
            Reader::Memory(entries) => Ok(entries.next().copied()),
            Reader::Spilled { left: 0, .. } => Ok(None),
            Reader::Spilled { input, left, path } => {
                let mut bytes = [0u8; ENTRY_BYTES];
                input
                    .read_exact(&mut bytes)
                    .with_context(|| format!("reading scratch file {}", path.display()))?;
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

/// Every key of a root range of some runs once, in order, with its rows
/// summed across runs.
pub struct Merged<'r> {
    readers: Vec<Reader<'r>>,
    /// Each reader's next entry, keyed by its key and reader.
    heads: BinaryHeap<Reverse<(Key, usize)>>,
    rows: Vec<HistoryRow>,
}

impl<'r> Merged<'r> {
    /// The entries of `runs` whose roots lie in `roots`.
    pub fn range(runs: &'r [Run], roots: RootRange) -> Result<Merged<'r>> {
        let mut merged = Merged {
            readers: runs.iter().map(|r| r.read(roots)).collect::<Result<_>>()?,
            heads: BinaryHeap::new(),
            rows: vec![HistoryRow::default(); runs.len()],
        };
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
        let runs = [kept, spilled, Run::Memory(Vec::new())];
        let all = drain(Merged::range(&runs, ALL_ROOTS).unwrap());
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
        // A range of roots reads only its own, from either kind of run.
        assert_eq!(drain(Merged::range(&runs, (3, 5)).unwrap()), all[1..2]);
    }

    #[test]
    fn more_runs_than_the_fan_in_are_merged_in_groups() {
        let fan_in = 8;
        // Some counts leave a last group short of the fan-in.
        for count in [9, 23, 3 * fan_in as u64 + 5, 80] {
            let dir = tempfile::tempdir().unwrap();
            let spill = Spill::new(dir.path(), 0);
            // Run r holds keys r..r+3 of cluster 1, each received r + 1.
            let runs: Vec<Run> = (0..count)
                .map(|r| {
                    let entries = (r..r + 3).map(|tx| ((1, tx), row(r + 1, 0))).collect();
                    spill.run(entries).unwrap()
                })
                .collect();
            let runs = narrow(&spill, runs, fan_in).unwrap();
            assert!(runs.len() <= fan_in, "{count}: {} runs", runs.len());
            let all = drain(Merged::range(&runs, ALL_ROOTS).unwrap());
            let last = count - 1;
            assert_eq!(all.len() as u64, last + 3);
            for ((root, tx), sum) in all {
                // Key tx is in runs tx-2..=tx (those that exist).
                let runs = tx.saturating_sub(2)..=tx.min(last);
                assert_eq!(root, 1);
                assert_eq!(sum.received, runs.clone().map(|r| r + 1).sum::<u64>());
                assert_eq!(sum.opened, runs.count() as u64);
            }
            // Every scratch file is gone with its run.
            drop(runs);
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn root_ranges_cover_every_entry_once_and_share_them_out() {
        let dir = tempfile::tempdir().unwrap();
        // Half the runs kept in memory, half spilled.
        let spill = Spill::new(dir.path(), 4 * 1500);
        // 1,000 roots, a tx each per run (1,500 entries); root 21 a large
        // cluster.
        let runs: Vec<Run> = (0..8u64)
            .map(|r| {
                let mut entries: Vec<_> = (0..1000u32)
                    .map(|root| ((root * 3, r), row(u64::from(root), 0)))
                    .collect();
                entries.extend((0..500).map(|tx| ((21, 1000 + r * 500 + tx), row(1, 0))));
                spill.run(entries).unwrap()
            })
            .collect();
        assert!(runs.iter().any(|r| matches!(r, Run::Memory(_))));
        assert!(runs.iter().any(|r| matches!(r, Run::Spilled { .. })));
        let whole = drain(Merged::range(&runs, ALL_ROOTS).unwrap());
        let parts = 6;
        let ranges = split(&runs, parts).unwrap();
        assert_eq!(ranges.first().unwrap().0, ALL_ROOTS.0);
        assert_eq!(ranges.last().unwrap().1, ALL_ROOTS.1);
        assert!(ranges
            .windows(2)
            .all(|w| w[0].1 == w[1].0 && w[0].0 < w[0].1));
        let pieces: Vec<_> = ranges
            .iter()
            .map(|&r| drain(Merged::range(&runs, r).unwrap()))
            .collect();
        assert_eq!(pieces.concat(), whole);
        // About equal shares: none over twice its due but the large
        // cluster's (4,000 of the 12,000 entries, in one range).
        assert!(pieces.len() >= parts - 1, "{} ranges", pieces.len());
        let due = whole.len() / parts;
        let small = pieces.iter().filter(|p| !p.iter().any(|e| e.0 .0 == 21));
        for p in small {
            assert!(p.len() <= 2 * due, "{} entries of {due}", p.len());
        }
    }
}
