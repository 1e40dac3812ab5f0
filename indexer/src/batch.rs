//! A write batch sorted by key within each column family before it reaches
//! RocksDB. Memtable inserts in key order reuse the skiplist position of the
//! previous insert instead of searching from the top: unsorted, indexing
//! spent over half its time in that search.

use rocksdb::WriteBatch;

use crate::schema::cf;
use crate::store::Store;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Put,
    Delete,
    Merge,
}

/// One operation; key and value live in the family's byte arena.
#[derive(Clone, Copy)]
struct Entry {
    /// The key's first 16 bytes, big-endian: decides nearly every
    /// comparison of the sort without a trip to the arena.
    prefix: u128,
    start: usize,
    key_len: u32,
    value_len: u32,
    op: Op,
}

/// The operations of one column family: an arena instead of a heap
/// allocation per key and value.
#[derive(Default)]
struct Family {
    bytes: Vec<u8>,
    entries: Vec<Entry>,
}

impl Family {
    fn key(&self, e: &Entry) -> &[u8] {
        &self.bytes[e.start..e.start + e.key_len as usize]
    }

    fn value(&self, e: &Entry) -> &[u8] {
        let from = e.start + e.key_len as usize;
        &self.bytes[from..from + e.value_len as usize]
    }
}

pub struct SortedBatch {
    families: Vec<Family>,
}

impl Default for SortedBatch {
    fn default() -> Self {
        SortedBatch {
            families: cf::ALL.iter().map(|_| Family::default()).collect(),
        }
    }
}

impl SortedBatch {
    pub fn put(&mut self, family: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.push(family, key.as_ref(), Op::Put, value.as_ref());
    }

    pub fn delete(&mut self, family: &str, key: impl AsRef<[u8]>) {
        self.push(family, key.as_ref(), Op::Delete, &[]);
    }

    pub fn merge(&mut self, family: &str, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.push(family, key.as_ref(), Op::Merge, value.as_ref());
    }

    fn push(&mut self, family: &str, key: &[u8], op: Op, value: &[u8]) {
        let i = cf::ALL
            .iter()
            .position(|n| *n == family)
            .expect("a known column family");
        let f = &mut self.families[i];
        let mut head = [0u8; 16];
        let n = key.len().min(16);
        head[..n].copy_from_slice(&key[..n]);
        let prefix = u128::from_be_bytes(head);
        f.entries.push(Entry {
            prefix,
            start: f.bytes.len(),
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            op,
        });
        f.bytes.extend_from_slice(key);
        f.bytes.extend_from_slice(value);
    }

    /// The RocksDB batch, each family's operations in key order. The sort
    /// is stable: operations on one key keep the order they were made in.
    pub fn into_write_batch(mut self, store: &Store) -> WriteBatch {
        // Roughly the encoded size, so the batch is not regrown and copied.
        let bytes: usize = self
            .families
            .iter()
            .map(|f| f.bytes.len() + f.entries.len() * 8)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for (name, f) in cf::ALL.iter().zip(&mut self.families) {
            let mut entries = std::mem::take(&mut f.entries);
            entries.sort_by(|a, b| a.prefix.cmp(&b.prefix).then_with(|| f.key(a).cmp(f.key(b))));
            let handle = store.cf(name);
            for e in &entries {
                let (key, value) = (f.key(e), f.value(e));
                match e.op {
                    Op::Put => batch.put_cf(handle, key, value),
                    Op::Delete => batch.delete_cf(handle, key),
                    Op::Merge => batch.merge_cf(handle, key, value),
                }
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_keys_but_keeps_the_order_of_operations_on_one_key() {
        let mut b = SortedBatch::default();
        b.put(cf::OUTPUTS, [3], [1]);
        b.put(cf::OUTPUTS, [1], [1]);
        b.put(cf::OUTPUTS, [3], [2]);
        b.delete(cf::OUTPUTS, [3]);
        let i = cf::ALL.iter().position(|n| *n == cf::OUTPUTS).unwrap();
        let fam = &b.families[i];
        let mut entries = fam.entries.clone();
        entries.sort_by(|x, y| fam.key(x).cmp(fam.key(y)));
        let seen: Vec<_> = entries
            .iter()
            .map(|e| (fam.key(e)[0], e.op, fam.value(e).first().copied()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (1, Op::Put, Some(1)),
                (3, Op::Put, Some(1)),
                (3, Op::Put, Some(2)),
                (3, Op::Delete, None)
            ]
        );
    }
}
