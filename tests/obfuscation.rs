//! Core 28+ XOR obfuscation and headers-first file order: the same chain,
//! obfuscated and with its records shuffled across files, indexes to the
//! same answers.

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

#[test]
fn xor_and_shuffled_records_give_the_same_index() {
    let plain = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let plain_db = tempfile::tempdir().unwrap();
    index(plain.path(), plain_db.path());

    let raw = std::fs::read(data("mainnet/blk00000_first1MiB.dat")).unwrap();
    let mut recs: Vec<&[u8]> = records(&raw)
        .into_iter()
        .map(|(at, len)| &raw[at..at + 8 + len])
        .collect();
    assert_eq!(recs.len(), 4522);
    // Deterministic shuffle (Fisher–Yates with a fixed LCG).
    let mut state = 7u64;
    for i in (1..recs.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        recs.swap(i, (state >> 33) as usize % (i + 1));
    }
    let key = [0x3a, 0x91, 0x07, 0xee, 0x5c, 0x12, 0xf0, 0x88];
    let shuffled = tempfile::tempdir().unwrap();
    std::fs::write(shuffled.path().join("xor.dat"), key).unwrap();
    for (n, chunk) in recs.chunks(1600).enumerate() {
        let mut bytes: Vec<u8> = chunk.concat();
        for (i, b) in bytes.iter_mut().enumerate() {
            *b ^= key[i % 8];
        }
        bytes.extend(vec![0u8; 4096]); // preallocated tail, not obfuscated
        std::fs::write(shuffled.path().join(format!("blk{n:05}.dat")), bytes).unwrap();
    }
    let db = tempfile::tempdir().unwrap();
    let s = index(shuffled.path(), db.path());
    assert_eq!(
        (s.tip_height, s.blocks_applied, s.notes.len()),
        (Some(4521), 4522, 0),
        "{:?}",
        s.notes
    );
    assert_same(
        &dump(db.path(), &LOCATION_FREE),
        &dump(plain_db.path(), &LOCATION_FREE),
    );

    // Block rows agree on everything but where the block lies.
    let (a, b) = (block_rows(db.path()), block_rows(plain_db.path()));
    for ((ka, mut ra), (kb, rb)) in a.into_iter().zip(b) {
        assert_eq!(ka, kb);
        ra.loc = rb.loc;
        assert_eq!(ra, rb);
    }
}
