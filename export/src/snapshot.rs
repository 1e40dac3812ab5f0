//! The tables that describe the index as of one moment rather than a height
//! range: `address_clusters` (clusters merge, so an old address's cluster
//! changes) and `labels`. Each is rewritten whole, and only when what it
//! reflects changed.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use parquet::file::metadata::KeyValue;
use satflow_indexer::{address, cluster, labels, Network, Store};
use satflow_schema::{cf, meta, AddrId, ClusterId, ClusterKey, Codec};
use sha2::{Digest, Sha256};

use crate::files::{FileEntry, FileSet};
use crate::read::address_strings;
use crate::tables::Table;

/// Members per batch: a batch's addresses are read and encoded together.
const BATCH: usize = 64 * 1024;

/// Why `source` has nothing for a table.
pub const NOT_READY: &str = "the index has no clusters, or is recomputing those a reorg dissolved \
     (run `satflow index`, or `satflow cluster` for an index built with --no-cluster)";

/// What `table` reflects now; None when the index cannot give it now:
/// clusters never built, or partly dissolved by a reorg until the next
/// index run recomputes them.
pub fn source(store: &Store, table: Table) -> Result<Option<String>> {
    match table {
        Table::AddressClusters => {
            let Some(tip) = cluster::tip(store)? else {
                return Ok(None);
            };
            if store.meta(meta::ClusterDirty)?.is_some() {
                return Ok(None);
            }
            let heuristics = cluster::heuristics(store)?.map(|h| h.to_string());
            Ok(Some(format!(
                "cluster tip {} {}, heuristics {}",
                tip.height,
                tip.hash,
                heuristics.unwrap_or_default()
            )))
        }
        Table::Labels => {
            // Over the rows as stored: their codec gives back the bytes it
            // decoded, so the digest is that of earlier exports.
            let mut digest = Sha256::new();
            for row in store.scan_all::<cf::Labels>() {
                let (key, value) = row?;
                for part in [key.encode(), value.encode()] {
                    digest.update((part.len() as u64).to_be_bytes());
                    digest.update(part);
                }
            }
            Ok(Some(format!(
                "labels sha256 {}",
                hex::encode(digest.finalize())
            )))
        }
        _ => unreachable!("{table} is a chain table"),
    }
}

/// Writes `table` into `dir`.
pub fn write(
    store: &Store,
    network: Network,
    table: Table,
    dir: &Path,
    metadata: Vec<KeyValue>,
) -> Result<Vec<FileEntry>> {
    let mut files = FileSet::create(dir, table, metadata)?;
    match table {
        Table::AddressClusters => clusters(store, network, &mut files)?,
        Table::Labels => labels_of(store, network, &mut files)?,
        _ => unreachable!("{table} is a chain table"),
    }
    files.finish()
}

/// Members of clusters of two or more addresses, a cluster's members
/// together (in the order of the keys their rows are stored under), each
/// row with the cluster's id. A lone address has no row: it is a cluster
/// of its own.
fn clusters(store: &Store, network: Network, files: &mut FileSet) -> Result<()> {
    let mut pending: Vec<(ClusterKey, AddrId)> = Vec::with_capacity(BATCH);
    let mut sizes: Vec<(ClusterKey, Facts)> = Vec::new();
    // Both families are in cluster key order: one pass over each.
    let mut stats = store.scan_all::<cf::ClusterStats>();
    for row in store.scan_all::<cf::ClusterMembers>() {
        let ((cluster, addr), ()) = row?;
        if sizes.last().is_none_or(|(c, _)| *c != cluster) {
            let facts = loop {
                let (c, s) = stats.next().with_context(|| {
                    format!("index is inconsistent: cluster key {cluster} has no stats row")
                })??;
                if c == cluster {
                    break Facts {
                        id: s.id,
                        size: s.size,
                    };
                }
            };
            sizes.push((cluster, facts));
        }
        pending.push((cluster, addr));
        if pending.len() == BATCH {
            files.write(&cluster_batch(store, network, &pending, &sizes)?)?;
            pending.clear();
            sizes.drain(..sizes.len() - 1);
        }
    }
    files.write(&cluster_batch(store, network, &pending, &sizes)?)
}

/// A cluster's id and size, for its members' rows.
struct Facts {
    id: ClusterId,
    size: u64,
}

fn cluster_batch(
    store: &Store,
    network: Network,
    members: &[(ClusterKey, AddrId)],
    sizes: &[(ClusterKey, Facts)],
) -> Result<RecordBatch> {
    // No address range to scan: cluster members are looked up one by one.
    let none = AddrId(0)..AddrId(0);
    let strings = address_strings(store, network, members.iter().map(|(_, a)| *a), none)?;
    let facts = |cluster: ClusterKey| {
        let i = sizes.partition_point(|(c, _)| *c < cluster);
        &sizes[i].1
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(
            members
                .iter()
                .map(|(c, _)| int64(facts(*c).id.0))
                .collect::<Result<Vec<_>>>()?,
        )),
        Arc::new(StringArray::from_iter_values(
            members.iter().map(|(_, a)| strings[a].as_str()),
        )),
        Arc::new(Int64Array::from(
            members
                .iter()
                .map(|(c, _)| int64(facts(*c).size))
                .collect::<Result<Vec<_>>>()?,
        )),
    ];
    Ok(RecordBatch::try_new(
        Table::AddressClusters.schema(),
        columns,
    )?)
}

fn labels_of(store: &Store, network: Network, files: &mut FileSet) -> Result<()> {
    let all = labels::all(store)?;
    for chunk in all.chunks(BATCH) {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|l| address::encode(&l.address, network)),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|l| &l.label),
            )),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|l| l.category.name()),
            )),
            Arc::new(StringArray::from_iter_values(chunk.iter().map(|l| &l.set))),
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|l| &l.source),
            )),
        ];
        files.write(&RecordBatch::try_new(Table::Labels.schema(), columns)?)?;
    }
    Ok(())
}

/// Ids and sizes are address counts, far below 2^63.
fn int64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| anyhow::anyhow!("{n} does not fit a 64-bit signed column"))
}
