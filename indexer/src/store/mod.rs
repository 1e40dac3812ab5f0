//! The RocksDB database: opened with the column families of
//! `satflow_schema::cf`, checked for its schema version and network, and
//! read and written only through the schema's typed keys and rows
//! (`read`, `write`; `lookup` finds txs by txid; `sorted` is the indexer's
//! bulk write batch). No code outside this module sees a raw key or the
//! `rocksdb::DB`.

mod arena;
mod fds;
mod follower;
mod lookup;
mod options;
mod read;
mod runs;
mod sorted;
mod spill;
mod tables;
mod tournament;
mod write;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::BlockHash;
use rocksdb::statistics::{StatsLevel, Ticker};
use rocksdb::{Cache, ColumnFamily, ColumnFamilyDescriptor, Options, WriteBufferManager, DB};
use satflow_schema::block::{BlockRow, ChainPoint};
use satflow_schema::cf::{self, Family};
use satflow_schema::{meta, Height, SCHEMA_VERSION};

pub use arena::Arena;
pub use read::Direction;
pub use runs::group_sizes;
pub use sorted::SortedBatch;
pub use spill::{Spill, SpillWriter};
pub use tables::Tables;
pub use write::{Batch, Landing};

use crate::blkfiles::XorKey;
use crate::network::Network;

pub struct Store {
    db: DB,
    path: PathBuf,
    cache: Cache,
    /// The options of a follower, which count block cache hits and
    /// misses (see `block_cache_counts`); None for other handles.
    counted: Option<Options>,
    /// A follower's own RocksDB files (info log, replayed MANIFEST state),
    /// removed when the store closes.
    _follower_dir: Option<follower::FollowerDir>,
}

/// How the database is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The single writer (`satflow index`); holds RocksDB's lock.
    Write,
    /// A reader of what was flushed when it opened; never blocks the writer.
    ReadOnly,
    /// A reader that moves to what the writer has flushed since, at each
    /// `catch_up` (a RocksDB secondary instance).
    Follow,
}

impl Store {
    pub fn open(path: &Path, access: Access) -> Result<Store> {
        Store::open_with_cache(path, access, 256 << 20)
    }

    /// `cache_bytes` of RocksDB block cache (uncompressed blocks): a server
    /// answering random lookups wants most of its working set there, or it
    /// spends its time decompressing blocks again.
    pub fn open_with_cache(path: &Path, access: Access, cache_bytes: usize) -> Result<Store> {
        // RocksDB's clock cache: lookups take no lock, and every point
        // read now goes through it at least twice (an index partition,
        // then the data block).
        let cache = Cache::new_hyper_clock_cache(cache_bytes, 0);
        Store::open_sharing(path, access, cache, 1)
    }

    /// A second follower of the same database, sharing this one's block
    /// cache: one catches up while the other is read (see the server's
    /// `Shared`).
    pub fn twin(&self) -> Result<Store> {
        Store::open_sharing(&self.path, Access::Follow, self.cache.clone(), 2)
    }

    /// `handles`: the readers of the database this process will have open
    /// with this one, each keeping every table file open.
    fn open_sharing(path: &Path, access: Access, cache: Cache, handles: u64) -> Result<Store> {
        let cfs = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, options::cf_options(name, &cache)));
        let mut opts = Options::default();
        opts.create_if_missing(access == Access::Write);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(4);
        // A compaction of a whole family (after a bulk run) is split among
        // threads, not left to one.
        opts.set_max_subcompactions(4);
        // One memtable budget for all families, mutable and immutable:
        // writes wait for flushes rather than memtables piling up.
        opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager(
            512 << 20,
            true,
        ));
        // Readers keep every table file open from the start: the writer's
        // compactions may delete a file a reader has not opened yet.
        let limit = fds::raise_limit()?;
        if access != Access::Write {
            fds::check_room(path, limit, handles)?;
        }
        opts.set_max_open_files(if access == Access::Write { 1024 } else { -1 });
        // Batches are written without a WAL (half the write cost); flushing
        // every family together keeps what is on disk at one batch boundary,
        // so after a crash the tip row still names the last whole block.
        opts.set_atomic_flush(true);
        // A follower (the server's handle) counts block cache hits and
        // misses for its metrics: tickers only, no timers or histograms,
        // which would cost more than a little CPU.
        if access == Access::Follow {
            opts.enable_statistics();
            opts.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);
        }
        let mut follower_dir = None;
        let db = match access {
            Access::Write => DB::open_cf_descriptors(&opts, path, cfs),
            Access::ReadOnly => DB::open_cf_descriptors_read_only(&opts, path, cfs, false),
            Access::Follow => {
                let dir = follower::FollowerDir::create()?;
                let db = DB::open_cf_descriptors_as_secondary(&opts, path, dir.path(), cfs);
                follower_dir = Some(dir);
                db
            }
        };
        let db = db.map_err(|e| open_error(path, e))?;
        let store = Store {
            db,
            path: path.to_owned(),
            cache,
            counted: (access == Access::Follow).then_some(opts),
            _follower_dir: follower_dir,
        };
        store.check_schema(access)?;
        if access == Access::Write {
            store.clear_ingest_dir()?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn cf<F: Family>(&self) -> &ColumnFamily {
        self.cf_named(F::NAME)
    }

    fn cf_named(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is opened")
    }

    /// A follower moves to the writer's latest flushed state. The writer
    /// flushes all families atomically at whole-block batch boundaries, so
    /// a follower never sees part of a block.
    pub fn catch_up(&self) -> Result<()> {
        self.db
            .try_catch_up_with_primary()
            .with_context(|| format!("following the writer of {}", self.path.display()))
    }

    /// Persists every column family at the same point.
    pub fn flush(&self) -> Result<()> {
        let cfs: Vec<_> = cf::ALL.iter().map(|n| self.cf_named(n)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .with_context(|| format!("flushing {}", self.path.display()))
    }

    fn check_schema(&self, access: Access) -> Result<()> {
        match self.meta(meta::SchemaVersion) {
            Ok(Some(SCHEMA_VERSION)) => Ok(()),
            Ok(Some(v)) => bail!(
                "{} holds a satflow index of schema version {v}, but this satflow reads version {SCHEMA_VERSION}: index into a new --db",
                self.path.display(),
            ),
            Err(_) => bail!(
                "{} holds a satflow index of an unreadable schema version; this satflow reads version {SCHEMA_VERSION}: index into a new --db",
                self.path.display(),
            ),
            Ok(None) if access == Access::Write => {
                let mut batch = self.batch();
                batch.put_meta(meta::SchemaVersion, &SCHEMA_VERSION);
                self.write(batch)?;
                self.flush()
            }
            Ok(None) => bail!("{} is not a satflow index (no schema version)", self.path.display()),
        }
    }

    /// The network recorded at the first index run, if any.
    pub fn network(&self) -> Result<Option<Network>> {
        let Some(name) = self.meta(meta::Network)? else {
            return Ok(None);
        };
        name.parse()
            .map(Some)
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", self.path.display()))
    }

    /// The blocks directory of the last index run and its XOR key, to read
    /// raw blocks back.
    pub fn blocks_source(&self) -> Result<Option<(PathBuf, XorKey)>> {
        let (Some(dir), Some(key)) = (self.meta(meta::BlocksDir)?, self.meta(meta::XorKey)?) else {
            return Ok(None);
        };
        Ok(Some((
            PathBuf::from(OsString::from_vec(dir.0)),
            XorKey(key),
        )))
    }

    /// The last block applied.
    pub fn tip(&self) -> Result<Option<ChainPoint>> {
        self.meta(meta::Tip)
    }

    /// The first block of an index that does not start at genesis.
    pub fn start(&self) -> Result<Option<ChainPoint>> {
        self.meta(meta::Start)
    }

    /// Height of the index's first block: 0 unless it starts later.
    pub fn base_height(&self) -> Result<Height> {
        Ok(self.start()?.map_or(Height(0), |p| p.height))
    }

    pub fn block(&self, height: Height) -> Result<Option<BlockRow>> {
        self.get::<cf::Blocks>(&height)
    }

    /// The block at `height`, which the index must hold.
    pub fn need_block(&self, height: Height) -> Result<BlockRow> {
        self.need::<cf::Blocks>(&height)
    }

    pub fn tip_block(&self) -> Result<Option<BlockRow>> {
        match self.tip()? {
            Some(tip) => self.block(tip.height),
            None => Ok(None),
        }
    }

    /// The height of a block of the best chain.
    pub fn height_of(&self, hash: &BlockHash) -> Result<Option<Height>> {
        self.get::<cf::BlockHeight>(hash)
    }

    /// Total size of the database files on disk.
    pub fn size_on_disk(&self) -> u64 {
        dir_size(&self.path)
    }

    /// Block cache hits and misses since the store opened, all column
    /// families together; None unless it was opened with `Access::Follow`
    /// (the only handle that counts them).
    pub fn block_cache_counts(&self) -> Option<(u64, u64)> {
        self.counted.as_ref().map(|o| {
            (
                o.get_ticker_count(Ticker::BlockCacheHit),
                o.get_ticker_count(Ticker::BlockCacheMiss),
            )
        })
    }

    /// What RocksDB holds in memory for this handle now.
    pub fn memory(&self) -> Result<RocksMemory> {
        let mut table_readers = 0;
        for name in cf::ALL {
            table_readers += self
                .db
                .property_int_value_cf(self.cf_named(name), "rocksdb.estimate-table-readers-mem")
                .with_context(|| {
                    format!("reading {}'s table readers' memory", self.path.display())
                })?
                .unwrap_or(0);
        }
        Ok(RocksMemory {
            table_readers,
            block_cache: self.cache.get_usage() as u64,
            block_cache_pinned: self.cache.get_pinned_usage() as u64,
        })
    }
}

/// What a handle holds in memory for RocksDB, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RocksMemory {
    /// Held by its open table files outside the block cache, summed over
    /// the families (`rocksdb.estimate-table-readers-mem`).
    pub table_readers: u64,
    /// The block cache's contents (shared by twins: count it once).
    pub block_cache: u64,
    /// Of those, the blocks pinned there: each open table file's top-level
    /// index and filter partitions, and blocks being read.
    pub block_cache_pinned: u64,
}

/// Total size of the files under `path`.
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn open_error(path: &Path, e: rocksdb::Error) -> anyhow::Error {
    let msg = e.to_string();
    if msg.contains("LOCK") || msg.contains("lock") {
        anyhow::anyhow!(
            "{} is already open for writing by another process (one `satflow index` per database): {msg}",
            path.display()
        )
    } else if msg.contains("Column family not found") {
        anyhow::anyhow!(
            "{} lacks column families this satflow reads (it was written by an older satflow): run `satflow index --db {} --blocks-dir …` once to add them: {msg}",
            path.display(),
            path.display()
        )
    } else {
        anyhow::anyhow!("opening index database {}: {msg}", path.display())
    }
}
