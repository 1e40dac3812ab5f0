//! Sorted run files: how a bulk run keeps the families whose keys from one
//! epoch fall among those of every other (`txids`, `addr_ids`, `spends`,
//! `history`). Each epoch's rows of such a family go to one file in key
//! order, in compressed blocks, with each block's first key indexed at its
//! end. When the run ends (`Store::merge_runs`) a family's files are
//! merged once, key range by key range on every worker, straight into
//! last-level table files: no per-epoch table files, and no compaction
//! rewriting them.
//!
//! A file is named after the last height of the epoch it holds and is
//! renamed into place only once synced, before the epoch's tip is written:
//! after a kill, the files above the tip are of epochs the index does not
//! hold, and are removed unread.
//!
//! File layout, integers little-endian: blocks `[rows' length u32][length
//! u32][the rows, zstd]`, the rows `[key len u16][value len u32][key][value]`
//! in key order; then the index, `[offset u64][key len u16][key]` per
//! block; then `[where the index starts u64][rows u64][blocks u64][MAGIC
//! u64]`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use rayon::prelude::*;
use zstd::bulk::Decompressor;

use super::arena::{Arena, Op};
use super::fds;
use super::tournament::LoserTree;
use super::write::{Landing, Table, ROWS_PER_FILE};
use super::Store;

/// Keys from the first up to the second; None: from the first key, or to
/// past the last.
type KeyRange<'k> = (Option<&'k [u8]>, Option<&'k [u8]>);

/// Where a family's run files live, under the database directory.
const RUNS_DIR: &str = "runs";
const MAGIC: u64 = u64::from_le_bytes(*b"sfruns01");
const FOOTER: u64 = 32;
/// Bytes of rows per block, compressed as one: the index has a block's
/// first key, where a merge of a key range starts reading.
const BLOCK: usize = 64 << 10;
/// zstd's level for the blocks: fast, since a run file is read only once.
const LEVEL: i32 = 1;
/// Runs read at once by one merge, each through a block of its rows (up
/// to 64 KiB, and the compressed block it came from: ~100 KB a run, so
/// ~50 MB a merge, one merge per worker). More runs than this are first
/// merged in groups: an extra pass over most of the rows, which a 16 GB
/// chain (471 epochs) needed at 128; a mainnet run has ~25,000 epochs,
/// two passes at 512. Fewer where the open-file limit is low
/// (`Store::merge_fan_in`).
const FAN_IN: usize = 512;
const MIN_FAN_IN: usize = 16;

/// `Store::merge_fan_in` for an open-file `limit`, the index's `tables`
/// and `workers` merging at once.
fn fan_in_for(limit: u64, tables: u64, workers: usize) -> usize {
    let free = limit.saturating_sub(tables + fds::RESERVE);
    let per_merge = usize::try_from(free).unwrap_or(usize::MAX) / workers.max(1);
    per_merge.clamp(MIN_FAN_IN, FAN_IN)
}

impl Store {
    /// Runs one merge of this index reads at once: `FAN_IN`, or fewer
    /// where the open-file limit, less the index's table files (RocksDB
    /// keeps each open) and a reserve, would not let every worker's merge
    /// hold its runs open. Other merges of files beside the index (the
    /// cluster build's) keep within it too.
    pub fn merge_fan_in(&self) -> Result<usize> {
        let limit = fds::raise_limit()?;
        let tables = fds::table_files(&self.path);
        Ok(fan_in_for(limit, tables, rayon::current_num_threads()))
    }

    pub(super) fn runs_dir(&self, family: &str) -> PathBuf {
        self.path.join(RUNS_DIR).join(family)
    }

    /// Writes `rows` of `family`, sorted, distinct keys, puts only, as the
    /// run of the epoch ending at height `tag`; durable when this returns.
    pub(super) fn write_run(&self, family: &str, tag: u32, rows: &Arena) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let dir = self.runs_dir(family);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut out = RunWriter::create(dir.join(format!("{tag:010}.run")))?;
        for (op, key, value) in rows.ops_in_order() {
            ensure!(op == Op::Put, "{family}: only new rows go to run files");
            out.push(key, value)?;
        }
        out.finish()
    }

    /// Merges `family`'s run files up to height `through` (those above it
    /// are removed: their epochs' tips never landed) into table files on
    /// the last level, and removes them. The merge goes by key ranges on
    /// every worker, split only between keys that differ in their first
    /// `group` bytes. Each row on its way is shown to `tap` (key, value)
    /// with its range's state, from `init`, which goes to `done` once the
    /// range is merged (what it holds need not wait for the other ranges):
    /// what `done` makes of the states is returned in key order, so a
    /// caller can fold the rows without reading them back. None when there
    /// were no runs. A kill part way leaves the runs to merge again: a row
    /// found twice is kept once.
    pub fn merge_runs<T, U: Send>(
        &self,
        family: &'static str,
        through: Option<u32>,
        group: usize,
        init: impl Fn() -> T + Sync,
        tap: impl Fn(&mut T, &[u8], &[u8]) -> Result<()> + Sync,
        done: impl Fn(T) -> Result<U> + Sync,
    ) -> Result<Option<Vec<U>>> {
        let dir = self.runs_dir(family);
        let mut runs = match list(&dir, through)? {
            Some(runs) => runs,
            None => return Ok(None),
        };
        let started = std::time::Instant::now();
        let (count, bytes) = (runs.len(), runs.iter().map(|r| r.end).sum::<u64>());
        let fan_in = self.merge_fan_in()?;
        while runs.len() > fan_in {
            runs = narrow(&dir, runs, through, fan_in)?;
        }
        let bounds = bounds(&runs, rayon::current_num_threads() * 4, group);
        let ranges: Vec<KeyRange> = (0..=bounds.len())
            .map(|i| {
                let from = i.checked_sub(1).map(|b| bounds[b].as_slice());
                (from, bounds.get(i).map(Vec::as_slice))
            })
            .collect();
        let merged = ranges
            .par_iter()
            .enumerate()
            .map(|(i, (from, to))| {
                let mut state = init();
                let files =
                    self.merge_range(family, i, &runs, (*from, *to), |k, v| tap(&mut state, k, v))?;
                Ok((files, done(state)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let (tables, states): (Vec<_>, Vec<U>) = merged.into_iter().unzip();
        let rows = tables.iter().flatten().map(|(_, rows)| rows).sum::<u64>();
        let files: Vec<PathBuf> = tables.into_iter().flatten().map(|(file, _)| file).collect();
        if !files.is_empty() {
            self.ingest_files(family, rows as usize, files)?;
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        tracing::info!(
            "{family}: {count} runs ({:.1} MB) merged into {rows} rows in {:.1} s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        Ok(Some(states))
    }

    /// The rows of `runs` in `[from, to)`, merged into table files of
    /// `ROWS_PER_FILE` rows each, and shown to `tap`: the files and their
    /// rows.
    fn merge_range(
        &self,
        family: &'static str,
        range: usize,
        runs: &[RunFile],
        (from, to): KeyRange,
        mut tap: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<Vec<(PathBuf, u64)>> {
        let mut merge = Merge::new(runs, from, to)?;
        let options = self.table_options(family, Landing::Bottom);
        let mut files = Vec::new();
        let mut row = merge.next()?;
        while row.is_some() {
            let file = self.ingest_file(family, format!("{range}.{}", files.len()))?;
            let mut table = Table::create(&options, &file, family)?;
            let mut rows = 0;
            while let Some((key, value)) = row {
                table.add(Op::Put, key, value)?;
                tap(key, value)?;
                rows += 1;
                if rows == ROWS_PER_FILE as u64 {
                    break;
                }
                row = merge.next()?;
            }
            table.finish()?;
            files.push((file, rows));
            if rows == ROWS_PER_FILE as u64 {
                row = merge.next()?;
            }
        }
        Ok(files)
    }
}

/// The run files in `dir` up to height `through`, oldest first, after
/// removing the others and any left half written; None without a `dir`.
fn list(dir: &Path, through: Option<u32>) -> Result<Option<Vec<RunFile>>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        found => found.with_context(|| format!("listing {}", dir.display()))?,
    };
    let mut runs = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tag = name
            .strip_suffix(".run")
            .and_then(|n| n.get(..10))
            .and_then(|n| n.parse::<u32>().ok());
        match tag {
            Some(tag) if through.is_some_and(|t| tag <= t) => runs.push(RunFile::open(path, tag)?),
            // Not whole, or of an epoch above the tip.
            _ => remove(&path)?,
        }
    }
    runs.sort_by(|a, b| (a.tag, &a.path).cmp(&(b.tag, &b.path)));
    Ok(Some(runs))
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
}

/// Merges groups of `runs` so that one fewer merge round of `fan_in` runs
/// is left, each group into one run, on every worker; the runs then in
/// `dir`.
fn narrow(
    dir: &Path,
    runs: Vec<RunFile>,
    through: Option<u32>,
    fan_in: usize,
) -> Result<Vec<RunFile>> {
    let mut rest = runs.as_slice();
    let mut jobs = Vec::new();
    // A merged run's name must not be one still there: a kill may have
    // left runs named by an earlier round.
    let mut n = 0;
    for size in group_sizes(runs.len(), fan_in) {
        let (inputs, after) = rest.split_at(size);
        rest = after;
        let tag = inputs
            .iter()
            .map(|r| r.tag)
            .max()
            .expect("a group has runs");
        let path = loop {
            let path = dir.join(format!("{tag:010}.m{n}.run"));
            n += 1;
            if runs.iter().all(|r| r.path != path) {
                break path;
            }
        };
        jobs.push((path, inputs));
    }
    jobs.par_iter().try_for_each(|(path, inputs)| {
        let mut out = RunWriter::create(path.clone())?;
        let mut merge = Merge::new(inputs, None, None)?;
        while let Some((key, value)) = merge.next()? {
            out.push(key, value)?;
        }
        out.finish()?;
        inputs.iter().try_for_each(|r| remove(&r.path))
    })?;
    Ok(list(dir, through)?.unwrap_or_default())
}

/// The sizes of the groups to merge `runs` runs in, in one round: just
/// enough runs that one merge of `fan_in` can read what is left, or, when
/// that takes more than one round, every run in groups of `fan_in`.
/// The cluster build's merge of its own runs goes by it too.
pub fn group_sizes(runs: usize, fan_in: usize) -> Vec<usize> {
    let excess = runs.saturating_sub(fan_in);
    // Each full group takes fan_in runs down to one.
    let needed = excess.div_ceil(fan_in - 1);
    if needed > fan_in {
        return vec![fan_in; runs / fan_in];
    }
    let mut sizes = vec![fan_in; needed.saturating_sub(1)];
    if needed > 0 {
        // The last group only as many as are still too many.
        sizes.push(excess - (needed - 1) * (fan_in - 1) + 1);
    }
    sizes
}

/// Up to `parts - 1` keys that split the rows of `runs` into about equal
/// parts, taken from their indexes and cut to their first `group` bytes:
/// keys that share those bytes fall in one part.
fn bounds(runs: &[RunFile], parts: usize, group: usize) -> Vec<Vec<u8>> {
    let mut keys: Vec<&[u8]> = runs
        .iter()
        .flat_map(|r| &r.index)
        .map(|(k, _)| &k[..k.len().min(group)])
        .collect();
    keys.sort_unstable();
    let mut bounds: Vec<Vec<u8>> = (1..parts)
        .filter_map(|p| keys.get(p * keys.len() / parts))
        .map(|k| k.to_vec())
        .collect();
    bounds.dedup();
    bounds
}

/// A run file being written under a temporary name.
struct RunWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: BufWriter<File>,
    /// Rows not yet compressed; the first's key is the last index entry.
    block: Vec<u8>,
    compressor: zstd::bulk::Compressor<'static>,
    compressed: Vec<u8>,
    offset: u64,
    rows: u64,
    index: Vec<u8>,
    blocks: u64,
}

impl RunWriter {
    fn create(path: PathBuf) -> Result<RunWriter> {
        let tmp = path.with_extension("tmp");
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(RunWriter {
            path,
            tmp,
            out: BufWriter::with_capacity(1 << 20, file),
            block: Vec::with_capacity(BLOCK + (1 << 10)),
            compressor: zstd::bulk::Compressor::new(LEVEL)?,
            compressed: Vec::new(),
            offset: 0,
            rows: 0,
            index: Vec::new(),
            blocks: 0,
        })
    }

    fn push(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let key_len = u16::try_from(key.len()).context("a key of over 64 KiB")?;
        let value_len = u32::try_from(value.len()).context("a value of over 4 GiB")?;
        if self.block.is_empty() {
            self.index.extend_from_slice(&self.offset.to_le_bytes());
            self.index.extend_from_slice(&key_len.to_le_bytes());
            self.index.extend_from_slice(key);
            self.blocks += 1;
        }
        let mut lengths = [0u8; 6];
        lengths[..2].copy_from_slice(&key_len.to_le_bytes());
        lengths[2..].copy_from_slice(&value_len.to_le_bytes());
        self.block.extend_from_slice(&lengths);
        self.block.extend_from_slice(key);
        self.block.extend_from_slice(value);
        self.rows += 1;
        if self.block.len() >= BLOCK {
            self.write_block()?;
        }
        Ok(())
    }

    fn write_block(&mut self) -> Result<()> {
        let context = || format!("writing {}", self.tmp.display());
        self.compressed.clear();
        self.compressed
            .reserve(zstd::zstd_safe::compress_bound(self.block.len()));
        self.compressor
            .compress_to_buffer(&self.block, &mut self.compressed)
            .with_context(context)?;
        for n in [self.block.len(), self.compressed.len()] {
            let n = u32::try_from(n).expect("a block is far below 4 GiB");
            self.out.write_all(&n.to_le_bytes()).with_context(context)?;
        }
        self.out.write_all(&self.compressed).with_context(context)?;
        self.offset += 8 + self.compressed.len() as u64;
        self.block.clear();
        Ok(())
    }

    /// Writes the last block, the index and the footer, syncs, and renames
    /// the file into place.
    fn finish(mut self) -> Result<()> {
        if !self.block.is_empty() {
            self.write_block()?;
        }
        let context = || format!("writing {}", self.tmp.display());
        self.out.write_all(&self.index).with_context(context)?;
        for n in [self.offset, self.rows, self.blocks, MAGIC] {
            self.out.write_all(&n.to_le_bytes()).with_context(context)?;
        }
        let file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all().with_context(context)?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming {} into place", self.tmp.display()))
    }
}

/// A finished run file and its index: each block's first key and offset.
struct RunFile {
    path: PathBuf,
    tag: u32,
    /// Where the blocks end and the index starts.
    end: u64,
    index: Vec<(Vec<u8>, u64)>,
}

impl RunFile {
    fn open(path: PathBuf, tag: u32) -> Result<RunFile> {
        let bad = |what: &str, at: u64| format!("{}: {what} at offset {at}", path.display());
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .with_context(|| bad("reading the size", 0))?
            .len();
        ensure!(len >= FOOTER, "{}", bad("no footer", len));
        let mut footer = [0u8; FOOTER as usize];
        file.read_exact_at(&mut footer, len - FOOTER)
            .with_context(|| bad("reading the footer", len - FOOTER))?;
        let word = |i: usize| u64::from_le_bytes(footer[i * 8..i * 8 + 8].try_into().unwrap());
        let (end, entries) = (word(0), word(2));
        ensure!(
            word(3) == MAGIC,
            "{}",
            bad("not a run file footer", len - FOOTER)
        );
        ensure!(
            end <= len - FOOTER,
            "{}",
            bad("an index past the footer", len - FOOTER)
        );
        let mut bytes = vec![0u8; (len - FOOTER - end) as usize];
        file.read_exact_at(&mut bytes, end)
            .with_context(|| bad("reading the index", end))?;
        // Each entry takes at least 10 bytes: a corrupt count must not
        // size the allocation.
        let mut index = Vec::with_capacity((entries as usize).min(bytes.len() / 10));
        let mut at = 0usize;
        for _ in 0..entries {
            let Some(head) = bytes.get(at..at + 10) else {
                bail!("{}", bad("a truncated index entry", end + at as u64));
            };
            let offset = u64::from_le_bytes(head[..8].try_into().unwrap());
            let key_len = u16::from_le_bytes(head[8..].try_into().unwrap()) as usize;
            let Some(key) = bytes.get(at + 10..at + 10 + key_len) else {
                bail!("{}", bad("a truncated index key", end + at as u64));
            };
            index.push((key.to_vec(), offset));
            at += 10 + key_len;
        }
        Ok(RunFile {
            path,
            tag,
            end,
            index,
        })
    }
}

/// A run read in key order from where a range starts.
struct Cursor<'r> {
    run: &'r RunFile,
    file: File,
    /// Where the next block starts.
    at: u64,
    compressed: Vec<u8>,
    block: Vec<u8>,
    /// Where the next row starts in `block`.
    pos: usize,
    /// The current row's value in `block`.
    value: std::ops::Range<usize>,
}

impl<'r> Cursor<'r> {
    /// Positioned at the first row whose key is not below `from`; that
    /// row's key in `key`, or None when the run has none.
    fn open(
        run: &'r RunFile,
        from: Option<&[u8]>,
        key: &mut Vec<u8>,
        unzip: &mut Decompressor<'static>,
    ) -> Result<Option<Self>> {
        let at = match from {
            None => 0,
            Some(from) => {
                let i = run.index.partition_point(|(k, _)| k.as_slice() <= from);
                i.checked_sub(1).map_or(0, |i| run.index[i].1)
            }
        };
        let file =
            File::open(&run.path).with_context(|| format!("opening {}", run.path.display()))?;
        let mut cursor = Cursor {
            run,
            file,
            at,
            compressed: Vec::new(),
            block: Vec::new(),
            pos: 0,
            value: 0..0,
        };
        loop {
            if !cursor.read(key, unzip)? {
                return Ok(None);
            }
            if from.is_none_or(|from| key.as_slice() >= from) {
                return Ok(Some(cursor));
            }
        }
    }

    /// Reads the next row's key into `key`; false past the last row.
    fn read(&mut self, key: &mut Vec<u8>, unzip: &mut Decompressor<'static>) -> Result<bool> {
        if self.pos == self.block.len() {
            if self.at >= self.run.end {
                return Ok(false);
            }
            self.load_block(unzip)?;
        }
        let bad = || {
            format!(
                "{}: a row cut short in the block before offset {}",
                self.run.path.display(),
                self.at
            )
        };
        let row = &self.block[self.pos..];
        ensure!(row.len() >= 6, "{}", bad());
        let key_len = u16::from_le_bytes([row[0], row[1]]) as usize;
        let value_len = u32::from_le_bytes([row[2], row[3], row[4], row[5]]) as usize;
        ensure!(row.len() >= 6 + key_len + value_len, "{}", bad());
        key.clear();
        key.extend_from_slice(&row[6..6 + key_len]);
        let value = self.pos + 6 + key_len;
        self.value = value..value + value_len;
        self.pos = self.value.end;
        Ok(true)
    }

    fn load_block(&mut self, unzip: &mut Decompressor<'static>) -> Result<()> {
        let at = self.at;
        let context = || {
            format!(
                "{}: reading the block at offset {at}",
                self.run.path.display()
            )
        };
        let mut head = [0u8; 8];
        self.file
            .read_exact_at(&mut head, at)
            .with_context(context)?;
        let raw_len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
        let compressed_len = u32::from_le_bytes(head[4..].try_into().unwrap()) as usize;
        self.at += 8 + compressed_len as u64;
        ensure!(
            self.at <= self.run.end,
            "{}: a block past the blocks' end",
            context()
        );
        self.compressed.resize(compressed_len, 0);
        self.file
            .read_exact_at(&mut self.compressed, at + 8)
            .with_context(context)?;
        self.block.clear();
        self.block.reserve(raw_len);
        unzip
            .decompress_to_buffer(&self.compressed, &mut self.block)
            .with_context(context)?;
        ensure!(
            self.block.len() == raw_len,
            "{}: a block of the wrong size",
            context()
        );
        self.pos = 0;
        Ok(())
    }

    fn value(&self) -> &[u8] {
        &self.block[self.value.clone()]
    }
}

/// The rows of several runs in `[from, to)`, in key order, each key once.
struct Merge<'r> {
    cursors: Vec<Cursor<'r>>,
    /// One for all the cursors: they read a block at a time.
    unzip: Decompressor<'static>,
    /// Per cursor: its current row's key, None once it has no more rows
    /// before `to`.
    keys: Vec<Option<Vec<u8>>>,
    /// Per cursor: its key's first 16 bytes, big-endian: most matches are
    /// decided by one integer comparison. 8 were too few for `history`,
    /// whose keys start with the address: one address's rows from many
    /// runs meet near the top of the tree, equal in their first 8 bytes.
    prefixes: Vec<u128>,
    /// None without cursors; taken out during a step, which reads `keys`
    /// while it replays the tree.
    tree: Option<LoserTree>,
    /// The cursor whose row was last handed out: it moves on at the next
    /// call.
    last: Option<usize>,
    /// The key last handed out, to skip a second copy of it.
    previous: Option<Vec<u8>>,
    to: Option<&'r [u8]>,
}

/// A key's first 16 bytes as a big-endian integer, zero-padded: ordered as
/// the keys are, except that keys equal in them need comparing whole.
fn prefix(key: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

/// Whether cursor a's row comes before b's: least key first, then the
/// older run; a cursor with no rows left after every other.
fn beats(keys: &[Option<Vec<u8>>], prefixes: &[u128], a: usize, b: usize) -> bool {
    match (&keys[a], &keys[b]) {
        (Some(x), Some(y)) => (prefixes[a], x.as_slice(), a) < (prefixes[b], y.as_slice(), b),
        (x, y) => x.is_some() || (y.is_none() && a < b),
    }
}

impl<'r> Merge<'r> {
    fn new(runs: &'r [RunFile], from: Option<&[u8]>, to: Option<&'r [u8]>) -> Result<Self> {
        let mut merge = Merge {
            cursors: Vec::with_capacity(runs.len()),
            unzip: Decompressor::new()?,
            keys: Vec::with_capacity(runs.len()),
            prefixes: Vec::with_capacity(runs.len()),
            tree: None,
            last: None,
            previous: None,
            to,
        };
        for run in runs {
            let mut key = Vec::new();
            if let Some(cursor) = Cursor::open(run, from, &mut key, &mut merge.unzip)? {
                merge.cursors.push(cursor);
                merge.prefixes.push(prefix(&key));
                merge
                    .keys
                    .push(to.is_none_or(|to| key.as_slice() < to).then_some(key));
            }
        }
        if !merge.cursors.is_empty() {
            let (keys, prefixes) = (&merge.keys, &merge.prefixes);
            merge.tree = Some(LoserTree::new(merge.cursors.len(), |a, b| {
                beats(keys, prefixes, a, b)
            }));
        }
        Ok(merge)
    }

    /// Moves cursor `c` on to its next row, and plays it back up the tree.
    fn advance(&mut self, c: usize, tree: &mut LoserTree) -> Result<()> {
        if let Some(key) = &mut self.keys[c] {
            let more = self.cursors[c].read(key, &mut self.unzip)?;
            if more && self.to.is_none_or(|to| key.as_slice() < to) {
                self.prefixes[c] = prefix(key);
            } else {
                self.keys[c] = None;
            }
        }
        let (keys, prefixes) = (&self.keys, &self.prefixes);
        tree.replay(c, |a, b| beats(keys, prefixes, a, b));
        Ok(())
    }

    /// The next row, as (key, value).
    fn next(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        let Some(mut tree) = self.tree.take() else {
            return Ok(None);
        };
        let result = self.next_in(&mut tree);
        self.tree = Some(tree);
        let Some(c) = result? else {
            return Ok(None);
        };
        let key = self.keys[c].as_deref().expect("a winner with a row");
        Ok(Some((key, self.cursors[c].value())))
    }

    /// The cursor whose row comes next, None when there are no more.
    fn next_in(&mut self, tree: &mut LoserTree) -> Result<Option<usize>> {
        if let Some(last) = self.last.take() {
            let key = self.keys[last].as_mut().expect("a row handed out");
            std::mem::swap(self.previous.get_or_insert_with(Vec::new), key);
            self.advance(last, tree)?;
        }
        loop {
            let c = tree.winner();
            let Some(key) = &self.keys[c] else {
                return Ok(None);
            };
            // A second copy of a row: its epoch merged into a run whose
            // inputs a kill left behind.
            if self.previous.as_deref() == Some(key.as_slice()) {
                self.advance(c, tree)?;
                continue;
            }
            self.last = Some(c);
            return Ok(Some(c));
        }
    }
}

#[cfg(test)]
mod tests {
    use satflow_schema::cf::{self, Family};

    use super::*;
    use crate::store::Access;

    fn arena(rows: &[(u64, u64)]) -> Arena {
        let mut a = Arena::default();
        for (k, v) in rows {
            a.push(&k.to_be_bytes(), Op::Put, &v.to_le_bytes());
        }
        a.par_sort();
        a
    }

    fn count(rows: &mut u64, _: &[u8], _: &[u8]) -> Result<()> {
        *rows += 1;
        Ok(())
    }

    fn runs_in(store: &Store, family: &str) -> usize {
        std::fs::read_dir(store.runs_dir(family)).map_or(0, |d| d.count())
    }

    #[test]
    fn runs_merge_into_one_family_without_the_runs_above_the_tip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let family = cf::Spends::NAME;
        // Interleaved keys, more runs than one merge reads, one run above
        // the tip, and a half-written file.
        let epochs = FAN_IN as u64 + 40;
        for e in 0..epochs {
            let rows: Vec<(u64, u64)> = (0..50).map(|i| (i * epochs + e, e)).collect();
            store.write_run(family, e as u32, &arena(&rows)).unwrap();
        }
        std::fs::write(store.runs_dir(family).join("0000000001.tmp"), b"half").unwrap();
        let rows = store
            .merge_runs(family, Some(epochs as u32 - 2), usize::MAX, || 0, count, Ok)
            .unwrap();
        assert_eq!(rows.unwrap().iter().sum::<u64>(), 50 * (epochs - 1));
        assert_eq!(runs_in(&store, family), 0);
        let got: Vec<(u64, u64)> = store
            .raw_rows(family)
            .unwrap()
            .into_iter()
            .map(|(k, v)| {
                let k = u64::from_be_bytes(k[..].try_into().unwrap());
                (k, u64::from_le_bytes(v[..].try_into().unwrap()))
            })
            .collect();
        let want: Vec<(u64, u64)> = (0..50 * epochs)
            .map(|k| (k, k % epochs))
            .filter(|&(_, e)| e < epochs - 1)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_row_found_twice_is_merged_once_and_a_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let family = cf::History::NAME;
        store
            .write_run(family, 3, &arena(&[(1, 1), (4, 4)]))
            .unwrap();
        // What a kill after a group merge, before its inputs went, leaves.
        std::fs::copy(
            store.runs_dir(family).join("0000000003.run"),
            store.runs_dir(family).join("0000000003.m0-0.run"),
        )
        .unwrap();
        store.write_run(family, 5, &arena(&[(2, 2)])).unwrap();
        let rows = store
            .merge_runs(family, Some(9), usize::MAX, || 0, count, Ok)
            .unwrap();
        assert_eq!(rows.unwrap().iter().sum::<u64>(), 3);

        store.write_run(family, 7, &arena(&[(9, 9)])).unwrap();
        let file = store.runs_dir(family).join("0000000007.run");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
        let err = format!(
            "{:#}",
            store
                .merge_runs(family, Some(9), usize::MAX, || 0, count, Ok)
                .unwrap_err()
        );
        assert!(
            err.contains("0000000007.run") && err.contains("offset"),
            "{err}"
        );
    }

    #[test]
    fn keys_that_share_a_group_stay_in_one_range() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let family = cf::History::NAME;
        // Keys of (group u64, n u64): 4 runs of 40 groups of 1,000 rows,
        // many blocks, so there are bounds to cut.
        for run in 0..4u64 {
            let mut a = Arena::default();
            for i in 0..40_000u64 {
                let mut key = (i / 1000).to_be_bytes().to_vec();
                key.extend_from_slice(&(i * 4 + run).to_be_bytes());
                a.push(&key, Op::Put, &[0; 8]);
            }
            a.par_sort();
            store.write_run(family, run as u32, &a).unwrap();
        }
        let groups = |seen: &mut Vec<Vec<u8>>, key: &[u8], _: &[u8]| {
            if seen.last().is_none_or(|g| g[..] != key[..8]) {
                seen.push(key[..8].to_vec());
            }
            Ok(())
        };
        let ranges = store
            .merge_runs(family, Some(9), 8, Vec::new, groups, Ok)
            .unwrap()
            .unwrap();
        assert!(ranges.iter().filter(|r| !r.is_empty()).count() > 1);
        let all: Vec<Vec<u8>> = ranges.concat();
        assert_eq!(all.len(), 40, "each group in one range, once");
        assert_eq!(store.raw_rows(family).unwrap().len(), 160_000);
    }

    /// The merge compares keys by a 16-byte prefix first: keys equal in
    /// it, longer than it, or each other's zero-padded prefix still come
    /// out in byte order, each once.
    #[test]
    fn keys_equal_in_their_first_16_bytes_merge_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let family = cf::AddrIds::NAME;
        // Keys of 15 to 18 bytes, zero but for the first, the 15th, the
        // 16th and the last, which vary; dealt to 5 runs in turn.
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for len in 15..=18 {
            for bits in 0u32..64 {
                let mut key = vec![0u8; len];
                key[0] = (bits & 1) as u8;
                key[14] = (bits >> 1 & 1) as u8;
                if len > 15 {
                    key[15] = (bits >> 2 & 1) as u8;
                }
                key[len - 1] = (bits >> 3 & 3) as u8;
                keys.push(key);
            }
        }
        keys.sort();
        keys.dedup();
        for run in 0..5 {
            let mut a = Arena::default();
            for key in keys.iter().skip(run).step_by(5) {
                a.push(key, Op::Put, &[]);
            }
            a.par_sort();
            store.write_run(family, run as u32, &a).unwrap();
        }
        let collect = |seen: &mut Vec<Vec<u8>>, key: &[u8], _: &[u8]| {
            seen.push(key.to_vec());
            Ok(())
        };
        let ranges = store
            .merge_runs(family, Some(9), usize::MAX, Vec::new, collect, Ok)
            .unwrap()
            .unwrap();
        assert_eq!(ranges.concat(), keys);
    }

    #[test]
    fn merges_hold_no_more_runs_open_than_the_file_limit_leaves() {
        // 2 workers, a generous limit: the widest merge.
        assert_eq!(fan_in_for(20_000, 3_000, 2), FAN_IN);
        // 16 workers share what 4,096 leaves beside 1,000 table files.
        let fan_in = fan_in_for(4_096, 1_000, 16);
        assert_eq!(fan_in, (4_096 - 1_000 - fds::RESERVE as usize) / 16);
        assert!(16 * fan_in + 1_000 + fds::RESERVE as usize <= 4_096);
        // Nothing left: still a merge that makes progress.
        assert_eq!(fan_in_for(1_024, 5_000, 8), MIN_FAN_IN);
    }

    #[test]
    fn merge_rounds_take_any_number_of_runs_down_to_one_merge() {
        for (fan_in, most_rounds) in [(FAN_IN, 3), (MIN_FAN_IN, 6)] {
            for runs in [
                0,
                1,
                fan_in,
                fan_in + 1,
                300,
                fan_in * fan_in + 5,
                25_000,
                3_000_000,
            ] {
                let (mut left, mut rounds) = (runs, 0);
                while left > fan_in {
                    let sizes = group_sizes(left, fan_in);
                    assert!(
                        sizes.iter().all(|&s| (2..=fan_in).contains(&s)),
                        "{sizes:?}"
                    );
                    assert!(sizes.iter().sum::<usize>() <= left);
                    left = left - sizes.iter().sum::<usize>() + sizes.len();
                    rounds += 1;
                }
                assert!(rounds <= most_rounds, "{runs} runs took {rounds} rounds");
                // A round that can finish merges no more runs than it must.
                if (fan_in + 1..=fan_in * fan_in).contains(&runs) {
                    assert_eq!(rounds, 1);
                    assert_eq!(left, fan_in);
                }
            }
            assert!(group_sizes(fan_in, fan_in).is_empty());
        }
    }
}
