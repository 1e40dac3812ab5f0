//! Typed iteration over a family: the store hands over raw key-value pairs
//! in key order, `Rows` decodes them as the family's types.

use std::marker::PhantomData;

use crate::cf::Family;
use crate::codec::{Codec, RowError};

/// Which way a scan walks the keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

/// A failed read: the database's own error, or a row that did not decode.
#[derive(Debug, thiserror::Error)]
pub enum ScanError<E> {
    #[error(transparent)]
    Read(E),
    #[error("{family}: {source}")]
    Row {
        family: &'static str,
        source: RowError,
    },
}

/// The rows of family `F` that a raw iterator yields, decoded.
pub struct Rows<F, I> {
    raw: I,
    _family: PhantomData<F>,
}

impl<F, I> Rows<F, I> {
    pub fn new(raw: I) -> Rows<F, I> {
        Rows {
            raw,
            _family: PhantomData,
        }
    }
}

impl<F, I, K, V, E> Iterator for Rows<F, I>
where
    F: Family,
    I: Iterator<Item = Result<(K, V), E>>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    type Item = Result<(F::Key, F::Value), ScanError<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = |source| ScanError::Row {
            family: F::NAME,
            source,
        };
        Some(match self.raw.next()? {
            Err(e) => Err(ScanError::Read(e)),
            Ok((k, v)) => F::Key::decode(k.as_ref())
                .and_then(|k| Ok((k, F::Value::decode(v.as_ref())?)))
                .map_err(row),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::HistoryRow;
    use crate::cf::History;
    use crate::ids::{AddrId, TxNum};

    #[test]
    fn rows_decode_and_report_the_family_of_a_bad_row() {
        let good = HistoryRow {
            received: 5,
            sent: 0,
            opened: 0,
        };
        type Raw = Result<(Vec<u8>, Vec<u8>), std::io::Error>;
        let raw: Vec<Raw> = vec![
            Ok((
                (AddrId(1), TxNum(2)).encode().to_vec(),
                good.encode().to_vec(),
            )),
            Ok((vec![1, 2, 3], good.encode().to_vec())),
            Err(std::io::Error::other("disk")),
        ];
        let mut rows = Rows::<History, _>::new(raw.into_iter());
        assert_eq!(rows.next().unwrap().unwrap(), ((AddrId(1), TxNum(2)), good));
        let bad = rows.next().unwrap().unwrap_err();
        assert_eq!(bad.to_string(), "history: corrupt pair key row (3 bytes)");
        assert_eq!(rows.next().unwrap().unwrap_err().to_string(), "disk");
        assert!(rows.next().is_none());
    }
}
