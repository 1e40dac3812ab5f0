//! Undoing the tip block: the exact inverse of `apply`, computed from the
//! block's own rows.

use anyhow::{Context, Result};
use satflow_schema::block::{BlockRow, ChainPoint};
use satflow_schema::{cf, AddrId, Height, NextIds, TxNum, TxidPrefix};

use super::{received_delta, set_tip, spent_delta, Direction, Writer};
use crate::store::SortedBatch;

impl Writer<'_> {
    /// Removes the tip block's rows: the exact inverse of `apply`, computed
    /// from the rows themselves. Commit before undoing the next block.
    pub fn undo_tip(&mut self, batch: &mut SortedBatch) -> Result<BlockRow> {
        let height = self
            .store
            .tip()?
            .context("nothing to undo: the index is empty")?
            .height;
        let row = self.store.need_block(height)?;
        // Ids above the new tip are about to be reused.
        self.caches.utxos.clear();
        self.caches.addrs.clear();
        self.recent.clear();
        let end = row.next_ids();
        // Newest first, so an output created and spent inside the block
        // ends up deleted, not restored.
        for txnum in row.txs().rev().map(TxNum) {
            let tx = self.store.need::<cf::Txs>(&txnum)?;
            self.touched.clear();
            for output in tx.outputs() {
                let out = self.store.need::<cf::Outputs>(&output)?;
                batch.delete::<cf::Outputs>(&output);
                if let Some(a) = out.addr {
                    batch.delete::<cf::AddrUtxos>(&(a, output));
                    self.touch(a, received_delta(out.value));
                }
            }
            let spent_outputs = match tx.is_coinbase() {
                true => Vec::new(),
                false => self.store.need::<cf::Inputs>(&txnum)?,
            };
            batch.delete::<cf::Inputs>(&txnum);
            for spent in spent_outputs {
                let out = self.store.need::<cf::Outputs>(&spent)?;
                batch.delete::<cf::Spends>(&spent);
                let outside = out.tx.is_none();
                if outside {
                    // Only its spend brought it into the index.
                    batch.delete::<cf::Outputs>(&spent);
                    batch.delete::<cf::Outside>(&spent);
                    self.next_outside = self.next_outside.min(spent);
                }
                if let Some(a) = out.addr {
                    if !outside {
                        batch.put::<cf::AddrUtxos>(&(a, spent), &out.value);
                    }
                    self.touch(a, spent_delta(out.value, outside));
                }
            }
            if tx.is_coinbase() {
                self.restore_overwritten(batch, &tx, txnum)?;
            }
            batch.delete::<cf::Txs>(&txnum);
            batch.delete::<cf::Txids>(&(TxidPrefix::of(&tx.txid), txnum));
            self.write_touched(batch, txnum, Direction::Undo);
        }
        // After the stats merges, so the deletes win.
        self.finish_batch(batch);
        for addr in (row.first_addr.0..end.addr.0).map(AddrId) {
            let key = self.store.need::<cf::Addrs>(&addr)?;
            batch.delete::<cf::AddrIds>(&key);
            batch.delete::<cf::Addrs>(&addr);
            batch.delete::<cf::AddrStats>(&addr);
        }
        batch.delete::<cf::Blocks>(&height);
        batch.delete::<cf::BlockHeight>(&row.hash);
        let base = self.start.map_or(Height(0), |p| p.height);
        let new_tip = match height.0.checked_sub(1).map(Height).filter(|&h| h >= base) {
            Some(h) => Some(ChainPoint {
                height: h,
                hash: self.store.need_block(h)?.hash,
            }),
            None => None,
        };
        set_tip(batch, new_tip);
        self.ids = NextIds {
            tx: row.first_tx,
            output: row.first_output,
            addr: row.first_addr,
        };
        Ok(row)
    }
}
