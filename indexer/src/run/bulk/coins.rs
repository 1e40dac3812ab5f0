//! Every unspent output of the chain so far, so that resolving an input is
//! a hash lookup, never a database read. Split into shards, each behind its
//! own lock, so that all workers insert and take at once.

use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Txid};
use satflow_schema::script::ScriptType;
use satflow_schema::{AddrId, OutNum};

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

pub(super) struct Coins {
    map: Shards<CoinKey, Coin>,
}

impl Coins {
    pub fn new() -> Coins {
        Coins { map: Shards::new() }
    }

    /// A second coin under one key is a duplicate txid (BIP30: mainnet
    /// blocks 91842 and 91880 repeat two earlier coinbases): the later
    /// coin replaces the earlier, which can never be spent, whatever order
    /// the workers insert them in.
    pub fn insert(&self, key: CoinKey, coin: Coin) {
        self.map
            .lock(key.shard())
            .entry(key)
            .and_modify(|c| {
                if coin.output > c.output {
                    *c = coin
                }
            })
            .or_insert(coin);
    }

    /// Removes and returns the coin; None when no unspent output has that key.
    pub fn take(&self, key: &CoinKey) -> Option<Coin> {
        self.map.lock(key.shard()).remove(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn bytes(&self) -> usize {
        self.map.bytes()
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
        let coins = Coins::new();
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
        let got = coins.take(&a).unwrap();
        assert_eq!(
            (got.output, got.value, got.addr()),
            (OutNum(63), 63, Some(AddrId(7)))
        );
        assert_eq!(coins.take(&a), None);
        assert_eq!(got.script(), ScriptType::P2tr);
        let other = coins.take(&b).unwrap();
        assert_eq!((other.addr(), other.script()), (None, ScriptType::OpReturn));
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
}
