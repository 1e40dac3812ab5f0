//! Arrays in unnamed scratch files, memory-mapped: the OS pages them, so
//! what they hold lives in the page cache, not the heap, and a machine
//! short of memory reads pages back from disk rather than running out.
//! They hold what grows with the chain and is read at random: the cluster
//! build's sets and counts (`cluster`), the bulk path's Bloom filters
//! (`run::bulk::frozen`), gigabytes each at mainnet's size. A file
//! vanishes with its array, or with the process, killed or not.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::AtomicU64;

use anyhow::{Context, Result};
use memmap2::{Advice, MmapMut, MmapRaw};

/// An unnamed file in `dir`, sized to `bytes`.
fn create(dir: &Path, bytes: usize) -> Result<File> {
    let file = tempfile::tempfile_in(dir)
        .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
    size(&file, bytes)?;
    Ok(file)
}

/// Sizes `file` to `bytes` (at least 8: nothing maps an empty file).
fn size(file: &File, bytes: usize) -> Result<()> {
    let bytes = bytes.max(8) as u64;
    file.set_len(bytes)
        .with_context(|| format!("sizing a scratch file to {bytes} bytes"))
}

/// Maps `file` whole, to read and write.
fn map_file(file: &File) -> Result<MmapMut> {
    // SAFETY: the file is ours alone (an unnamed temp file), and lives as
    // long as the map.
    unsafe { MmapMut::map_mut(file) }.context("mapping a scratch file")
}

/// A growable `u32` array, for one thread at a time.
pub struct MappedArray {
    map: MmapMut,
    len: usize,
    file: File,
}

impl MappedArray {
    pub fn zeroed(dir: &Path, len: usize) -> Result<MappedArray> {
        let file = create(dir, len * 4)?;
        let map = map_file(&file)?;
        Ok(MappedArray { map, len, file })
    }

    /// Makes room for `len` entries, the new ones zero. The file grows by
    /// an eighth at least, so that growing a little at a time maps it
    /// again rarely.
    pub fn grow(&mut self, len: usize) -> Result<()> {
        let room = self.map.len() / 4;
        if len > room {
            size(&self.file, len.max(room + room / 8) * 4)?;
            self.map = map_file(&self.file)?;
        }
        self.len = self.len.max(len);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, i: usize) -> u32 {
        u32::from_ne_bytes(self.map[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
    }

    pub fn set(&mut self, i: usize, v: u32) {
        self.map[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }

    /// Entry `i` of the array read as u64s (slots 2i and 2i + 1).
    pub fn get_u64(&self, i: usize) -> u64 {
        u64::from(self.get(2 * i)) | u64::from(self.get(2 * i + 1)) << 32
    }

    pub fn set_u64(&mut self, i: usize, v: u64) {
        self.set(2 * i, v as u32);
        self.set(2 * i + 1, (v >> 32) as u32);
    }
}

/// A fixed number of zeroed 64-bit words, each atomic: set from every
/// worker at once, read at random.
pub struct MappedWords {
    /// Raw: the words are written through shared references. The mapping
    /// keeps the file alive; no descriptor stays open for it.
    map: MmapRaw,
    len: usize,
}

impl MappedWords {
    pub fn zeroed(dir: &Path, len: usize) -> Result<MappedWords> {
        let file = create(dir, len * 8)?;
        let map = MmapRaw::map_raw(&file).context("mapping a scratch file")?;
        // Each read wants one cache line: a page let go under memory
        // pressure comes back alone, without the OS reading ahead.
        map.advise(Advice::Random)
            .context("advising the kernel of random reads of a scratch file")?;
        Ok(MappedWords { map, len })
    }

    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the map is page-aligned, writable and at least `len`
        // words long; nothing reaches its bytes but through these atomics,
        // and it lives as long as the borrow.
        unsafe { std::slice::from_raw_parts(self.map.as_mut_ptr().cast::<AtomicU64>(), self.len) }
    }

    /// Bytes mapped.
    pub fn bytes(&self) -> usize {
        self.len * 8
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use rayon::prelude::*;

    use super::*;

    #[test]
    fn an_array_grown_keeps_what_it_held_and_adds_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let mut array = MappedArray::zeroed(dir.path(), 3).unwrap();
        array.set(2, 7);
        array.grow(5_000).unwrap();
        assert_eq!((array.len(), array.get(2), array.get(4_999)), (5_000, 7, 0));
        array.set_u64(100, u64::MAX - 1);
        assert_eq!(array.get_u64(100), u64::MAX - 1);
    }

    #[test]
    fn words_set_from_every_worker_are_all_seen() {
        let dir = tempfile::tempdir().unwrap();
        let words = MappedWords::zeroed(dir.path(), 1_000).unwrap();
        (0..64_000u64).into_par_iter().for_each(|i| {
            words.words()[(i % 1_000) as usize].fetch_or(1 << (i / 1_000), Ordering::Relaxed);
        });
        assert!(words
            .words()
            .iter()
            .all(|w| w.load(Ordering::Relaxed) == u64::MAX));
        assert_eq!(words.bytes(), 8_000);
    }
}
