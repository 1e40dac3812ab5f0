//! Per column family RocksDB options and the merge operators of the
//! families kept as running sums.

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, DBCompressionType, MergeOperands, Options,
    SliceTransform,
};
use satflow_schema::address::{AddrStats, HistoryRow};
use satflow_schema::cf::{self, Family};
use satflow_schema::Codec;

/// zstd's level for table files: -1, not RocksDB's default 3. Level 3's
/// match finder took 10% of a first index run's CPU (perf, 4 GB chain),
/// level 1's 6.6%, for an index 0.7% larger (4,106 MB against 4,076).
/// Below 1 zstd also leaves literals without entropy coding: zstd under
/// the table builder was 15% of a 4 GB run's samples at level 1, and the
/// run took ~4% less CPU at -1 (8 alternating pairs) for an index 3.4%
/// larger (4,245 MB); -2 gained nothing more measurable for 8.5%.
const ZSTD_LEVEL: i32 = -1;

/// Data block size of the families keyed by hashes (`addr_ids`, `txids`):
/// every lookup lands on a block of its own, which a block cache miss
/// decompresses whole, and nothing reads them in ranges. 4 KiB instead of
/// 16: an address lookup past the cache took 7.8–8.5 µs instead of
/// 12.3–13.1 (`benches/point_reads` on the 4 GB index), for an index 0.4%
/// larger and no indexing time measurable.
const LOOKUP_BLOCK: usize = 4 << 10;

/// Per column family tuning: zstd below the first levels, bloom filters
/// where point lookups usually miss, and every index and filter block in
/// the block cache.
pub(super) fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(16 << 10);
    table.set_format_version(5);
    // RocksDB otherwise keeps each open table file's whole index and
    // filter outside the cache for as long as the file is open: memory
    // that grows with the index, in every process that opens it (~90 MB a
    // handle for the 4 GB chain's index, so ~18 GB for mainnet's; a server
    // has two handles). Split into 4 KiB partitions, they are read into
    // the cache as lookups need them, and only each file's top-level index
    // stays pinned.
    table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
    table.set_partition_filters(true);
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_top_level_index_and_filter(true);
    let mut o = Options::default();
    o.set_compression_per_level(&[
        DBCompressionType::None,
        DBCompressionType::None,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
        DBCompressionType::Zstd,
    ]);
    o.set_bottommost_compression_type(DBCompressionType::Zstd);
    // Window bits and strategy at RocksDB's defaults (only zlib reads them).
    o.set_compression_options(-14, ZSTD_LEVEL, 0, 0);
    o.set_level_compaction_dynamic_level_bytes(true);
    o.set_write_buffer_size(64 << 20);
    o.set_target_file_size_base(64 << 20);
    // Bulk loading: a full memtable should not stall writes while it is
    // flushed, nor a few L0 files while they are compacted.
    o.set_max_write_buffer_number(4);
    o.set_level_zero_file_num_compaction_trigger(8);
    o.set_level_zero_slowdown_writes_trigger(40);
    o.set_level_zero_stop_writes_trigger(64);
    match name {
        cf::AddrIds::NAME => {
            // Most lookups are of new addresses: let a bloom filter say
            // "absent" without walking the memtable or reading a block.
            table.set_bloom_filter(10.0, false);
            table.set_block_size(LOOKUP_BLOCK);
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.05);
        }
        // cluster_of: most addresses are alone in their cluster and have no
        // row. (`outputs` and `txs` have none: their keys are dense ids, so
        // a lookup finds its row, and a filter would only cost 1.25 B a key.)
        cf::BlockHeight::NAME | cf::ClusterOf::NAME => table.set_bloom_filter(10.0, false),
        cf::Txids::NAME => {
            // Lookups scan one txid prefix (`store::lookup`): filter on it.
            o.set_prefix_extractor(SliceTransform::create_fixed_prefix(8));
            table.set_block_size(LOOKUP_BLOCK);
            o.set_memtable_prefix_bloom_ratio(0.05);
            table.set_bloom_filter(10.0, false);
            table.set_whole_key_filtering(false);
        }
        cf::AddrStats::NAME => o.set_merge_operator_associative("add_addr_stats", merge_stats),
        cf::ClusterHistory::NAME => o.set_merge_operator_associative("add_history", merge_history),
        _ => {}
    }
    o.set_block_based_table_factory(&table);
    o
}

/// Sums `HistoryRow`s: a cluster's row for a tx is the sum of its members' rows.
/// No writer makes merge operands any more (the cluster build writes each
/// row once); indexes built by earlier versions may still hold some.
fn merge_history(key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let values = existing.into_iter().chain(operands);
    Some(sum(cf::ClusterHistory::NAME, key, values, HistoryRow::add))
}

/// Adds `AddrStats` deltas.
fn merge_stats(key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let values = existing.into_iter().chain(operands);
    Some(sum(cf::AddrStats::NAME, key, values, AddrStats::add))
}

/// The encoded sum of a running-sum row's values. A value that
/// does not decode (a bug, or a damaged file) is left out of the sum and
/// logged with its row's key, rather than failing the merge: that would
/// stop every compaction of the family, and with it the index, on one row.
fn sum<'v, T: Codec + Default>(
    family: &str,
    key: &[u8],
    values: impl Iterator<Item = &'v [u8]>,
    add: impl Fn(&mut T, &T),
) -> Vec<u8> {
    let mut sum = T::default();
    for bytes in values {
        match T::decode(bytes) {
            Ok(v) => add(&mut sum, &v),
            Err(e) => tracing::error!(
                "{family} row {}: a value that does not decode ({e}) was left out of its sum",
                hex::encode(key)
            ),
        }
    }
    sum.encode().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    /// A running sum keeps what decodes and leaves out what does not.
    #[test]
    fn a_running_sum_leaves_out_a_value_that_does_not_decode() {
        use satflow_schema::address::AddrStats;
        use satflow_schema::Codec;

        let a = AddrStats {
            received: 5,
            tx_count: 1,
            ..AddrStats::default()
        };
        let b = AddrStats {
            received: 7,
            sent: 2,
            tx_count: 2,
            ..AddrStats::default()
        };
        let (a_bytes, b_bytes) = (a.encode(), b.encode());
        let values: [&[u8]; 3] = [a_bytes.as_ref(), b"\x01\x02", b_bytes.as_ref()];
        let summed =
            super::sum::<AddrStats>("addr_stats", b"k", values.into_iter(), AddrStats::add);
        let mut expected = a;
        expected.add(&b);
        assert_eq!(AddrStats::decode(&summed).unwrap(), expected);
        assert_eq!(expected.received, 12);
    }

    use bitcoin::hashes::Hash;
    use bitcoin::BlockHash;
    use satflow_schema::{cf, Height};

    use crate::store::{Access, SortedBatch, Store};

    /// A reader holds no table file's whole index or filter outside the
    /// block cache: lookups read their partitions into it.
    #[test]
    fn a_readers_table_files_keep_their_index_and_filter_in_the_block_cache() {
        let dir = tempfile::tempdir().unwrap();
        let hash = |i: u32| BlockHash::hash(&i.to_le_bytes());
        // block_height has a bloom filter: 200,000 keys make ~250 KB of it,
        // and ~20 KB of index, in one table file.
        {
            let store = Store::open(dir.path(), Access::Write).unwrap();
            let mut batch = SortedBatch::default();
            for i in 0..200_000 {
                batch.put::<cf::BlockHeight>(&hash(i), &Height(i));
            }
            batch.commit(&store).unwrap();
            store.flush().unwrap();
        }
        let reader = Store::open(dir.path(), Access::ReadOnly).unwrap();
        let opened = reader.memory().unwrap();
        assert!(opened.table_readers < 32 << 10, "{opened:?}");
        assert_eq!(
            reader.get::<cf::BlockHeight>(&hash(7)).unwrap(),
            Some(Height(7))
        );
        assert_eq!(reader.get::<cf::BlockHeight>(&hash(200_007)).unwrap(), None);
        let read = reader.memory().unwrap();
        assert_eq!(read.table_readers, opened.table_readers, "{read:?}");
        // The top-level index stays pinned; the partitions the lookups
        // read, and the data block, are cached beside it.
        assert!(read.block_cache_pinned > 0, "{read:?}");
        assert!(read.block_cache > opened.block_cache, "{opened:?} {read:?}");
    }
}
