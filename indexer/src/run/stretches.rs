//! A batch's blk bytes, read a stretch of a file at a time. Reading each
//! block on its own, from every worker at once, shows a disk many small
//! reads in no order; a batch's blocks mostly lie one after another in one
//! or two files, so one read per stretch is sequential per file, and a
//! hard disk or a cold SSD reads at its sequential speed.

use crate::blkfiles::{BlockLoc, BlocksDir};
use crate::chain::Node;

/// Records closer than this are read in one stretch, the gap with them:
/// reading a stale block or some padding costs less than another seek.
const MAX_GAP: u64 = 1 << 20;

struct Stretch {
    file: u32,
    start: u64,
    bytes: Vec<u8>,
}

/// The stretches that hold a batch's records, in file and offset order.
pub(super) struct Stretches(Vec<Stretch>);

impl Stretches {
    /// Reads the stretches holding `nodes`' records (their first copies),
    /// one after another. One that cannot be read is left out: its blocks
    /// are then read on their own, and an error names the block.
    pub(super) fn read(dir: &BlocksDir, nodes: &[Node]) -> Stretches {
        let mut locs: Vec<BlockLoc> = nodes.iter().map(|n| n.loc).collect();
        locs.sort_by_key(|l| (l.file, l.offset));
        let mut ranges: Vec<(u32, u64, u64)> = Vec::new();
        for l in locs {
            let end = l.offset + u64::from(l.len);
            match ranges.last_mut() {
                Some((file, _, last)) if *file == l.file && l.offset <= *last + MAX_GAP => {
                    *last = (*last).max(end)
                }
                _ => ranges.push((l.file, l.offset, end)),
            }
        }
        let read = ranges.into_iter().filter_map(|(file, start, end)| {
            let bytes = dir.file(file)?.read(dir.key, start, (end - start) as usize);
            Some(Stretch {
                file,
                start,
                bytes: bytes.ok()?,
            })
        });
        Stretches(read.collect())
    }

    /// The bytes of the record at `loc`, when a stretch holds them.
    pub(super) fn get(&self, loc: BlockLoc) -> Option<&[u8]> {
        let after = self
            .0
            .partition_point(|s| (s.file, s.start) <= (loc.file, loc.offset));
        let s = self.0.get(after.checked_sub(1)?)?;
        if s.file != loc.file {
            return None;
        }
        let from = usize::try_from(loc.offset - s.start).ok()?;
        s.bytes.get(from..from.checked_add(loc.len as usize)?)
    }
}
