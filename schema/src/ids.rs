//! Typed ids. Everything is numbered densely in chain order from 0, so
//! rows are small integers and a block's rows are id ranges. Each kind of
//! number has its own type: a cluster id cannot be passed where an address
//! id is meant, nor an output number where a tx number is. Beside them,
//! the txid prefix that keys the txid lookup.

use std::fmt;
use std::ops::{Add, Sub};

use crate::codec::{Codec, Dec, Inline, KeyPrefix, RowError};

/// A 64-bit key part, keyed as 8 big-endian bytes: a dense id, or the
/// first bytes of a hash that a lookup family is keyed by (`TxidPrefix`).
pub trait Id: Copy + Ord + Codec {
    const NAME: &'static str;
    fn get(self) -> u64;
    fn new(n: u64) -> Self;
}

/// A 64-bit key part: the type, its `Id` and its `Codec`.
macro_rules! key64 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl Id for $name {
            const NAME: &'static str = $what;
            fn get(self) -> u64 {
                self.0
            }
            fn new(n: u64) -> Self {
                $name(n)
            }
        }

        impl Codec for $name {
            type Bytes = [u8; 8];
            fn encode(&self) -> [u8; 8] {
                self.0.to_be_bytes()
            }
            fn decode(bytes: &[u8]) -> Result<Self, RowError> {
                Dec::all($what, bytes, Dec::u64).map($name)
            }
        }
    };
}

/// A dense id: a 64-bit key part that can be counted and printed.
macro_rules! id64 {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        key64!($(#[$doc])* $name, $what);

        /// The id `n` places further on.
        impl Add<u64> for $name {
            type Output = $name;
            fn add(self, n: u64) -> $name {
                $name(self.0 + n)
            }
        }

        /// How many ids lie between two: `end - start`.
        impl Sub for $name {
            type Output = u64;
            fn sub(self, start: $name) -> u64 {
                self.0 - start.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id64!(
    /// A transaction, numbered in block order along the best chain.
    TxNum,
    "tx number"
);
id64!(
    /// A transaction output, numbered in tx order then vout order. Coins
    /// from before an index's first block are numbered from
    /// `OutNum::FIRST_OUTSIDE` up (see `tx::OutputRow`).
    OutNum,
    "output number"
);
id64!(
    /// An address, numbered at its first appearance in an output.
    AddrId,
    "address number"
);
id64!(
    /// A cluster of addresses as callers name it: the number of its oldest
    /// address (`ClusterId::of`), which it keeps through merges.
    ClusterId,
    "cluster id"
);
id64!(
    /// What a cluster's rows are keyed by: the number of the member whose
    /// rows the others joined. Clusters merge by size (the larger keeps its
    /// rows), so a key is the cluster's oldest address only when that one
    /// was never the smaller side; its `ClusterStats::id` names it to
    /// callers. Lone addresses are keyed by their own number.
    ClusterKey,
    "cluster key"
);
key64!(
    /// The first 8 bytes of a txid (`TxidPrefix::of`), which `txids` is
    /// keyed by instead of all 32. Two txids that share them are told
    /// apart by their `txs` rows.
    TxidPrefix,
    "txid prefix"
);

impl OutNum {
    /// Output numbers of coins created before the index's first block
    /// start here, in the order they are spent, apart from the
    /// chain-ordered ones.
    pub const FIRST_OUTSIDE: OutNum = OutNum(1 << 63);

    pub fn is_outside(self) -> bool {
        self >= OutNum::FIRST_OUTSIDE
    }
}

impl ClusterId {
    /// The cluster named after `addr`: a lone address is a cluster of its
    /// own under its own number, and a cluster's id is its oldest member's.
    pub fn of(addr: AddrId) -> ClusterId {
        ClusterId(addr.0)
    }

    /// The address the cluster is named after.
    pub fn named_after(self) -> AddrId {
        AddrId(self.0)
    }
}

impl ClusterKey {
    /// The key of the rows held under `addr`'s number: a lone address's,
    /// or a cluster's that `addr` founded.
    pub fn of(addr: AddrId) -> ClusterKey {
        ClusterKey(addr.0)
    }

    /// The member whose number the key is.
    pub fn holder(self) -> AddrId {
        AddrId(self.0)
    }
}

/// A block of the best chain, keyed as 4 big-endian bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Height(pub u32);

impl Codec for Height {
    type Bytes = [u8; 4];
    fn encode(&self) -> [u8; 4] {
        self.0.to_be_bytes()
    }
    fn decode(bytes: &[u8]) -> Result<Height, RowError> {
        Dec::all("height", bytes, Dec::u32).map(Height)
    }
}

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Two ids side by side, as the per-address and per-cluster families key
/// their rows: `(AddrId, TxNum)`, `(ClusterId, AddrId)`, … One id's rows
/// are one key prefix, in the order of the second.
impl<A: Id, B: Id> Codec for (A, B) {
    type Bytes = [u8; 16];
    fn encode(&self) -> [u8; 16] {
        let mut k = [0u8; 16];
        k[..8].copy_from_slice(&self.0.get().to_be_bytes());
        k[8..].copy_from_slice(&self.1.get().to_be_bytes());
        k
    }
    fn decode(bytes: &[u8]) -> Result<(A, B), RowError> {
        Dec::all("pair key", bytes, |d| {
            Ok((A::new(d.u64()?), B::new(d.u64()?)))
        })
    }
}

impl<A: Id, B: Id> KeyPrefix<A> for (A, B) {}

/// A list of ids as one value: the outputs a tx's inputs spend, the
/// addresses whose clusters a reorg dissolved.
impl<T: Id> Codec for Vec<T> {
    type Bytes = Vec<u8>;
    /// Varints: an output number takes 5 bytes on mainnet, not 8.
    fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len() * 5);
        for id in self {
            let mut v = Inline::<10>::new();
            v.varint(id.get());
            bytes.extend_from_slice(&v);
        }
        bytes
    }
    fn decode(bytes: &[u8]) -> Result<Vec<T>, RowError> {
        Dec::all(T::NAME, bytes, |d| {
            let mut ids = Vec::with_capacity(bytes.len() / 4);
            while !d.is_empty() {
                ids.push(T::new(d.varint()?));
            }
            Ok(ids)
        })
    }
}

/// The dense id counters: what the next new tx, output and address get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextIds {
    pub tx: TxNum,
    pub output: OutNum,
    pub addr: AddrId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_number() {
        assert!(TxNum(255).encode() < TxNum(256).encode());
        assert!(Height(255).encode() < Height(256).encode());
        assert!((AddrId(1), TxNum(u64::MAX)).encode() < (AddrId(2), TxNum(0)).encode());
        assert_eq!(
            <(AddrId, OutNum)>::decode(&(AddrId(3), OutNum(9)).encode()).unwrap(),
            (AddrId(3), OutNum(9))
        );
        assert!(TxNum::decode(&[0; 9]).is_err());
    }

    #[test]
    fn id_lists_round_trip() {
        let ids = vec![OutNum(3), OutNum(1), OutNum(u64::MAX)];
        assert_eq!(Vec::<OutNum>::decode(&ids.encode()).unwrap(), ids);
        assert_eq!(ids.encode().len(), 1 + 1 + 10);
        assert!(Vec::<OutNum>::decode(&[]).unwrap().is_empty());
        // The last id cut short.
        assert!(Vec::<OutNum>::decode(&[3, 0x80]).is_err());
        assert_eq!(TxNum(5) + 2, TxNum(7));
        assert_eq!(TxNum(7) - TxNum(5), 2);
        assert!(OutNum(1 << 63).is_outside() && !OutNum(5).is_outside());
        assert_eq!(ClusterId::of(AddrId(4)).named_after(), AddrId(4));
    }
}
