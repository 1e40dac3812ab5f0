//! The order transactions are taken up in: a radix heap, a priority queue
//! for keys that never go below the last one taken, as tx numbers do in a
//! trace (a spender comes after what it spends). Pushes are O(1) and each
//! entry moves down at most 64 buckets in all, where a binary heap spends
//! log n cache-missing steps on every push and pop. Entries carry their
//! payload, and all entries of one key come out together: the marks
//! waiting on a transaction need no map of their own.

pub struct RadixHeap<T> {
    last: u64,
    /// Bucket i holds keys whose highest bit differing from `last` is bit
    /// i - 1; bucket 0 holds keys equal to `last`.
    buckets: [Vec<(u64, T)>; 65],
}

impl<T> Default for RadixHeap<T> {
    fn default() -> RadixHeap<T> {
        RadixHeap {
            last: 0,
            buckets: std::array::from_fn(|_| Vec::new()),
        }
    }
}

fn bucket(x: u64) -> usize {
    (64 - x.leading_zeros()) as usize
}

impl<T> RadixHeap<T> {
    /// `key` must not be below the last key popped.
    pub fn push(&mut self, key: u64, value: T) {
        debug_assert!(key >= self.last, "{key} < {}", self.last);
        self.buckets[bucket(key ^ self.last)].push((key, value));
    }

    /// Moves every entry of the smallest key into `out`; returns the key.
    pub fn pop_all(&mut self, out: &mut Vec<T>) -> Option<u64> {
        if self.buckets[0].is_empty() {
            let i = self.buckets.iter().position(|b| !b.is_empty())?;
            let entries = std::mem::take(&mut self.buckets[i]);
            self.last = entries.iter().map(|(k, _)| *k).min().expect("not empty");
            for (k, v) in entries {
                self.buckets[bucket(k ^ self.last)].push((k, v));
            }
        }
        out.extend(self.buckets[0].drain(..).map(|(_, v)| v));
        Some(self.last)
    }

    /// Every entry still queued.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.buckets.iter().flatten().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn pops_each_key_whole_in_order(steps in prop::collection::vec((0u64..1000, 0usize..4), 1..200)) {
            // Pushes above the last pop, interleaved with pops.
            let (mut heap, mut model) = (RadixHeap::default(), Vec::new());
            let mut floor = 0;
            for (n, (add, pops)) in steps.into_iter().enumerate() {
                heap.push(floor + add, n);
                model.push((floor + add, n));
                for _ in 0..pops {
                    // The smallest key, with all its entries.
                    let mut got = Vec::new();
                    let key = heap.pop_all(&mut got);
                    let want = model.iter().map(|(k, _)| *k).min();
                    prop_assert_eq!(key.filter(|_| !got.is_empty()), want);
                    let mut expected: Vec<usize> =
                        model.iter().filter(|(k, _)| Some(*k) == want).map(|(_, v)| *v).collect();
                    model.retain(|(k, _)| Some(*k) != want);
                    got.sort_unstable();
                    expected.sort_unstable();
                    prop_assert_eq!(got, expected);
                    if let Some(k) = want {
                        floor = k;
                    }
                }
            }
        }
    }
}
