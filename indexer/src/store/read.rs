//! Typed reads: point lookups, batched lookups and scans over key ranges,
//! each decoded as its family's types and failing with the family, key and
//! database named.

use anyhow::{Context, Result};
use rocksdb::{IteratorMode, ReadOptions};
use satflow_schema::cf::Family;
use satflow_schema::codec::KeyPrefix;
use satflow_schema::meta::{self, Entry};
use satflow_schema::rows::Rows;
use satflow_schema::Codec;

pub use satflow_schema::rows::Direction;

use super::Store;

impl Store {
    pub fn get<F: Family>(&self, key: &F::Key) -> Result<Option<F::Value>> {
        let raw = self
            .db
            .get_pinned_cf(self.cf::<F>(), key.encode())
            .with_context(|| format!("reading {} from {}", F::NAME, self.path.display()))?;
        raw.map(|v| self.decode::<F>(&v)).transpose()
    }

    /// A row's value as stored, undecoded: for putting it back later
    /// exactly (undo records).
    pub fn get_raw<F: Family>(&self, key: &F::Key) -> Result<Option<Vec<u8>>> {
        let raw = self
            .db
            .get_pinned_cf(self.cf::<F>(), key.encode())
            .with_context(|| format!("reading {} from {}", F::NAME, self.path.display()))?;
        Ok(raw.map(|v| v.to_vec()))
    }

    /// A row that must exist: its absence means the index is inconsistent.
    pub fn need<F: Family>(&self, key: &F::Key) -> Result<F::Value>
    where
        F::Key: std::fmt::Debug,
    {
        self.get::<F>(key)?.with_context(|| {
            format!(
                "index is inconsistent: {} row {key:?} is missing from {}",
                F::NAME,
                self.path.display()
            )
        })
    }

    /// Rows of one family at once: RocksDB batches the block reads, for a
    /// fraction of the cost of one `get` per key.
    pub fn multi_get<F: Family>(&self, keys: &[F::Key]) -> Result<Vec<Option<F::Value>>> {
        let raw: Vec<_> = keys.iter().map(Codec::encode).collect();
        self.db
            .batched_multi_get_cf(self.cf::<F>(), &raw, false)
            .into_iter()
            .map(|r| {
                let v =
                    r.with_context(|| format!("reading {} from {}", F::NAME, self.path.display()))?;
                v.map(|v| self.decode::<F>(&v)).transpose()
            })
            .collect()
    }

    /// A `meta` entry's value, if it was ever written.
    pub fn meta<E: Entry>(&self, entry: E) -> Result<Option<E::Value>> {
        let Some(raw) = self.get::<satflow_schema::cf::Meta>(&entry.key())? else {
            return Ok(None);
        };
        E::Value::decode(&raw.0)
            .map(Some)
            .with_context(|| format!("meta {:?} of {}", entry.key(), self.path.display()))
    }

    /// Where each blk file's next scan starts (`meta::Scan` rows).
    pub fn scan_positions(&self) -> Result<Vec<(u32, u64)>> {
        self.scan::<satflow_schema::cf::Meta>(&meta::MetaKey::Scan(0), Direction::Forward)
            .map_while(|r| match r {
                Ok((meta::MetaKey::Scan(file), v)) => Some(
                    u64::decode(&v.0)
                        .map(|at| (file, at))
                        .with_context(|| format!("scan position of file {file}")),
                ),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect()
    }

    /// The rows of `F` from `from` on (inclusive), in key order or reverse.
    pub fn scan<'s, F: Family + 's>(
        &'s self,
        from: &F::Key,
        dir: Direction,
    ) -> impl Iterator<Item = Result<(F::Key, F::Value)>> + 's {
        let from = from.encode();
        let mode = match dir {
            Direction::Forward => IteratorMode::From(from.as_ref(), rocksdb::Direction::Forward),
            Direction::Reverse => IteratorMode::From(from.as_ref(), rocksdb::Direction::Reverse),
        };
        self.typed::<F>(self.db.iterator_cf(self.cf::<F>(), mode))
    }

    /// The rows of `F` in `[from, to)`, in key order, read past the block
    /// cache like `scan_all`: one worker's share of a whole-family pass.
    pub fn scan_range<'s, F: Family + 's>(
        &'s self,
        from: &F::Key,
        to: &F::Key,
    ) -> impl Iterator<Item = Result<(F::Key, F::Value)>> + 's {
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        opts.set_iterate_upper_bound(to.encode().as_ref().to_vec());
        let from = from.encode();
        let mode = IteratorMode::From(from.as_ref(), rocksdb::Direction::Forward);
        self.typed::<F>(self.db.iterator_cf_opt(self.cf::<F>(), opts, mode))
    }

    /// Every row of `F`, in key order. Read past the block cache: a whole
    /// family read once (a label index rebuild, a cluster build) would
    /// otherwise evict the blocks that point lookups keep hot.
    pub fn scan_all<'s, F: Family + 's>(
        &'s self,
    ) -> impl Iterator<Item = Result<(F::Key, F::Value)>> + 's {
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        let raw = self
            .db
            .iterator_cf_opt(self.cf::<F>(), opts, IteratorMode::Start);
        self.typed::<F>(raw)
    }

    /// The rows of `F` whose key starts with `prefix`: one address's
    /// labels, one txid's tx numbers. Uses the family's prefix bloom
    /// filter where it has one.
    pub fn scan_prefix<'s, F, P>(
        &'s self,
        prefix: &P,
    ) -> impl Iterator<Item = Result<(F::Key, F::Value)>> + 's
    where
        F: Family + 's,
        P: Codec,
        F::Key: KeyPrefix<P>,
    {
        let prefix = prefix.encode().as_ref().to_vec();
        let mut opts = ReadOptions::default();
        opts.set_prefix_same_as_start(true);
        let raw = self
            .db
            .iterator_cf_opt(
                self.cf::<F>(),
                opts,
                IteratorMode::From(&prefix, rocksdb::Direction::Forward),
            )
            .take_while(move |r| !matches!(r, Ok((k, _)) if !k.starts_with(&prefix)));
        self.typed::<F>(raw)
    }

    /// The rows of a family keyed `(first, second)` whose first id is
    /// `first`, from second id `from` on in `dir`: one seek, however far in.
    pub fn pairs<'s, F, A, B>(
        &'s self,
        first: A,
        from: B,
        dir: Direction,
    ) -> impl Iterator<Item = Result<(B, F::Value)>> + 's
    where
        F: Family<Key = (A, B)> + 's,
        A: Copy + PartialEq + 's,
        (A, B): Codec,
    {
        self.scan::<F>(&(first, from), dir)
            .take_while(move |r| !matches!(r, Ok(((a, _), _)) if *a != first))
            .map(|r| r.map(|((_, b), v)| (b, v)))
    }

    /// Every row of the family named `family` as stored, key and value
    /// bytes (merge operands folded): for comparing two databases byte for
    /// byte (tests, `satflow` checks), not for reading rows.
    pub fn raw_rows(&self, family: &str) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let handle = self
            .db
            .cf_handle(family)
            .with_context(|| format!("no column family {family}"))?;
        self.db
            .iterator_cf(handle, IteratorMode::Start)
            .map(|r| {
                let (k, v) = r.with_context(|| format!("reading {family}"))?;
                Ok((k.into_vec(), v.into_vec()))
            })
            .collect()
    }

    /// RocksDB's write sequence number: it moves with every write, so an
    /// unchanged number says in one call that nothing was written since.
    pub fn sequence(&self) -> u64 {
        self.db.latest_sequence_number()
    }

    /// The row with the highest key of `F`.
    pub fn last<F: Family>(&self) -> Result<Option<(F::Key, F::Value)>> {
        self.typed::<F>(self.db.iterator_cf(self.cf::<F>(), IteratorMode::End))
            .next()
            .transpose()
    }

    fn decode<F: Family>(&self, raw: &[u8]) -> Result<F::Value> {
        F::Value::decode(raw).with_context(|| format!("{} of {}", F::NAME, self.path.display()))
    }

    fn typed<'s, F: Family + 's>(
        &'s self,
        raw: impl Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>> + 's,
    ) -> impl Iterator<Item = Result<(F::Key, F::Value)>> + 's {
        Rows::<F, _>::new(raw).map(move |r| {
            r.with_context(|| format!("reading {} from {}", F::NAME, self.path.display()))
        })
    }
}
