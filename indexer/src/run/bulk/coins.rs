//! Every unspent output of the chain so far, so that resolving an input is
//! a hash lookup, never a database read. Split into shards, each behind its
//! own lock, so that all workers insert and take at once.
//!
//! A txid that occurs twice (BIP30: mainnet blocks 91,842 and 91,880
//! repeat the coinbases of 91,812 and 91,722) puts two coins under one
//! key. An input refers to the latest occurrence before it; one that is
//! still unspent when a later occurrence comes is overwritten, as in
//! Bitcoin Core's UTXO set (see the writer's `bip30`). An epoch inserts
//! all its outputs before it takes any, so the coins that gave way are
//! kept aside (`Dup`) for the inputs between the two occurrences, and
//! those no input took are the epoch's overwritten coins.
//!
//! When the map outgrows its budget it goes to disk (`frozen`) and starts
//! again; an input whose coin the map does not hold reads it from there.
//! Coins on disk take no part in the duplicate-txid rules above, so the
//! map goes to disk only from the network's BIP34 height on, after which
//! a txid can repeat only once every earlier output of it is spent.

use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use anyhow::Result;
use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Txid};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use satflow_schema::script::ScriptType;
use satflow_schema::{AddrId, OutNum};

use super::frozen::{Frozen, Value};
use super::shards::Shards;

/// An outpoint by 12 bytes of its txid and its output index. Two live
/// coins whose txids share 96 bits are beyond chance (about 1e-11 for
/// mainnet's unspent set); 16 bytes instead of 36 keep the map small.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(super) struct CoinKey {
    head: u64,
    rest: u64,
}

impl CoinKey {
    pub fn new(txid: &Txid, vout: u32) -> CoinKey {
        let b = txid.as_byte_array();
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        CoinKey {
            head: word(0),
            rest: (word(8) << 32) | u64::from(vout),
        }
    }

    pub fn of(prevout: &OutPoint) -> CoinKey {
        CoinKey::new(&prevout.txid, prevout.vout)
    }

    /// Txid bytes are uniform: the top ones pick the shard, the map's hash
    /// mixes the rest.
    fn shard(&self) -> u64 {
        self.head >> 56
    }

    /// The key as one number, ordered as on disk.
    fn wide(&self) -> u128 {
        u128::from(self.head) << 64 | u128::from(self.rest)
    }
}

/// An unspent output as its spender needs it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Coin {
    pub output: OutNum,
    pub value: u64,
    /// Address number + 1 (0: none) in the low 56 bits, script type above:
    /// a slot of 40 bytes rather than 48.
    addr_script: u64,
}

impl Coin {
    const ADDR_BITS: u32 = 56;

    pub fn new(output: OutNum, value: u64, addr: Option<AddrId>, script: ScriptType) -> Coin {
        debug_assert!(addr.is_none_or(|a| a.0 < (1 << Coin::ADDR_BITS) - 1));
        Coin {
            output,
            value,
            addr_script: addr.map_or(0, |a| a.0 + 1) | (script as u64) << Coin::ADDR_BITS,
        }
    }

    pub fn addr(&self) -> Option<AddrId> {
        let addr = self.addr_script & ((1 << Coin::ADDR_BITS) - 1);
        addr.checked_sub(1).map(AddrId)
    }

    pub fn script(&self) -> ScriptType {
        ScriptType::from_u8((self.addr_script >> Coin::ADDR_BITS) as u8)
            .unwrap_or(ScriptType::Unknown)
    }
}

impl Value for Coin {
    const LEN: usize = 24;

    fn put(&self, out: &mut Vec<u8>) {
        for word in [self.output.0, self.value, self.addr_script] {
            out.extend_from_slice(&word.to_le_bytes());
        }
    }

    fn read(bytes: &[u8]) -> Coin {
        let word =
            |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Coin {
            output: OutNum(word(0)),
            value: word(1),
            addr_script: word(2),
        }
    }
}

pub(super) struct Coins {
    map: Shards<FxHashMap<CoinKey, Coin>>,
    frozen: Frozen<Coin>,
    /// The keys this epoch put a second coin under: almost always none.
    dups: Mutex<FxHashMap<CoinKey, Dup>>,
    /// Whether `dups` holds anything, so that inputs need not lock it.
    any_dups: AtomicBool,
}

/// One key's coins of an epoch beyond the latest, which the map holds.
#[derive(Default)]
struct Dup {
    /// The outputs of every coin inserted under the key this epoch, and of
    /// the one it held before: the occurrences, in no particular order.
    outputs: Vec<OutNum>,
    /// The coins that gave way to a later one, and whether an input took
    /// them; also the latest, once an input took it.
    aside: Vec<(Coin, bool)>,
}

/// A coin a later one with the same key overwrote.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Overwritten {
    pub coin: Coin,
    /// The first output of the key after the coin's: the later coin.
    pub by: OutNum,
}

impl Coins {
    /// An empty map whose generations go to scratch files in `dir`.
    pub fn new(dir: &Path) -> Coins {
        Coins {
            map: Shards::new(),
            frozen: Frozen::new(dir),
            dups: Mutex::default(),
            any_dups: AtomicBool::new(false),
        }
    }

    fn dups(&self) -> MutexGuard<'_, FxHashMap<CoinKey, Dup>> {
        self.dups
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A second coin under one key is a duplicate txid: the map keeps the
    /// later, whatever order the workers insert them in, and the earlier
    /// goes aside.
    pub fn insert(&self, key: CoinKey, coin: Coin) {
        let mut shard = self.map.lock(key.shard());
        match shard.entry(key) {
            Entry::Vacant(e) => {
                e.insert(coin);
            }
            Entry::Occupied(mut e) => {
                let held = *e.get();
                let earlier = match coin.output > held.output {
                    true => e.insert(coin),
                    false => coin,
                };
                self.any_dups.store(true, Ordering::Relaxed);
                let mut dups = self.dups();
                let dup = dups.entry(key).or_default();
                dup.outputs.extend([held.output, coin.output]);
                dup.aside.push((earlier, false));
            }
        }
    }

    /// Takes the coin an input of the tx whose first output is `before`
    /// spends: the latest under `key` created before it. None when there
    /// is none, or an input took it already. Call once the epoch's
    /// outputs are all inserted.
    pub fn take(&self, key: &CoinKey, before: OutNum) -> Result<Option<Coin>> {
        if let Some(coin) = self.take_in_memory(key, before) {
            return Ok(Some(coin));
        }
        // Written out by an earlier epoch: marked spent there, so that a
        // second input finds nothing and a merge drops it.
        self.frozen.take(key.wide(), key.shard() as usize)
    }

    fn take_in_memory(&self, key: &CoinKey, before: OutNum) -> Option<Coin> {
        let mut shard = self.map.lock(key.shard());
        if !self.any_dups.load(Ordering::Relaxed) {
            // The path of almost every input: one probe.
            let coin = shard.remove(key)?;
            if coin.output < before {
                return Some(coin);
            }
            // Made by a later transaction: not this input's coin.
            shard.insert(*key, coin);
            return None;
        }
        let held = shard.get(key).copied();
        let mut dups = self.dups();
        let Some(dup) = dups.get_mut(key) else {
            return held
                .filter(|c| c.output < before)
                .and_then(|_| shard.remove(key));
        };
        if let Some(latest) = held.filter(|c| c.output < before) {
            shard.remove(key);
            dup.aside.push((latest, true));
            return Some(latest);
        }
        let (coin, taken) = dup
            .aside
            .iter_mut()
            .filter(|(c, _)| c.output < before)
            .max_by_key(|(c, _)| c.output)?;
        match taken {
            true => None,
            false => {
                *taken = true;
                Some(*coin)
            }
        }
    }

    /// The coins that gave way to a later one this epoch and that no input
    /// took, in output order: overwritten, never to be spent. Call once
    /// the epoch's inputs are all taken; the next epoch starts afresh.
    pub fn overwritten(&self) -> Vec<Overwritten> {
        if !self.any_dups.swap(false, Ordering::Relaxed) {
            return Vec::new();
        }
        let mut found = Vec::new();
        for (_, mut dup) in std::mem::take(&mut *self.dups()) {
            dup.outputs.sort_unstable();
            for (coin, taken) in dup.aside {
                if taken {
                    continue;
                }
                let next = dup.outputs.partition_point(|&o| o <= coin.output);
                found.push(Overwritten {
                    coin,
                    by: dup.outputs[next],
                });
            }
        }
        found.sort_unstable_by_key(|o| o.coin.output);
        found
    }

    /// Coins in memory.
    pub fn len(&self) -> usize {
        self.map.len()
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
        self.map.bytes()
    }

    pub fn generations(&self) -> usize {
        self.frozen.generations()
    }

    /// Coins on disk not spent yet.
    pub fn on_disk(&self) -> u64 {
        self.frozen.live()
    }

    /// Writes the map out as a generation and empties it; returns how many
    /// coins were written. Call between epochs, from the BIP34 height on.
    pub fn freeze(&mut self) -> Result<u64> {
        let tables = self.map.drain();
        let count = tables.iter().map(|t| t.len() as u64).sum();
        self.frozen.push(count, tables.len(), |t| {
            let mut coins: Vec<(u128, Coin)> =
                tables[t].iter().map(|(k, c)| (k.wide(), *c)).collect();
            coins.par_sort_unstable_by_key(|&(k, _)| k);
            Ok(coins)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rayon::prelude::*;

    use super::*;

    fn txid(n: u8) -> Txid {
        Txid::from_byte_array([n; 32])
    }

    #[test]
    fn a_coin_is_taken_once_and_the_later_duplicate_wins() {
        let dir = tempfile::tempdir().unwrap();
        let coins = Coins::new(dir.path());
        let (a, b) = (CoinKey::new(&txid(1), 0), CoinKey::new(&txid(1), 1));
        // Inserted from many workers in no particular order.
        (0..64u64).into_par_iter().for_each(|i| {
            coins.insert(
                a,
                Coin::new(OutNum(i), i, Some(AddrId(7)), ScriptType::P2tr),
            );
        });
        coins.insert(b, Coin::new(OutNum(100), 5, None, ScriptType::OpReturn));
        assert_eq!(coins.len(), 2);
        let end = OutNum(1000);
        let got = coins.take(&a, end).unwrap().unwrap();
        assert_eq!(
            (got.output, got.value, got.addr()),
            (OutNum(63), 63, Some(AddrId(7)))
        );
        assert_eq!(coins.take(&a, end).unwrap(), None, "the latest is spent");
        assert_eq!(got.script(), ScriptType::P2tr);
        assert_eq!(
            coins.take(&b, OutNum(100)).unwrap(),
            None,
            "not created yet"
        );
        let other = coins.take(&b, end).unwrap().unwrap();
        assert_eq!((other.addr(), other.script()), (None, ScriptType::OpReturn));
        assert_eq!(coins.len(), 0);
        // The 63 earlier coins: each given way to the next, none spent.
        let overwritten = coins.overwritten();
        assert_eq!(overwritten.len(), 63);
        for (i, o) in overwritten.iter().enumerate() {
            assert_eq!(
                (o.coin.output, o.by),
                (OutNum(i as u64), OutNum(i as u64 + 1))
            );
        }
        assert_eq!(coins.overwritten(), []);
    }

    #[test]
    fn an_input_between_two_occurrences_spends_the_earlier_which_then_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let coins = Coins::new(dir.path());
        let key = CoinKey::new(&txid(2), 0);
        let coin = |n| Coin::new(OutNum(n), 50, Some(AddrId(1)), ScriptType::P2pkh);
        // Occurrences at outputs 10, 20 and 30 (one from an earlier epoch).
        coins.insert(key, coin(10));
        assert_eq!(coins.overwritten(), []);
        coins.insert(key, coin(30));
        coins.insert(key, coin(20));
        // Spent by a tx between 20 and 30, then by one after 30.
        assert_eq!(coins.take(&key, OutNum(25)).unwrap(), Some(coin(20)));
        assert_eq!(coins.take(&key, OutNum(25)).unwrap(), None, "spent twice");
        assert_eq!(coins.take(&key, OutNum(35)).unwrap(), Some(coin(30)));
        assert_eq!(coins.take(&key, OutNum(36)).unwrap(), None);
        assert_eq!(
            coins.overwritten(),
            [Overwritten {
                coin: coin(10),
                by: OutNum(20)
            }]
        );
        assert_eq!(coins.len(), 0);
    }

    #[test]
    fn keys_tell_apart_txids_that_differ_past_the_first_eight_bytes_and_vouts() {
        let t = Txid::from_str("f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16")
            .unwrap();
        let mut bytes = *t.as_byte_array();
        bytes[11] ^= 1;
        let other = Txid::from_byte_array(bytes);
        assert_ne!(CoinKey::new(&t, 0), CoinKey::new(&other, 0));
        assert_ne!(CoinKey::new(&t, 0), CoinKey::new(&t, 1));
        assert_eq!(
            CoinKey::new(&t, 3),
            CoinKey::of(&OutPoint { txid: t, vout: 3 })
        );
    }

    #[test]
    fn coins_written_out_are_taken_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut coins = Coins::new(dir.path());
        let coin = |n: u64| Coin::new(OutNum(n), n * 10, Some(AddrId(n)), ScriptType::P2wpkh);
        let key = |n: u64| CoinKey::new(&Txid::from_byte_array([n as u8; 32]), n as u32);
        (1..=100).for_each(|n| coins.insert(key(n), coin(n)));
        assert_eq!(coins.take(&key(1), OutNum(1000)).unwrap(), Some(coin(1)));
        assert_eq!(coins.freeze().unwrap(), 99);
        assert_eq!((coins.len(), coins.generations()), (0, 1));
        (101..=120).for_each(|n| coins.insert(key(n), coin(n)));
        let end = OutNum(1000);
        for n in [2, 50, 100, 101, 120] {
            assert_eq!(coins.take(&key(n), end).unwrap(), Some(coin(n)), "coin {n}");
        }
        assert_eq!(coins.take(&key(1), end).unwrap(), None, "spent before");
        assert_eq!(coins.take(&key(2), end).unwrap(), None, "spent from disk");
        assert_eq!(coins.take(&key(121), end).unwrap(), None, "never made");
        assert_eq!((coins.len(), coins.on_disk()), (18, 96));
        // Spend all but 10 of those on disk: the next write-out merges
        // away the spent ones, and what is left is found.
        for n in (3..=89).filter(|&n| n != 50) {
            assert_eq!(coins.take(&key(n), end).unwrap(), Some(coin(n)));
        }
        assert_eq!(coins.freeze().unwrap(), 18);
        assert_eq!((coins.generations(), coins.on_disk()), (1, 28));
        for n in (90..=99).chain(102..=119) {
            assert_eq!(coins.take(&key(n), end).unwrap(), Some(coin(n)), "coin {n}");
        }
        assert_eq!(coins.on_disk(), 0);
        assert_eq!(coins.take(&key(90), end).unwrap(), None);
    }
}
