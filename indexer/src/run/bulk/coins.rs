//! Every unspent output of the chain so far, so that resolving an input is
//! a hash lookup, never a database read. Split into shards by txid, and
//! taken in two phases per epoch, each with no lock: the epoch's outputs
//! are put into their shards, then its inputs take their coins, each
//! worker owning whole shards (a lock's fence per coin kept each core to
//! one cache miss at a time).
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

use anyhow::{anyhow, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Txid};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use satflow_schema::script::ScriptType;
use satflow_schema::{AddrId, OutNum};

use super::frozen::{Frozen, Value};

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

    /// Txid bytes are uniform: the top one picks the shard, the map's hash
    /// mixes the rest.
    fn shard(&self) -> usize {
        (self.head >> 56) as usize
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

/// Shards of the map: a key's top txid byte picks its shard.
const SHARDS: usize = 256;

pub(super) struct Coins {
    shards: Vec<Shard>,
    frozen: Frozen<Coin>,
}

#[derive(Default)]
struct Shard {
    coins: FxHashMap<CoinKey, Coin>,
    /// The keys this epoch put a second coin under: almost always none.
    dups: FxHashMap<CoinKey, Dup>,
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

/// An input's coin to take: its key, and its tx's first output (the coin
/// was made before it).
#[derive(Clone, Copy)]
pub(super) struct Want {
    pub key: CoinKey,
    pub before: OutNum,
}

/// `items` split by shard, each worker's share apart: per share, per
/// shard, its items in order.
fn by_shard<T: Send>(
    items: impl ParallelIterator<Item = T>,
    shard: impl Fn(&T) -> usize + Sync,
) -> Vec<Vec<Vec<T>>> {
    items
        .fold(
            || (0..SHARDS).map(|_| Vec::new()).collect::<Vec<_>>(),
            |mut shares, item| {
                shares[shard(&item)].push(item);
                shares
            },
        )
        .collect()
}

impl Shard {
    /// A second coin under one key is a duplicate txid: the map keeps the
    /// later, whatever order the coins come in, and the earlier goes
    /// aside.
    fn insert(&mut self, key: CoinKey, coin: Coin) {
        match self.coins.entry(key) {
            Entry::Vacant(e) => {
                e.insert(coin);
            }
            Entry::Occupied(mut e) => {
                let held = *e.get();
                let earlier = match coin.output > held.output {
                    true => e.insert(coin),
                    false => coin,
                };
                let dup = self.dups.entry(key).or_default();
                dup.outputs.extend([held.output, coin.output]);
                dup.aside.push((earlier, false));
            }
        }
    }

    /// The coin `want` spends from the map: the latest under its key
    /// made before it, unless an input took it already.
    fn take(&mut self, want: &Want) -> Option<Coin> {
        let (key, before) = (&want.key, want.before);
        let Some(dup) = self.dups.get_mut(key) else {
            // The path of almost every input: one probe.
            let coin = self.coins.remove(key)?;
            if coin.output < before {
                return Some(coin);
            }
            // Made by a later transaction: not this input's coin.
            self.coins.insert(*key, coin);
            return None;
        };
        if let Some(latest) = self.coins.get(key).copied().filter(|c| c.output < before) {
            self.coins.remove(key);
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
}

impl Coins {
    /// An empty map whose generations go to scratch files in `dir`.
    pub fn new(dir: &Path) -> Coins {
        Coins {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            frozen: Frozen::new(dir),
        }
    }

    /// Puts an epoch's coins into the map, in any order.
    pub fn insert_all(&mut self, coins: impl ParallelIterator<Item = (CoinKey, Coin)>) {
        let shares = by_shard(coins, |(key, _)| key.shard());
        self.shards
            .par_iter_mut()
            .enumerate()
            .for_each(|(s, shard)| {
                for &(key, coin) in shares.iter().flat_map(|share| &share[s]) {
                    shard.insert(key, coin);
                }
            });
    }

    /// Takes the coin each of an epoch's inputs spends, given in input
    /// order as `wants`: the latest under its key made before its tx.
    /// Call once the epoch's outputs are all inserted. An input that finds
    /// none (an input took it already, or there never was one) fails the
    /// epoch, `input(i)` naming the `i`th.
    pub fn take_all(
        &mut self,
        wants: impl IndexedParallelIterator<Item = Want>,
        input: impl Fn(usize) -> String + Sync,
    ) -> Result<Vec<Coin>> {
        let count = wants.len();
        let shares = by_shard(wants.enumerate(), |(_, want)| want.key.shard());
        let frozen = &self.frozen;
        let taken: Vec<Vec<(usize, Option<Coin>)>> = self
            .shards
            .par_iter_mut()
            .enumerate()
            .map(|(s, shard)| {
                shares
                    .iter()
                    .flat_map(|share| &share[s])
                    .map(|&(i, want)| {
                        let coin = match shard.take(&want) {
                            Some(coin) => Some(coin),
                            // Written out by an earlier epoch: marked
                            // spent there, so that a second input finds
                            // nothing and a merge drops it.
                            None => frozen.take(want.key.wide(), s).with_context(|| input(i))?,
                        };
                        Ok((i, coin))
                    })
                    .collect::<Result<_>>()
            })
            .collect::<Result<_>>()?;
        let mut coins = vec![None; count];
        for (i, coin) in taken.into_iter().flatten() {
            coins[i] = coin;
        }
        coins
            .into_iter()
            .enumerate()
            .map(|(i, coin)| {
                coin.ok_or_else(|| {
                    anyhow!("its transaction is not in the index, or the output is spent or does not exist")
                        .context(input(i))
                })
            })
            .collect()
    }

    /// The coins that gave way to a later one this epoch and that no input
    /// took, in output order: overwritten, never to be spent. Call once
    /// the epoch's inputs are all taken; the next epoch starts afresh.
    pub fn overwritten(&mut self) -> Vec<Overwritten> {
        let mut found = Vec::new();
        for shard in &mut self.shards {
            for (_, mut dup) in shard.dups.drain() {
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
        }
        found.sort_unstable_by_key(|o| o.coin.output);
        found
    }

    /// Coins in memory.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.coins.len()).sum()
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

    /// Memory the map itself holds: slots, used or not, and a control byte
    /// each.
    pub fn map_bytes(&self) -> usize {
        let slot = std::mem::size_of::<(CoinKey, Coin)>() + 1;
        self.shards.iter().map(|s| s.coins.capacity() * slot).sum()
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
        let tables: Vec<FxHashMap<CoinKey, Coin>> = self
            .shards
            .iter_mut()
            .map(|s| std::mem::take(&mut s.coins))
            .collect();
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

    /// What one input spending `key` from a tx whose first output is
    /// `before` takes: None where the map has no coin for it.
    fn take(coins: &mut Coins, key: CoinKey, before: OutNum) -> Option<Coin> {
        let want = Want { key, before };
        match coins.take_all(rayon::iter::once(want), |i| format!("input {i}")) {
            Ok(taken) => Some(taken[0]),
            Err(e) => {
                assert!(
                    format!("{e:#}").starts_with("input 0: its transaction is not in the index"),
                    "{e:#}"
                );
                None
            }
        }
    }

    fn insert(coins: &mut Coins, key: CoinKey, coin: Coin) {
        coins.insert_all(rayon::iter::once((key, coin)));
    }

    #[test]
    fn a_coin_is_taken_once_and_the_later_duplicate_wins() {
        let dir = tempfile::tempdir().unwrap();
        let mut coins = Coins::new(dir.path());
        let (a, b) = (CoinKey::new(&txid(1), 0), CoinKey::new(&txid(1), 1));
        // Latest first, in shares of every worker.
        coins.insert_all((0..64u32).into_par_iter().rev().map(|i| {
            let i = u64::from(i);
            let coin = Coin::new(OutNum(i), i, Some(AddrId(7)), ScriptType::P2tr);
            (a, coin)
        }));
        insert(
            &mut coins,
            b,
            Coin::new(OutNum(100), 5, None, ScriptType::OpReturn),
        );
        assert_eq!(coins.len(), 2);
        let end = OutNum(1000);
        let got = take(&mut coins, a, end).unwrap();
        assert_eq!(
            (got.output, got.value, got.addr()),
            (OutNum(63), 63, Some(AddrId(7)))
        );
        assert_eq!(take(&mut coins, a, end), None, "the latest is spent");
        assert_eq!(got.script(), ScriptType::P2tr);
        assert_eq!(take(&mut coins, b, OutNum(100)), None, "not created yet");
        let other = take(&mut coins, b, end).unwrap();
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
        let mut coins = Coins::new(dir.path());
        let key = CoinKey::new(&txid(2), 0);
        let coin = |n| Coin::new(OutNum(n), 50, Some(AddrId(1)), ScriptType::P2pkh);
        // Occurrences at outputs 10, 20 and 30 (one from an earlier epoch).
        insert(&mut coins, key, coin(10));
        assert_eq!(coins.overwritten(), []);
        insert(&mut coins, key, coin(30));
        insert(&mut coins, key, coin(20));
        // Spent by a tx between 20 and 30, then by one after 30.
        assert_eq!(take(&mut coins, key, OutNum(25)), Some(coin(20)));
        assert_eq!(take(&mut coins, key, OutNum(25)), None, "spent twice");
        assert_eq!(take(&mut coins, key, OutNum(35)), Some(coin(30)));
        assert_eq!(take(&mut coins, key, OutNum(36)), None);
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
        coins.insert_all((1..=100).into_par_iter().map(|n| (key(n), coin(n))));
        assert_eq!(take(&mut coins, key(1), OutNum(1000)), Some(coin(1)));
        assert_eq!(coins.freeze().unwrap(), 99);
        assert_eq!((coins.len(), coins.generations()), (0, 1));
        coins.insert_all((101..=120).into_par_iter().map(|n| (key(n), coin(n))));
        let end = OutNum(1000);
        for n in [2, 50, 100, 101, 120] {
            assert_eq!(take(&mut coins, key(n), end), Some(coin(n)), "coin {n}");
        }
        assert_eq!(take(&mut coins, key(1), end), None, "spent before");
        assert_eq!(take(&mut coins, key(2), end), None, "spent from disk");
        assert_eq!(take(&mut coins, key(121), end), None, "never made");
        assert_eq!((coins.len(), coins.on_disk()), (18, 96));
        // Spend all but 10 of those on disk: the next write-out merges
        // away the spent ones, and what is left is found.
        for n in (3..=89).filter(|&n| n != 50) {
            assert_eq!(take(&mut coins, key(n), end), Some(coin(n)));
        }
        assert_eq!(coins.freeze().unwrap(), 18);
        assert_eq!((coins.generations(), coins.on_disk()), (1, 28));
        for n in (90..=99).chain(102..=119) {
            assert_eq!(take(&mut coins, key(n), end), Some(coin(n)), "coin {n}");
        }
        assert_eq!(coins.on_disk(), 0);
        assert_eq!(take(&mut coins, key(90), end), None);
    }

    #[test]
    fn an_epochs_inputs_take_their_coins_in_input_order_and_the_first_without_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut coins = Coins::new(dir.path());
        // Txids of every first byte: coins in every shard.
        let key = |n: u8| CoinKey::new(&txid(n), u32::from(n));
        let coin = |n: u8| Coin::new(OutNum(n.into()), u64::from(n) * 7, None, ScriptType::P2wsh);
        coins.insert_all((0..=255u8).into_par_iter().map(|n| (key(n), coin(n))));
        let want = |n: u8| Want {
            key: key(n),
            before: OutNum(1000),
        };
        let order: Vec<u8> = (0..=255u8).rev().collect();
        let named = |i| format!("input {i}");
        let taken = coins
            .take_all(order.par_iter().map(|&n| want(n)), named)
            .unwrap();
        assert_eq!(taken, order.iter().map(|&n| coin(n)).collect::<Vec<_>>());
        assert_eq!(coins.len(), 0);
        insert(&mut coins, key(5), coin(5));
        let wants = [want(5), want(6), want(7)];
        let e = coins.take_all(wants.into_par_iter(), named).unwrap_err();
        assert!(format!("{e:#}").starts_with("input 1: "), "{e:#}");
    }
}
