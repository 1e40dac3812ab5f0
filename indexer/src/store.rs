//! The RocksDB database: opening it with the column families of `schema`,
//! checking its schema version and network, and small typed accessors.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Txid};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction,
    IngestExternalFileOptions, IteratorMode, MergeOperands, Options, ReadOptions, SliceTransform,
    SstFileWriter, WriteBatch, WriteBufferManager, WriteOptions, DB,
};

use crate::blkfiles::XorKey;
use crate::network::Network;
use crate::schema::{self, cf, meta, AddrStats, BlockRow, HistoryRow, SCHEMA_VERSION};

pub struct Store {
    db: DB,
    path: PathBuf,
    cache: Cache,
    /// A follower's own RocksDB files (info log, replayed MANIFEST state),
    /// removed when the store closes.
    _follower_dir: Option<tempfile::TempDir>,
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
        let cache = Cache::new_lru_cache(cache_bytes);
        let cfs = cf::ALL
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, cf_options(name, &cache)));
        let mut opts = Options::default();
        opts.create_if_missing(access == Access::Write);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(4);
        // One memtable budget for all families, mutable and immutable:
        // writes wait for flushes rather than memtables piling up.
        opts.set_write_buffer_manager(&WriteBufferManager::new_write_buffer_manager(
            512 << 20,
            true,
        ));
        // Readers keep every table file open from the start: the writer's
        // compactions may delete a file a reader has not opened yet.
        opts.set_max_open_files(if access == Access::Write { 1024 } else { -1 });
        // Batches are written without a WAL (half the write cost); flushing
        // every family together keeps what is on disk at one batch boundary,
        // so after a crash the tip row still names the last whole block.
        opts.set_atomic_flush(true);
        let mut follower_dir = None;
        let db = match access {
            Access::Write => DB::open_cf_descriptors(&opts, path, cfs),
            Access::ReadOnly => DB::open_cf_descriptors_read_only(&opts, path, cfs, false),
            Access::Follow => {
                let dir = tempfile::Builder::new()
                    .prefix("satflow-follower-")
                    .tempdir()
                    .context("creating a follower's scratch directory")?;
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
            _follower_dir: follower_dir,
        };
        store.check_schema(access)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn db(&self) -> &DB {
        &self.db
    }

    pub fn cf(&self, name: &str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is opened")
    }

    pub fn get(&self, cf_name: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.db
            .get_cf(self.cf(cf_name), key)
            .with_context(|| format!("reading {cf_name} from {}", self.path.display()))
    }

    /// Rows of one family at once: RocksDB batches the block reads, for a
    /// fraction of the cost of one `get` per key.
    pub fn multi_get(&self, cf_name: &str, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        self.db
            .batched_multi_get_cf(self.cf(cf_name), keys, false)
            .into_iter()
            .map(|r| {
                r.map(|v| v.map(|s| s.to_vec()))
                    .with_context(|| format!("reading {cf_name} from {}", self.path.display()))
            })
            .collect()
    }

    /// A row that must exist: its absence means the index is inconsistent.
    pub fn need(&self, cf_name: &str, key: &[u8]) -> Result<Vec<u8>> {
        self.get(cf_name, key)?.with_context(|| {
            format!(
                "index is inconsistent: {cf_name} row {} is missing",
                hex::encode(key)
            )
        })
    }

    /// Writes a batch without the WAL: durable at the next `flush` (or the
    /// next automatic memtable flush), all or nothing.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.db
            .write_opt(batch, &opts)
            .with_context(|| format!("writing to {}", self.path.display()))
    }

    /// Adds rows to `family` as a table file, without a memtable. Their keys
    /// ascend and lie above every key the family holds, so RocksDB puts the
    /// file on the last level, where no compaction ever rewrites it. Unlike
    /// `write`, durable at once, so a caller writes them before the rows
    /// that refer to them.
    pub fn ingest<'r>(
        &self,
        family: &str,
        rows: impl ExactSizeIterator<Item = (&'r [u8], &'r [u8])>,
    ) -> Result<()> {
        let count = rows.len();
        if count == 0 {
            return Ok(());
        }
        let dir = self.path.join(INGEST_DIR);
        let file = dir.join(format!("{family}.sst"));
        let context = || {
            format!(
                "ingesting {count} rows into {family} of {}",
                self.path.display()
            )
        };
        std::fs::create_dir_all(&dir).with_context(context)?;
        // A run killed after RocksDB linked the file in may have left this
        // name behind as a second link to a live table file: writing
        // through it would truncate that table.
        remove_if_present(&file)?;
        let opts = cf_options(family, &self.cache);
        let mut writer = SstFileWriter::create(&opts);
        writer.open(&file).with_context(context)?;
        for (key, value) in rows {
            writer.put(key, value).with_context(context)?;
        }
        writer.finish().with_context(context)?;
        let mut ingest = IngestExternalFileOptions::default();
        // A hard link instead of a copy: the file is ours to give away.
        ingest.set_move_files(true);
        self.db
            .ingest_external_file_cf_opts(self.cf(family), &ingest, vec![&file])
            .with_context(context)?;
        // RocksDB removes a moved file itself; this covers the versions that
        // leave the link behind.
        remove_if_present(&file)
    }

    /// Deletes the keys of `family` in `[from, to)`, if there are any, and
    /// persists the deletion; returns whether there were.
    pub fn remove_range(&self, family: &str, from: &[u8], to: &[u8]) -> Result<bool> {
        let mut iter = self.db.raw_iterator_cf(self.cf(family));
        iter.seek(from);
        let found = iter.key().is_some_and(|k| k < to);
        iter.status()
            .with_context(|| format!("reading {family} of {}", self.path.display()))?;
        drop(iter);
        if found {
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(self.cf(family), from, to);
            self.write(batch)?;
            self.flush()?;
        }
        Ok(found)
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
        let cfs: Vec<_> = cf::ALL.iter().map(|n| self.cf(n)).collect();
        self.db
            .flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())
            .with_context(|| format!("flushing {}", self.path.display()))
    }

    fn check_schema(&self, access: Access) -> Result<()> {
        match self.get(cf::META, meta::SCHEMA_VERSION)? {
            Some(v) if v == SCHEMA_VERSION.to_be_bytes() => Ok(()),
            Some(v) => bail!(
                "{} holds a satflow index of schema version {}, but this satflow reads version {SCHEMA_VERSION}: index into a new --db",
                self.path.display(),
                schema::Dec::new("schema version", &v).u32().unwrap_or(0)
            ),
            None if access == Access::Write => {
                self.db.put_cf(self.cf(cf::META), meta::SCHEMA_VERSION, SCHEMA_VERSION.to_be_bytes())?;
                self.flush()
            }
            None => bail!("{} is not a satflow index (no schema version)", self.path.display()),
        }
    }

    /// The network recorded at the first index run, if any.
    pub fn network(&self) -> Result<Option<Network>> {
        let Some(v) = self.get(cf::META, meta::NETWORK)? else {
            return Ok(None);
        };
        let name = String::from_utf8_lossy(&v);
        name.parse()
            .map(Some)
            .map_err(|e: String| anyhow::anyhow!("{}: {e}", self.path.display()))
    }

    /// The blocks directory of the last index run and its XOR key, to read
    /// raw blocks back.
    pub fn blocks_source(&self) -> Result<Option<(PathBuf, XorKey)>> {
        let (Some(dir), Some(key)) = (
            self.get(cf::META, meta::BLOCKS_DIR)?,
            self.get(cf::META, meta::XOR_KEY)?,
        ) else {
            return Ok(None);
        };
        let key: [u8; 8] = key
            .try_into()
            .map_err(|_| anyhow::anyhow!("{}: corrupt xor key row", self.path.display()))?;
        Ok(Some((PathBuf::from(OsString::from_vec(dir)), XorKey(key))))
    }

    /// Height and hash of the last block applied.
    pub fn tip(&self) -> Result<Option<(u32, BlockHash)>> {
        let Some(v) = self.get(cf::META, meta::TIP)? else {
            return Ok(None);
        };
        let mut d = schema::Dec::new("tip", &v);
        let tip = (d.u32()?, BlockHash::from_byte_array(d.take()?));
        d.done()?;
        Ok(Some(tip))
    }

    /// The first block of an index that does not start at genesis.
    pub fn start(&self) -> Result<Option<(u32, BlockHash)>> {
        let Some(v) = self.get(cf::META, meta::START)? else {
            return Ok(None);
        };
        let mut d = schema::Dec::new("start", &v);
        let start = (d.u32()?, BlockHash::from_byte_array(d.take()?));
        d.done()?;
        Ok(Some(start))
    }

    /// Height of the index's first block: 0 unless it starts later.
    pub fn base_height(&self) -> Result<u32> {
        Ok(self.start()?.map_or(0, |(h, _)| h))
    }

    pub fn block(&self, height: u32) -> Result<Option<BlockRow>> {
        self.get(cf::BLOCKS, &schema::key_u32(height))?
            .map(|v| BlockRow::decode(&v).with_context(|| format!("block at height {height}")))
            .transpose()
    }

    /// The highest key of a column family.
    pub fn last_key(&self, family: &str) -> Result<Option<Box<[u8]>>> {
        match self
            .db()
            .iterator_cf(self.cf(family), IteratorMode::End)
            .next()
        {
            Some(item) => Ok(Some(item.with_context(|| format!("reading {family}"))?.0)),
            None => Ok(None),
        }
    }

    pub fn tip_block(&self) -> Result<Option<BlockRow>> {
        match self.tip()? {
            Some((height, _)) => self.block(height),
            None => Ok(None),
        }
    }

    /// Every tx number a txid was given, oldest first: one, except for the
    /// two BIP30 duplicates of mainnet.
    pub fn tx_numbers(&self, txid: &Txid) -> Result<Vec<u64>> {
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        let start = schema::txid_key(txid, 0);
        let iter = self.db.iterator_cf_opt(
            self.cf(cf::TXIDS),
            opts,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut found = Vec::new();
        for item in iter {
            let (key, _) =
                item.with_context(|| format!("reading txids from {}", self.path.display()))?;
            if key.get(..32) != Some(txid.as_byte_array().as_slice()) {
                break;
            }
            found.push(schema::Dec::new("txid key", &key[32..]).u64()?);
        }
        Ok(found)
    }

    /// The tx a spend of `txid` refers to: its latest occurrence (a BIP30
    /// duplicate overwrote the earlier one's outputs).
    pub fn find_tx(&self, txid: &Txid) -> Result<Option<u64>> {
        Ok(self.tx_numbers(txid)?.last().copied())
    }

    /// Total size of the database files on disk.
    pub fn size_on_disk(&self) -> u64 {
        dir_size(&self.path)
    }
}

/// Where `ingest` builds its table files, inside the database directory so
/// that handing one to RocksDB is a hard link.
const INGEST_DIR: &str = "ingest";

fn remove_if_present(file: &Path) -> Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", file.display()))
        }
        _ => Ok(()),
    }
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

/// Per column family tuning: zstd below the first levels, bloom filters
/// where the indexer does point lookups that usually miss.
fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(16 << 10);
    table.set_format_version(5);
    let mut o = Options::default();
    o.set_compression_per_level(&[
        DBCompressionType::None,
        DBCompressionType::None,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
    ]);
    o.set_bottommost_compression_type(DBCompressionType::Zstd);
    o.set_level_compaction_dynamic_level_bytes(true);
    o.set_write_buffer_size(64 << 20);
    o.set_target_file_size_base(64 << 20);
    // Bulk loading: a full memtable should not stall writes while it is
    // flushed, nor a few L0 files while they are compacted.
    o.set_max_write_buffer_number(4);
    o.set_level_zero_file_num_compaction_trigger(8);
    o.set_level_zero_slowdown_writes_trigger(40);
    o.set_level_zero_stop_writes_trigger(64);
    match name {
        cf::ADDR_IDS => {
            // Most lookups are of new addresses: let a bloom filter say
            // "absent" without walking the memtable or reading a block.
            table.set_bloom_filter(10.0, false);
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.05);
        }
        // cluster_of: most addresses are alone in their cluster and have no row.
        cf::BLOCK_HEIGHT | cf::OUTPUTS | cf::TXS | cf::CLUSTER_OF => {
            table.set_bloom_filter(10.0, false)
        }
        cf::TXIDS => {
            // Lookups are by txid alone: filter on the 32-byte prefix.
            o.set_prefix_extractor(SliceTransform::create_fixed_prefix(32));
            o.set_memtable_prefix_bloom_ratio(0.05);
            table.set_bloom_filter(10.0, false);
            table.set_whole_key_filtering(false);
        }
        cf::ADDR_STATS => o.set_merge_operator_associative("add_addr_stats", merge_stats),
        cf::CLUSTER_HISTORY => o.set_merge_operator_associative("add_history", merge_history),
        _ => {}
    }
    o.set_block_based_table_factory(&table);
    o
}

/// Sums `HistoryRow`s: a cluster's row for a tx is the sum of its members' rows.
fn merge_history(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut sum = existing
        .and_then(|b| HistoryRow::decode(b).ok())
        .unwrap_or_default();
    for row in operands
        .into_iter()
        .filter_map(|b| HistoryRow::decode(b).ok())
    {
        sum.add(&row);
    }
    Some(sum.encode())
}

/// Adds `AddrStats` deltas; a malformed operand is a bug, kept out of the sum
/// rather than poisoning the row.
fn merge_stats(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut sum = existing
        .and_then(|b| AddrStats::decode(b).ok())
        .unwrap_or_default();
    for op in operands {
        if let Ok(delta) = AddrStats::decode(op) {
            sum.add(&delta);
        }
    }
    Some(sum.encode().to_vec())
}
