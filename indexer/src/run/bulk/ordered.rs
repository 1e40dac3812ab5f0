//! A compact hash table for keys that are already uniform hashes: the bulk
//! path's address map, whose size decides how far into the chain the bulk
//! path can go.
//!
//! A general table (hashbrown) pads a 16-byte key and a 4-byte value to 24
//! bytes, adds a control byte, and doubles: 29–57 bytes an address, and
//! all shards of a sharded map double at about the same moment, so the map
//! jumps by half the budget at once. Here a slot is 20 bytes, the table
//! grows by about a third (never doubling), and stays 65–85% full: 24–31
//! bytes an address.
//!
//! Linear probing in key order: a key's home slot is its top 64 bits
//! scaled to the table (so homes rise with keys), and the slots hold the
//! keys sorted, each at or after its home with no empty slot between. A
//! lookup scans from the home until it meets the key, a larger key or an
//! empty slot; an insert shifts the rest of its cluster one slot on.

/// A key (u128, most significant word first) and its value; `EMPTY` as
/// the value marks a free slot. 20 bytes, 4-byte aligned.
#[derive(Clone, Copy)]
struct Slot {
    key: [u32; 4],
    value: u32,
}

const EMPTY: u32 = u32::MAX;
const FREE: Slot = Slot {
    key: [0; 4],
    value: EMPTY,
};

impl Slot {
    fn new(key: u128, value: u32) -> Slot {
        Slot {
            key: [
                (key >> 96) as u32,
                (key >> 64) as u32,
                (key >> 32) as u32,
                key as u32,
            ],
            value,
        }
    }

    fn key(&self) -> u128 {
        self.key.iter().fold(0, |k, &w| k << 32 | u128::from(w))
    }

    fn is_free(&self) -> bool {
        self.value == EMPTY
    }
}

/// Grown when more than 85% full, to 65% full.
const MAX_LOAD: (usize, usize) = (17, 20);
const GROWN_LOAD: (usize, usize) = (13, 20);
const MIN_SLOTS: usize = 64;
/// Slots kept past the last home, for clusters that run over it.
const TAIL: usize = 16;

#[derive(Default)]
pub(super) struct OrderedTable {
    /// `home_slots` slots, then whatever insertions pushed past the last
    /// home (a few).
    slots: Vec<Slot>,
    home_slots: usize,
    len: usize,
}

impl OrderedTable {
    /// The largest value a table holds (one below the free marker).
    pub const MAX_VALUE: u32 = EMPTY - 1;

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes the slots take.
    pub fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    fn home(&self, key: u128) -> usize {
        ((u128::from((key >> 64) as u64) * self.home_slots as u128) >> 64) as usize
    }

    /// The slot where `key` is or would go: the first from its home that
    /// is free or holds a key not below it.
    fn position(&self, key: u128) -> usize {
        let mut i = self.home(key);
        while let Some(s) = self.slots.get(i) {
            if s.is_free() || s.key() >= key {
                break;
            }
            i += 1;
        }
        i
    }

    /// Asks the CPU to fetch the line of `key`'s home slot, for a `get`
    /// soon after. In a table of gigabytes nearly every lookup misses the
    /// cache; a batch of lookups whose lines were all asked for first
    /// waits for them at once, not one after another.
    pub fn prefetch(&self, key: u128) {
        if let Some(slot) = self.slots.get(self.home(key)) {
            crate::prefetch::prefetch(slot);
        }
    }

    pub fn get(&self, key: u128) -> Option<u32> {
        let s = self.slots.get(self.position(key))?;
        (!s.is_free() && s.key() == key).then_some(s.value)
    }

    /// Every key and its value, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (u128, u32)> + '_ {
        self.slots
            .iter()
            .filter(|s| !s.is_free())
            .map(|s| (s.key(), s.value))
    }

    /// Adds `key`, which the table does not hold, with `value` (at most
    /// `MAX_VALUE`).
    pub fn insert(&mut self, key: u128, value: u32) {
        assert!(value <= Self::MAX_VALUE, "value {value} is the free marker");
        if (self.len + 1) * MAX_LOAD.1 > self.home_slots * MAX_LOAD.0 {
            self.grow();
        }
        let at = self.position(key);
        debug_assert!(self
            .slots
            .get(at)
            .is_none_or(|s| s.is_free() || s.key() != key));
        let free = match self.slots[at..].iter().position(Slot::is_free) {
            Some(n) => at + n,
            None => self.push_free(),
        };
        self.slots.copy_within(at..free, at + 1);
        self.slots[at] = Slot::new(key, value);
        self.len += 1;
    }

    /// A free slot past the end, where a cluster runs over the last home:
    /// a few slots at a time, never doubling the table.
    fn push_free(&mut self) -> usize {
        if self.slots.len() == self.slots.capacity() {
            self.slots.reserve_exact(TAIL);
        }
        self.slots.push(FREE);
        self.slots.len() - 1
    }

    /// Lays the keys out again, in order, over more home slots.
    fn grow(&mut self) {
        let homes = (self.len * GROWN_LOAD.1 / GROWN_LOAD.0).max(MIN_SLOTS);
        let old = std::mem::take(&mut self.slots);
        self.home_slots = homes;
        self.slots = Vec::with_capacity(homes + TAIL);
        self.slots.resize(homes, FREE);
        let mut next = 0;
        for s in old.into_iter().filter(|s| !s.is_free()) {
            let at = self.home(s.key()).max(next);
            if at == self.slots.len() {
                self.push_free();
            }
            self.slots[at] = s;
            next = at + 1;
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Every key sorted, each at or after its home, no free slot between.
    fn check_layout(t: &OrderedTable) {
        let mut last = None;
        for (i, s) in t.slots.iter().enumerate().filter(|(_, s)| !s.is_free()) {
            let home = t.home(s.key());
            assert!(home <= i, "slot {i} holds a key whose home is {home}");
            assert!(t.slots[home..i].iter().all(|s| !s.is_free()));
            assert!(last < Some(s.key()));
            last = Some(s.key());
        }
    }

    /// Keys from splitmix64: uniform, as address hashes are.
    pub(in crate::run::bulk) fn uniform_keys(seed: u64, n: usize) -> Vec<u128> {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..n)
            .map(|_| u128::from(next()) << 64 | u128::from(next()))
            .collect()
    }

    #[test]
    fn holds_what_a_hash_map_holds_through_growth() {
        let mut t = OrderedTable::default();
        let mut truth = HashMap::new();
        for (i, key) in (0..).zip(uniform_keys(7, 50_000)) {
            t.insert(key, i);
            truth.insert(key, i);
            if i % 10_000 == 0 {
                check_layout(&t);
            }
        }
        check_layout(&t);
        assert_eq!(t.len(), truth.len());
        assert!(truth.iter().all(|(&k, &v)| t.get(k) == Some(v)));
        let mut sorted: Vec<(u128, u32)> = truth.iter().map(|(&k, &v)| (k, v)).collect();
        sorted.sort_unstable();
        assert!(t.entries().eq(sorted));
        assert!(uniform_keys(8, 1000)
            .into_iter()
            .all(|k| t.get(k).is_none()));
        let per_key = t.bytes() as f64 / t.len() as f64;
        assert!(per_key <= 31.0, "{per_key} bytes a key");
    }

    #[test]
    fn keys_that_share_a_home_queue_in_order_past_the_end() {
        let mut t = OrderedTable::default();
        // One top word: every key's home is the same, the last slot.
        let keys: Vec<u128> = [9u128, 3, 7, 1, 8].map(|low| u128::MAX << 64 | low).into();
        for (v, &k) in keys.iter().enumerate() {
            t.insert(k, v as u32);
        }
        check_layout(&t);
        for (v, &k) in keys.iter().enumerate() {
            assert_eq!(t.get(k), Some(v as u32));
        }
        assert_eq!(t.get(u128::MAX << 64 | 5), None);
        assert_eq!(t.get(u128::MAX), None);
    }
}
