//! Encoded operations of one column family in a byte arena: no heap
//! allocation per key and value, and a sort that rarely leaves the entry
//! array. `SortedBatch` keeps one per family; the bulk path builds them in
//! parallel and ingests each as table files (`Store::ingest_rows`).

use std::cmp::Ordering;

use rayon::prelude::*;

use crate::prefetch::prefetch;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    Put,
    Delete,
    Merge,
}

/// One operation; key and value live in the arena.
#[derive(Clone, Copy)]
pub(crate) struct Entry {
    /// The key's first 16 bytes, big-endian: decides nearly every
    /// comparison of the sort without a trip to the arena.
    prefix: u128,
    start: usize,
    key_len: u32,
    value_len: u32,
    pub(crate) op: Op,
}

#[derive(Default)]
pub struct Arena {
    bytes: Vec<u8>,
    pub(crate) entries: Vec<Entry>,
}

impl Arena {
    pub(crate) fn push(&mut self, key: &[u8], op: Op, value: &[u8]) {
        let mut head = [0u8; 16];
        let n = key.len().min(16);
        head[..n].copy_from_slice(&key[..n]);
        self.entries.push(Entry {
            prefix: u128::from_be_bytes(head),
            start: self.bytes.len(),
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            op,
        });
        self.bytes.extend_from_slice(key);
        self.bytes.extend_from_slice(value);
    }

    /// Replaces this arena's operations with those of `parts`, in their
    /// order, and empties the parts; every allocation is kept. This arena
    /// grows only to what it must hold, never to double: it is kept for
    /// later epochs, and slack would stay resident with it.
    pub fn concat_from(&mut self, parts: &mut [&mut Arena]) {
        self.clear();
        self.bytes
            .reserve_exact(parts.iter().map(|p| p.bytes.len()).sum());
        self.entries
            .reserve_exact(parts.iter().map(|p| p.entries.len()).sum());
        for part in parts {
            let shift = self.bytes.len();
            self.bytes.extend_from_slice(&part.bytes);
            self.entries.extend(part.entries.iter().map(|e| Entry {
                start: e.start + shift,
                ..*e
            }));
            part.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of keys and values.
    pub(crate) fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Empties the arena, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    pub(crate) fn key(&self, e: &Entry) -> &[u8] {
        &self.bytes[e.start..e.start + e.key_len as usize]
    }

    pub(crate) fn value(&self, e: &Entry) -> &[u8] {
        let from = e.start + e.key_len as usize;
        &self.bytes[from..from + e.value_len as usize]
    }

    fn order(&self, a: &Entry, b: &Entry) -> Ordering {
        a.prefix
            .cmp(&b.prefix)
            .then_with(|| self.key(a).cmp(self.key(b)))
    }

    /// Key order; operations on one key keep the order they were made in.
    pub(crate) fn sort_stable(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.sort_by(|a, b| self.order(a, b));
        self.entries = entries;
    }

    /// Key order, sorted on every worker: for arenas of distinct keys.
    pub fn par_sort(&mut self) {
        let mut entries = std::mem::take(&mut self.entries);
        entries.par_sort_unstable_by(|a, b| self.order(a, b));
        self.entries = entries;
    }

    /// The rows of `entries` copied, in their order, into an arena of their
    /// own. After a sort, entries point all over the arena: reading rows in
    /// entry order then misses the cache at each one, and a table writer
    /// waits on every miss in turn, where this copy loop overlaps them.
    pub(crate) fn gather(&self, entries: &[Entry]) -> Arena {
        let mut out = Arena {
            bytes: Vec::with_capacity(
                entries
                    .iter()
                    .map(|e| (e.key_len + e.value_len) as usize)
                    .sum(),
            ),
            entries: Vec::with_capacity(entries.len()),
        };
        for e in entries {
            let len = (e.key_len + e.value_len) as usize;
            out.entries.push(Entry {
                start: out.bytes.len(),
                ..*e
            });
            out.bytes
                .extend_from_slice(&self.bytes[e.start..e.start + len]);
        }
        out
    }

    /// Every operation in entry order, like `ops`, for an arena just
    /// sorted, whose rows lie all over it: each row is asked of memory
    /// `AHEAD` entries before it is read (see `gather`, which copies them
    /// instead, for a reader that waits on each).
    pub(crate) fn ops_in_order(&self) -> impl Iterator<Item = (Op, &[u8], &[u8])> + '_ {
        /// Enough rows in flight to cover a miss's latency.
        const AHEAD: usize = 16;
        self.entries.iter().enumerate().map(move |(i, e)| {
            if let Some(next) = self.entries.get(i + AHEAD) {
                prefetch(&self.bytes[next.start]);
            }
            (e.op, self.key(e), self.value(e))
        })
    }

    /// The operations of `entries`: (operation, key, value).
    pub(crate) fn ops<'a>(
        &'a self,
        entries: &'a [Entry],
    ) -> impl ExactSizeIterator<Item = (Op, &'a [u8], &'a [u8])> + 'a {
        entries.iter().map(|e| (e.op, self.key(e), self.value(e)))
    }
}
