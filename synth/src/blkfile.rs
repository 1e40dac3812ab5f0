//! Writes `blkNNNNN.dat` files the way Bitcoin Core leaves them: `[magic][u32 LE size][block]`
//! records, a new file when the next record would pass 128 MiB, zero-filled tails up to the
//! 16 MiB preallocation chunk, optional XOR obfuscation with the key in `xor.dat`, and records
//! locally out of height order as headers-first download delivers them.

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub const MAX_FILE_SIZE: u64 = 128 << 20;
pub const PREALLOC_CHUNK: u64 = 16 << 20;
/// Records wait in a window this long before being written, so they can overtake each other.
const WINDOW: usize = 16;
/// Chance that a record swaps with the one before it, and that it jumps further back.
const SWAP_CHANCE: f64 = 0.06;
const JUMP_CHANCE: f64 = 0.01;

pub struct BlkWriter {
    dir: PathBuf,
    magic: [u8; 4],
    xor_key: Option<[u8; 8]>,
    file: Option<(File, PathBuf)>,
    files: u32,
    pos: u64,
    pending: VecDeque<Vec<u8>>,
    rng: ChaCha8Rng,
    scratch: Vec<u8>,
}

impl BlkWriter {
    /// Writes `xor.dat` right away when a key is given.
    pub fn create(
        dir: &Path,
        magic: [u8; 4],
        xor_key: Option<[u8; 8]>,
        seed: u64,
    ) -> anyhow::Result<Self> {
        if let Some(key) = xor_key {
            let path = dir.join("xor.dat");
            std::fs::write(&path, key).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(BlkWriter {
            dir: dir.to_path_buf(),
            magic,
            xor_key,
            file: None,
            files: 0,
            pos: 0,
            pending: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            scratch: Vec::new(),
        })
    }

    /// Queues a block; it is written when it leaves the reordering window.
    pub fn push(&mut self, block: Vec<u8>) -> anyhow::Result<()> {
        let at = if self.pending.len() >= 2 && self.rng.gen_bool(JUMP_CHANCE) {
            self.pending.len() - self.rng.gen_range(2..=self.pending.len().min(8))
        } else if !self.pending.is_empty() && self.rng.gen_bool(SWAP_CHANCE) {
            self.pending.len() - 1
        } else {
            self.pending.len()
        };
        self.pending.insert(at, block);
        while self.pending.len() > WINDOW {
            let block = self.pending.pop_front().expect("window is full");
            self.write_record(&block, block.len())?;
        }
        Ok(())
    }

    /// Writes what is still queued, then `partial` cut after half its bytes, and pads the last
    /// file (unless it ends in the partial record). Returns the number of files.
    pub fn finish(mut self, partial: Option<Vec<u8>>) -> anyhow::Result<u32> {
        while let Some(block) = self.pending.pop_front() {
            self.write_record(&block, block.len())?;
        }
        match partial {
            Some(block) => {
                self.write_record(&block, block.len() / 2)?;
                if let Some((mut file, path)) = self.file.take() {
                    file.flush()
                        .with_context(|| format!("flushing {}", path.display()))?;
                }
            }
            None => self.close_file()?,
        }
        Ok(self.files)
    }

    /// Writes the header of a record of `block` and its first `keep` bytes.
    fn write_record(&mut self, block: &[u8], keep: usize) -> anyhow::Result<()> {
        let record_len = 8 + block.len() as u64;
        if self.file.is_none() || (self.pos > 0 && self.pos + record_len > MAX_FILE_SIZE) {
            self.close_file()?;
            self.open_next()?;
        }
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&self.magic);
        header[4..].copy_from_slice(&(block.len() as u32).to_le_bytes());
        self.write_at_pos(&header)?;
        self.write_at_pos(&block[..keep])
    }

    fn write_at_pos(&mut self, data: &[u8]) -> anyhow::Result<()> {
        let (file, path) = self.file.as_mut().expect("a file is open");
        match self.xor_key {
            Some(key) => {
                self.scratch.clear();
                self.scratch.extend_from_slice(data);
                xor(&mut self.scratch, key, self.pos);
                file.write_all(&self.scratch)
            }
            None => file.write_all(data),
        }
        .with_context(|| format!("writing {}", path.display()))?;
        self.pos += data.len() as u64;
        Ok(())
    }

    fn open_next(&mut self) -> anyhow::Result<()> {
        let path = self.dir.join(format!("blk{:05}.dat", self.files));
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        self.file = Some((file, path));
        self.files += 1;
        self.pos = 0;
        Ok(())
    }

    /// Pads the open file with zeros (obfuscated ones, under XOR) to its preallocated size.
    fn close_file(&mut self) -> anyhow::Result<()> {
        let end = self
            .pos
            .next_multiple_of(PREALLOC_CHUNK)
            .min(MAX_FILE_SIZE)
            .max(self.pos);
        if self.xor_key.is_some() {
            let zeros = vec![0u8; 1 << 20];
            while self.pos < end {
                let n = (end - self.pos).min(zeros.len() as u64) as usize;
                self.write_at_pos(&zeros[..n])?;
            }
        }
        if let Some((file, path)) = self.file.take() {
            file.set_len(end)
                .with_context(|| format!("extending {}", path.display()))?;
        }
        Ok(())
    }
}

/// XORs `data`, which sits at `offset` in its file, with the repeating key.
pub fn xor(data: &mut [u8], key: [u8; 8], offset: u64) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte ^= key[(offset as usize + i) % 8];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut records = Vec::new();
        let mut pos = 0;
        while pos + 8 <= bytes.len() && bytes[pos..pos + 4] == [1, 2, 3, 4] {
            let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
            records.push(bytes[pos + 8..(pos + 8 + len).min(bytes.len())].to_vec());
            pos += 8 + len;
        }
        records
    }

    #[test]
    fn every_record_is_written_once_padded_and_xored() {
        let dir = tempfile::tempdir().unwrap();
        let key = [9, 8, 7, 6, 5, 4, 3, 2];
        let mut writer = BlkWriter::create(dir.path(), [1, 2, 3, 4], Some(key), 1).unwrap();
        let blocks: Vec<Vec<u8>> = (0..200u32)
            .map(|i| vec![i as u8; 1000 + i as usize])
            .collect();
        for block in &blocks {
            writer.push(block.clone()).unwrap();
        }
        assert_eq!(writer.finish(Some(vec![0xee; 100])).unwrap(), 1);
        assert_eq!(std::fs::read(dir.path().join("xor.dat")).unwrap(), key);
        let mut bytes = std::fs::read(dir.path().join("blk00000.dat")).unwrap();
        xor(&mut bytes, key, 0);
        let mut records = read_records(&bytes);
        assert_eq!(
            records.pop().unwrap(),
            vec![0xee; 50],
            "truncated tail keeps half"
        );
        assert_ne!(records, blocks, "some records are out of order");
        records.sort_by_key(|r| r.len());
        assert_eq!(records, blocks);
    }

    #[test]
    fn files_roll_over_and_tails_are_zero() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = BlkWriter::create(dir.path(), [1, 2, 3, 4], None, 1).unwrap();
        for _ in 0..20 {
            writer.push(vec![0x55; 10 << 20]).unwrap();
        }
        assert_eq!(writer.finish(None).unwrap(), 2);
        let first = std::fs::read(dir.path().join("blk00000.dat")).unwrap();
        assert_eq!(first.len() as u64, MAX_FILE_SIZE);
        assert_eq!(read_records(&first).len(), 12);
        assert!(first[12 * ((10 << 20) + 8)..].iter().all(|&b| b == 0));
        let second = std::fs::metadata(dir.path().join("blk00001.dat"))
            .unwrap()
            .len();
        assert_eq!(second, 96 << 20, "8 records of 10 MiB round up to 6 chunks");
    }
}
