//! A Bitcoin Core `blocks/` directory: which files hold blocks, the XOR key
//! that obfuscates them (Core 28+), and the records inside each file.
//!
//! A record is `[magic: 4][size: u32 LE][block: size bytes]`. Real files also
//! hold a zero-filled preallocated tail, a half-written last record while the
//! node is running, and, rarely, garbage between records after a crash.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::network::Network;

/// Consensus bound on a serialized block (weight ≥ size, weight ≤ 4M).
pub const MAX_BLOCK_BYTES: u32 = 4_000_000;
pub const HEADER_BYTES: u32 = 80;

/// The 8-byte key Core 28+ XORs over every byte of blk files by file offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XorKey(pub [u8; 8]);

impl XorKey {
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 8]
    }

    /// De-obfuscates `buf`, which was read at `offset` of a blk file.
    pub fn apply(&self, offset: u64, buf: &mut [u8]) {
        if self.is_zero() {
            return;
        }
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= self.0[((offset + i as u64) % 8) as usize];
        }
    }
}

/// One `blkNNNNN.dat`, read with positioned reads of the length it had
/// when opened. Not memory-mapped: a run reads each byte once, and mapped
/// pages would count as the process's own memory for as long as it runs.
pub struct BlkFile {
    pub number: u32,
    pub path: PathBuf,
    file: File,
    len: u64,
}

/// Bytes per read while looking for padding's end or the next magic.
const SEARCH_CHUNK: u64 = 1 << 20;

impl BlkFile {
    pub fn open(number: u32, path: PathBuf) -> Result<BlkFile> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // Core only appends to blk files and never truncates one it has
        // written to; we never read past the length seen now.
        let len = file
            .metadata()
            .with_context(|| format!("reading the length of {}", path.display()))?
            .len();
        Ok(BlkFile {
            number,
            path,
            file,
            len,
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `len` de-obfuscated bytes at `offset`.
    pub fn read(&self, key: XorKey, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = self.read_raw(offset, len)?;
        key.apply(offset, &mut buf);
        Ok(buf)
    }

    /// `len` bytes at `offset` as they are on disk.
    fn read_raw(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let past_end = || {
            format!(
                "{}: {len} bytes at offset {offset} run past the end of the file",
                self.path.display()
            )
        };
        let end = offset.checked_add(len as u64).with_context(past_end)?;
        if end > self.len {
            bail!(past_end());
        }
        let mut buf = vec![0u8; len];
        self.file.read_exact_at(&mut buf, offset).with_context(|| {
            format!(
                "{}: reading {len} bytes at offset {offset}",
                self.path.display()
            )
        })?;
        Ok(buf)
    }

    /// The first position from `from` on (below `end`) whose bytes, as on
    /// disk, satisfy `hit` (given the position and the bytes from it on,
    /// at least `window` of them), read a chunk at a time.
    fn find(
        &self,
        from: u64,
        end: u64,
        window: u64,
        hit: impl Fn(u64, &[u8]) -> bool,
    ) -> Result<Option<u64>> {
        let mut at = from;
        while at < end {
            let stop = (at + SEARCH_CHUNK).min(end);
            let bytes =
                self.read_raw(at, ((stop - at) + window - 1).min(self.len - at) as usize)?;
            for p in at..stop {
                let i = (p - at) as usize;
                if bytes.len() - i >= window as usize && hit(p, &bytes[i..]) {
                    return Ok(Some(p));
                }
            }
            at = stop;
        }
        Ok(None)
    }
}

/// The blk files of a directory and its XOR key, in file-number order.
pub struct BlocksDir {
    pub path: PathBuf,
    pub key: XorKey,
    pub files: Vec<BlkFile>,
}

impl BlocksDir {
    pub fn open(path: &Path) -> Result<BlocksDir> {
        let key = read_xor_key(path)?;
        let mut numbered = Vec::new();
        let entries = std::fs::read_dir(path)
            .with_context(|| format!("reading blocks directory {}", path.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", path.display()))?;
            let name = entry.file_name();
            if let Some(number) = blk_file_number(&name.to_string_lossy()) {
                numbered.push((number, entry.path()));
            }
        }
        numbered.sort();
        let files = numbered
            .into_iter()
            .map(|(n, p)| BlkFile::open(n, p))
            .collect::<Result<Vec<_>>>()?;
        Ok(BlocksDir {
            path: path.to_owned(),
            key,
            files,
        })
    }

    pub fn file(&self, number: u32) -> Option<&BlkFile> {
        self.files
            .binary_search_by_key(&number, |f| f.number)
            .ok()
            .map(|i| &self.files[i])
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(BlkFile::len).sum()
    }
}

/// Where Core keeps blk file `number` in `dir`.
pub fn blk_path(dir: &Path, number: u32) -> PathBuf {
    dir.join(format!("blk{number:05}.dat"))
}

/// `blk01234.dat` → 1234; anything else (rev*.dat, xor.dat, index/) → None.
fn blk_file_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("blk")?.strip_suffix(".dat")?;
    if digits.len() < 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn read_xor_key(dir: &Path) -> Result<XorKey> {
    let path = dir.join("xor.dat");
    match std::fs::read(&path) {
        Ok(bytes) => match <[u8; 8]>::try_from(bytes.as_slice()) {
            Ok(key) => Ok(XorKey(key)),
            Err(_) => bail!(
                "{}: expected an 8-byte XOR key, found {} bytes",
                path.display(),
                bytes.len()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(XorKey::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

pub use satflow_schema::block::BlockLoc;

/// A complete record found by the scanner, with its raw 80-byte header.
#[derive(Clone, Debug)]
pub struct Record {
    pub loc: BlockLoc,
    pub header: [u8; 80],
}

/// Something odd but survivable, reported to the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanNote {
    /// Bytes that are not a record; scanning resumed at the next magic.
    Garbage {
        file: PathBuf,
        offset: u64,
        skipped: u64,
    },
    /// A record that runs past the end of the file: a node still writing.
    Truncated {
        file: PathBuf,
        offset: u64,
        declared: u32,
        present: u64,
    },
    /// The last record of a file, whole in length but not a valid block:
    /// a node writes into preallocated zeros, so its length can show
    /// before its body does. Read again next run.
    Unfinished {
        file: PathBuf,
        offset: u64,
        why: String,
    },
}

impl std::fmt::Display for ScanNote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScanNote::Garbage { file, offset, skipped } => write!(
                f,
                "{}: {skipped} bytes of garbage at offset {offset}, resynced on the next magic",
                file.display()
            ),
            ScanNote::Truncated { file, offset, declared, present } => write!(
                f,
                "{}: record at offset {offset} declares {declared} bytes but only {present} are present (still being written?)",
                file.display()
            ),
            ScanNote::Unfinished { file, offset, why } => write!(
                f,
                "{}: the last record, at offset {offset}, is not a valid block ({why}): taken as still being written, and read again next run",
                file.display()
            ),
        }
    }
}

/// What one pass over one file found.
#[derive(Debug, Default)]
pub struct FileScan {
    pub records: Vec<Record>,
    pub notes: Vec<ScanNote>,
    pub network: Option<Network>,
    /// Where the next run starts: the first byte not consumed as a complete
    /// record (a truncated record or the zero tail start here).
    pub resume_at: u64,
    /// Where the preallocated zero tail begins, when the data ends in one.
    pub tail_at: Option<u64>,
}

/// Scans `file` from `start` for block records of one network.
pub fn scan_file(file: &BlkFile, key: XorKey, start: u64) -> Result<FileScan> {
    let mut scan = FileScan {
        resume_at: start,
        ..FileScan::default()
    };
    let len = file.len();
    let mut pos = start;
    // Where the garbage began, while `pos` is a magic found inside it.
    let mut garbage_from: Option<u64> = None;
    while pos + 8 <= len {
        // Where to look for the next magic when `pos` holds no record.
        let resync_from = if is_padding(file, key, pos)? {
            match next_non_padding(file, key, pos)? {
                None => {
                    // The preallocated tail: end of data for now.
                    scan.tail_at = Some(pos);
                    break;
                }
                Some(next) => next,
            }
        } else {
            let prefix = file.read(key, pos, 8)?;
            let magic: [u8; 4] = prefix[..4].try_into().expect("4 bytes");
            let size = u32::from_le_bytes(prefix[4..8].try_into().expect("4 bytes"));
            let mut plausible = Network::from_magic(magic)
                .filter(|_| (HEADER_BYTES..=MAX_BLOCK_BYTES).contains(&size));
            // Any four bytes of garbage may spell a magic: there a record
            // must also end where another begins (or the padding, or the
            // file), or it would swallow up to 4 MB of the records after it.
            if let (Some(network), Some(_)) = (plausible, garbage_from) {
                let same = scan.network.is_none_or(|seen| seen == network);
                if !same || !ends_cleanly(file, key, pos + 8 + u64::from(size))? {
                    plausible = None;
                }
            }
            match plausible {
                Some(network) => {
                    if let Some(seen) = scan.network.filter(|seen| *seen != network) {
                        bail!(
                            "{}: record at offset {pos} has {network} magic, but earlier records are {seen}: a blocks directory must hold one network",
                            file.path.display()
                        );
                    }
                    let body = pos + 8;
                    if body + u64::from(size) > len {
                        let present = len - body;
                        scan.notes.push(ScanNote::Truncated {
                            file: file.path.clone(),
                            offset: pos,
                            declared: size,
                            present,
                        });
                        break;
                    }
                    scan.network = Some(network);
                    let header: [u8; 80] =
                        file.read(key, body, 80)?[..].try_into().expect("80 bytes");
                    scan.records.push(Record {
                        loc: BlockLoc {
                            file: file.number,
                            offset: body,
                            len: size,
                        },
                        header,
                    });
                    pos = body + u64::from(size);
                    scan.resume_at = pos;
                    garbage_from = None;
                    continue;
                }
                None => pos + 1,
            }
        };
        // Garbage that went on past a magic inside it is one stretch.
        let bad_at = match garbage_from {
            Some(from) => {
                if matches!(scan.notes.last(), Some(ScanNote::Garbage { .. })) {
                    scan.notes.pop();
                }
                from
            }
            None => pos,
        };
        match resync(file, key, resync_from, &mut scan, bad_at)? {
            Some(next) => {
                pos = next;
                garbage_from = Some(bad_at);
            }
            None => break,
        }
    }
    // Whatever follows the last complete record is re-read next time.
    let at_data_end = scan.tail_at == Some(scan.resume_at) || scan.resume_at == len;
    if at_data_end {
        check_last_record(file, key, &mut scan)?;
    }
    Ok(scan)
}

/// Takes the last record back when it does not parse as a block: a node
/// may still be writing its body into the zeros its length claims. Only
/// the last one: a node writes in order, so a record with another after
/// it is whole, and its faults are the parser's to report.
fn check_last_record(file: &BlkFile, key: XorKey, scan: &mut FileScan) -> Result<()> {
    let Some(last) = scan.records.last() else {
        return Ok(());
    };
    let body = file.read(key, last.loc.offset, last.loc.len as usize)?;
    if let Err(e) = crate::parse::parse_block(&body) {
        let offset = last.loc.offset - 8;
        scan.notes.push(ScanNote::Unfinished {
            file: file.path.clone(),
            offset,
            why: e.to_string(),
        });
        scan.records.pop();
        scan.resume_at = offset;
        scan.tail_at = None;
    }
    Ok(())
}

/// True where the bytes at `pos` are preallocated zeros. Core preallocates
/// with plain zeros that are *not* obfuscated, so accept either form.
pub fn is_padding(file: &BlkFile, key: XorKey, pos: u64) -> Result<bool> {
    let mut bytes = file.read_raw(pos, 4)?;
    if bytes == [0; 4] {
        return Ok(true);
    }
    key.apply(pos, &mut bytes);
    Ok(bytes == [0; 4])
}

fn next_non_padding(file: &BlkFile, key: XorKey, from: u64) -> Result<Option<u64>> {
    file.find(from, file.len(), 1, |p, b| {
        b[0] != 0 && b[0] ^ key.0[(p % 8) as usize] != 0
    })
}

/// Whether a record ending at `end` ends where the file does, or the
/// padding, or another record (a known magic) begins.
fn ends_cleanly(file: &BlkFile, key: XorKey, end: u64) -> Result<bool> {
    let len = file.len();
    if end == len {
        return Ok(true);
    }
    if end + 4 > len {
        return Ok(false);
    }
    if is_padding(file, key, end)? {
        return Ok(true);
    }
    let magic: [u8; 4] = file.read(key, end, 4)?[..].try_into().expect("4 bytes");
    Ok(Network::from_magic(magic).is_some())
}

/// Finds the next known magic at or after `from`, noting the skipped bytes.
fn resync(
    file: &BlkFile,
    key: XorKey,
    from: u64,
    scan: &mut FileScan,
    bad_at: u64,
) -> Result<Option<u64>> {
    let found = file.find(from, file.len().saturating_sub(3), 4, |p, b| {
        let mut m = [0u8; 4];
        m.copy_from_slice(&b[..4]);
        key.apply(p, &mut m);
        Network::from_magic(m).is_some()
    })?;
    let skipped = found.unwrap_or(file.len()) - bad_at;
    scan.notes.push(ScanNote::Garbage {
        file: file.path.clone(),
        offset: bad_at,
        skipped,
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(magic: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut r = magic.to_vec();
        r.extend_from_slice(&(body.len() as u32).to_le_bytes());
        r.extend_from_slice(body);
        r
    }

    /// A whole block's body: what a node's last record must parse as.
    fn block_body(network: bitcoin::Network) -> Vec<u8> {
        bitcoin::consensus::serialize(&bitcoin::constants::genesis_block(network))
    }

    fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> BlkFile {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(bytes)
            .unwrap();
        BlkFile::open(0, path).unwrap()
    }

    #[test]
    fn file_names() {
        assert_eq!(blk_file_number("blk00000.dat"), Some(0));
        assert_eq!(blk_file_number("blk01234.dat"), Some(1234));
        assert_eq!(blk_file_number("rev00000.dat"), None);
        assert_eq!(blk_file_number("xor.dat"), None);
        assert_eq!(blk_file_number("blk0.dat"), None);
        assert_eq!(blk_file_number("blk00000.dat.tmp"), None);
    }

    #[test]
    fn garbage_zero_tail_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let magic = Network::Regtest.magic();
        let mut bytes = record(magic, &[7u8; 100]);
        bytes.extend_from_slice(b"not a record at all");
        let second_at = bytes.len() as u64;
        bytes.extend(record(magic, &[9u8; 90]));
        let truncated_at = bytes.len() as u64;
        bytes.extend(&record(magic, &[1u8; 200])[..50]);
        let f = write_file(dir.path(), "blk00000.dat", &bytes);
        let scan = scan_file(&f, XorKey::default(), 0).unwrap();
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.records[1].loc.offset, second_at + 8);
        assert_eq!(scan.resume_at, truncated_at);
        assert!(matches!(
            scan.notes[0],
            ScanNote::Garbage {
                offset: 108,
                skipped: 19,
                ..
            }
        ));
        assert!(matches!(
            scan.notes[1],
            ScanNote::Truncated {
                declared: 200,
                present: 42,
                ..
            }
        ));

        let body = block_body(bitcoin::Network::Regtest);
        let mut padded = record(magic, &body);
        padded.extend(vec![0u8; 4096]);
        let f = write_file(dir.path(), "blk00001.dat", &padded);
        let scan = scan_file(&f, XorKey::default(), 0).unwrap();
        let end = 8 + body.len() as u64;
        assert_eq!(
            (scan.records.len(), scan.resume_at, scan.notes.len()),
            (1, end, 0)
        );
        assert_eq!(scan.tail_at, Some(end));
    }

    /// A magic and a plausible size inside garbage are not taken for a
    /// record unless it ends where another record (or the file) begins:
    /// else it would hide the records it claims to span.
    #[test]
    fn a_magic_inside_garbage_hides_no_record() {
        let dir = tempfile::tempdir().unwrap();
        let magic = Network::Regtest.magic();
        for claimed in [100u32, 1_000] {
            let mut bytes = record(magic, &[7u8; 100]);
            bytes.extend_from_slice(b"junk");
            bytes.extend_from_slice(&magic);
            bytes.extend_from_slice(&claimed.to_le_bytes());
            bytes.extend_from_slice(b"more junk");
            let second_at = bytes.len() as u64;
            bytes.extend(record(magic, &[9u8; 90]));
            let third_at = bytes.len() as u64;
            // The last record must parse as a block (`check_last_record`).
            bytes.extend(record(magic, &block_body(bitcoin::Network::Regtest)));
            let f = write_file(dir.path(), "blk00000.dat", &bytes);
            let scan = scan_file(&f, XorKey::default(), 0).unwrap();
            let found: Vec<u64> = scan.records.iter().map(|r| r.loc.offset).collect();
            assert_eq!(found, [8, second_at + 8, third_at + 8], "claimed {claimed}");
            // One stretch of garbage, from the first byte no record holds.
            assert!(
                matches!(
                    &scan.notes[..],
                    [ScanNote::Garbage { offset: 108, skipped, .. }] if *skipped == second_at - 108
                ),
                "claimed {claimed}: {:?}",
                scan.notes
            );
            assert_eq!(scan.resume_at, bytes.len() as u64);
        }
    }

    #[test]
    fn a_last_record_whose_body_is_not_yet_written_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let magic = Network::Regtest.magic();
        let body = block_body(bitcoin::Network::Regtest);
        let mut whole = record(magic, &body);
        whole.extend(record(magic, &body));
        // The second record's length is there, the end of its body not yet.
        let mut writing = whole.clone();
        let cut = writing.len() - 40;
        writing[cut..].fill(0);
        writing.extend(vec![0u8; 4096]);
        let f = write_file(dir.path(), "blk00000.dat", &writing);
        let scan = scan_file(&f, XorKey::default(), 0).unwrap();
        let second_at = 8 + body.len() as u64;
        assert_eq!((scan.records.len(), scan.resume_at), (1, second_at));
        assert!(
            matches!(&scan.notes[..], [ScanNote::Unfinished { offset, .. }] if *offset == second_at),
            "{:?}",
            scan.notes
        );
        // Next run, from where this one stopped, the body is there.
        whole.extend(vec![0u8; 4096]);
        let f = write_file(dir.path(), "blk00000.dat", &whole);
        let scan = scan_file(&f, XorKey::default(), second_at).unwrap();
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.records[0].loc.offset, second_at + 8);
        assert_eq!(scan.notes, vec![]);
    }

    #[test]
    fn xor_obfuscated_file_reads_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let key = XorKey([1, 2, 3, 4, 5, 6, 7, 0xff]);
        let mut bytes = record(Network::Main.magic(), &[3u8; 81]);
        bytes.extend(record(
            Network::Main.magic(),
            &block_body(bitcoin::Network::Bitcoin),
        ));
        let plain = write_file(dir.path(), "blk00000.dat", &bytes);
        key.apply(0, &mut bytes);
        bytes.extend(vec![0u8; 64]); // Core's unobfuscated preallocation
        let obfuscated = write_file(dir.path(), "blk00001.dat", &bytes);
        let a = scan_file(&plain, XorKey::default(), 0).unwrap();
        let b = scan_file(&obfuscated, key, 0).unwrap();
        assert_eq!(a.records.len(), 2);
        assert_eq!(b.notes, vec![]);
        for (x, y) in a.records.iter().zip(&b.records) {
            assert_eq!(
                (x.loc.offset, x.loc.len, x.header),
                (y.loc.offset, y.loc.len, y.header)
            );
        }
    }

    proptest::proptest! {
        // Fuzz: arbitrary bytes, with real magics and sizes spliced in, under
        // any key, never panic and never yield a record past the end.
        #[test]
        fn scanning_arbitrary_bytes_never_panics(
            mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            splices in proptest::collection::vec((0usize..600, 0u32..700), 0..6),
            key in proptest::prelude::any::<[u8; 8]>(),
            start in 0u64..700,
        ) {
            for (at, size) in splices {
                if at + 8 <= bytes.len() {
                    bytes[at..at + 4].copy_from_slice(&Network::Regtest.magic());
                    bytes[at + 4..at + 8].copy_from_slice(&size.to_le_bytes());
                }
            }
            let dir = tempfile::tempdir().unwrap();
            let f = write_file(dir.path(), "blk00000.dat", &bytes);
            if let Ok(scan) = scan_file(&f, XorKey(key), start.min(bytes.len() as u64)) {
                for r in &scan.records {
                    proptest::prop_assert!(r.loc.offset + u64::from(r.loc.len) <= bytes.len() as u64);
                }
                proptest::prop_assert!(scan.resume_at <= bytes.len() as u64);
            }
        }
    }

    #[test]
    fn mixed_networks_are_an_error_naming_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = record(Network::Main.magic(), &[3u8; 81]);
        bytes.extend(record(Network::Test.magic(), &[4u8; 81]));
        let f = write_file(dir.path(), "blk00000.dat", &bytes);
        let err = scan_file(&f, XorKey::default(), 0).unwrap_err().to_string();
        assert!(
            err.contains("offset 89") && err.contains("test magic"),
            "{err}"
        );
    }
}
