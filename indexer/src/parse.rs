//! Decodes a serialized block into what the index stores, reading the bytes
//! once and hashing each transaction in place (no re-serialization).

use bitcoin::block::Header;
use bitcoin::consensus::Decodable;
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, OutPoint, Txid};
use sha2::{Digest, Sha256};

use satflow_schema::script::{classify, AddrKey, ScriptType};
use satflow_schema::tx::TxRow;
use satflow_schema::{Height, OutNum};

/// 21 million BTC: no output may carry more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset} of the block: {what}")]
pub struct ParseError {
    pub offset: usize,
    pub what: String,
}

#[derive(Debug, Clone)]
pub struct ParsedBlock {
    pub header: Header,
    pub hash: BlockHash,
    pub size: u32,
    pub weight: u32,
    pub txs: Vec<ParsedTx>,
}

#[derive(Debug, Clone)]
pub struct ParsedTx {
    pub txid: Txid,
    /// Byte offset of the transaction inside the block.
    pub offset: u32,
    pub size: u32,
    pub weight: u32,
    pub version: i32,
    pub locktime: u32,
    /// The outputs this transaction spends; empty for a coinbase.
    pub spends: Vec<OutPoint>,
    pub outputs: Vec<ParsedOutput>,
}

impl ParsedTx {
    pub fn is_coinbase(&self) -> bool {
        self.spends.is_empty()
    }

    /// Inputs as serialized: a coinbase has exactly one.
    pub fn input_count(&self) -> u32 {
        self.spends.len().max(1) as u32
    }

    /// What the tx leaves to the miner: `value_in`, what its inputs bring,
    /// less what it pays out; 0 for a coinbase. An error names the tx,
    /// in block `block` at `height`, that pays out more than it has.
    pub fn fee(&self, value_in: u64, block: &BlockHash, height: Height) -> anyhow::Result<u64> {
        if self.is_coinbase() {
            return Ok(0);
        }
        let value_out = self
            .outputs
            .iter()
            .fold(0u64, |sum, o| sum.saturating_add(o.value));
        value_in.checked_sub(value_out).ok_or_else(|| {
            anyhow::anyhow!(
                "block {block} at height {height}: tx {} spends {value_in} sat but pays out {value_out}",
                self.txid
            )
        })
    }

    /// Its `txs` row, at `position` in the block at `height`, its outputs
    /// numbered from `first_output`.
    pub fn row(
        &self,
        height: Height,
        position: u32,
        fee: Option<u64>,
        first_output: OutNum,
    ) -> TxRow {
        TxRow {
            txid: self.txid,
            height,
            position,
            version: self.version,
            locktime: self.locktime,
            size: self.size,
            weight: self.weight,
            fee,
            input_count: self.input_count(),
            output_count: self.outputs.len() as u32,
            first_output,
            offset_in_block: self.offset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedOutput {
    pub value: u64,
    pub script_type: ScriptType,
    pub addr: Option<AddrKey>,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn fail<T>(&self, what: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            offset: self.pos,
            what: what.into(),
        })
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ParseError> {
        match self.buf.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => self.fail(format!(
                "truncated {what} ({n} bytes wanted, {} left)",
                self.buf.len() - self.pos
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], ParseError> {
        Ok(self
            .take(N, what)?
            .try_into()
            .expect("take returns N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ParseError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn varint(&mut self, what: &str) -> Result<u64, ParseError> {
        let [first] = self.array(what)?;
        Ok(match first {
            0xfd => u16::from_le_bytes(self.array(what)?).into(),
            0xfe => u32::from_le_bytes(self.array(what)?).into(),
            0xff => u64::from_le_bytes(self.array(what)?),
            n => n.into(),
        })
    }

    /// A count of items each at least `min_item` bytes long: rejects counts
    /// the remaining bytes cannot hold before anything is allocated.
    fn count(&mut self, min_item: usize, what: &str) -> Result<usize, ParseError> {
        let n = self.varint(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > left {
            return self.fail(format!("{what} {n} cannot fit in the {left} bytes left"));
        }
        Ok(n as usize)
    }
}

/// Parses a whole block record body and checks its merkle root.
pub fn parse_block(bytes: &[u8]) -> Result<ParsedBlock, ParseError> {
    let mut c = Cursor { buf: bytes, pos: 0 };
    let raw_header = c.take(80, "block header")?;
    let header = Header::consensus_decode(&mut &raw_header[..]).map_err(|e| ParseError {
        offset: 0,
        what: format!("block header: {e}"),
    })?;
    let n_tx = c.count(60, "transaction count")?;
    if n_tx == 0 {
        return c.fail("block has no transactions");
    }
    let mut txs = Vec::with_capacity(n_tx);
    for i in 0..n_tx {
        let tx = parse_tx(&mut c, i == 0)?;
        txs.push(tx);
    }
    if c.pos != bytes.len() {
        return c.fail(format!(
            "{} trailing bytes after the last transaction",
            bytes.len() - c.pos
        ));
    }
    let merkle = bitcoin::merkle_tree::calculate_root(txs.iter().map(|t| t.txid));
    if merkle.map(|m| m.to_raw_hash()) != Some(header.merkle_root.to_raw_hash()) {
        return Err(ParseError {
            offset: 36,
            what: "merkle root does not match the transactions".into(),
        });
    }
    let tx_weight: u64 = txs.iter().map(|t| u64::from(t.weight)).sum();
    let prefix = (80 + varint_len(n_tx as u64)) as u64 * 4;
    Ok(ParsedBlock {
        hash: header.block_hash(),
        header,
        size: bytes.len() as u32,
        weight: (prefix + tx_weight) as u32,
        txs,
    })
}

fn varint_len(n: u64) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn parse_tx(c: &mut Cursor<'_>, first_in_block: bool) -> Result<ParsedTx, ParseError> {
    let start = c.pos;
    let version = i32::from_le_bytes(c.array("tx version")?);
    let segwit = c.buf.get(c.pos..c.pos + 2) == Some(&[0x00, 0x01]);
    if segwit {
        c.pos += 2;
    }
    let body_start = c.pos;
    let n_in = c.count(41, "input count")?;
    if n_in == 0 {
        return c.fail("transaction without inputs");
    }
    let mut spends = Vec::with_capacity(if first_in_block { 0 } else { n_in });
    for _ in 0..n_in {
        let txid = Txid::from_byte_array(c.array("prevout txid")?);
        let vout = c.u32("prevout index")?;
        let script_len = c.count(1, "scriptSig length")?;
        c.take(script_len, "scriptSig")?;
        c.u32("sequence")?;
        if !first_in_block {
            spends.push(OutPoint { txid, vout });
        }
    }
    if first_in_block && (n_in != 1) {
        return c.fail("coinbase must have exactly one input");
    }
    let n_out = c.count(9, "output count")?;
    let mut outputs = Vec::with_capacity(n_out);
    for _ in 0..n_out {
        let value = u64::from_le_bytes(c.array("output value")?);
        if value > bitcoin::Amount::MAX_MONEY.to_sat() {
            return c.fail(format!("output value {value} exceeds 21 million BTC"));
        }
        let script_len = c.count(1, "scriptPubKey length")?;
        let (script_type, addr) = classify(c.take(script_len, "scriptPubKey")?);
        outputs.push(ParsedOutput {
            value,
            script_type,
            addr,
        });
    }
    let body_end = c.pos;
    if segwit {
        for _ in 0..n_in {
            let items = c.count(1, "witness item count")?;
            for _ in 0..items {
                let len = c.count(1, "witness item length")?;
                c.take(len, "witness item")?;
            }
        }
    }
    let witness_bytes = c.pos - body_end + if segwit { 2 } else { 0 };
    let locktime = c.u32("locktime")?;
    let end = c.pos;
    let raw = &c.buf[start..end];
    let txid = if segwit {
        sha256d(&[
            &raw[..4],
            &c.buf[body_start..body_end],
            &raw[raw.len() - 4..],
        ])
    } else {
        sha256d(&[raw])
    };
    let size = end - start;
    let base = size - witness_bytes;
    Ok(ParsedTx {
        txid: Txid::from_byte_array(txid),
        offset: start as u32,
        size: size as u32,
        weight: (base * 3 + size) as u32,
        version,
        locktime,
        spends,
        outputs,
    })
}

/// Double SHA-256 over the concatenation of `parts` (SHA-NI where present).
pub fn sha256d(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    Sha256::digest(h.finalize()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::encode::deserialize;
    use proptest::prelude::*;

    fn genesis_bytes() -> Vec<u8> {
        bitcoin::consensus::serialize(&bitcoin::constants::genesis_block(
            bitcoin::Network::Bitcoin,
        ))
    }

    #[test]
    fn genesis_block() {
        let b = parse_block(&genesis_bytes()).unwrap();
        assert_eq!(
            b.hash.to_string(),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        assert_eq!(b.txs.len(), 1);
        assert_eq!(
            b.txs[0].txid.to_string(),
            "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
        );
        assert!(b.txs[0].is_coinbase());
        assert_eq!(b.txs[0].outputs[0].value, 50 * 100_000_000);
        assert_eq!(b.txs[0].outputs[0].script_type, ScriptType::P2pk);
        assert_eq!(b.size as usize, genesis_bytes().len());
        assert_eq!(b.weight, b.size * 4);
    }

    #[test]
    fn truncation_is_an_error_with_an_offset() {
        let bytes = genesis_bytes();
        for cut in [10, 81, 100, bytes.len() - 1] {
            let err = parse_block(&bytes[..cut]).unwrap_err();
            assert!(err.offset <= cut, "{err}");
        }
        let mut flipped = bytes.clone();
        flipped[200] ^= 1;
        assert!(parse_block(&flipped).unwrap_err().what.contains("merkle"));
    }

    proptest! {
        // Fuzz: arbitrary bytes and mutated real blocks never panic, and
        // whatever parses agrees with rust-bitcoin's decoder.
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = parse_block(&bytes);
        }

        #[test]
        fn mutated_blocks_never_panic(pos in 0usize..285, byte in any::<u8>(), cut in 0usize..300) {
            let mut bytes = genesis_bytes();
            bytes[pos] = byte;
            bytes.truncate(cut.min(bytes.len()));
            if let Ok(ours) = parse_block(&bytes) {
                let theirs: bitcoin::Block = deserialize(&bytes).unwrap();
                prop_assert_eq!(ours.hash, theirs.block_hash());
                prop_assert_eq!(ours.txs[0].txid, theirs.txdata[0].compute_txid());
            }
        }
    }
}
