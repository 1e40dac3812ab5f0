//! Per column family RocksDB options and the merge operators of the
//! families kept as running sums.

use rocksdb::{
    BlockBasedOptions, Cache, DBCompressionType, MergeOperands, Options, SliceTransform,
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

/// Per column family tuning: zstd below the first levels, bloom filters
/// where the indexer does point lookups that usually miss.
pub(super) fn cf_options(name: &str, cache: &Cache) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    table.set_block_size(16 << 10);
    table.set_format_version(5);
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
            o.set_memtable_whole_key_filtering(true);
            o.set_memtable_prefix_bloom_ratio(0.05);
        }
        // cluster_of: most addresses are alone in their cluster and have no row.
        cf::BlockHeight::NAME | cf::Outputs::NAME | cf::Txs::NAME | cf::ClusterOf::NAME => {
            table.set_bloom_filter(10.0, false)
        }
        cf::Txids::NAME => {
            // Lookups are by txid alone: filter on the 32-byte prefix.
            o.set_prefix_extractor(SliceTransform::create_fixed_prefix(32));
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
fn merge_history(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut sum = existing
        .and_then(|b| HistoryRow::decode(b).ok())
        .unwrap_or_default();
    for row in operands
        .into_iter()
        .filter_map(|b| HistoryRow::decode(b).ok())
    {
        sum.add(&row);
    }
    Some(sum.encode())
}

/// Adds `AddrStats` deltas; a malformed operand is a bug, kept out of the sum
/// rather than poisoning the row.
fn merge_stats(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    let mut sum = existing
        .and_then(|b| AddrStats::decode(b).ok())
        .unwrap_or_default();
    for op in operands {
        if let Ok(delta) = AddrStats::decode(op) {
            sum.add(&delta);
        }
    }
    Some(sum.encode().to_vec())
}
