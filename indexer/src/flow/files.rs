//! The writer's side of a flow array: a file of u64 words, mapped
//! read-write, grown in large steps and never shrunk.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memmap2::{MmapMut, UncheckedAdvice};

/// Growth step floor: small chains stay small, big ones do not remap often.
const MIN_GROWTH: usize = 1 << 20;

pub struct ArrayFile {
    path: PathBuf,
    file: File,
    map: MmapMut,
    /// Words in use; the file may be longer.
    len: usize,
}

impl ArrayFile {
    /// Opens (or creates) `path` with `len` words in use.
    pub fn open(path: &Path, len: usize) -> Result<ArrayFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        if size < MIN_GROWTH as u64 {
            // Never map an empty file.
            file.set_len(MIN_GROWTH as u64)
                .with_context(|| format!("sizing {}", path.display()))?;
        }
        let mut a = ArrayFile {
            path: path.to_owned(),
            map: map(&file, path)?,
            file,
            len: 0,
        };
        a.reserve(len)?;
        a.len = len;
        Ok(a)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Forgets the words from `len` on (the file keeps its size).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn reserve(&mut self, words: usize) -> Result<()> {
        let need = words * 8;
        if need <= self.map.len() {
            return Ok(());
        }
        let size = need.max(self.map.len() * 2).max(MIN_GROWTH);
        self.file
            .set_len(size as u64)
            .with_context(|| format!("growing {} to {size} bytes", self.path.display()))?;
        self.map = map(&self.file, &self.path)?;
        Ok(())
    }

    pub fn push(&mut self, words: &[u64]) -> Result<()> {
        self.extend(words.len())?.copy_from_slice(words);
        Ok(())
    }

    /// `words` more words in use, returned to be written in place (each
    /// word native-endian, as `set` writes it).
    pub fn extend(&mut self, words: usize) -> Result<&mut [u64]> {
        let start = self.len;
        self.reserve(start + words)?;
        self.len += words;
        let bytes = &mut self.map[start * 8..self.len * 8];
        // SAFETY: any bit pattern is a valid u64; the map is page-aligned
        // and `start * 8` a multiple of 8, so the prefix is empty (checked).
        let (prefix, words, _) = unsafe { bytes.align_to_mut::<u64>() };
        assert!(prefix.is_empty(), "mappings are page-aligned");
        Ok(words)
    }

    /// The bytes of `words`, to write in place (each word native-endian,
    /// as `set` writes it); they end at `len`.
    pub fn bytes_mut(&mut self, words: Range<usize>) -> &mut [u8] {
        let end = words.end.min(self.len);
        &mut self.map[words.start.min(end) * 8..end * 8]
    }

    pub fn get(&self, i: usize) -> u64 {
        u64::from_ne_bytes(self.map[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
    }

    pub fn set(&mut self, i: usize, v: u64) {
        self.map[i * 8..i * 8 + 8].copy_from_slice(&v.to_ne_bytes());
    }

    /// Writes the mapped pages back to the file, then lets them go from
    /// this process's memory: they stay in the file and the page cache, to
    /// be read back if touched again. Otherwise every page written stays
    /// resident as long as the map, and a bulk run's peak memory grows with
    /// the graph (several GB at 16 GB of blk data).
    pub fn sync(&self) -> Result<()> {
        self.sync_range(0..self.map.len() / 8)
    }

    /// Starts writing the pages that hold `words` back to the file, and
    /// returns without waiting for them: a `sync_range` of them later
    /// then waits for little more than the disk's flush (README, Speed:
    /// a 4 GB run's `msync`s 1.95 → 0.54 s). Only a hint: where the file
    /// system refuses it, that later sync writes them.
    pub fn start_writeback(&self, words: Range<usize>) {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let (offset, len) = ((words.start * 8) as i64, (words.len() * 8) as i64);
            // SAFETY: a plain system call on a file this struct owns.
            let refused = unsafe {
                libc::sync_file_range(
                    self.file.as_raw_fd(),
                    offset,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                ) != 0
            };
            if refused {
                tracing::debug!(
                    "{}: write-back not started early: {}",
                    self.path.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = words;
    }

    /// `sync` for the pages that hold `words`.
    pub fn sync_range(&self, words: Range<usize>) -> Result<()> {
        let (offset, len) = (words.start * 8, words.len() * 8);
        self.map
            .flush_range(offset, len)
            .with_context(|| format!("syncing {}", self.path.display()))?;
        // SAFETY: a shared mapping of a file: dropped pages keep their
        // contents in the file, and no reference into the map outlives
        // this call (`get` copies words out, `bytes_mut` borrows the file
        // mutably).
        unsafe {
            self.map
                .unchecked_advise_range(UncheckedAdvice::DontNeed, offset, len)
        }
        .with_context(|| format!("releasing the pages of {}", self.path.display()))
    }
}

fn map(file: &File, path: &Path) -> Result<MmapMut> {
    // SAFETY: only this writer (the index's single writer process) maps
    // the file read-write; readers map it read-only and never see it shrink.
    unsafe { MmapMut::map_mut(file) }.with_context(|| format!("mapping {}", path.display()))
}
