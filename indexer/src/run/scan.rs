//! The scan of a run: what earlier runs recorded (header tree, scan
//! offsets), the new records found in the blk files, and the network and
//! first block they settle.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStringExt;

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::consensus::deserialize;
use bitcoin::BlockHash;
use satflow_schema::block::{BlockIndexRow, ChainPoint};
use satflow_schema::codec::Raw;
use satflow_schema::{cf, meta, Height};

use super::Summary;
use crate::blkfiles::{BlocksDir, FileScan, ScanNote};
use crate::chain::{HeaderTree, Node};
use crate::network::Network;
use crate::store::Store;

/// Headers of every record seen by earlier runs.
pub(super) fn load_tree(store: &Store) -> Result<HeaderTree> {
    let mut tree = HeaderTree::default();
    for row in store.scan_all::<cf::BlockIndex>() {
        let (_, BlockIndexRow { header, loc }) = row?;
        tree.insert(header, loc);
    }
    Ok(tree)
}

/// Where each file's next scan starts.
pub(super) fn load_offsets(store: &Store) -> Result<BTreeMap<u32, u64>> {
    Ok(store.scan_positions()?.into_iter().collect())
}

/// The one network of the directory, the DB and the command line.
pub(super) fn settle_network(
    store: &Store,
    wanted: Option<Network>,
    dir: &BlocksDir,
    scans: &[FileScan],
) -> Result<Network> {
    let mut found: Option<(Network, String)> = store
        .network()?
        .map(|n| (n, format!("the index at {}", store.path().display())));
    for (file, scan) in dir.files.iter().zip(scans) {
        let Some(n) = scan.network else { continue };
        match &found {
            Some((seen, source)) if *seen != n => {
                bail!("{} holds {n} blocks but {source} is {seen}: one network per blocks directory and index", file.path.display())
            }
            Some(_) => {}
            None => found = Some((n, file.path.display().to_string())),
        }
    }
    match (found, wanted) {
        (Some((n, source)), Some(w)) if n != w => {
            bail!("--network {w} was given but {source} is {n}")
        }
        (Some((n, _)), _) => Ok(n),
        (None, _) => bail!(
            "{}: no block records found in the blk files",
            dir.path.display()
        ),
    }
}

/// Adds the newly found records to the header tree and commits them with
/// the new scan offsets, before any block is applied.
pub(super) fn record_scans(
    store: &Store,
    dir: &BlocksDir,
    network: Network,
    scans: &[FileScan],
    tree: &mut HeaderTree,
    summary: &mut Summary,
) -> Result<()> {
    let mut batch = store.batch();
    batch.put_meta(meta::Network, &network.name().to_string());
    batch.put_meta(meta::XorKey, &dir.key.0);
    let path = std::fs::canonicalize(&dir.path).unwrap_or_else(|_| dir.path.clone());
    batch.put_meta(meta::BlocksDir, &Raw(path.into_os_string().into_vec()));
    for (file, scan) in dir.files.iter().zip(scans) {
        for note in &scan.notes {
            if matches!(note, ScanNote::Garbage { .. }) {
                tracing::warn!("{note}");
            } else {
                tracing::info!("{note}");
            }
            summary.notes.push(note.to_string());
        }
        for record in &scan.records {
            let header: bitcoin::block::Header =
                deserialize(&record.header).expect("80 bytes decode as a header");
            summary.records_found += 1;
            if tree.insert(header, record.loc) {
                let row = BlockIndexRow {
                    header,
                    loc: record.loc,
                };
                batch.put::<cf::BlockIndex>(&header.block_hash(), &row);
            }
        }
        batch.put_meta(meta::Scan(file.number), &scan.resume_at);
    }
    store.write(batch)?;
    store.flush()
}

/// Where the chain starts: genesis, or the block an index that starts
/// later was started at (recorded in meta by its first run).
pub(super) fn settle_start(
    store: &Store,
    wanted: Option<BlockHash>,
    network: Network,
    dir: &BlocksDir,
    tree: &HeaderTree,
) -> Result<ChainPoint> {
    let genesis = network.genesis_hash();
    let recorded = store.start()?;
    let current = recorded.unwrap_or(ChainPoint {
        height: Height(0),
        hash: genesis,
    });
    let Some(wanted) = wanted.filter(|&w| w != current.hash) else {
        if recorded.is_none() && tree.get(&genesis).is_none() {
            bail!(
                "the {network} genesis block {genesis} is not in {}: to index a directory that begins later (a pruned node, a few raw blocks), give --start-at <hash of the block to start at>",
                dir.path.display()
            );
        }
        return Ok(current);
    };
    if recorded.is_some() || store.tip()?.is_some() {
        bail!(
            "the index at {} starts at block {} (height {}), not {wanted}: index into a new --db",
            store.path().display(),
            current.hash,
            current.height
        );
    }
    if wanted == genesis {
        return Ok(current);
    }
    let node = tree
        .get(&wanted)
        .with_context(|| format!("--start-at {wanted}: no such block in the blocks directory"))?;
    let block: bitcoin::Block = deserialize(&read_raw(dir, node)?)
        .with_context(|| format!("--start-at {wanted}: the block does not decode"))?;
    let height = block.bip34_block_height().map_err(|e| {
        anyhow!("--start-at {wanted}: its height cannot be read from its coinbase (BIP34): {e}")
    })?;
    let height = u32::try_from(height)
        .with_context(|| format!("--start-at {wanted}: coinbase height {height} is too large"))?;
    if height < network.bip34_height() {
        // Before BIP34 a coinbase may begin with any number: not a height.
        bail!(
            "--start-at {wanted}: its coinbase says height {height}, below {network}'s BIP34 height {}, from which on coinbases must hold their height; start at a later block",
            network.bip34_height()
        );
    }
    let start = ChainPoint {
        height: Height(height),
        hash: wanted,
    };
    let mut batch = store.batch();
    batch.put_meta(meta::Start, &start);
    store.write(batch)?;
    tracing::info!("starting a new index at block {wanted}, height {height}");
    Ok(start)
}

pub(super) fn read_raw(dir: &BlocksDir, node: &Node) -> Result<Vec<u8>> {
    let file = dir
        .file(node.loc.file)
        .ok_or_else(|| anyhow!("blk file {} has disappeared", node.loc.file))?;
    file.read(dir.key, node.loc.offset, node.loc.len as usize)
}
