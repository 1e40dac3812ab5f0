//! Transaction rows: `txs`, `txids`, `outputs`, `inputs`, `spends`,
//! `outside`.

use bitcoin::hashes::Hash;
use bitcoin::Txid;

use crate::block::FEE_UNKNOWN;
use crate::codec::{Codec, Dec, Inline, RowError};
use crate::ids::{AddrId, Height, OutNum, TxNum, TxidPrefix};
use crate::script::ScriptType;

/// `txs`, keyed by tx number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxRow {
    pub txid: Txid,
    pub height: Height,
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
    pub first_output: OutNum,
    /// Byte offset inside the block, to read the raw tx back from its blk file.
    pub offset_in_block: u32,
}

impl TxRow {
    pub fn is_coinbase(&self) -> bool {
        self.position == 0
    }

    pub fn vsize(&self) -> u32 {
        self.weight.div_ceil(4)
    }

    /// The tx's outputs, as output numbers.
    pub fn outputs(&self) -> impl Iterator<Item = OutNum> + use<> {
        let first = self.first_output;
        (0..u64::from(self.output_count)).map(move |i| first + i)
    }
}

impl Codec for TxRow {
    type Bytes = Inline<84>;

    /// 84 bytes.
    fn encode(&self) -> Inline<84> {
        let mut v = Inline::new();
        v.extend(self.txid.as_byte_array());
        for n in [
            self.height.0,
            self.position,
            self.version as u32,
            self.locktime,
            self.size,
            self.weight,
        ] {
            v.extend(&n.to_be_bytes());
        }
        v.extend(&self.fee.unwrap_or(FEE_UNKNOWN).to_be_bytes());
        v.extend(&self.input_count.to_be_bytes());
        v.extend(&self.output_count.to_be_bytes());
        v.extend(&self.first_output.0.to_be_bytes());
        v.extend(&self.offset_in_block.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<TxRow, RowError> {
        Dec::all("tx", b, |d| {
            Ok(TxRow {
                txid: Txid::from_byte_array(d.take()?),
                height: Height(d.u32()?),
                position: d.u32()?,
                version: d.u32()? as i32,
                locktime: d.u32()?,
                size: d.u32()?,
                weight: d.u32()?,
                fee: Some(d.u64()?).filter(|&f| f != FEE_UNKNOWN),
                input_count: d.u32()?,
                output_count: d.u32()?,
                first_output: OutNum(d.u64()?),
                offset_in_block: d.u32()?,
            })
        })
    }
}

impl TxidPrefix {
    /// The first 8 bytes of `txid` in its internal byte order. `txids` is
    /// keyed `(TxidPrefix, TxNum)`: the tx number keeps apart both the two
    /// BIP30 txids that occur twice on mainnet and the rare txids that
    /// share a prefix, and the txid itself is read from the `txs` row.
    /// 16 bytes a key instead of 40, the key of a lookup family that every
    /// run sorts and merges.
    pub fn of(txid: &Txid) -> TxidPrefix {
        let bytes = txid.as_byte_array();
        TxidPrefix(u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")))
    }
}

/// How `OutputRow` stores `tx: None` and `addr: None`.
const NONE: u64 = u64::MAX;

/// `outputs`, keyed by output number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutputRow {
    /// The tx that created it; None for a coin from before the first block
    /// of an index that starts later than genesis (its txid is in
    /// `outside`, its number at or above `OutNum::FIRST_OUTSIDE`).
    pub tx: Option<TxNum>,
    pub vout: u32,
    pub value: u64,
    pub script_type: ScriptType,
    /// None for OP_RETURN.
    pub addr: Option<AddrId>,
}

impl OutputRow {
    /// Whether its value is known: a coin from before the index's start
    /// that no prevouts file described has script type `Unknown`, value 0.
    pub fn known_value(&self) -> Option<u64> {
        (self.script_type != ScriptType::Unknown).then_some(self.value)
    }
}

impl Codec for OutputRow {
    type Bytes = [u8; 29];

    fn encode(&self) -> [u8; 29] {
        let mut v = [0u8; 29];
        v[..8].copy_from_slice(&self.tx.map_or(NONE, |t| t.0).to_be_bytes());
        v[8..12].copy_from_slice(&self.vout.to_be_bytes());
        v[12..20].copy_from_slice(&self.value.to_be_bytes());
        v[20] = self.script_type as u8;
        v[21..].copy_from_slice(&self.addr.map_or(NONE, |a| a.0).to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<OutputRow, RowError> {
        Dec::all("output", b, |d| {
            let tx = Some(d.u64()?).filter(|&t| t != NONE).map(TxNum);
            let (vout, value) = (d.u32()?, d.u64()?);
            let script_type = ScriptType::from_u8(d.u8()?).ok_or_else(|| d.err())?;
            let addr = Some(d.u64()?).filter(|&a| a != NONE).map(AddrId);
            Ok(OutputRow {
                tx,
                vout,
                value,
                script_type,
                addr,
            })
        })
    }
}

/// `spends`, keyed by output number: the spending tx and input index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputRef {
    pub tx: TxNum,
    pub vin: u32,
}

impl Codec for InputRef {
    type Bytes = [u8; 12];

    fn encode(&self) -> [u8; 12] {
        let mut k = [0u8; 12];
        k[..8].copy_from_slice(&self.tx.0.to_be_bytes());
        k[8..].copy_from_slice(&self.vin.to_be_bytes());
        k
    }

    fn decode(b: &[u8]) -> Result<InputRef, RowError> {
        Dec::all("spend", b, |d| {
            Ok(InputRef {
                tx: TxNum(d.u64()?),
                vin: d.u32()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_row_golden_bytes() {
        let row = OutputRow {
            tx: Some(TxNum(1)),
            vout: 2,
            value: 5_000_000_000,
            script_type: ScriptType::P2pk,
            addr: Some(AddrId(7)),
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
        let outside = OutputRow { tx: None, ..row };
        assert_eq!(&outside.encode()[..8], &[0xff; 8]);
        assert_eq!(OutputRow::decode(&outside.encode()).unwrap(), outside);
        assert!(OutputRow::decode(&bytes[..28]).is_err());
    }

    #[test]
    fn tx_rows_and_keys_round_trip() {
        let tx = TxRow {
            txid: Txid::from_byte_array([9; 32]),
            height: Height(170),
            position: 1,
            version: -1,
            locktime: 0,
            size: 275,
            weight: 1100,
            fee: None,
            input_count: 1,
            output_count: 2,
            first_output: OutNum(180),
            offset_in_block: 215,
        };
        assert_eq!(TxRow::decode(&tx.encode()).unwrap(), tx);
        assert_eq!(tx.encode().len(), 84);
        assert_eq!(tx.outputs().collect::<Vec<_>>(), [OutNum(180), OutNum(181)]);
        let key = (TxidPrefix::of(&tx.txid), TxNum(3));
        assert_eq!(<(TxidPrefix, TxNum)>::decode(&key.encode()).unwrap(), key);
        assert_eq!(key.encode()[..8], tx.txid.as_byte_array()[..8]);
        let spend = |vin| InputRef { tx: TxNum(7), vin }.encode();
        assert!(
            spend(65_536) > spend(65_535),
            "input index is 32-bit, not 16"
        );
        assert_eq!(
            InputRef::decode(&spend(4)).unwrap(),
            InputRef {
                tx: TxNum(7),
                vin: 4
            }
        );
    }
}
