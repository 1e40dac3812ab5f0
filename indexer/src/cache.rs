//! A map with a hard size bound for the indexer's hot lookups (unspent
//! outputs, address ids). Two generations: new entries go to the young one;
//! when it fills, the old generation is dropped and the young one ages.
//! Whatever is dropped is still in RocksDB, so a miss costs a read, never
//! a wrong answer.

use std::hash::Hash;

use rustc_hash::FxHashMap;

pub struct BoundedMap<K, V> {
    young: FxHashMap<K, V>,
    old: FxHashMap<K, V>,
    generation: usize,
}

impl<K: Hash + Eq, V: Copy> BoundedMap<K, V> {
    /// At most `2 * generation` entries are held.
    pub fn new(generation: usize) -> Self {
        BoundedMap {
            young: FxHashMap::default(),
            old: FxHashMap::default(),
            generation: generation.max(1),
        }
    }

    pub fn get(&self, k: &K) -> Option<V> {
        self.young.get(k).or_else(|| self.old.get(k)).copied()
    }

    pub fn insert(&mut self, k: K, v: V) {
        self.young.insert(k, v);
    }

    pub fn remove(&mut self, k: &K) -> Option<V> {
        self.young.remove(k).or_else(|| self.old.remove(k))
    }

    /// Ages the young generation if full. Only call when everything the
    /// maps hold has been committed to the database.
    pub fn evict_if_full(&mut self) {
        if self.young.len() >= self.generation {
            self.old = std::mem::take(&mut self.young);
        }
    }

    pub fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_keeps_recent_entries() {
        let mut m = BoundedMap::new(100);
        for i in 0..10_000u32 {
            m.insert(i, i);
            m.evict_if_full();
            assert!(m.len() <= 200);
        }
        assert_eq!(m.get(&9_999), Some(9_999));
        assert_eq!(m.get(&5), None);
        assert_eq!(m.remove(&9_999), Some(9_999));
        assert_eq!(m.get(&9_999), None);
    }
}
