//! Column families, key layouts and row encodings. Every integer is
//! big-endian and fixed-width, so a key range is an id or height range.
//! `indexer/SCHEMA.md` documents the same layouts for readers of the DB.

use bitcoin::block::Header;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Txid};

use crate::blkfiles::BlockLoc;
use crate::script::ScriptType;

/// Bumped whenever a layout below changes; a binary refuses other versions.
pub const SCHEMA_VERSION: u32 = 1;

pub mod cf {
    pub const META: &str = "meta";
    pub const BLOCK_INDEX: &str = "block_index";
    pub const BLOCKS: &str = "blocks";
    pub const BLOCK_HEIGHT: &str = "block_height";
    pub const TXS: &str = "txs";
    pub const TXIDS: &str = "txids";
    pub const OUTPUTS: &str = "outputs";
    pub const SPENDS: &str = "spends";
    pub const INPUTS: &str = "inputs";
    pub const ADDRS: &str = "addrs";
    pub const ADDR_IDS: &str = "addr_ids";
    pub const HISTORY: &str = "history";
    pub const ADDR_UTXOS: &str = "addr_utxos";
    pub const ADDR_STATS: &str = "addr_stats";
    pub const CLUSTER_OF: &str = "cluster_of";
    pub const CLUSTER_MEMBERS: &str = "cluster_members";
    pub const CLUSTER_STATS: &str = "cluster_stats";
    pub const CLUSTER_HISTORY: &str = "cluster_history";
    pub const CLUSTER_RANK: &str = "cluster_rank";
    pub const OUTSIDE: &str = "outside";
    pub const LABELS: &str = "labels";
    pub const POOL_TAGS: &str = "pool_tags";

    pub const ALL: [&str; 22] = [
        META,
        BLOCK_INDEX,
        BLOCKS,
        BLOCK_HEIGHT,
        TXS,
        TXIDS,
        OUTPUTS,
        SPENDS,
        INPUTS,
        ADDRS,
        ADDR_IDS,
        HISTORY,
        ADDR_UTXOS,
        ADDR_STATS,
        CLUSTER_OF,
        CLUSTER_MEMBERS,
        CLUSTER_STATS,
        CLUSTER_HISTORY,
        CLUSTER_RANK,
        OUTSIDE,
        LABELS,
        POOL_TAGS,
    ];

    /// Families keyed by an id that only grows, whose new rows the indexer
    /// ingests as table files instead of writing them (see `batch`).
    pub const APPENDED: [&str; 4] = [TXS, OUTPUTS, INPUTS, ADDRS];
}

pub mod meta {
    pub const SCHEMA_VERSION: &[u8] = b"schema_version";
    pub const NETWORK: &[u8] = b"network";
    pub const XOR_KEY: &[u8] = b"xor_key";
    /// Path of the blocks directory of the last run (raw bytes of the OS string).
    pub const BLOCKS_DIR: &[u8] = b"blocks_dir";
    /// Height (4) + hash (32) of the last block applied; absent when empty.
    pub const TIP: &[u8] = b"tip";
    /// Height (4) + hash (32) of the first block of an index that does not
    /// start at genesis; absent when it does.
    pub const START: &[u8] = b"start";
    /// `scan/` + file number (4): where the next scan of that file starts.
    pub const SCAN_PREFIX: &[u8] = b"scan/";
    /// The clustering heuristics in force, as `satflow cluster --heuristics` names them.
    pub const CLUSTER_HEURISTICS: &[u8] = b"cluster_heuristics";
    /// Height (4) + hash (32) of the last block the clusters include.
    pub const CLUSTER_TIP: &[u8] = b"cluster_tip";
    /// Address ids (8 each) whose clusters a reorg dissolved, to be
    /// recomputed before the next block is clustered.
    pub const CLUSTER_DIRTY: &[u8] = b"cluster_dirty";
}

/// A row that failed to decode: the DB is corrupt or from another version.
#[derive(Debug, thiserror::Error)]
#[error("corrupt {row} row ({len} bytes)")]
pub struct RowError {
    pub row: &'static str,
    pub len: usize,
}

/// Sequential big-endian reader over a row's bytes.
pub struct Dec<'a> {
    bytes: &'a [u8],
    row: &'static str,
    len: usize,
}

impl<'a> Dec<'a> {
    pub fn new(row: &'static str, bytes: &'a [u8]) -> Dec<'a> {
        Dec {
            bytes,
            row,
            len: bytes.len(),
        }
    }

    fn err(&self) -> RowError {
        RowError {
            row: self.row,
            len: self.len,
        }
    }

    pub fn take<const N: usize>(&mut self) -> Result<[u8; N], RowError> {
        let (head, tail) = self.bytes.split_at_checked(N).ok_or_else(|| self.err())?;
        self.bytes = tail;
        Ok(head.try_into().expect("split at N"))
    }

    pub fn u8(&mut self) -> Result<u8, RowError> {
        Ok(self.take::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, RowError> {
        self.take().map(u32::from_be_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, RowError> {
        self.take().map(u64::from_be_bytes)
    }

    pub fn i64(&mut self) -> Result<i64, RowError> {
        self.take().map(i64::from_be_bytes)
    }

    /// Fails unless every byte was consumed.
    pub fn done(self) -> Result<(), RowError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.err())
        }
    }
}

pub fn key_u32(n: u32) -> [u8; 4] {
    n.to_be_bytes()
}

pub fn key_u64(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Two ids side by side: `(addr, tx)`, `(addr, output)`.
pub fn key_pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub fn split_pair(key: &[u8]) -> Result<(u64, u64), RowError> {
    let mut d = Dec::new("pair key", key);
    let pair = (d.u64()?, d.u64()?);
    d.done()?;
    Ok(pair)
}

/// `inputs`, keyed by tx number: the output number each input spends, in
/// input order (one row per tx, not per input: fewer writes).
pub fn decode_inputs(v: &[u8]) -> Result<Vec<u64>, RowError> {
    if !v.len().is_multiple_of(8) {
        return Err(RowError {
            row: "inputs",
            len: v.len(),
        });
    }
    Ok(v.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// `txids` key: the txid (in its internal byte order) then the tx number;
/// the two BIP30 txids that occur twice on mainnet get two keys.
pub fn txid_key(txid: &Txid, tx: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(txid.as_byte_array());
    k[32..].copy_from_slice(&tx.to_be_bytes());
    k
}

/// Where a spent output went: the spending tx and input index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputRef {
    pub tx: u64,
    pub vin: u32,
}

impl InputRef {
    pub fn encode(&self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&self.tx.to_be_bytes());
        k[8..].copy_from_slice(&self.vin.to_be_bytes());
        k
    }

    pub fn decode(b: &[u8]) -> Result<InputRef, RowError> {
        let mut d = Dec::new("spend", b);
        let r = InputRef {
            tx: d.u64()?,
            vin: d.u32()?,
        };
        d.done()?;
        Ok(r)
    }
}

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
    pub first_tx: u64,
    pub first_output: u64,
    pub first_addr: u64,
    pub new_addrs: u32,
}

impl BlockRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(184);
        v.extend_from_slice(self.hash.as_byte_array());
        v.extend_from_slice(&serialize(&self.header));
        v.extend_from_slice(&self.loc.file.to_be_bytes());
        v.extend_from_slice(&self.loc.offset.to_be_bytes());
        v.extend_from_slice(&self.loc.len.to_be_bytes());
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
            self.first_tx,
            self.first_output,
            self.first_addr,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&self.new_addrs.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<BlockRow, RowError> {
        let mut d = Dec::new("block", b);
        let hash = BlockHash::from_byte_array(d.take()?);
        let header = deserialize(&d.take::<80>()?).map_err(|_| d.err())?;
        let loc = BlockLoc {
            file: d.u32()?,
            offset: d.u64()?,
            len: d.u32()?,
        };
        let row = BlockRow {
            hash,
            header,
            loc,
            weight: d.u32()?,
            tx_count: d.u32()?,
            input_count: d.u32()?,
            output_count: d.u32()?,
            fees: Some(d.u64()?).filter(|&f| f != FEE_UNKNOWN),
            first_tx: d.u64()?,
            first_output: d.u64()?,
            first_addr: d.u64()?,
            new_addrs: d.u32()?,
        };
        d.done()?;
        Ok(row)
    }

    /// The ids the next block starts from.
    pub fn next_ids(&self) -> NextIds {
        NextIds {
            tx: self.first_tx + u64::from(self.tx_count),
            output: self.first_output + u64::from(self.output_count),
            addr: self.first_addr + u64::from(self.new_addrs),
        }
    }
}

/// The dense id counters: what the next new tx, output and address get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextIds {
    pub tx: u64,
    pub output: u64,
    pub addr: u64,
}

/// `block_index`, keyed by hash: every block record seen, stale ones too.
pub fn encode_block_index(header: &Header, loc: &BlockLoc) -> Vec<u8> {
    let mut v = serialize(header);
    v.extend_from_slice(&loc.file.to_be_bytes());
    v.extend_from_slice(&loc.offset.to_be_bytes());
    v.extend_from_slice(&loc.len.to_be_bytes());
    v
}

pub fn decode_block_index(b: &[u8]) -> Result<(Header, BlockLoc), RowError> {
    let mut d = Dec::new("block_index", b);
    let header = deserialize(&d.take::<80>()?).map_err(|_| d.err())?;
    let loc = BlockLoc {
        file: d.u32()?,
        offset: d.u64()?,
        len: d.u32()?,
    };
    d.done()?;
    Ok((header, loc))
}

/// `txs`, keyed by tx number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRow {
    pub txid: Txid,
    pub height: u32,
    /// Index in its block; 0 is the coinbase.
    pub position: u32,
    pub version: i32,
    pub locktime: u32,
    pub size: u32,
    pub weight: u32,
    /// Inputs minus outputs; 0 for a coinbase; None when it spends a coin
    /// from before the index's first block that no prevouts file described.
    pub fee: Option<u64>,
    pub input_count: u32,
    pub output_count: u32,
    pub first_output: u64,
    /// Byte offset inside the block, to read the raw tx back from its blk file.
    pub offset_in_block: u32,
}

impl TxRow {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(84);
        v.extend_from_slice(self.txid.as_byte_array());
        for n in [
            self.height,
            self.position,
            self.version as u32,
            self.locktime,
            self.size,
            self.weight,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        v.extend_from_slice(&self.fee.unwrap_or(FEE_UNKNOWN).to_be_bytes());
        v.extend_from_slice(&self.input_count.to_be_bytes());
        v.extend_from_slice(&self.output_count.to_be_bytes());
        v.extend_from_slice(&self.first_output.to_be_bytes());
        v.extend_from_slice(&self.offset_in_block.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<TxRow, RowError> {
        let mut d = Dec::new("tx", b);
        let row = TxRow {
            txid: Txid::from_byte_array(d.take()?),
            height: d.u32()?,
            position: d.u32()?,
            version: d.u32()? as i32,
            locktime: d.u32()?,
            size: d.u32()?,
            weight: d.u32()?,
            fee: Some(d.u64()?).filter(|&f| f != FEE_UNKNOWN),
            input_count: d.u32()?,
            output_count: d.u32()?,
            first_output: d.u64()?,
            offset_in_block: d.u32()?,
        };
        d.done()?;
        Ok(row)
    }

    pub fn is_coinbase(&self) -> bool {
        self.position == 0
    }

    pub fn vsize(&self) -> u32 {
        self.weight.div_ceil(4)
    }
}

/// `outputs`, keyed by output number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRow {
    pub tx: u64,
    pub vout: u32,
    pub value: u64,
    pub script_type: ScriptType,
    /// None for OP_RETURN.
    pub addr: Option<u64>,
}

const NO_ADDR: u64 = u64::MAX;

impl OutputRow {
    pub fn encode(&self) -> [u8; 29] {
        let mut v = [0u8; 29];
        v[..8].copy_from_slice(&self.tx.to_be_bytes());
        v[8..12].copy_from_slice(&self.vout.to_be_bytes());
        v[12..20].copy_from_slice(&self.value.to_be_bytes());
        v[20] = self.script_type as u8;
        v[21..].copy_from_slice(&self.addr.unwrap_or(NO_ADDR).to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Result<OutputRow, RowError> {
        let mut d = Dec::new("output", b);
        let (tx, vout, value) = (d.u64()?, d.u32()?, d.u64()?);
        let script_type = ScriptType::from_u8(d.u8()?).ok_or_else(|| d.err())?;
        let addr = Some(d.u64()?).filter(|&a| a != NO_ADDR);
        d.done()?;
        Ok(OutputRow {
            tx,
            vout,
            value,
            script_type,
            addr,
        })
    }
}

/// `OutputRow::tx` of a coin created before the first block of an index
/// that starts later than genesis (see `Writer::apply`).
pub const OUTSIDE_TX: u64 = u64::MAX;

/// Output numbers of coins created before the index's first block start
/// here, in the order they are spent, apart from the chain-ordered ones.
pub const FIRST_OUTSIDE_OUTPUT: u64 = 1 << 63;

/// How `TxRow::fee` and `BlockRow::fees` store None.
const FEE_UNKNOWN: u64 = u64::MAX;

/// `history`, keyed by (address, tx): what the tx paid to and took from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryRow {
    pub received: u64,
    pub sent: u64,
    /// Of `sent`, the coins created before the index's first block. The
    /// index never saw them arrive, so it books them as received when they
    /// leave: balances then stay the value of the coins it holds.
    pub opened: u64,
}

impl HistoryRow {
    /// 16 bytes, or 24 when `opened` is not zero.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = key_pair(self.received, self.sent).to_vec();
        if self.opened != 0 {
            v.extend_from_slice(&self.opened.to_be_bytes());
        }
        v
    }

    pub fn decode(b: &[u8]) -> Result<HistoryRow, RowError> {
        let mut d = Dec::new("history", b);
        let (received, sent) = (d.u64()?, d.u64()?);
        let opened = if b.len() > 16 { d.u64()? } else { 0 };
        d.done()?;
        Ok(HistoryRow {
            received,
            sent,
            opened,
        })
    }

    /// Net effect of the tx on the address's coins: what it received less
    /// what it spent. (The booked balance, `received − sent` of
    /// `addr_stats`, does not move for `opened` coins: see above.)
    pub fn net(&self) -> i64 {
        self.received as i64 - self.sent as i64
    }

    /// What the address's running `received` total counts for this tx.
    pub fn credited(&self) -> u64 {
        self.received + self.opened
    }

    pub fn add(&mut self, other: &HistoryRow) {
        self.received += other.received;
        self.sent += other.sent;
        self.opened += other.opened;
    }
}

/// `addr_stats`, keyed by address: running totals kept by a merge operator
/// that adds deltas, so that undoing a block is merging the negated deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrStats {
    pub tx_count: i64,
    pub received: i64,
    pub sent: i64,
    pub utxo_count: i64,
}

impl AddrStats {
    pub fn encode(&self) -> [u8; 32] {
        let mut v = [0u8; 32];
        for (i, n) in [self.tx_count, self.received, self.sent, self.utxo_count]
            .into_iter()
            .enumerate()
        {
            v[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        v
    }

    pub fn decode(b: &[u8]) -> Result<AddrStats, RowError> {
        let mut d = Dec::new("addr_stats", b);
        let s = AddrStats {
            tx_count: d.i64()?,
            received: d.i64()?,
            sent: d.i64()?,
            utxo_count: d.i64()?,
        };
        d.done()?;
        Ok(s)
    }

    pub fn add(&mut self, o: &AddrStats) {
        self.tx_count += o.tx_count;
        self.received += o.received;
        self.sent += o.sent;
        self.utxo_count += o.utxo_count;
    }

    pub fn negated(&self) -> AddrStats {
        AddrStats {
            tx_count: -self.tx_count,
            received: -self.received,
            sent: -self.sent,
            utxo_count: -self.utxo_count,
        }
    }

    pub fn balance(&self) -> i64 {
        self.received - self.sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_number() {
        assert!(key_u64(255) < key_u64(256));
        assert!(key_pair(1, u64::MAX) < key_pair(2, 0));
        let spend = |vin| InputRef { tx: 7, vin }.encode();
        assert!(
            spend(65_536) > spend(65_535),
            "input index is 32-bit, not 16"
        );
        assert_eq!(
            decode_inputs(&[key_u64(3), key_u64(1)].concat()).unwrap(),
            vec![3, 1]
        );
        assert!(decode_inputs(&[0; 9]).is_err());
        assert_eq!(split_pair(&key_pair(3, 9)).unwrap(), (3, 9));
    }

    #[test]
    fn output_row_golden_bytes() {
        let row = OutputRow {
            tx: 1,
            vout: 2,
            value: 5_000_000_000,
            script_type: ScriptType::P2pk,
            addr: Some(7),
        };
        let bytes = row.encode();
        assert_eq!(
            hex::encode(bytes),
            "000000000000000100000002000000012a05f200010000000000000007"
        );
        assert_eq!(OutputRow::decode(&bytes).unwrap(), row);
        let op_return = OutputRow {
            addr: None,
            script_type: ScriptType::OpReturn,
            ..row
        };
        assert_eq!(OutputRow::decode(&op_return.encode()).unwrap(), op_return);
        assert!(OutputRow::decode(&bytes[..28]).is_err());
    }

    #[test]
    fn tx_and_block_rows_round_trip() {
        let tx = TxRow {
            txid: Txid::from_byte_array([9; 32]),
            height: 170,
            position: 1,
            version: -1,
            locktime: 0,
            size: 275,
            weight: 1100,
            fee: None,
            input_count: 1,
            output_count: 2,
            first_output: 180,
            offset_in_block: 215,
        };
        assert_eq!(TxRow::decode(&tx.encode()).unwrap(), tx);
        assert_eq!(tx.encode().len(), 84);
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
            first_tx: 0,
            first_output: 0,
            first_addr: 0,
            new_addrs: 1,
        };
        assert_eq!(BlockRow::decode(&block.encode()).unwrap(), block);
        assert_eq!(
            block.next_ids(),
            NextIds {
                tx: 1,
                output: 1,
                addr: 1
            }
        );
    }

    #[test]
    fn stats_deltas_cancel() {
        let mut s = AddrStats {
            tx_count: 2,
            received: 100,
            sent: 40,
            utxo_count: 1,
        };
        let d = AddrStats {
            tx_count: 1,
            received: 5,
            sent: 0,
            utxo_count: 1,
        };
        s.add(&d);
        s.add(&d.negated());
        assert_eq!(s.balance(), 60);
        assert_eq!(AddrStats::decode(&s.encode()).unwrap(), s);
    }
}
