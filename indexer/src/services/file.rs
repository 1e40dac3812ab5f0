//! The categoriser's store: `<db>/services/inferred`, one fixed-size
//! record per categorised cluster in cluster-key order after a header
//! naming the block it is as of. Written whole to a temporary file and
//! renamed over the old one, so a reader (mapping it) sees one complete
//! run or the one before; kept outside RocksDB so that `satflow
//! categorise` can run beside `satflow index --follow`, which holds the
//! database's write lock.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;
use memmap2::Mmap;
use satflow_schema::block::ChainPoint;
use satflow_schema::{ClusterId, ClusterKey, Height};

use super::{Features, Inferred, Service};

/// Subdirectory of the database directory.
pub const DIR: &str = "services";
const FILE: &str = "inferred";
const MAGIC: &[u8; 8] = b"SFSVC\x00\x00\x01";
const HEADER: usize = 56;
const RECORD: usize = 160;

/// The store's file in the database directory `db`.
pub fn path(db: &Path) -> PathBuf {
    db.join(DIR).join(FILE)
}

/// Writes a new store for the chain up to `as_of`, records in key order.
pub struct Writer {
    out: BufWriter<std::fs::File>,
    tmp: PathBuf,
    dest: PathBuf,
    as_of: ChainPoint,
    count: u64,
    last: Option<ClusterKey>,
}

impl Writer {
    pub fn create(db: &Path, as_of: ChainPoint) -> Result<Writer> {
        let dest = path(db);
        let dir = db.join(DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dest.with_extension("tmp");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = Writer {
            out: BufWriter::with_capacity(1 << 20, file),
            tmp,
            dest,
            as_of,
            count: 0,
            last: None,
        };
        // The count is not known yet; `finish` writes the header again.
        w.out.write_all(&w.header())?;
        Ok(w)
    }

    fn header(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.as_of.height.0.to_le_bytes());
        h[16..48].copy_from_slice(self.as_of.hash.as_byte_array());
        h[48..56].copy_from_slice(&self.count.to_le_bytes());
        h
    }

    pub fn push(&mut self, r: &Inferred) -> Result<()> {
        if self.last.is_some_and(|k| k >= r.key) {
            bail!("services: cluster {} written out of key order", r.key.0);
        }
        self.last = Some(r.key);
        self.count += 1;
        self.out
            .write_all(&encode(r))
            .with_context(|| format!("writing {}", self.tmp.display()))
    }

    /// Rewrites the `index`th record pushed, with the same key.
    pub fn patch(&mut self, index: u64, r: &Inferred) -> Result<()> {
        use std::os::unix::fs::FileExt;
        self.out.flush()?;
        let at = (HEADER + index as usize * RECORD) as u64;
        self.out
            .get_ref()
            .write_all_at(&encode(r), at)
            .with_context(|| format!("writing {}", self.tmp.display()))
    }

    /// The `index`th record pushed, as written.
    pub fn read(&mut self, index: u64) -> Result<Inferred> {
        use std::os::unix::fs::FileExt;
        self.out.flush()?;
        let mut b = [0u8; RECORD];
        let at = (HEADER + index as usize * RECORD) as u64;
        self.out
            .get_ref()
            .read_exact_at(&mut b, at)
            .with_context(|| format!("reading {}", self.tmp.display()))?;
        decode(&b).with_context(|| format!("{}: record {index} is damaged", self.tmp.display()))
    }

    /// Makes the new store the one readers see; returns how many records it holds.
    pub fn finish(self) -> Result<u64> {
        use std::io::Seek;
        let header = self.header();
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(std::io::SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("renaming {} into place", self.tmp.display()))?;
        Ok(self.count)
    }
}

fn encode(r: &Inferred) -> [u8; RECORD] {
    let f = &r.features;
    let mut b = [0u8; RECORD];
    b[..8].copy_from_slice(&r.key.0.to_le_bytes());
    b[8..16].copy_from_slice(&r.id.0.to_le_bytes());
    b[16] = r.service as u8;
    b[17] = r.confidence;
    b[24..28].copy_from_slice(&f.first_height.to_le_bytes());
    b[28..32].copy_from_slice(&f.last_height.to_le_bytes());
    for (i, n) in counts(f).into_iter().enumerate() {
        b[32 + 8 * i..40 + 8 * i].copy_from_slice(&n.to_le_bytes());
    }
    b
}

/// The features' counts in their stored order.
fn counts(f: &Features) -> [u64; 15] {
    [
        f.size,
        f.txs,
        f.received,
        f.sent,
        f.coinbase_txs,
        f.coinbase_value,
        f.deposits,
        f.sweeps,
        f.batch_payouts,
        f.single_payouts,
        f.settlements,
        f.coinjoins,
        f.deposit_value,
        f.forwards,
        f.linked_to.map_or(u64::MAX, |c| c.0),
    ]
}

fn decode(b: &[u8]) -> Option<Inferred> {
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4"));
    let n = |i: usize| u64_at(32 + 8 * i);
    Some(Inferred {
        key: ClusterKey(u64_at(0)),
        id: ClusterId(u64_at(8)),
        service: Service::from_u8(b[16])?,
        confidence: b[17],
        features: Features {
            size: n(0),
            txs: n(1),
            received: n(2),
            sent: n(3),
            coinbase_txs: n(4),
            coinbase_value: n(5),
            deposits: n(6),
            sweeps: n(7),
            batch_payouts: n(8),
            single_payouts: n(9),
            settlements: n(10),
            coinjoins: n(11),
            deposit_value: n(12),
            forwards: n(13),
            linked_to: Some(n(14)).filter(|&c| c != u64::MAX).map(ClusterId),
            forward_to: Default::default(),
            fed_by: Default::default(),
            first_height: u32_at(24),
            last_height: u32_at(28),
        },
    })
}

/// A store as last written, mapped read-only.
pub struct Store {
    map: Mmap,
    as_of: ChainPoint,
    count: usize,
    /// Per service (by `Service as usize`), its clusters' keys, ascending.
    by_service: Vec<Vec<ClusterKey>>,
}

impl Store {
    /// None when `satflow categorise` has not run on this database.
    pub fn open(db: &Path) -> Result<Option<Store>> {
        let path = path(db);
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        // SAFETY: the file is only ever replaced by rename, never written in place.
        let map =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mapping {}", path.display()))?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            bail!(
                "{}: not a satflow services store; run `satflow categorise` again",
                path.display()
            );
        }
        let count = u64::from_le_bytes(map[48..56].try_into().expect("8")) as usize;
        let expected = count
            .checked_mul(RECORD)
            .and_then(|n| n.checked_add(HEADER));
        if expected != Some(map.len()) {
            bail!(
                "{}: {} bytes where its header counts {count} records; run `satflow categorise` again",
                path.display(),
                map.len()
            );
        }
        let as_of = ChainPoint {
            height: Height(u32::from_le_bytes(map[8..12].try_into().expect("4"))),
            hash: BlockHash::from_byte_array(map[16..48].try_into().expect("32")),
        };
        let mut store = Store {
            map,
            as_of,
            count,
            by_service: vec![Vec::new(); Service::ALL.len()],
        };
        for i in 0..count {
            let r = store
                .record(i)
                .with_context(|| format!("{}: record {i} is damaged", path.display()))?;
            if r.service != Service::Ordinary {
                store.by_service[r.service as usize].push(r.key);
            }
        }
        Ok(Some(store))
    }

    /// The block the store was built at.
    pub fn as_of(&self) -> ChainPoint {
        self.as_of
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn key_at(&self, i: usize) -> u64 {
        let at = HEADER + i * RECORD;
        u64::from_le_bytes(self.map[at..at + 8].try_into().expect("8"))
    }

    fn record(&self, i: usize) -> Option<Inferred> {
        decode(&self.map[HEADER + i * RECORD..HEADER + (i + 1) * RECORD])
    }

    /// What the store infers of the cluster keyed `key`; None for a cluster
    /// it did not categorise (fewer than `MIN_TXS` transactions, or new).
    pub fn get(&self, key: ClusterKey) -> Option<Inferred> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.key_at(mid).cmp(&key.0) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return self.record(mid),
            }
        }
        None
    }

    /// The clusters inferred to be `service` with at least `min_confidence`
    /// (percent), ascending.
    pub fn clusters_of(&self, service: Service, min_confidence: u8) -> Vec<ClusterKey> {
        self.by_service[service as usize]
            .iter()
            .copied()
            .filter(|&k| self.get(k).is_some_and(|r| r.confidence >= min_confidence))
            .collect()
    }

    /// Every record in key order.
    pub fn iter(&self) -> impl Iterator<Item = Inferred> + '_ {
        (0..self.count).filter_map(|i| self.record(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: u64, service: Service, confidence: u8) -> Inferred {
        Inferred {
            key: ClusterKey(key),
            id: ClusterId(key),
            service,
            confidence,
            features: Features {
                size: 3,
                txs: 40 + key,
                coinbase_txs: 7,
                first_height: 5,
                last_height: 9,
                ..Features::default()
            },
        }
    }

    #[test]
    fn written_then_read() {
        let dir = tempfile::tempdir().unwrap();
        let as_of = ChainPoint {
            height: Height(9),
            hash: BlockHash::from_byte_array([7; 32]),
        };
        assert!(Store::open(dir.path()).unwrap().is_none());
        let mut w = Writer::create(dir.path(), as_of).unwrap();
        let rows = [
            record(2, Service::Exchange, 80),
            record(5, Service::Ordinary, 60),
            record(9, Service::Exchange, 55),
        ];
        for r in &rows {
            w.push(r).unwrap();
        }
        assert!(w.push(&rows[0]).is_err(), "out of order");
        let mut patched = rows[1];
        patched.service = Service::Exchange;
        patched.features.linked_to = Some(ClusterId(2));
        w.patch(1, &patched).unwrap();
        assert_eq!(w.read(1).unwrap(), patched);
        let rows = [rows[0], patched, rows[2]];
        assert_eq!(w.finish().unwrap(), 3);
        let s = Store::open(dir.path()).unwrap().unwrap();
        assert_eq!(s.as_of(), as_of);
        assert_eq!(s.iter().collect::<Vec<_>>(), rows);
        assert_eq!(s.get(ClusterKey(5)), Some(rows[1]));
        assert_eq!(s.get(ClusterKey(4)), None);
        assert_eq!(s.clusters_of(Service::Exchange, 70), vec![ClusterKey(2)]);
        assert_eq!(s.clusters_of(Service::Exchange, 50).len(), 3);
        std::fs::write(path(dir.path()), b"SFSVC").unwrap();
        assert!(Store::open(dir.path()).is_err());
    }
}
