//! A table split into shards, each behind its own lock, so that every
//! worker can insert and take at once: the bulk path's unspent-output map.

use std::sync::{Mutex, MutexGuard};

use rustc_hash::FxHashMap;

const SHARDS: usize = 256;

/// What a shard holds: a count and a size.
pub(super) trait Table: Default {
    fn len(&self) -> usize;
    /// Bytes the table holds, used or not.
    fn bytes(&self) -> usize;
}

impl<K, V> Table for FxHashMap<K, V> {
    fn len(&self) -> usize {
        FxHashMap::len(self)
    }

    /// Slots, used or not, and a control byte each.
    fn bytes(&self) -> usize {
        self.capacity() * (std::mem::size_of::<(K, V)>() + 1)
    }
}

pub(super) struct Shards<T> {
    shards: Vec<Mutex<T>>,
}

impl<T: Table> Shards<T> {
    pub fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The shard for a key whose bits `pick` are uniform (any part of a
    /// hash).
    pub fn lock(&self, pick: u64) -> MutexGuard<'_, T> {
        self.shards[pick as usize % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `f` of every shard's table, summed.
    fn sum(&self, f: impl Fn(&T) -> usize) -> usize {
        self.shards
            .iter()
            .map(|s| f(&s.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
            .sum()
    }

    pub fn len(&self) -> usize {
        self.sum(T::len)
    }

    /// Every shard's table, leaving each empty.
    pub fn drain(&mut self) -> Vec<T> {
        self.shards
            .iter_mut()
            .map(|s| std::mem::take(s.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner())))
            .collect()
    }

    pub fn bytes(&self) -> usize {
        self.sum(T::bytes)
    }
}
