//! The column families: one type per family, naming its key and value
//! types. `Store::get::<cf::Txs>(&TxNum(5))` reads a `TxRow`; nothing
//! outside this crate and the store spells a family's name or bytes.

use bitcoin::{BlockHash, Txid};

use crate::address::{AddrStats as AddrStatsRow, HistoryRow};
use crate::block::{BlockIndexRow, BlockRow};
use crate::cluster::{ClusterStats as ClusterStatsRow, RankKey, UndoRecord};
use crate::codec::{Codec, Raw};
use crate::ids::{AddrId, ClusterKey, Height, OutNum, TxNum, TxidPrefix};
use crate::label::{LabelKey, LabelValue, PoolTagValue};
use crate::meta::MetaKey;
use crate::script::AddrKey;
use crate::tx::{InputRef, OutputRow, TxRow};

/// A column family: its name in RocksDB and the types of its rows.
pub trait Family {
    const NAME: &'static str;
    type Key: Codec;
    type Value: Codec;
}

/// A family keyed by an id that only grows, whose new rows the indexer
/// ingests as table files instead of writing them through memtables.
pub trait Appended: Family {}

macro_rules! family {
    ($(#[$doc:meta])* $name:ident, $cf:literal, $key:ty => $value:ty) => {
        $(#[$doc])*
        pub struct $name;

        impl Family for $name {
            const NAME: &'static str = $cf;
            type Key = $key;
            type Value = $value;
        }
    };
}

family!(
    /// Facts about the index as a whole (`meta::Entry` types the values).
    Meta, "meta", MetaKey => Raw
);
family!(
    /// Every block record ever seen, stale ones too.
    BlockIndex, "block_index", BlockHash => BlockIndexRow
);
family!(
    /// The best chain.
    Blocks, "blocks", Height => BlockRow
);
family!(
    /// Heights of the best chain's blocks.
    BlockHeight, "block_height", BlockHash => Height
);
family!(Txs, "txs", TxNum => TxRow);
family!(
    /// Txid lookup by the txid's first 8 bytes; the tx number in the key
    /// keeps both BIP30 duplicates, and txids that share a prefix, apart
    /// (`Store::txs_with_id` reads the `txs` rows to tell them apart).
    Txids, "txids", (TxidPrefix, TxNum) => ()
);
family!(Outputs, "outputs", OutNum => OutputRow);
family!(
    /// Where each spent output went.
    Spends, "spends", OutNum => InputRef
);
family!(
    /// The outputs a tx's inputs spend, in input order (none for a coinbase).
    Inputs, "inputs", TxNum => Vec<OutNum>
);
family!(Addrs, "addrs", AddrId => AddrKey);
family!(AddrIds, "addr_ids", AddrKey => AddrId);
family!(
    /// An address's transactions in chain order.
    History, "history", (AddrId, TxNum) => HistoryRow
);
family!(
    /// An address's unspent outputs and their values.
    AddrUtxos, "addr_utxos", (AddrId, OutNum) => u64
);
family!(
    /// Running totals, kept by a merge operator that adds deltas.
    AddrStats, "addr_stats", AddrId => AddrStatsRow
);
family!(
    /// Only for addresses whose cluster is keyed by another member's
    /// number: no row means the key is the address's own (a lone address,
    /// or the cluster's holder).
    ClusterOf, "cluster_of", AddrId => ClusterKey
);
family!(ClusterMembers, "cluster_members", (ClusterKey, AddrId) => ());
family!(ClusterStats, "cluster_stats", ClusterKey => ClusterStatsRow);
family!(
    /// Members' `history` rows summed per tx, by a merge operator.
    ClusterHistory, "cluster_history", (ClusterKey, TxNum) => HistoryRow
);
family!(ClusterRank, "cluster_rank", RankKey => ());
family!(
    /// Per block clustered one at a time: the cluster rows it changed, as
    /// they were before, so that a reorg undoes exactly its merges.
    ClusterUndo, "cluster_undo", Height => UndoRecord
);
family!(
    /// Txids of coins from before the index's first block.
    Outside, "outside", OutNum => Txid
);
family!(Labels, "labels", LabelKey => LabelValue);
family!(PoolTags, "pool_tags", String => PoolTagValue);

impl Appended for Txs {}
impl Appended for Outputs {}
impl Appended for Inputs {}
impl Appended for Addrs {}

/// Every family's name, in the order RocksDB opens them.
pub const ALL: [&str; 23] = [
    Meta::NAME,
    BlockIndex::NAME,
    Blocks::NAME,
    BlockHeight::NAME,
    Txs::NAME,
    Txids::NAME,
    Outputs::NAME,
    Spends::NAME,
    Inputs::NAME,
    Addrs::NAME,
    AddrIds::NAME,
    History::NAME,
    AddrUtxos::NAME,
    AddrStats::NAME,
    ClusterOf::NAME,
    ClusterMembers::NAME,
    ClusterStats::NAME,
    ClusterHistory::NAME,
    ClusterRank::NAME,
    ClusterUndo::NAME,
    Outside::NAME,
    Labels::NAME,
    PoolTags::NAME,
];

/// The `Appended` families' names.
pub const APPENDED: [&str; 4] = [Txs::NAME, Outputs::NAME, Inputs::NAME, Addrs::NAME];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct() {
        let mut names = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(APPENDED.iter().all(|n| ALL.contains(n)));
    }
}
