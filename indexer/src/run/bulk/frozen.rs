//! What the bulk path's maps have let go of, kept on disk. At mainnet's
//! size the address map would take 36–46 GB and the unspent-output map
//! 8–17 GB, so a map that outgrows `--cache-mb` writes its entries out, in
//! key order, as a generation, and starts again empty. A key the map does
//! not hold is then asked of each generation: a Bloom filter turns most
//! keys it never held away without reading anything, and a key that
//! passes reads one window of the file, found by a sparse index of every
//! `STRIDE`-th key. The index (0.13 B an entry) is heap, within the
//! budget; the filters (1.25 B an entry, 1.9 GB for mainnet's addresses)
//! are mapped scratch files the page cache holds, so that they never push
//! the run off the bulk path: a machine short of memory pages them in and
//! out instead.
//!
//! An entry can be taken (an unspent output, spent): a bit per entry then
//! marks it, and merges leave it behind, so what stays on disk and in the
//! filters follows the entries still live, not all ever written.
//!
//! Generations are unnamed temporary files in the index's directory: they
//! serve one bulk run only, and vanish with it, killed or not.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::scratch::MappedWords;

/// A record: the key, most significant byte first, then the value.
const KEY: usize = 16;
/// The longest record a window's buffer takes.
const MAX_RECORD: usize = 48;
/// Records per window: a lookup that passes the filter reads 2.5 KB of
/// addresses, 5 KB of unspent outputs.
const STRIDE: usize = 128;
/// Generations kept apart before they are merged into one.
const MAX_GENERATIONS: usize = 8;
/// Bloom filter bits a key (1–2% false positives, each costing
/// one read), set in 512-bit blocks so that a probe touches one cache line.
const BITS_PER_KEY: usize = 10;
const PROBES: u32 = 7;

/// A value as a generation stores it: a fixed number of bytes.
pub(super) trait Value: Copy + Send + Sync {
    const LEN: usize;
    fn put(&self, out: &mut Vec<u8>);
    fn read(bytes: &[u8]) -> Self;
}

impl Value for u32 {
    const LEN: usize = 4;

    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }

    fn read(bytes: &[u8]) -> u32 {
        u32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
}

/// The generations written so far, oldest first. A key is in one of them
/// at most: the maps write out only entries they did not find on disk.
pub(super) struct Frozen<V> {
    dir: PathBuf,
    generations: Vec<Generation>,
    _values: std::marker::PhantomData<V>,
}

struct Generation {
    file: File,
    /// Per table of the map, the number of its first record; one more
    /// entry for the end.
    starts: Vec<u64>,
    /// Per table, the key of each window's first record.
    fences: Vec<Vec<u128>>,
    bloom: Bloom,
    /// A bit per record, set when it is taken; made at the first take.
    taken: OnceLock<Box<[AtomicU64]>>,
    taken_count: AtomicU64,
}

impl<V: Value> Frozen<V> {
    const RECORD: usize = KEY + V::LEN;

    pub fn new(dir: &Path) -> Frozen<V> {
        assert!(Self::RECORD <= MAX_RECORD);
        Frozen {
            dir: dir.to_owned(),
            generations: Vec::new(),
            _values: std::marker::PhantomData,
        }
    }

    /// Heap the generations keep: fences, and taken marks.
    pub fn bytes(&self) -> usize {
        self.generations.iter().map(Generation::bytes).sum()
    }

    /// Bytes of their filters, mapped (see `Bloom`).
    pub fn filter_bytes(&self) -> usize {
        self.generations.iter().map(|g| g.bloom.bytes()).sum()
    }

    pub fn generations(&self) -> usize {
        self.generations.len()
    }

    /// Entries on disk not taken.
    pub fn live(&self) -> u64 {
        self.generations.iter().map(Generation::live).sum()
    }

    /// The value of `key` in the generation that holds it; `table` is
    /// the one of the map's tables that held it.
    pub fn get(&self, key: u128, table: usize) -> Result<Option<V>> {
        for generation in self.generations.iter().rev() {
            if let Some((_, value)) = generation.find::<V>(key, table)? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// Like `get`, and marks the entry taken: a second take of it finds
    /// nothing, and the next merge drops it.
    pub fn take(&self, key: u128, table: usize) -> Result<Option<V>> {
        for generation in self.generations.iter().rev() {
            if let Some((record, value)) = generation.find::<V>(key, table)? {
                return Ok(generation.mark_taken(record).then_some(value));
            }
        }
        Ok(None)
    }

    /// Writes `count` entries as a new generation: `entries(t)` gives
    /// those of table `t` of `tables`, in key order. Returns `count`.
    ///
    /// Past `MAX_GENERATIONS`, all are merged into one, so that a key
    /// never asks more filters than that; each merge reads and writes
    /// what is live on disk, about every `MAX_GENERATIONS`-th time. They
    /// are merged too once half of what is on disk was taken, so that taken
    /// entries never outnumber live ones for long; such a merge writes
    /// fewer entries than were taken since the last, so over a run these
    /// merges write no more than is ever taken. Generations wholly taken
    /// are dropped.
    pub fn push<F>(&mut self, count: u64, tables: usize, entries: F) -> Result<u64>
    where
        F: Fn(usize) -> Result<Vec<(u128, V)>>,
    {
        let generation = self.write(count, tables, entries)?;
        self.generations.retain(|g| g.live() > 0);
        self.generations.push(generation);
        let (live, all) = self
            .generations
            .iter()
            .fold((0, 0), |(l, a), g| (l + g.live(), a + g.len()));
        if self.generations.len() > MAX_GENERATIONS || live < all / 2 {
            let old = std::mem::take(&mut self.generations);
            let merged = self.write(live, tables, |t| {
                let mut all = Vec::new();
                for generation in &old {
                    all.extend(generation.live_table::<V>(t)?);
                }
                all.par_sort_unstable_by_key(|&(key, _)| key);
                Ok(all)
            })?;
            self.generations.push(merged);
        }
        Ok(count)
    }

    /// One table at a time, each on every worker: the bytes in flight stay
    /// a small part of what the map held.
    fn write<F>(&self, count: u64, tables: usize, entries: F) -> Result<Generation>
    where
        F: Fn(usize) -> Result<Vec<(u128, V)>>,
    {
        let context = || format!("writing a map to a scratch file in {}", self.dir.display());
        let file = tempfile::tempfile_in(&self.dir).with_context(context)?;
        let bloom = Bloom::new(&self.dir, count)?;
        let mut starts = Vec::with_capacity(tables + 1);
        let mut fences = Vec::with_capacity(tables);
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        let mut at = 0;
        for table in 0..tables {
            let entries = entries(table)?;
            let windows: Vec<Vec<u8>> = entries
                .par_chunks(STRIDE)
                .map(|window| {
                    let mut bytes = Vec::with_capacity(window.len() * Self::RECORD);
                    for (key, value) in window {
                        bloom.insert(*key);
                        bytes.extend_from_slice(&key.to_be_bytes());
                        value.put(&mut bytes);
                    }
                    bytes
                })
                .collect();
            for bytes in windows {
                out.write_all(&bytes).with_context(context)?;
            }
            starts.push(at);
            at += entries.len() as u64;
            fences.push(
                entries
                    .iter()
                    .step_by(STRIDE)
                    .map(|&(key, _)| key)
                    .collect(),
            );
        }
        debug_assert_eq!(at, count);
        starts.push(at);
        out.flush().with_context(context)?;
        drop(out);
        Ok(Generation {
            file,
            starts,
            fences,
            bloom,
            taken: OnceLock::new(),
            taken_count: AtomicU64::new(0),
        })
    }
}

impl Generation {
    fn len(&self) -> u64 {
        self.starts.last().copied().unwrap_or(0)
    }

    fn live(&self) -> u64 {
        self.len() - self.taken_count.load(Ordering::Relaxed)
    }

    /// Marks record `n` taken; false if it was already.
    fn mark_taken(&self, n: u64) -> bool {
        let bits = self.taken.get_or_init(|| {
            (0..self.len().div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        let bit = 1 << (n % 64);
        let first = bits[(n / 64) as usize].fetch_or(bit, Ordering::Relaxed) & bit == 0;
        if first {
            self.taken_count.fetch_add(1, Ordering::Relaxed);
        }
        first
    }

    fn is_taken(&self, n: u64) -> bool {
        self.taken.get().is_some_and(|bits| {
            bits[(n / 64) as usize].load(Ordering::Relaxed) & 1 << (n % 64) != 0
        })
    }

    /// The entries of table `t` not taken, in key order.
    fn live_table<V: Value>(&self, t: usize) -> Result<Vec<(u128, V)>> {
        let record = Frozen::<V>::RECORD;
        let (first, end) = (self.starts[t], self.starts[t + 1]);
        let mut bytes = vec![0; (end - first) as usize * record];
        self.file
            .read_exact_at(&mut bytes, first * record as u64)
            .with_context(|| format!("reading records {first} to {end} of a scratch file"))?;
        Ok((first..)
            .zip(bytes.chunks_exact(record))
            .filter(|&(n, _)| !self.is_taken(n))
            .map(|(_, r)| decode(r))
            .collect())
    }

    fn bytes(&self) -> usize {
        let fences: usize = self.fences.iter().map(|f| f.capacity() * 16).sum();
        let taken = self.taken.get().map_or(0, |bits| bits.len() * 8);
        fences + self.starts.capacity() * 8 + taken
    }

    /// The number of `key`'s record and its value, taken or not.
    fn find<V: Value>(&self, key: u128, table: usize) -> Result<Option<(u64, V)>> {
        if !self.bloom.may_hold(key) {
            return Ok(None);
        }
        let window = self.fences[table].partition_point(|&f| f <= key);
        if window == 0 {
            return Ok(None);
        }
        let first = self.starts[table] + ((window - 1) * STRIDE) as u64;
        let len = (self.starts[table + 1] - first).min(STRIDE as u64) as usize;
        let record = Frozen::<V>::RECORD;
        let mut buf = [0u8; STRIDE * MAX_RECORD];
        let buf = &mut buf[..len * record];
        self.file
            .read_exact_at(buf, first * record as u64)
            .with_context(|| format!("reading record {first} of a scratch file"))?;
        let records: Vec<&[u8]> = buf.chunks_exact(record).collect();
        Ok(records
            .binary_search_by_key(&key, |r| key_of(r))
            .ok()
            .map(|i| (first + i as u64, decode::<V>(records[i]).1)))
    }
}

fn key_of(record: &[u8]) -> u128 {
    u128::from_be_bytes(record[..KEY].try_into().expect("16 bytes"))
}

fn decode<V: Value>(record: &[u8]) -> (u128, V) {
    (key_of(record), V::read(&record[KEY..]))
}

/// A blocked Bloom filter over keys that are already uniform hashes, so
/// that they need no hashing of their own: the top 64 bits pick the block,
/// and a mix of all 128 the bits in it. Its bits live in a mapped scratch
/// file, outside the heap: the filters grow with every key on disk (1.25 B
/// a key, 1.9 GB for mainnet's addresses), and the page cache holds them.
struct Bloom {
    bits: MappedWords,
}

/// Words of a block: 512 bits, one cache line.
const BLOCK_WORDS: usize = 8;

impl Bloom {
    fn new(dir: &Path, keys: u64) -> Result<Bloom> {
        let blocks = (keys as usize * BITS_PER_KEY).div_ceil(512).max(1);
        Ok(Bloom {
            bits: MappedWords::zeroed(dir, blocks * BLOCK_WORDS)?,
        })
    }

    fn bytes(&self) -> usize {
        self.bits.bytes()
    }

    /// The block and the mixed bits whose 9-bit pieces name the bits set.
    fn probe(&self, key: u128) -> (&[AtomicU64], u64) {
        let words = self.bits.words();
        let blocks = words.len() / BLOCK_WORDS;
        let top = (key >> 64) as u64;
        let block = ((u128::from(top) * blocks as u128) >> 64) as usize;
        let mixed = (top ^ key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let at = block * BLOCK_WORDS;
        (&words[at..at + BLOCK_WORDS], mixed ^ (mixed >> 29))
    }

    fn insert(&self, key: u128) {
        let (block, bits) = self.probe(key);
        for i in 0..PROBES {
            let bit = (bits >> (i * 9)) & 511;
            block[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
    }

    fn may_hold(&self, key: u128) -> bool {
        let (block, bits) = self.probe(key);
        (0..PROBES).all(|i| {
            let bit = (bits >> (i * 9)) & 511;
            block[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::bulk::ordered::tests::uniform_keys as keys;

    /// Keys spread over four tables by their low bits, each sorted, with
    /// values from `first`.
    fn tables(keys: &[u128], first: u32) -> Vec<Vec<(u128, u32)>> {
        let mut tables = vec![Vec::new(); 4];
        for (i, &k) in keys.iter().enumerate() {
            tables[k as usize % 4].push((k, first + i as u32));
        }
        tables.iter_mut().for_each(|t| t.sort_unstable());
        tables
    }

    #[test]
    fn generations_hold_what_was_written_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut frozen = Frozen::<u32>::new(dir.path());
        let (old, new) = (keys(1, 20_000), keys(2, 30_000));
        // Eleven generations: the first nine merged into one.
        let mut first = 0;
        for part in old.chunks(2_000).chain([&new[..]]) {
            let tables = tables(part, first);
            let written = frozen.push(part.len() as u64, 4, |t| Ok(tables[t].clone()));
            assert_eq!(written.unwrap(), part.len() as u64);
            first += part.len() as u32;
        }
        assert_eq!(frozen.generations(), 3);
        let get = |k: u128| frozen.get(k, k as usize % 4).unwrap();
        for (i, &k) in old.iter().chain(&new).enumerate() {
            assert_eq!(get(k), Some(i as u32), "key {i}");
        }
        let strangers = keys(3, 50_000);
        assert!(strangers.iter().all(|&k| get(k).is_none()));
        // Neighbours of held keys read a window and find nothing there.
        assert!(old.iter().all(|&k| get(k ^ 1 << 20).is_none()));
        let (heap, filters) = (frozen.bytes() as f64, frozen.filter_bytes() as f64);
        assert!(
            heap / 50_000.0 < 0.3,
            "{heap} bytes of heap for 50,000 keys"
        );
        assert!(filters / 50_000.0 < 1.4, "{filters} bytes of filters");
    }

    #[test]
    fn the_filter_turns_most_strangers_away() {
        let held = keys(4, 100_000);
        let dir = tempfile::tempdir().unwrap();
        let bloom = Bloom::new(dir.path(), held.len() as u64).unwrap();
        held.iter().for_each(|&k| bloom.insert(k));
        assert!(held.iter().all(|&k| bloom.may_hold(k)));
        let passed = keys(5, 100_000)
            .into_iter()
            .filter(|&k| bloom.may_hold(k))
            .count();
        assert!(passed < 2_000, "{passed} of 100,000 strangers passed");
    }
}
