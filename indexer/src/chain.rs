//! The tree of block headers found on disk and the best chain through it:
//! the branch with the most cumulative proof of work (from nBits), never the
//! file order or the height. Only headers whose hash meets their own nBits,
//! within the network's limit (`proof_of_work`), may join it.

use std::collections::HashMap;

use anyhow::{bail, Result};
use bitcoin::block::Header;
use bitcoin::{BlockHash, Work};

use crate::blkfiles::BlockLoc;
use crate::network::Network;

#[derive(Clone, Debug)]
pub struct Node {
    pub hash: BlockHash,
    pub header: Header,
    /// The record to read: the first found, or (once read) the first
    /// copy that parsed as this block.
    pub loc: BlockLoc,
    /// Later records of the same block, tried in order when `loc` does not
    /// parse or does not hash to `hash`.
    pub copies: Vec<BlockLoc>,
}

impl Node {
    /// Every record of the block, in the order found.
    pub fn locs(&self) -> impl Iterator<Item = BlockLoc> + '_ {
        std::iter::once(self.loc).chain(self.copies.iter().copied())
    }
}

/// Why `header` cannot count toward chain work on `network`, if it cannot:
/// its hash must meet the target its nBits claims, and that target must be
/// within the network's limit, or one flipped bit would buy the best chain.
pub fn proof_of_work(header: &Header, network: Network) -> Result<(), String> {
    let limit = bitcoin::params::Params::new(network.bitcoin()).max_attainable_target;
    let target = header.target();
    if target > limit {
        return Err(format!(
            "nBits {:#010x} claims a target above {network}'s limit",
            header.bits.to_consensus()
        ));
    }
    header.validate_pow(target).map(|_| ()).map_err(|_| {
        format!(
            "hash {} does not meet its nBits {:#010x}",
            header.block_hash(),
            header.bits.to_consensus()
        )
    })
}

/// What `HeaderTree::insert` made of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// A block already known, found at another place.
    Copy,
    /// A place already known (a rescan).
    Known,
}

#[derive(Default)]
pub struct HeaderTree {
    nodes: Vec<Node>,
    index: HashMap<BlockHash, usize>,
}

/// A branch that does not link to the root: its first block's parent was
/// never seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Detached {
    pub missing_parent: BlockHash,
    pub blocks: usize,
}

#[derive(Debug)]
pub struct BestChain {
    /// Height of `blocks[0]`: 0 for genesis.
    pub base: u32,
    /// The chain from its root to the tip; `blocks[i]` is at `base + i`.
    pub blocks: Vec<Node>,
    pub work: Work,
    /// Blocks linked to the root but not on the best chain.
    pub stale: usize,
    pub detached: Vec<Detached>,
}

/// `a + b`, or all the work there is where the sum would not fit. Only
/// headers left unchecked (`--no-pow-check`) can claim a target of 0 or 1,
/// each worth 2^256 − 1 to rust-bitcoin, whose own sum of two would wrap
/// (or fail a debug assertion).
fn add_work(a: Work, b: Work) -> Work {
    let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
    let mut sum = [0u8; 32];
    let mut carry = 0u16;
    for i in 0..32 {
        let s = u16::from(a[i]) + u16::from(b[i]) + carry;
        sum[i] = s as u8;
        carry = s >> 8;
    }
    match carry {
        0 => Work::from_le_bytes(sum),
        _ => Work::from_le_bytes([0xff; 32]),
    }
}

impl HeaderTree {
    /// Adds a record of a block; a block found twice counts once, with
    /// both places kept.
    pub fn insert(&mut self, header: Header, loc: BlockLoc) -> Inserted {
        let hash = header.block_hash();
        if let Some(&i) = self.index.get(&hash) {
            let node = &mut self.nodes[i];
            if node.locs().any(|l| l == loc) {
                return Inserted::Known;
            }
            node.copies.push(loc);
            return Inserted::Copy;
        }
        self.index.insert(hash, self.nodes.len());
        self.nodes.push(Node {
            hash,
            header,
            loc,
            copies: Vec::new(),
        });
        Inserted::New
    }

    /// Makes `loc`, one of the block's places, the one read first: after
    /// its directory was rewritten, the place found last is the live one.
    pub fn prefer(&mut self, hash: &BlockHash, loc: BlockLoc) {
        let Some(&i) = self.index.get(hash) else {
            return;
        };
        let node = &mut self.nodes[i];
        if let Some(copy) = node.copies.iter_mut().find(|c| **c == loc) {
            std::mem::swap(copy, &mut node.loc);
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn get(&self, hash: &BlockHash) -> Option<&Node> {
        self.index.get(hash).map(|&i| &self.nodes[i])
    }

    /// The best chain from `root` (genesis, or the first block of an index
    /// that starts later) at height `base`.
    pub fn best_chain(&self, root: BlockHash, base: u32) -> Result<BestChain> {
        let Some(&root) = self.index.get(&root) else {
            bail!("block {root}, where the index starts, is not in the blocks directory");
        };
        let mut children = vec![Vec::new(); self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            if let Some(&p) = self.index.get(&n.header.prev_blockhash) {
                if i != root {
                    children[p].push(i);
                }
            }
        }
        // Depth-first over the tree from the root, keeping each node's
        // cumulative work; ties go to the block stored first, as Core keeps
        // the first tip it received.
        let mut reached = vec![false; self.nodes.len()];
        let mut best = (self.nodes[root].header.work(), root);
        let mut stack = vec![(root, self.nodes[root].header.work())];
        let mut reached_count = 0;
        while let Some((i, work)) = stack.pop() {
            reached[i] = true;
            reached_count += 1;
            let (best_work, best_i) = best;
            if work > best_work || (work == best_work && self.nodes[i].loc < self.nodes[best_i].loc)
            {
                best = (work, i);
            }
            for &c in &children[i] {
                stack.push((c, add_work(work, self.nodes[c].header.work())));
            }
        }
        let mut blocks = Vec::new();
        let mut cursor = Some(best.1);
        while let Some(i) = cursor {
            blocks.push(self.nodes[i].clone());
            cursor = (i != root).then(|| self.index[&self.nodes[i].header.prev_blockhash]);
        }
        blocks.reverse();
        let detached = self.detached(&reached, &children);
        Ok(BestChain {
            base,
            stale: reached_count - blocks.len(),
            work: best.0,
            blocks,
            detached,
        })
    }

    /// Roots of the branches not linked to the root, with their sizes.
    fn detached(&self, reached: &[bool], children: &[Vec<usize>]) -> Vec<Detached> {
        let mut out = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if reached[i] || self.index.contains_key(&n.header.prev_blockhash) {
                continue;
            }
            let (mut size, mut stack) = (0, vec![i]);
            while let Some(j) = stack.pop() {
                size += 1;
                stack.extend(&children[j]);
            }
            out.push(Detached {
                missing_parent: n.header.prev_blockhash,
                blocks: size,
            });
        }
        out.sort_by_key(|d| d.missing_parent);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::{CompactTarget, TxMerkleNode};

    fn header(prev: BlockHash, bits: u32, nonce: u32) -> Header {
        Header {
            version: bitcoin::block::Version::ONE,
            prev_blockhash: prev,
            merkle_root: TxMerkleNode::all_zeros(),
            time: 0,
            bits: CompactTarget::from_consensus(bits),
            nonce,
        }
    }

    fn loc(i: u64) -> BlockLoc {
        BlockLoc {
            file: 0,
            offset: i * 1000,
            len: 80,
        }
    }

    const EASY: u32 = 0x207fffff;
    const HARD: u32 = 0x1d00ffff;

    #[test]
    fn more_work_beats_more_blocks_and_file_order() {
        let mut t = HeaderTree::default();
        let g = header(BlockHash::all_zeros(), EASY, 0);
        t.insert(g, loc(0));
        // A long easy branch stored first, a short hard branch stored later.
        let mut prev = g.block_hash();
        for i in 1..=5 {
            let h = header(prev, EASY, i);
            prev = h.block_hash();
            t.insert(h, loc(i as u64));
        }
        let hard = header(g.block_hash(), HARD, 99);
        t.insert(hard, loc(50));
        assert_eq!(t.insert(hard, loc(60)), Inserted::Copy);
        assert_eq!(t.insert(hard, loc(60)), Inserted::Known);
        let best = t.best_chain(g.block_hash(), 0).unwrap();
        assert_eq!(best.blocks.len(), 2);
        assert_eq!(best.blocks[1].hash, hard.block_hash());
        let locs: Vec<_> = best.blocks[1].locs().collect();
        assert_eq!(
            locs,
            vec![loc(50), loc(60)],
            "a block found twice counts once"
        );
        assert_eq!(best.stale, 5);
    }

    /// Unchecked headers claiming a target of 0 are each worth all the
    /// work there is: their branch's sum saturates instead of wrapping
    /// below an honest branch (or panicking). Saturated sums tie, and a
    /// tie goes to the block stored first: the first such header.
    #[test]
    fn work_beyond_2_256_saturates() {
        let mut t = HeaderTree::default();
        let g = header(BlockHash::all_zeros(), EASY, 0);
        t.insert(g, loc(0));
        let honest = header(g.block_hash(), HARD, 1);
        t.insert(honest, loc(1));
        let mut prev = g.block_hash();
        let mut first = None;
        for i in 2..5 {
            let h = header(prev, 0, i);
            prev = h.block_hash();
            first.get_or_insert(prev);
            t.insert(h, loc(i as u64));
        }
        let best = t.best_chain(g.block_hash(), 0).unwrap();
        assert_eq!(best.blocks.len(), 2);
        assert_eq!(Some(best.blocks[1].hash), first);
        assert_eq!(best.work, Work::from_le_bytes([0xff; 32]));
        let (one, two) = (Work::from_le_bytes([1; 32]), Work::from_le_bytes([2; 32]));
        assert_eq!(add_work(one, one), two);
    }

    #[test]
    fn proof_of_work_is_checked_against_nbits_and_the_network_limit() {
        let genesis = bitcoin::constants::genesis_block(bitcoin::Network::Bitcoin).header;
        assert_eq!(proof_of_work(&genesis, Network::Main), Ok(()));
        let bad_nonce = Header {
            nonce: genesis.nonce ^ 1,
            ..genesis
        };
        let err = proof_of_work(&bad_nonce, Network::Main).unwrap_err();
        assert!(err.contains("does not meet its nBits 0x1d00ffff"), "{err}");
        // Regtest's easy target is beyond mainnet's limit, whatever the hash.
        let easy = Header {
            bits: CompactTarget::from_consensus(EASY),
            ..genesis
        };
        let err = proof_of_work(&easy, Network::Main).unwrap_err();
        assert!(err.contains("above main's limit"), "{err}");
        let regtest = bitcoin::constants::genesis_block(bitcoin::Network::Regtest).header;
        assert_eq!(proof_of_work(&regtest, Network::Regtest), Ok(()));
    }

    #[test]
    fn out_of_order_and_detached_blocks() {
        let mut t = HeaderTree::default();
        let g = header(BlockHash::all_zeros(), EASY, 0);
        let a = header(g.block_hash(), EASY, 1);
        let b = header(a.block_hash(), EASY, 2);
        let lost_parent = header(BlockHash::all_zeros(), EASY, 77).block_hash();
        let d1 = header(lost_parent, EASY, 3);
        let d2 = header(d1.block_hash(), EASY, 4);
        for (i, h) in [b, d2, a, g, d1].into_iter().enumerate() {
            t.insert(h, loc(i as u64));
        }
        let best = t.best_chain(g.block_hash(), 0).unwrap();
        let hashes: Vec<_> = best.blocks.iter().map(|n| n.hash).collect();
        assert_eq!(hashes, vec![g.block_hash(), a.block_hash(), b.block_hash()]);
        assert_eq!(
            best.detached,
            vec![Detached {
                missing_parent: lost_parent,
                blocks: 2
            }]
        );
        assert!(t.best_chain(lost_parent, 0).is_err());
    }
}
