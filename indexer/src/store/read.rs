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
        let key = key.encode();
        let raw = self
            .db
            .get_pinned_cf(self.cf::<F>(), &key)
            .with_context(|| format!("reading {} from {}", F::NAME, self.path.display()))?;
        raw.map(|v| self.decode::<F>(key.as_ref(), &v)).transpose()
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
            .zip(&raw)
            .map(|(r, key)| {
                let v =
                    r.with_context(|| format!("reading {} from {}", F::NAME, self.path.display()))?;
                v.map(|v| self.decode::<F>(key.as_ref(), &v)).transpose()
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

    /// The smallest and the largest second id of `F`'s rows whose first id
    /// is `first`, None when it has none: one iterator, sought twice (from
    /// `(first, min)` on, and back from `(first, max)`), where two scans
    /// would each build one.
    pub fn first_and_last<F, A, B>(&self, first: A, min: B, max: B) -> Result<Option<(B, B)>>
    where
        F: Family<Key = (A, B)>,
        A: Copy + PartialEq,
        (A, B): Codec,
    {
        let (from, to) = ((first, min).encode(), (first, max).encode());
        let mut it = self.db.raw_iterator_cf(self.cf::<F>());
        it.seek(&from);
        let Some(lowest) = self.second_of::<F, A, B>(first, it.status().map(|()| it.key()))? else {
            return Ok(None);
        };
        it.seek_for_prev(&to);
        let highest = self
            .second_of::<F, A, B>(first, it.status().map(|()| it.key()))?
            .with_context(|| format!("{}: a row vanished from {}", F::NAME, self.path.display()))?;
        Ok(Some((lowest, highest)))
    }

    /// The second id of the key an iterator is at, if its first is `first`.
    fn second_of<F, A, B>(
        &self,
        first: A,
        at: Result<Option<&[u8]>, rocksdb::Error>,
    ) -> Result<Option<B>>
    where
        F: Family<Key = (A, B)>,
        A: PartialEq,
        (A, B): Codec,
    {
        let at = at.with_context(|| format!("reading {} from {}", F::NAME, self.path.display()))?;
        let Some(raw) = at else {
            return Ok(None);
        };
        let (a, b) = <(A, B)>::decode(raw)
            .with_context(|| format!("a key of {} in {}", F::NAME, self.path.display()))?;
        Ok((a == first).then_some(b))
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

    /// Names the row by its key's bytes: a corrupt row is found again by them.
    fn decode<F: Family>(&self, key: &[u8], raw: &[u8]) -> Result<F::Value> {
        F::Value::decode(raw).with_context(|| {
            format!(
                "{} row {} of {}",
                F::NAME,
                hex::encode(key),
                self.path.display()
            )
        })
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

#[cfg(test)]
mod tests {
    use satflow_schema::address::HistoryRow;
    use satflow_schema::cf::History;
    use satflow_schema::{AddrId, TxNum};

    use crate::store::{Access, Store};

    /// Both ends of one address's rows, never a neighbour's: the seek back
    /// from past its last row lands on that row, not on the next address's
    /// first.
    #[test]
    fn first_and_last_finds_both_ends_of_one_first_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let mut batch = store.batch();
        let row = HistoryRow {
            received: 1,
            ..Default::default()
        };
        for (addr, tx) in [(1, 5), (3, 7), (3, 2), (3, 40), (4, 0), (6, u64::MAX)] {
            batch.put::<History>(&(AddrId(addr), TxNum(tx)), &row);
        }
        store.write(batch).unwrap();
        let ends = |addr| {
            store
                .first_and_last::<History, _, _>(AddrId(addr), TxNum(0), TxNum(u64::MAX))
                .unwrap()
                .map(|(a, b)| (a.0, b.0))
        };
        assert_eq!(ends(1), Some((5, 5)));
        assert_eq!(ends(3), Some((2, 40)));
        assert_eq!(ends(4), Some((0, 0)));
        assert_eq!(ends(6), Some((u64::MAX, u64::MAX)));
        // None between, before and after the rows.
        assert_eq!(ends(0), None);
        assert_eq!(ends(2), None);
        assert_eq!(ends(5), None);
        assert_eq!(ends(7), None);
    }
}
