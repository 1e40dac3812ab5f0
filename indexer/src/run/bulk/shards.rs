//! A hash map split into shards, each behind its own lock, so that every
//! worker can insert and look up at once: the bulk path's address and
//! unspent-output maps.

use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

use rustc_hash::FxHashMap;

const SHARDS: usize = 256;

pub(super) struct Shards<K, V> {
    shards: Vec<Mutex<FxHashMap<K, V>>>,
}

impl<K: Hash + Eq, V> Shards<K, V> {
    pub fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// The shard for a key whose bits `pick` are uniform (any part of a
    /// hash).
    pub fn lock(&self, pick: u64) -> MutexGuard<'_, FxHashMap<K, V>> {
        self.shards[pick as usize % SHARDS]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `f` of every shard's table, summed.
    fn sum(&self, f: impl Fn(&FxHashMap<K, V>) -> usize) -> usize {
        self.shards
            .iter()
            .map(|s| f(&s.lock().unwrap_or_else(|poisoned| poisoned.into_inner())))
            .sum()
    }

    pub fn len(&self) -> usize {
        self.sum(|m| m.len())
    }

    /// Bytes the tables hold: their slots, used or not, and a control byte
    /// each.
    pub fn bytes(&self) -> usize {
        let slot = std::mem::size_of::<(K, V)>() + 1;
        self.sum(|m| m.capacity() * slot)
    }
}
