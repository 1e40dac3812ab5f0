//! Transaction rows: `txs`, `txids`, `outputs`, `inputs`, `spends`,
//! `outside`.

use bitcoin::hashes::Hash;
use bitcoin::Txid;

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
    type Bytes = Inline<97>;

    /// The txid, then varints.
    fn encode(&self) -> Inline<97> {
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
            v.varint(n.into());
        }
        v.varint_or_none(self.fee);
        v.varint(self.input_count.into());
        v.varint(self.output_count.into());
        v.varint(self.first_output.0);
        v.varint(self.offset_in_block.into());
        v
    }

    fn decode(b: &[u8]) -> Result<TxRow, RowError> {
        Dec::all("tx", b, |d| {
            Ok(TxRow {
                txid: Txid::from_byte_array(d.take()?),
                height: Height(d.varint32()?),
                position: d.varint32()?,
                version: d.varint32()? as i32,
                locktime: d.varint32()?,
                size: d.varint32()?,
                weight: d.varint32()?,
                fee: d.varint_or_none()?,
                input_count: d.varint32()?,
                output_count: d.varint32()?,
                first_output: OutNum(d.varint()?),
                offset_in_block: d.varint32()?,
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
    type Bytes = Inline<39>;

    /// Varints, and the script type's byte.
    fn encode(&self) -> Inline<39> {
        let mut v = Inline::new();
        v.varint_or_none(self.tx.map(|t| t.0));
        v.varint(u64::from(self.vout));
        v.varint(self.value);
        v.extend(&[self.script_type as u8]);
        v.varint_or_none(self.addr.map(|a| a.0));
        v
    }

    fn decode(b: &[u8]) -> Result<OutputRow, RowError> {
        Dec::all("output", b, |d| {
            let tx = d.varint_or_none()?.map(TxNum);
            let vout = d.varint32()?;
            let value = d.varint()?;
            let script_type = ScriptType::from_u8(d.u8()?).ok_or_else(|| d.err())?;
            let addr = d.varint_or_none()?.map(AddrId);
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
    type Bytes = Inline<15>;

    fn encode(&self) -> Inline<15> {
        let mut v = Inline::new();
        v.varint(self.tx.0);
        v.varint(self.vin.into());
        v
    }

    fn decode(b: &[u8]) -> Result<InputRef, RowError> {
        Dec::all("spend", b, |d| {
            Ok(InputRef {
                tx: TxNum(d.varint()?),
                vin: d.varint32()?,
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
        // tx 1 (as 2), vout 2, 5,000,000,000 sats (5 bytes), P2PK, address 7 (as 8).
        assert_eq!(hex::encode(&bytes[..]), "020280e497d0120108");
        assert_eq!(OutputRow::decode(&bytes).unwrap(), row);
        let op_return = OutputRow {
            addr: None,
            script_type: ScriptType::OpReturn,
            ..row
        };
        assert_eq!(OutputRow::decode(&op_return.encode()).unwrap(), op_return);
        let outside = OutputRow { tx: None, ..row };
        assert_eq!(OutputRow::decode(&outside.encode()).unwrap(), outside);
        assert!(OutputRow::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(OutputRow::decode(&longer).is_err());
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
        // The txid, then varints: 1 byte for the unknown fee, 5 for
        // version -1, 14 for the other nine fields.
        assert_eq!(tx.encode().len(), 32 + 1 + 5 + 14);
        let widest = TxRow {
            height: Height(u32::MAX),
            position: u32::MAX,
            locktime: u32::MAX,
            size: u32::MAX,
            weight: u32::MAX,
            fee: Some(u64::MAX - 1),
            input_count: u32::MAX,
            output_count: u32::MAX,
            first_output: OutNum(u64::MAX),
            offset_in_block: u32::MAX,
            ..tx.clone()
        };
        assert_eq!(TxRow::decode(&widest.encode()).unwrap(), widest);
        assert_eq!(tx.outputs().collect::<Vec<_>>(), [OutNum(180), OutNum(181)]);
        let key = (TxidPrefix::of(&tx.txid), TxNum(3));
        assert_eq!(<(TxidPrefix, TxNum)>::decode(&key.encode()).unwrap(), key);
        assert_eq!(key.encode()[..8], tx.txid.as_byte_array()[..8]);
        for vin in [0, 4, 65_536, u32::MAX] {
            let spend = InputRef { tx: TxNum(7), vin };
            assert_eq!(InputRef::decode(&spend.encode()).unwrap(), spend);
        }
        // A vin beyond 32 bits is a corrupt row, not a truncated one.
        assert!(InputRef::decode(&[7, 0x80, 0x80, 0x80, 0x80, 0x10]).is_err());
    }
}
