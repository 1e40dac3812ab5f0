//! Core 28+ XOR obfuscation and headers-first file order: the same chain,
//! obfuscated and with its records shuffled across files, indexes to the
//! same answers, from the start or after the directory was rewritten
//! under an index.

mod common;

use std::path::Path;

use common::*;
use satflow_indexer::{Access, Store};
use satflow_schema::block::BlockRow;
use satflow_schema::{cf, Height};

/// The best chain's block rows, by height.
fn block_rows(db: &Path) -> Vec<(Height, BlockRow)> {
    Store::open(db, Access::ReadOnly)
        .unwrap()
        .scan_all::<cf::Blocks>()
        .map(|r| r.unwrap())
        .collect()
}

/// Each block's first place in `block_index`: where a read tries first.
fn first_places(db: &Path) -> Vec<String> {
    Store::open(db, Access::ReadOnly)
        .unwrap()
        .scan_all::<cf::BlockIndex>()
        .map(|r| {
            let (hash, row) = r.unwrap();
            format!("{hash} {:?}", row.locs[0])
        })
        .collect()
}

const KEY: [u8; 8] = [0x3a, 0x91, 0x07, 0xee, 0x5c, 0x12, 0xf0, 0x88];

/// Writes `recs` into `dir` the way a node that synced in its own order
/// would: shuffled (Fisher–Yates with a fixed LCG), XOR-obfuscated with
/// `KEY`, `per_file` records a file, each file with a preallocated tail.
fn write_shuffled(dir: &Path, mut recs: Vec<&[u8]>, per_file: usize) {
    let mut state = 7u64;
    for i in (1..recs.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        recs.swap(i, (state >> 33) as usize % (i + 1));
    }
    std::fs::write(dir.join("xor.dat"), KEY).unwrap();
    for (n, chunk) in recs.chunks(per_file).enumerate() {
        let mut bytes: Vec<u8> = chunk.concat();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b ^= KEY[i % 8];
        }
        bytes.extend(vec![0u8; 4096]); // preallocated tail, not obfuscated
        std::fs::write(dir.join(format!("blk{n:05}.dat")), bytes).unwrap();
    }
}

/// Both indexes hold the same rows, and the same block rows but for
/// where each block lies.
fn assert_same_but_places(db: &Path, plain_db: &Path) {
    assert_same(&dump(db, &LOCATION_FREE), &dump(plain_db, &LOCATION_FREE));
    let (a, b) = (block_rows(db), block_rows(plain_db));
    assert_eq!(a.len(), b.len());
    for ((ka, mut ra), (kb, rb)) in a.into_iter().zip(b) {
        assert_eq!(ka, kb);
        ra.loc = rb.loc;
        assert_eq!(ra, rb);
    }
}

#[test]
fn xor_and_shuffled_records_give_the_same_index() {
    let (_plain, plain_db, _) = indexed_blk00000();
    let raw = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let shuffled = tempfile::tempdir().unwrap();
    write_shuffled(shuffled.path(), mainnet_records(&raw), 1600);
    let db = tempfile::tempdir().unwrap();
    let s = index(shuffled.path(), db.path());
    assert_eq!(
        (s.tip_height, s.blocks_applied, s.notes.len()),
        (Some(4521), 4522, 0),
        "{:?}",
        s.notes
    );
    assert_same_but_places(db.path(), plain_db.path());
}

/// A node that synced again from scratch lays its blocks out anew (here
/// obfuscated too, as Core 28+ does for a new directory). The next run
/// sees it, scans the files again from the start, finds the blocks
/// already indexed at their new places and goes on from its tip, to the
/// index a single run over all the blocks builds. Seen either way: a file
/// now shorter than the bytes already scanned in it, or (one long file)
/// the tip's record no longer where it was found. The blocks' rows move
/// to the new places, where a server reads raw transactions.
#[test]
fn a_blocks_directory_synced_again_is_scanned_again_and_the_index_goes_on() {
    let (_plain, plain_db, _) = indexed_blk00000();
    let raw = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let recs = mainnet_records(&raw);

    for (per_file, seen) in [(1600, "shorter than"), (4522, "no longer holds")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blk00000.dat"), recs[..3000].concat()).unwrap();
        let db = tempfile::tempdir().unwrap();
        assert_eq!(index(dir.path(), db.path()).tip_height, Some(2999));

        std::fs::remove_file(dir.path().join("blk00000.dat")).unwrap();
        write_shuffled(dir.path(), recs.clone(), per_file);
        let s = index(dir.path(), db.path());
        assert_eq!(
            (s.tip_height, s.blocks_applied, s.blocks_undone),
            (Some(4521), 1522, 0),
            "{per_file} records a file: {:?}",
            s.notes
        );
        let note = &s.notes[0];
        assert!(
            note.contains(seen) && note.contains("rewritten") && note.contains("xor.dat changed"),
            "{per_file} records a file: {note}"
        );
        assert_same_but_places(db.path(), plain_db.path());
        // Each block's row points at its new place, where a server reads
        // raw transactions: as in an index built from the new files.
        let fresh = tempfile::tempdir().unwrap();
        index(dir.path(), fresh.path());
        assert_eq!(block_rows(db.path()), block_rows(fresh.path()));
        // Every block's new place is the one read first.
        assert_eq!(first_places(db.path()), first_places(fresh.path()));

        // The offsets scanned anew hold: a third run finds nothing new.
        let s = index(dir.path(), db.path());
        assert_eq!((s.blocks_applied, s.notes.len()), (0, 0), "{:?}", s.notes);
    }
}
