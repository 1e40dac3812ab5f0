//! Applying a block: its rows, the spends of the coins it consumes, and
//! the stats and history of every address it touches.

use anyhow::{Context, Result};
use bitcoin::OutPoint;
use satflow_schema::block::{BlockLoc, BlockRow, ChainPoint};
use satflow_schema::cf;
use satflow_schema::script::ScriptType;
use satflow_schema::tx::{InputRef, OutputRow};
use satflow_schema::{Height, TxidPrefix};

use super::{received_delta, set_tip, spent_delta, Direction, Unspent, Writer};
use crate::parse::ParsedBlock;
use crate::prevouts::Prevouts;
use crate::store::SortedBatch;

impl Writer<'_> {
    /// `prevouts` describes the coins the block spends, for an index that
    /// starts after genesis; the index's own rows win, and must agree.
    pub fn apply(
        &mut self,
        batch: &mut SortedBatch,
        height: Height,
        loc: BlockLoc,
        block: &ParsedBlock,
        prevouts: Option<&Prevouts>,
    ) -> Result<BlockRow> {
        if let Some(p) = prevouts {
            p.check_len(block.txs.iter().map(|t| t.spends.len()).sum())?;
        }
        let mut given = prevouts.map(|p| p.coins.iter());
        let first = self.ids;
        let (mut fees, mut inputs) = (Some(0u64), 0u32);
        for (position, tx) in block.txs.iter().enumerate() {
            let txnum = self.ids.tx;
            self.ids.tx = txnum + 1;
            self.touched.clear();
            let mut value_in = Some(0u64);
            let mut spent_outputs = Vec::with_capacity(tx.spends.len());
            for (vin, prevout) in tx.spends.iter().enumerate() {
                let coin = given.as_mut().and_then(|g| g.next());
                let spent = self.resolve(batch, prevout, coin).with_context(|| {
                    let described = match prevouts {
                        Some(p) => format!(" (prevouts file {})", p.path.display()),
                        None => String::new(),
                    };
                    format!(
                        "block {} at height {height}: tx {} input {vin} spends {prevout}{described}",
                        block.hash, tx.txid
                    )
                })?;
                // Saturating, like the bulk path: values come from the blocks
                // (and prevouts files), and no input may panic the run.
                value_in = value_in.zip(spent.value).map(|(a, b)| a.saturating_add(b));
                spent_outputs.push(spent.output);
                if !spent.outside {
                    self.recent.spent(spent.output);
                }
                batch.put::<cf::Spends>(
                    &spent.output,
                    &InputRef {
                        tx: txnum,
                        vin: vin as u32,
                    },
                );
                if let (Some(a), Some(value)) = (spent.addr, spent.value) {
                    if !spent.outside && self.pending_utxos.remove(&(a, spent.output)).is_none() {
                        batch.delete::<cf::AddrUtxos>(&(a, spent.output));
                    }
                    self.touch(a, spent_delta(value, spent.outside));
                }
            }
            if !tx.is_coinbase() {
                batch.append::<cf::Inputs>(&txnum, &spent_outputs);
            }
            inputs += tx.input_count();
            if tx.is_coinbase() {
                self.overwrite(batch, tx, txnum)?;
            }
            let first_output = self.ids.output;
            for (vout, out) in tx.outputs.iter().enumerate() {
                let output = self.ids.output;
                self.ids.output = output + 1;
                let addr = out.addr.map(|k| self.addr_id(batch, k)).transpose()?;
                let row = OutputRow {
                    tx: Some(txnum),
                    vout: vout as u32,
                    value: out.value,
                    script_type: out.script_type,
                    addr,
                };
                batch.append::<cf::Outputs>(&output, &row);
                if let Some(a) = addr {
                    self.pending_utxos.insert((a, output), out.value);
                    self.touch(a, received_delta(out.value));
                }
                // OP_RETURN outputs can never be spent: not worth a slot.
                if out.script_type != ScriptType::OpReturn {
                    let unspent = Unspent {
                        output,
                        value: out.value,
                        addr,
                    };
                    self.caches.utxos.insert(
                        OutPoint {
                            txid: tx.txid,
                            vout: vout as u32,
                        },
                        unspent,
                    );
                }
            }
            let fee = value_in
                .map(|v| tx.fee(v, &block.hash, height))
                .transpose()?;
            fees = fees.zip(fee).map(|(a, b)| a.saturating_add(b));
            let row = tx.row(height, position as u32, fee, first_output);
            batch.append::<cf::Txs>(&txnum, &row);
            batch.put::<cf::Txids>(&(TxidPrefix::of(&tx.txid), txnum), &());
            self.write_touched(batch, txnum, Direction::Apply);
        }
        let row = BlockRow {
            hash: block.hash,
            header: block.header,
            loc,
            weight: block.weight,
            tx_count: block.txs.len() as u32,
            input_count: inputs,
            output_count: (self.ids.output - first.output) as u32,
            fees,
            first_tx: first.tx,
            first_output: first.output,
            first_addr: first.addr,
            new_addrs: (self.ids.addr - first.addr) as u32,
        };
        batch.put::<cf::Blocks>(&height, &row);
        batch.put::<cf::BlockHeight>(&block.hash, &height);
        set_tip(
            batch,
            Some(ChainPoint {
                height,
                hash: block.hash,
            }),
        );
        Ok(row)
    }
}
