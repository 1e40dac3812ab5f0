//! Lookups by txid. `txids` is keyed by the txid's first 8 bytes and the
//! tx number, so a lookup scans one prefix and keeps the numbers whose
//! `txs` row holds the whole txid: usually one row, whose read callers
//! wanted anyway.

use anyhow::Result;
use bitcoin::Txid;
use satflow_schema::cf;
use satflow_schema::tx::TxRow;
use satflow_schema::{TxNum, TxidPrefix};

use super::Store;

impl Store {
    /// Every tx a txid was given, oldest first, with its row: one, except
    /// for the two BIP30 duplicates of mainnet. A prefix scan, so that the
    /// family's prefix bloom filter answers "absent" without a seek: the
    /// writer asks this for every spent coin its cache no longer holds.
    pub fn txs_with_id(&self, txid: &Txid) -> Result<Vec<(TxNum, TxRow)>> {
        let mut found = Vec::new();
        for row in self.scan_prefix::<cf::Txids, _>(&TxidPrefix::of(txid)) {
            let ((_, n), ()) = row?;
            let tx = self.need::<cf::Txs>(&n)?;
            if tx.txid == *txid {
                found.push((n, tx));
            }
        }
        Ok(found)
    }

    /// The tx a spend of `txid` refers to, and its row: its latest
    /// occurrence (a BIP30 duplicate overwrote the earlier one's outputs).
    pub fn find_tx_row(&self, txid: &Txid) -> Result<Option<(TxNum, TxRow)>> {
        Ok(self.txs_with_id(txid)?.pop())
    }

    /// The number of `find_tx_row`.
    pub fn find_tx(&self, txid: &Txid) -> Result<Option<TxNum>> {
        Ok(self.find_tx_row(txid)?.map(|(n, _)| n))
    }
}

#[cfg(test)]
mod tests {
    use bitcoin::hashes::Hash;
    use satflow_schema::{Height, OutNum};

    use super::*;
    use crate::store::{Access, SortedBatch};

    fn tx(txid: Txid, n: u64) -> TxRow {
        TxRow {
            txid,
            height: Height(1),
            position: n as u32,
            version: 2,
            locktime: 0,
            size: 100,
            weight: 400,
            fee: Some(0),
            input_count: 1,
            output_count: 1,
            first_output: OutNum(n),
            offset_in_block: 0,
        }
    }

    /// Txids that share their first 8 bytes share a prefix and are told
    /// apart by their `txs` rows; a txid of that prefix never seen is
    /// absent; a BIP30 duplicate has both its numbers.
    #[test]
    fn txids_sharing_a_prefix_are_told_apart_by_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Access::Write).unwrap();
        let txid = |last: u8| {
            let mut b = [7u8; 32];
            b[31] = last;
            Txid::from_byte_array(b)
        };
        assert_eq!(TxidPrefix::of(&txid(1)), TxidPrefix::of(&txid(2)));
        let mut batch = SortedBatch::default();
        // Tx 0 and tx 2 share a txid; tx 1 shares only its prefix.
        for (n, t) in [(0, txid(1)), (1, txid(2)), (2, txid(1))] {
            batch.put::<cf::Txs>(&TxNum(n), &tx(t, n));
            batch.put::<cf::Txids>(&(TxidPrefix::of(&t), TxNum(n)), &());
        }
        batch.commit(&store).unwrap();

        let numbers = |t: Txid| -> Vec<TxNum> {
            let found = store.txs_with_id(&t).unwrap();
            found.into_iter().map(|(n, _)| n).collect()
        };
        assert_eq!(numbers(txid(1)), [TxNum(0), TxNum(2)]);
        assert_eq!(store.find_tx(&txid(2)).unwrap(), Some(TxNum(1)));
        let (n, row) = store.find_tx_row(&txid(1)).unwrap().unwrap();
        assert_eq!((n, row.txid), (TxNum(2), txid(1)));
        assert_eq!(store.find_tx(&txid(3)).unwrap(), None);
        assert!(numbers(txid(3)).is_empty());
    }
}
