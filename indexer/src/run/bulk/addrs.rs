//! Address ids for the bulk path: every address seen so far in sharded
//! maps, and new addresses numbered in parallel, in order of first
//! appearance, so that ids come out exactly as the block-by-block writer
//! gives them.
//!
//! The map takes no locks: an epoch first only looks addresses up, every
//! worker reading any shard, then only inserts, each worker owning whole
//! shards. A lookup is a cache miss in a table of gigabytes; without a
//! lock's fence between them, and with a batch's slots asked for before
//! any is read, a core has several in flight at once.
//!
//! When the map outgrows its budget it is written out (`frozen`) and
//! starts again; an address found in a generation on disk is taken back
//! into the map, so that the addresses paid again and again (exchanges'
//! hot wallets) are read from disk once per generation.

use std::path::Path;

use anyhow::{bail, Result};
use rayon::prelude::*;
use satflow_schema::script::AddrKey;
use satflow_schema::AddrId;

use super::frozen::Frozen;
use super::ordered::OrderedTable;

/// An address by its kind and the first 15 bytes of its hash: 16 bytes
/// instead of 33, half the map. Address hashes are hash160 or sha256
/// outputs, so two addresses that share 120 bits are beyond chance (about
/// 1e-18 among mainnet's 1.5 billion). Laid out as hash bytes 1 to 14,
/// the kind, then hash byte 0, most significant first: the top 64 bits,
/// which place a key in its table, and the low byte, which picks the
/// table, are both uniform.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ShortKey(u128);

impl ShortKey {
    fn of(key: &AddrKey) -> ShortKey {
        let (full, mut hash) = (key.hash(), [0u8; 15]);
        let n = full.len().min(15);
        hash[..n].copy_from_slice(&full[..n]);
        let mut bytes = [0u8; 16];
        bytes[..14].copy_from_slice(&hash[1..]);
        bytes[14] = key.kind() as u8;
        bytes[15] = hash[0];
        ShortKey(u128::from_be_bytes(bytes))
    }

    fn shard(&self) -> usize {
        self.0 as u8 as usize
    }
}

/// Tables of the map: a key's low byte picks its table.
const SHARDS: usize = 256;

/// Every address seen so far, by id: ids are kept as u32 (mainnet has
/// about 1.5 billion addresses), in 20-byte slots (24–31 bytes an
/// address, by how full the tables are), or on disk.
pub(super) struct AddrMap {
    shards: Vec<OrderedTable>,
    frozen: Frozen<u32>,
    /// The ids given since the map last started empty begin here; those
    /// below were taken back from disk.
    first_own: u64,
}

/// What numbering one epoch's outputs found.
pub(super) struct Numbered {
    /// Per output, in chain order: its address id.
    pub ids: Vec<Option<AddrId>>,
    /// The addresses seen for the first time, by id from the epoch's first.
    pub new: Vec<AddrKey>,
    /// Per new address, in the same order: the position of the output that
    /// first paid it.
    pub first_seen: Vec<u32>,
}

impl AddrMap {
    /// An empty map whose generations go to scratch files in `dir`.
    pub fn new(dir: &Path) -> AddrMap {
        AddrMap {
            shards: empty_shards(),
            frozen: Frozen::new(dir),
            first_own: 0,
        }
    }

    /// Heap held: the map and what the generations keep beside their
    /// filters, which are mapped (`filter_bytes`).
    pub fn bytes(&self) -> usize {
        self.map_bytes() + self.frozen.bytes()
    }

    /// The generations' filters, in the page cache.
    pub fn filter_bytes(&self) -> usize {
        self.frozen.filter_bytes()
    }

    /// Memory the map itself holds.
    pub fn map_bytes(&self) -> usize {
        self.shards.iter().map(OrderedTable::bytes).sum()
    }

    /// Generations written so far.
    pub fn generations(&self) -> usize {
        self.frozen.generations()
    }

    /// Writes the map's own addresses out as a generation and empties it;
    /// returns how many were written. `next`: the next id to give.
    pub fn freeze(&mut self, next: AddrId) -> Result<u64> {
        let (shards, from) = (&self.shards, self.first_own);
        let own = |t: usize| {
            shards[t]
                .entries()
                .filter(move |&(_, id)| u64::from(id) >= from)
        };
        let count = (0..SHARDS)
            .into_par_iter()
            .map(|t| own(t).count() as u64)
            .sum();
        let written = self.frozen.push(count, SHARDS, |t| Ok(own(t).collect()))?;
        self.shards = empty_shards();
        self.first_own = next.0;
        Ok(written)
    }

    /// Ids for the addresses of one epoch's outputs (None: no address), in
    /// chain order; an address not seen before gets the next id from
    /// `next` in order of its first output.
    pub fn number(&mut self, keys: &[Option<AddrKey>], next: AddrId) -> Result<Numbered> {
        let shorts: Vec<Option<ShortKey>> = keys
            .par_iter()
            .map(|key| key.as_ref().map(ShortKey::of))
            .collect();
        let shards = &self.shards;
        // Looked up in batches, each batch's slots asked for first.
        const BATCH: usize = 32;
        let mut ids: Vec<Option<AddrId>> = vec![None; shorts.len()];
        ids.par_chunks_mut(BATCH)
            .zip(shorts.par_chunks(BATCH))
            .for_each(|(ids, shorts)| {
                for s in shorts.iter().flatten() {
                    shards[s.shard()].prefetch(s.0);
                }
                for (id, short) in ids.iter_mut().zip(shorts) {
                    *id = short.and_then(|s| shards[s.shard()].get(s.0).map(|v| AddrId(v.into())));
                }
            });
        // Not in the map: asked of the generations on disk, and those
        // found there taken back into the map, once each.
        let mut taken_back: Vec<(ShortKey, u32)> = Vec::new();
        if self.frozen.generations() > 0 {
            let frozen = &self.frozen;
            taken_back = shorts
                .par_iter()
                .zip(ids.par_iter_mut())
                .filter_map(|(short, id)| {
                    let s = short.filter(|_| id.is_none())?;
                    let found = frozen.get(s.0, s.shard()).transpose()?;
                    Some(found.map(|v| {
                        *id = Some(AddrId(v.into()));
                        (s, v)
                    }))
                })
                .collect::<Result<_>>()?;
            taken_back.par_sort_unstable();
            taken_back.dedup();
        }
        // The others by address, then position: each address's first
        // output heads its run.
        let mut misses: Vec<(ShortKey, u32)> = shorts
            .par_iter()
            .zip(&ids)
            .enumerate()
            .filter_map(|(pos, (short, id))| match (short, id) {
                (Some(s), None) => Some((*s, pos as u32)),
                _ => None,
            })
            .collect();
        misses.par_sort_unstable();
        let is_head = |i: usize| i == 0 || misses[i - 1].0 != misses[i].0;
        // The heads, numbered in chain order.
        let mut by_position: Vec<(u32, usize)> = (0..misses.len())
            .filter(|&i| is_head(i))
            .map(|h| (misses[h].1, h))
            .collect();
        by_position.par_sort_unstable();
        let last = next.0 + by_position.len() as u64;
        if last > u64::from(OrderedTable::MAX_VALUE) {
            bail!(
                "address {last}: the bulk path numbers addresses as u32, up to {}",
                OrderedTable::MAX_VALUE
            );
        }
        let mut id_at_head = vec![AddrId(0); misses.len()];
        for (rank, &(_, h)) in by_position.iter().enumerate() {
            id_at_head[h] = next + rank as u64;
        }
        let mut id = next;
        for (i, &(_, pos)) in misses.iter().enumerate() {
            if is_head(i) {
                id = id_at_head[i];
            }
            ids[pos as usize] = Some(id);
        }
        // Each shard's new keys in key order: its inserts then move
        // through its table from front to back.
        let mut inserts: Vec<Vec<(u128, u32)>> = vec![Vec::new(); SHARDS];
        for (rank, &(_, h)) in by_position.iter().enumerate() {
            let short = misses[h].0;
            inserts[short.shard()].push((short.0, (next.0 + rank as u64) as u32));
        }
        for (short, id) in taken_back {
            inserts[short.shard()].push((short.0, id));
        }
        self.shards
            .par_iter_mut()
            .zip(inserts)
            .for_each(|(table, mut new)| {
                new.sort_unstable();
                for (key, id) in new {
                    table.insert(key, id);
                }
            });
        let new = by_position
            .iter()
            .map(|&(pos, _)| keys[pos as usize].expect("a miss has an address"))
            .collect();
        Ok(Numbered {
            ids,
            new,
            first_seen: by_position.iter().map(|&(pos, _)| pos).collect(),
        })
    }
}

fn empty_shards() -> Vec<OrderedTable> {
    (0..SHARDS).map(|_| OrderedTable::default()).collect()
}

#[cfg(test)]
mod tests {
    use satflow_schema::script::AddrKind;

    use super::*;

    fn key(n: u8) -> Option<AddrKey> {
        AddrKey::new(AddrKind::P2wpkh, &[n; 20])
    }

    #[test]
    fn new_addresses_are_numbered_by_first_appearance_across_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut map = AddrMap::new(dir.path());
        // Key 9 sorts last but appears first; 3 appears twice.
        let first = map
            .number(&[key(9), None, key(3), key(5), key(3)], AddrId(10))
            .unwrap();
        assert_eq!(
            first.ids,
            [
                Some(AddrId(10)),
                None,
                Some(AddrId(11)),
                Some(AddrId(12)),
                Some(AddrId(11))
            ]
        );
        assert_eq!(first.new, [key(9), key(3), key(5)].map(Option::unwrap));
        assert_eq!(first.first_seen, [0, 2, 3]);
        let second = map
            .number(&[key(5), key(1), key(9), key(1)], AddrId(13))
            .unwrap();
        assert_eq!(
            second.ids,
            [
                Some(AddrId(12)),
                Some(AddrId(13)),
                Some(AddrId(10)),
                Some(AddrId(13))
            ]
        );
        assert_eq!(second.new, [key(1).unwrap()]);
        assert_eq!(second.first_seen, [1]);
    }

    /// Written out after some epochs or none, the map numbers a chain's
    /// outputs as a hash map holding everything does.
    #[test]
    fn a_map_written_out_between_epochs_numbers_as_one_that_never_was() {
        use std::collections::HashMap;
        // Outputs pay a new address half the time, else one seen before:
        // mostly a recent one, sometimes one from long ago.
        let mut x = 11u64;
        let mut rand = |n: u64| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) % n.max(1)
        };
        let address = |n: u64| {
            let mut hash = [0u8; 20];
            hash[..8].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            hash[8..16].copy_from_slice(&n.to_le_bytes());
            AddrKey::new(AddrKind::P2wpkh, &hash)
        };
        let mut made = 0u64;
        let epochs: Vec<Vec<Option<AddrKey>>> = (0..40)
            .map(|_| {
                (0..2_000)
                    .map(|_| match rand(10) {
                        0 => None,
                        1..=5 => {
                            made += 1;
                            address(made)
                        }
                        6..=8 => address(made - rand(50.min(made))),
                        _ => address(rand(made) + 1),
                    })
                    .collect()
            })
            .collect();
        let mut truth: HashMap<AddrKey, AddrId> = HashMap::new();
        let expected: Vec<Vec<Option<AddrId>>> = epochs
            .iter()
            .map(|keys| {
                keys.iter()
                    .map(|k| {
                        k.map(|k| {
                            let next = AddrId(truth.len() as u64);
                            *truth.entry(k).or_insert(next)
                        })
                    })
                    .collect()
            })
            .collect();
        for every in [1, 3, 1000] {
            let dir = tempfile::tempdir().unwrap();
            let mut map = AddrMap::new(dir.path());
            let mut next = AddrId(0);
            for (i, (keys, want)) in epochs.iter().zip(&expected).enumerate() {
                let numbered = map.number(keys, next).unwrap();
                assert_eq!(&numbered.ids, want, "epoch {i}, written out every {every}");
                next = next + numbered.new.len() as u64;
                if i % every == every - 1 {
                    map.freeze(next).unwrap();
                }
            }
            // Written out 40 times, the generations were merged at the
            // 9th, 17th, 25th and 33rd; 13 times, at the 9th.
            let kept = match every {
                1 => 8,
                3 => 5,
                _ => 0,
            };
            assert_eq!(map.generations(), kept, "written out every {every}");
        }
    }
}
