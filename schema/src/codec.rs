//! The `Codec` trait every key and value of the database implements, and
//! `Dec`, the sequential reader the decoders share.

use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, Txid};

/// A row that failed to decode: the database is corrupt or of another
/// version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt {row} row ({len} bytes)")]
pub struct RowError {
    pub row: &'static str,
    pub len: usize,
}

/// A key or value as stored: `encode` and `decode` are inverse, and for
/// keys, byte order is the order the type means (ids, then heights).
pub trait Codec: Sized {
    /// A fixed array for fixed-width rows, `Inline` for rows of a small
    /// bound, a `Vec` otherwise.
    type Bytes: AsRef<[u8]>;
    fn encode(&self) -> Self::Bytes;
    fn decode(bytes: &[u8]) -> Result<Self, RowError>;
}

/// A key type whose encoding starts with the encoding of `P`: the rows of
/// one `P` (an address's history, a txid's tx numbers) are one key prefix.
pub trait KeyPrefix<P: Codec>: Codec {}

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

    pub fn err(&self) -> RowError {
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

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], RowError> {
        let (head, tail) = self.bytes.split_at_checked(n).ok_or_else(|| self.err())?;
        self.bytes = tail;
        Ok(head)
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
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

    /// A `u64` written by `Inline::varint`; more than ten bytes, or bits
    /// beyond 64, are a corrupt row.
    pub fn varint(&mut self) -> Result<u64, RowError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if bits << shift >> shift != bits {
                return Err(self.err());
            }
            n |= bits << shift;
            if byte < 0x80 {
                return Ok(n);
            }
        }
        Err(self.err())
    }

    /// An `Option<u64>` written by `Inline::varint_or_none`.
    pub fn varint_or_none(&mut self) -> Result<Option<u64>, RowError> {
        Ok(self.varint()?.checked_sub(1))
    }

    /// A `u32` written by `Inline::varint`.
    pub fn varint32(&mut self) -> Result<u32, RowError> {
        let n = self.varint()?;
        u32::try_from(n).map_err(|_| self.err())
    }

    /// An `i64` written by `Inline::zigzag`.
    pub fn zigzag(&mut self) -> Result<i64, RowError> {
        let n = self.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    /// Fails unless every byte was consumed.
    pub fn done(self) -> Result<(), RowError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(self.err())
        }
    }

    /// Decodes a whole row with `f`, failing on leftover bytes.
    pub fn all<T>(
        row: &'static str,
        bytes: &'a [u8],
        f: impl FnOnce(&mut Dec<'a>) -> Result<T, RowError>,
    ) -> Result<T, RowError> {
        let mut d = Dec::new(row, bytes);
        let value = f(&mut d)?;
        d.done()?;
        Ok(value)
    }
}

/// The bytes of a row whose width varies within a small bound (a history
/// row, an address key), or that is simplest written field by field (a tx
/// row), held inline: encoding one allocates nothing, where an indexer
/// encodes tens of millions of them a GB of chain.
#[derive(Clone, Copy)]
pub struct Inline<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Inline<N> {
    pub fn new() -> Inline<N> {
        Inline {
            bytes: [0; N],
            len: 0,
        }
    }

    /// Appends `more`; an encoder never writes past its own bound `N`.
    pub fn extend(&mut self, more: &[u8]) {
        self.bytes[self.len..self.len + more.len()].copy_from_slice(more);
        self.len += more.len();
    }

    /// Appends `n` seven bits a byte, low bits first, the top bit set on
    /// every byte but the last (LEB128): 1 byte for a count under 128,
    /// 3–4 for a typical amount in sats, 10 at most. Values only: the
    /// bytes do not sort as the numbers do, so keys stay big-endian.
    pub fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.extend(&[n as u8 | 0x80]);
            n >>= 7;
        }
        self.extend(&[n as u8]);
    }

    /// Appends `n` as a varint of `n + 1`, and none as 0: one byte for a
    /// missing address or fee. `Some(u64::MAX)` reads back as none, as
    /// the `u64::MAX` sentinels of fixed-width rows did.
    pub fn varint_or_none(&mut self, n: Option<u64>) {
        self.varint(n.map_or(0, |n| n.wrapping_add(1)));
    }

    /// Appends `n` as a varint of its zigzag form (0, -1, 1, -2, ... as
    /// 0, 1, 2, 3, ...), so that small negative deltas stay short too.
    pub fn zigzag(&mut self, n: i64) {
        self.varint(((n << 1) ^ (n >> 63)) as u64);
    }
}

impl<const N: usize> Default for Inline<N> {
    fn default() -> Inline<N> {
        Inline::new()
    }
}

impl<const N: usize> std::ops::Deref for Inline<N> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl<const N: usize> AsRef<[u8]> for Inline<N> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// An empty value: the key says it all (`txids`, `cluster_members`, …).
impl Codec for () {
    type Bytes = [u8; 0];
    fn encode(&self) -> [u8; 0] {
        []
    }
    fn decode(bytes: &[u8]) -> Result<(), RowError> {
        Dec::all("empty", bytes, |_| Ok(()))
    }
}

/// A plain count or amount (`addr_utxos` values, scan positions).
impl Codec for u64 {
    type Bytes = [u8; 8];
    fn encode(&self) -> [u8; 8] {
        self.to_be_bytes()
    }
    fn decode(bytes: &[u8]) -> Result<u64, RowError> {
        Dec::all("u64", bytes, Dec::u64)
    }
}

impl Codec for u32 {
    type Bytes = [u8; 4];
    fn encode(&self) -> [u8; 4] {
        self.to_be_bytes()
    }
    fn decode(bytes: &[u8]) -> Result<u32, RowError> {
        Dec::all("u32", bytes, Dec::u32)
    }
}

/// Txids in their internal byte order, as in the block.
impl Codec for Txid {
    type Bytes = [u8; 32];
    fn encode(&self) -> [u8; 32] {
        self.to_byte_array()
    }
    fn decode(bytes: &[u8]) -> Result<Txid, RowError> {
        Dec::all("txid", bytes, |d| d.take().map(Txid::from_byte_array))
    }
}

impl Codec for BlockHash {
    type Bytes = [u8; 32];
    fn encode(&self) -> [u8; 32] {
        self.to_byte_array()
    }
    fn decode(bytes: &[u8]) -> Result<BlockHash, RowError> {
        Dec::all("block hash", bytes, |d| {
            d.take().map(BlockHash::from_byte_array)
        })
    }
}

/// UTF-8 text (names, tags). Text comes from label files and coinbases,
/// not from the layout, so bytes that are not UTF-8 read as U+FFFD rather
/// than making the whole row unreadable.
impl Codec for String {
    type Bytes = Vec<u8>;
    fn encode(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn decode(bytes: &[u8]) -> Result<String, RowError> {
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// Eight bytes taken as they are (a blk directory's XOR key).
impl Codec for [u8; 8] {
    type Bytes = [u8; 8];
    fn encode(&self) -> [u8; 8] {
        *self
    }
    fn decode(b: &[u8]) -> Result<[u8; 8], RowError> {
        Dec::all("8 bytes", b, |d| d.take())
    }
}

/// Bytes the layout does not interpret (an OS path, a file's XOR key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Raw(pub Vec<u8>);

impl Codec for Raw {
    type Bytes = Vec<u8>;
    fn encode(&self) -> Vec<u8> {
        self.0.clone()
    }
    fn decode(bytes: &[u8]) -> Result<Raw, RowError> {
        Ok(Raw(bytes.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dec_reads_in_order_and_refuses_leftovers() {
        let bytes = [0, 0, 0, 7, 1, 2];
        let mut d = Dec::new("t", &bytes);
        assert_eq!(d.u32().unwrap(), 7);
        assert_eq!(d.bytes(1).unwrap(), &[1]);
        assert!(d.u32().is_err(), "only one byte is left");
        assert_eq!(
            Dec::all("t", &bytes, Dec::u32).unwrap_err(),
            RowError { row: "t", len: 6 }
        );
        assert_eq!(u64::decode(&5u64.encode()).unwrap(), 5);
        assert!(<()>::decode(&[1]).is_err());
        assert_eq!(String::decode(&[b'a', 0xff]).unwrap(), "a\u{fffd}");
    }

    #[test]
    fn varints_round_trip_at_every_width_and_refuse_what_no_encoder_writes() {
        let mut widths = Vec::new();
        for n in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut v = Inline::<10>::new();
            v.varint(n);
            widths.push(v.len());
            let mut d = Dec::new("t", &v);
            assert_eq!(d.varint().unwrap(), n);
            assert!(d.is_empty());
        }
        assert_eq!(widths, [1, 1, 1, 2, 2, 3, 5, 10]);
        for n in [0, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let mut v = Inline::<10>::new();
            v.zigzag(n);
            assert_eq!(Dec::new("t", &v).zigzag().unwrap(), n);
            assert!(
                v.len() == 1 || n.unsigned_abs() > 63,
                "{n}: {} bytes",
                v.len()
            );
        }
        for n in [None, Some(0), Some(u64::MAX - 1)] {
            let mut v = Inline::<10>::new();
            v.varint_or_none(n);
            assert_eq!(Dec::new("t", &v).varint_or_none().unwrap(), n);
        }
        // Cut short, bits past 64, and more than ten bytes.
        assert!(Dec::new("t", &[0x80]).varint().is_err());
        let mut past_64 = [0xff; 10];
        past_64[9] = 0x02;
        assert!(Dec::new("t", &past_64).varint().is_err());
        assert!(Dec::new("t", &[0x80; 11]).varint().is_err());
        assert!(Dec::new("t", &[0x80, 0x80, 0x80, 0x80, 0x10])
            .varint32()
            .is_err());
    }
}
