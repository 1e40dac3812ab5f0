//! The `meta` family: one row per fact about the index as a whole, each
//! with a typed value (`Entry`).

use crate::block::ChainPoint;
use crate::codec::{Codec, Dec, Raw, RowError};
use crate::ids::{AddrId, OutNum, TxNum};

/// A `meta` row's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKey {
    SchemaVersion,
    Network,
    XorKey,
    BlocksDir,
    Tip,
    Start,
    ClusterHeuristics,
    ClusterTip,
    BestHeader,
    ClusterDirty,
    Bulk,
    LabelsVersion,
    /// Where the next scan of blk file N starts.
    Scan(u32),
    /// A coin of this address that a later tx with the same txid
    /// overwrote (BIP30).
    Overwritten(AddrId, OutNum),
}

const NAMES: [(MetaKey, &[u8]); 12] = [
    (MetaKey::SchemaVersion, b"schema_version"),
    (MetaKey::Network, b"network"),
    (MetaKey::XorKey, b"xor_key"),
    (MetaKey::BlocksDir, b"blocks_dir"),
    (MetaKey::Tip, b"tip"),
    (MetaKey::Start, b"start"),
    (MetaKey::ClusterHeuristics, b"cluster_heuristics"),
    (MetaKey::ClusterTip, b"cluster_tip"),
    (MetaKey::BestHeader, b"best_header"),
    (MetaKey::ClusterDirty, b"cluster_dirty"),
    (MetaKey::Bulk, b"bulk"),
    (MetaKey::LabelsVersion, b"labels_version"),
];

const SCAN_PREFIX: &[u8] = b"scan/";
const OVERWRITTEN_PREFIX: &[u8] = b"overwritten/";

impl Codec for MetaKey {
    type Bytes = Vec<u8>;

    fn encode(&self) -> Vec<u8> {
        match self {
            MetaKey::Scan(file) => [SCAN_PREFIX, &file.to_be_bytes()].concat(),
            MetaKey::Overwritten(addr, output) => {
                [OVERWRITTEN_PREFIX, &addr.encode(), &output.encode()].concat()
            }
            key => NAMES
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, name)| name.to_vec())
                .expect("every fixed key has a name"),
        }
    }

    fn decode(b: &[u8]) -> Result<MetaKey, RowError> {
        if let Some(file) = b.strip_prefix(SCAN_PREFIX) {
            return Dec::all("meta scan key", file, Dec::u32).map(MetaKey::Scan);
        }
        if let Some(coin) = b.strip_prefix(OVERWRITTEN_PREFIX) {
            return Dec::all("meta overwritten key", coin, |d| {
                Ok(MetaKey::Overwritten(AddrId(d.u64()?), OutNum(d.u64()?)))
            });
        }
        NAMES
            .iter()
            .find(|(_, name)| *name == b)
            .map(|(k, _)| *k)
            .ok_or(RowError {
                row: "meta key",
                len: b.len(),
            })
    }
}

/// A `meta` row and the type of its value.
pub trait Entry {
    type Value: Codec;
    fn key(&self) -> MetaKey;
}

macro_rules! entry {
    ($(#[$doc:meta])* $name:ident: $value:ty) => {
        $(#[$doc])*
        pub struct $name;

        impl Entry for $name {
            type Value = $value;
            fn key(&self) -> MetaKey {
                MetaKey::$name
            }
        }
    };
}

entry!(
    /// `SCHEMA_VERSION` of the binary that created the database.
    SchemaVersion: u32
);
entry!(
    /// `main`, `test`, `testnet4`, `signet` or `regtest`.
    Network: String
);
entry!(
    /// The 8 bytes of `xor.dat` at the last run.
    XorKey: [u8; 8]
);
entry!(
    /// Canonical path of the blocks directory at the last run (OS string
    /// bytes), where raw transactions are read back from.
    BlocksDir: Raw
);
entry!(
    /// The last block applied; absent when the index is empty.
    Tip: ChainPoint
);
entry!(
    /// The first block of an index that does not start at genesis.
    Start: ChainPoint
);
entry!(
    /// The clustering heuristics in force, as `satflow cluster
    /// --heuristics` names them.
    ClusterHeuristics: String
);
entry!(
    /// The last block the clusters include.
    ClusterTip: ChainPoint
);
entry!(
    /// The tip of the best chain among the headers the last scan of the
    /// blocks directory found: how far the index would go, so that readers
    /// can tell how many blocks it is behind.
    BestHeader: ChainPoint
);
entry!(
    /// Addresses whose clusters a reorg dissolved, to be recomputed before
    /// the next block is clustered.
    ClusterDirty: Vec<AddrId>
);

entry!(
    /// Present while a bulk run (see the indexer's `bulk`) is under way,
    /// or was interrupted: `addr_utxos` and `addr_stats` are built at its
    /// end, and until then hold nothing of its blocks.
    Bulk: ()
);

entry!(
    /// Counts the write batches of label imports and removals: a reader's
    /// label index is rebuilt whole when it moved, and otherwise only
    /// looks at the addresses that are new since.
    LabelsVersion: u64
);

/// Where the next scan of blk file `.0` starts.
pub struct Scan(pub u32);

impl Entry for Scan {
    type Value = u64;
    fn key(&self) -> MetaKey {
        MetaKey::Scan(self.0)
    }
}

/// BIP30: output `.1`, paid to address `.0`, was still unspent when a
/// later transaction with the same txid was applied. Bitcoin Core's UTXO
/// set keeps the later coin only (mainnet: the coinbases of 91,812 and
/// 91,722, overwritten at 91,842 and 91,880), so the earlier one can never
/// be spent: readers leave it out of the address's balance, unspent count
/// and unspent outputs, while its tx, output and history rows stay.
/// Written with the block of the later tx, deleted when that block is
/// undone.
pub struct Overwritten(pub AddrId, pub OutNum);

impl Entry for Overwritten {
    type Value = OverwrittenCoin;
    fn key(&self) -> MetaKey {
        MetaKey::Overwritten(self.0, self.1)
    }
}

/// The value of a `meta::Overwritten` row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OverwrittenCoin {
    /// The coin's value, as its `addr_utxos` row and `addr_stats` count it.
    pub value: u64,
    /// The later transaction with the same txid, whose coin took its place.
    pub by: TxNum,
}

impl Codec for OverwrittenCoin {
    type Bytes = [u8; 16];

    fn encode(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.value.to_be_bytes());
        v[8..].copy_from_slice(&self.by.encode());
        v
    }

    fn decode(b: &[u8]) -> Result<OverwrittenCoin, RowError> {
        Dec::all("meta overwritten coin", b, |d| {
            Ok(OverwrittenCoin {
                value: d.u64()?,
                by: TxNum(d.u64()?),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_keep_their_names_and_scan_keys_sort_by_file() {
        assert_eq!(MetaKey::Tip.encode(), b"tip");
        assert_eq!(MetaKey::SchemaVersion.encode(), b"schema_version");
        for (key, _) in NAMES {
            assert_eq!(MetaKey::decode(&key.encode()).unwrap(), key);
        }
        assert_eq!(MetaKey::Scan(7).encode(), b"scan/\0\0\0\x07");
        assert_eq!(
            MetaKey::decode(b"scan/\0\0\x01\0").unwrap(),
            MetaKey::Scan(256)
        );
        assert!(MetaKey::Scan(9).encode() < MetaKey::Scan(256).encode());
        assert!(MetaKey::decode(b"nothing").is_err());
        assert_eq!(Scan(3).key(), MetaKey::Scan(3));
    }

    #[test]
    fn overwritten_keys_sort_by_address_then_output_and_round_trip() {
        let key = MetaKey::Overwritten(AddrId(2), OutNum(258));
        assert_eq!(
            key.encode(),
            b"overwritten/\0\0\0\0\0\0\0\x02\0\0\0\0\0\0\x01\x02"
        );
        assert_eq!(MetaKey::decode(&key.encode()).unwrap(), key);
        assert!(key.encode() < MetaKey::Overwritten(AddrId(3), OutNum(0)).encode());
        assert!(MetaKey::Overwritten(AddrId(2), OutNum(1)).encode() < key.encode());
        assert!(MetaKey::decode(b"overwritten/\0").is_err());
        let coin = OverwrittenCoin {
            value: 50_0000_0000,
            by: TxNum(7),
        };
        assert_eq!(OverwrittenCoin::decode(&coin.encode()).unwrap(), coin);
        assert_eq!(Overwritten(AddrId(2), OutNum(258)).key(), key);
    }
}
