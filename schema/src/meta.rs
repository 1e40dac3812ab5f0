//! The `meta` family: one row per fact about the index as a whole, each
//! with a typed value (`Entry`).

use crate::block::ChainPoint;
use crate::codec::{Codec, Dec, Raw, RowError};
use crate::ids::AddrId;

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
    ClusterDirty,
    Bulk,
    /// Where the next scan of blk file N starts.
    Scan(u32),
}

const NAMES: [(MetaKey, &[u8]); 10] = [
    (MetaKey::SchemaVersion, b"schema_version"),
    (MetaKey::Network, b"network"),
    (MetaKey::XorKey, b"xor_key"),
    (MetaKey::BlocksDir, b"blocks_dir"),
    (MetaKey::Tip, b"tip"),
    (MetaKey::Start, b"start"),
    (MetaKey::ClusterHeuristics, b"cluster_heuristics"),
    (MetaKey::ClusterTip, b"cluster_tip"),
    (MetaKey::ClusterDirty, b"cluster_dirty"),
    (MetaKey::Bulk, b"bulk"),
];

const SCAN_PREFIX: &[u8] = b"scan/";

impl Codec for MetaKey {
    type Bytes = Vec<u8>;

    fn encode(&self) -> Vec<u8> {
        match self {
            MetaKey::Scan(file) => [SCAN_PREFIX, &file.to_be_bytes()].concat(),
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

/// Where the next scan of blk file `.0` starts.
pub struct Scan(pub u32);

impl Entry for Scan {
    type Value = u64;
    fn key(&self) -> MetaKey {
        MetaKey::Scan(self.0)
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
}
