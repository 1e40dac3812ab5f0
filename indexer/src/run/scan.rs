//! The scan of a run: what earlier runs recorded (header tree, scan
//! offsets), the new records found in the blk files, and the network and
//! first block they settle.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStringExt;

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::consensus::deserialize;
use bitcoin::BlockHash;
use rayon::prelude::*;
use satflow_schema::block::{BlockIndexRow, BlockRow, ChainPoint};
use satflow_schema::codec::Raw;
use satflow_schema::{cf, meta, Height};

use super::Summary;
use crate::blkfiles::{
    is_padding, scan_file, BlockLoc, BlocksDir, FileScan, ScanNote, HEADER_BYTES,
};
use crate::chain::{self, HeaderTree, Inserted, Node};
use crate::network::Network;
use crate::store::{Batch, Store};

/// Headers of every record seen by earlier runs.
pub(super) fn load_tree(store: &Store) -> Result<HeaderTree> {
    let mut tree = HeaderTree::default();
    for row in store.scan_all::<cf::BlockIndex>() {
        let (_, BlockIndexRow { header, locs }) = row?;
        for loc in locs {
            tree.insert(header, loc);
        }
    }
    Ok(tree)
}

/// Files whose data ended in the preallocated zero tail last round: their
/// length then and where the tail began. While both stay, the file has
/// nothing new, and a follower's round reads 4 bytes of it, not the tail.
pub(super) type Tails = HashMap<u32, (u64, u64)>;

/// Scans each file from where the last run stopped (on the pool).
pub(super) fn scan_new(
    dir: &BlocksDir,
    offsets: &BTreeMap<u32, u64>,
    tails: &mut Tails,
) -> Result<Vec<FileScan>> {
    let scans = dir
        .files
        .par_iter()
        .map(|f| {
            let start = offsets.get(&f.number).copied().unwrap_or(0);
            if f.len() < start {
                bail!(
                    "{} is {} bytes, shorter than the {start} bytes already scanned: it shrank during this run; run again to scan the directory from the start",
                    f.path.display(),
                    f.len()
                );
            }
            if tails.get(&f.number) == Some(&(f.len(), start)) && is_padding(f, dir.key, start)? {
                return Ok(FileScan {
                    resume_at: start,
                    tail_at: Some(start),
                    ..FileScan::default()
                });
            }
            scan_file(f, dir.key, start)
        })
        .collect::<Result<Vec<FileScan>>>()?;
    tails.clear();
    for (f, scan) in dir.files.iter().zip(&scans) {
        if scan.tail_at == Some(scan.resume_at) {
            tails.insert(f.number, (f.len(), scan.resume_at));
        }
    }
    Ok(scans)
}

/// Where each file's next scan starts, and whether the directory was
/// found rewritten.
pub(super) struct Offsets {
    pub(super) at: BTreeMap<u32, u64>,
    /// Then every offset is forgotten, and the blocks already applied
    /// take the places this scan finds them at (`record_scans`).
    pub(super) rewritten: bool,
}

/// Where each file's next scan starts: where earlier runs stopped, unless
/// the directory no longer holds what they scanned (a node that synced
/// again from scratch, or another node's directory given in its place).
/// Then every offset is forgotten and the files are scanned again from
/// the start: the blocks already indexed are found at their new places,
/// and the index goes on from its tip, since no row but a block's own
/// place depends on where blocks lie. Their old places stay recorded
/// after the new, which are read first; a record is used only once it
/// hashes to its block.
pub(super) fn load_offsets(
    store: &Store,
    dir: &BlocksDir,
    tree: &HeaderTree,
    summary: &mut Summary,
) -> Result<Offsets> {
    let at: BTreeMap<u32, u64> = store.scan_positions()?.into_iter().collect();
    let Some(why) = rewritten(store, dir, tree, &at)? else {
        return Ok(Offsets {
            at,
            rewritten: false,
        });
    };
    let key = match store.meta(meta::XorKey)? {
        Some(old) if old != dir.key.0 => " (and xor.dat changed)",
        _ => "",
    };
    let note = format!(
        "{}: {why}: the directory was rewritten since the last run{key}; its files are scanned again from the start",
        dir.path.display()
    );
    tracing::warn!("{note}");
    summary.notes.push(note);
    // Forgotten before anything is scanned, so that a run stopped
    // in between starts over the same way.
    let mut batch = store.batch();
    for &file in at.keys() {
        batch.delete_meta(meta::Scan(file));
    }
    store.write(batch)?;
    Ok(Offsets {
        at: BTreeMap::new(),
        rewritten: true,
    })
}

/// Why the directory no longer holds what earlier runs scanned, if it
/// does not: a file shorter than the bytes already scanned in it, or the
/// index's tip no longer where it was found. Where neither can be told
/// (nothing applied yet, or the tip's file gone, as a pruning node
/// deletes old files), the directory is taken as it is.
fn rewritten(
    store: &Store,
    dir: &BlocksDir,
    tree: &HeaderTree,
    offsets: &BTreeMap<u32, u64>,
) -> Result<Option<String>> {
    for f in &dir.files {
        match offsets.get(&f.number) {
            Some(&at) if f.len() < at => {
                return Ok(Some(format!(
                    "{} is {} bytes, shorter than the {at} bytes already scanned",
                    f.path.display(),
                    f.len()
                )))
            }
            _ => {}
        }
    }
    let Some(tip) = store.tip()? else {
        return Ok(None);
    };
    let Some(node) = tree.get(&tip.hash) else {
        return Ok(None);
    };
    let mut moved = None;
    for loc in node.locs() {
        let Some(file) = dir.file(loc.file) else {
            continue;
        };
        let header = match file.len() >= loc.offset + u64::from(HEADER_BYTES) {
            true => deserialize::<bitcoin::block::Header>(&file.read(
                dir.key,
                loc.offset,
                HEADER_BYTES as usize,
            )?)
            .ok(),
            false => None,
        };
        if header.is_some_and(|h| h.block_hash() == tip.hash) {
            return Ok(None);
        }
        moved = Some(format!(
            "{} no longer holds the index's tip, block {} (height {}), at offset {}",
            file.path.display(),
            tip.hash,
            tip.height,
            loc.offset
        ));
    }
    Ok(moved)
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

/// How many headers with bad proof of work are named one by one; the
/// rest are counted (a generated chain may have nothing else).
const BAD_HEADERS_NAMED: usize = 5;

/// Adds the newly found records to the header tree and commits them with
/// the new scan offsets, before any block is applied. A header without
/// valid proof of work is left out, named, and never looked at again.
/// Returns whether a record joined the tree; a round that found nothing
/// writes nothing.
#[allow(clippy::too_many_arguments)]
pub(super) fn record_scans(
    store: &Store,
    dir: &BlocksDir,
    network: Network,
    check_pow: bool,
    offsets: &Offsets,
    scans: &[FileScan],
    tree: &mut HeaderTree,
    summary: &mut Summary,
) -> Result<bool> {
    let mut batch = store.batch();
    if store.network()? != Some(network) {
        batch.put_meta(meta::Network, &network.name().to_string());
    }
    if store.meta(meta::XorKey)? != Some(dir.key.0) {
        batch.put_meta(meta::XorKey, &dir.key.0);
    }
    let path = std::fs::canonicalize(&dir.path).unwrap_or_else(|_| dir.path.clone());
    let path = Raw(path.into_os_string().into_vec());
    if store.meta(meta::BlocksDir)?.as_ref() != Some(&path) {
        batch.put_meta(meta::BlocksDir, &path);
    }
    let mut bad_pow = 0;
    let mut grew = false;
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
            let pow = match check_pow {
                true => chain::proof_of_work(&header, network),
                false => Ok(()),
            };
            if let Err(why) = pow {
                bad_pow += 1;
                let note = format!(
                    "{}: block record at offset {}: {why}; it is not part of any chain",
                    file.path.display(),
                    record.loc.offset - 8
                );
                if bad_pow <= BAD_HEADERS_NAMED {
                    tracing::warn!("{note}");
                }
                summary.notes.push(note);
                continue;
            }
            let inserted = tree.insert(header, record.loc);
            if inserted != Inserted::Known {
                grew = true;
                let hash = header.block_hash();
                if offsets.rewritten && inserted == Inserted::Copy {
                    tree.prefer(&hash, record.loc);
                    relocate(store, &mut batch, &hash, record.loc)?;
                }
                let node = tree.get(&hash).expect("just inserted");
                let row = BlockIndexRow {
                    header,
                    locs: node.locs().collect(),
                };
                batch.put::<cf::BlockIndex>(&hash, &row);
            }
        }
        if offsets.at.get(&file.number) != Some(&scan.resume_at) {
            batch.put_meta(meta::Scan(file.number), &scan.resume_at);
        }
    }
    if bad_pow > BAD_HEADERS_NAMED {
        tracing::warn!(
            "{} more block records without valid proof of work left out",
            bad_pow - BAD_HEADERS_NAMED
        );
    }
    if bad_pow > 0 && network == Network::Main {
        tracing::warn!("a chain generated by `satflow synth --network main` carries no real proof of work: index it with --no-pow-check");
    }
    if !batch.is_empty() {
        store.write(batch)?;
        store.flush()?;
    }
    Ok(grew)
}

/// After a rewrite: the best chain's row of block `hash`, if it is
/// applied, points at the block's new place, where readers of raw
/// transactions (`satflow serve`) will look for it.
fn relocate(store: &Store, batch: &mut Batch<'_>, hash: &BlockHash, loc: BlockLoc) -> Result<()> {
    let Some(height) = store.height_of(hash)? else {
        return Ok(());
    };
    if let Some(row) = store.block(height)? {
        batch.put::<cf::Blocks>(&height, &BlockRow { loc, ..row });
    }
    Ok(())
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
