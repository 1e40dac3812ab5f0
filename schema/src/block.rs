//! Block rows: `blocks` (the best chain by height), `block_index` (every
//! record ever seen), and the chain points the `meta` family names.

use bitcoin::block::Header;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::BlockHash;

use crate::codec::{Codec, Dec, RowError};
use crate::ids::{AddrId, Height, NextIds, OutNum, TxNum};

/// Where a block's record lies in the blocks directory; orders by file,
/// then offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockLoc {
    /// The number of its `blkNNNNN.dat` file.
    pub file: u32,
    /// Offset of the block's first byte (after magic and length).
    pub offset: u64,
    pub len: u32,
}

impl BlockLoc {
    fn put(&self, v: &mut Vec<u8>) {
        v.extend_from_slice(&self.file.to_be_bytes());
        v.extend_from_slice(&self.offset.to_be_bytes());
        v.extend_from_slice(&self.len.to_be_bytes());
    }

    fn read(d: &mut Dec) -> Result<BlockLoc, RowError> {
        Ok(BlockLoc {
            file: d.u32()?,
            offset: d.u64()?,
            len: d.u32()?,
        })
    }
}

fn read_header(d: &mut Dec) -> Result<Header, RowError> {
    deserialize(&d.take::<80>()?).map_err(|_| d.err())
}

/// How `TxRow::fee` and `BlockRow::fees` store None.
pub(crate) const FEE_UNKNOWN: u64 = u64::MAX;

/// `blocks`, keyed by height: a block of the best chain and the first ids
/// it was given, so its rows can be found (and undone) as id ranges.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRow {
    pub hash: BlockHash,
    pub header: Header,
    pub loc: BlockLoc,
    pub weight: u32,
    pub tx_count: u32,
    pub input_count: u32,
    pub output_count: u32,
    /// None when a transaction's fee is unknown (see `TxRow::fee`).
    pub fees: Option<u64>,
    pub first_tx: TxNum,
    pub first_output: OutNum,
    pub first_addr: AddrId,
    pub new_addrs: u32,
}

impl BlockRow {
    /// The ids the next block starts from.
    pub fn next_ids(&self) -> NextIds {
        NextIds {
            tx: self.first_tx + u64::from(self.tx_count),
            output: self.first_output + u64::from(self.output_count),
            addr: self.first_addr + u64::from(self.new_addrs),
        }
    }

    /// The block's transactions, as tx numbers.
    pub fn txs(&self) -> std::ops::Range<u64> {
        self.first_tx.0..self.next_ids().tx.0
    }
}

impl Codec for BlockRow {
    type Bytes = Vec<u8>;

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(180);
        v.extend_from_slice(self.hash.as_byte_array());
        v.extend_from_slice(&serialize(&self.header));
        self.loc.put(&mut v);
        for n in [
            self.weight,
            self.tx_count,
            self.input_count,
            self.output_count,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        for n in [
            self.fees.unwrap_or(FEE_UNKNOWN),
            self.first_tx.0,
            self.first_output.0,
            self.first_addr.0,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&self.new_addrs.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<BlockRow, RowError> {
        Dec::all("block", b, |d| {
            Ok(BlockRow {
                hash: BlockHash::from_byte_array(d.take()?),
                header: read_header(d)?,
                loc: BlockLoc::read(d)?,
                weight: d.u32()?,
                tx_count: d.u32()?,
                input_count: d.u32()?,
                output_count: d.u32()?,
                fees: Some(d.u64()?).filter(|&f| f != FEE_UNKNOWN),
                first_tx: TxNum(d.u64()?),
                first_output: OutNum(d.u64()?),
                first_addr: AddrId(d.u64()?),
                new_addrs: d.u32()?,
            })
        })
    }
}

/// `block_index`, keyed by hash: every block record seen, stale ones too.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockIndexRow {
    pub header: Header,
    /// Every record of this block found, in the order found: a corrupt
    /// first copy (a crash mid-write) must not hide a good later one.
    pub locs: Vec<BlockLoc>,
}

impl Codec for BlockIndexRow {
    type Bytes = Vec<u8>;

    fn encode(&self) -> Vec<u8> {
        let mut v = serialize(&self.header);
        for loc in &self.locs {
            loc.put(&mut v);
        }
        v
    }

    fn decode(b: &[u8]) -> Result<BlockIndexRow, RowError> {
        Dec::all("block_index", b, |d| {
            let header = read_header(d)?;
            let mut locs = vec![BlockLoc::read(d)?];
            while !d.is_empty() {
                locs.push(BlockLoc::read(d)?);
            }
            Ok(BlockIndexRow { header, locs })
        })
    }
}

/// A block named by height and hash: the index's tip, its first block, the
/// clusters' tip (the `meta` rows of that shape).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainPoint {
    pub height: Height,
    pub hash: BlockHash,
}

impl Codec for ChainPoint {
    type Bytes = [u8; 36];

    fn encode(&self) -> [u8; 36] {
        let mut v = [0u8; 36];
        v[..4].copy_from_slice(&self.height.0.to_be_bytes());
        v[4..].copy_from_slice(self.hash.as_byte_array());
        v
    }

    fn decode(b: &[u8]) -> Result<ChainPoint, RowError> {
        Dec::all("chain point", b, |d| {
            Ok(ChainPoint {
                height: Height(d.u32()?),
                hash: BlockHash::from_byte_array(d.take()?),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_rows_round_trip() {
        let genesis = bitcoin::constants::genesis_block(bitcoin::Network::Bitcoin);
        let block = BlockRow {
            hash: genesis.block_hash(),
            header: genesis.header,
            loc: BlockLoc {
                file: 3,
                offset: 8,
                len: 285,
            },
            weight: 1140,
            tx_count: 1,
            input_count: 1,
            output_count: 1,
            fees: Some(12_345),
            first_tx: TxNum(0),
            first_output: OutNum(0),
            first_addr: AddrId(0),
            new_addrs: 1,
        };
        assert_eq!(block.encode().len(), 180);
        assert_eq!(BlockRow::decode(&block.encode()).unwrap(), block);
        let unknown = BlockRow {
            fees: None,
            ..block.clone()
        };
        assert_eq!(BlockRow::decode(&unknown.encode()).unwrap(), unknown);
        assert_eq!(
            block.next_ids(),
            NextIds {
                tx: TxNum(1),
                output: OutNum(1),
                addr: AddrId(1)
            }
        );
        let mut index = BlockIndexRow {
            header: block.header,
            locs: vec![block.loc],
        };
        assert_eq!(BlockIndexRow::decode(&index.encode()).unwrap(), index);
        index.locs.push(BlockLoc {
            file: 3,
            ..block.loc
        });
        assert_eq!(BlockIndexRow::decode(&index.encode()).unwrap(), index);
        let tip = ChainPoint {
            height: Height(170),
            hash: block.hash,
        };
        assert_eq!(&tip.encode()[..4], &[0, 0, 0, 170]);
        assert_eq!(ChainPoint::decode(&tip.encode()).unwrap(), tip);
        assert!(ChainPoint::decode(&tip.encode()[..35]).is_err());
    }
}
