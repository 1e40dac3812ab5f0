//! BIP30: a coinbase whose txid an earlier transaction already has. Its
//! coins replace the earlier transaction's unspent ones, as in Bitcoin
//! Core's UTXO set (mainnet: the coinbases of 91,812 and 91,722, repeated
//! at 91,842 and 91,880), so those can never be spent. Each gets a
//! `meta::Overwritten` row in the batch of the block that overwrote it,
//! and undoing that block deletes the row: the coin is unspent again, as
//! in a fresh index of the chain without the block.
//!
//! Why a row of its own rather than taking the coin out of `addr_utxos`
//! and `addr_stats`: an address's balance is `received − sent`, and both
//! are the sums of its `history` rows (the bulk path builds them so, and
//! cluster figures and a lone address's figures before the cluster tip
//! are summed from `history` too). Dropping the coin there would book as
//! sent what no transaction sent, or unreceive what a transaction did
//! pay, and the two sums would no longer agree. The row changes no other
//! row: undo is one delete, and the bulk path writes the same row from its
//! own view (`run::bulk::coins`). Readers (the query crate's `addresses`)
//! leave the coin out of the balance, the unspent count and the unspent
//! outputs.
//!
//! Only coinbases are checked, once per block: any other transaction that
//! repeats a txid spends the same coins, so one of its parents must repeat
//! first, and a per-tx txid lookup would cost every block.

use anyhow::Result;
use bitcoin::{OutPoint, Txid};
use rustc_hash::FxHashSet;
use satflow_schema::meta::{self, OverwrittenCoin};
use satflow_schema::tx::TxRow;
use satflow_schema::{cf, OutNum, TxNum};

use super::{Unspent, Writer};
use crate::parse::ParsedTx;
use crate::store::SortedBatch;

/// What batches that may not be committed yet did, which the database
/// cannot tell yet: the outputs their inputs spent and their coinbases'
/// txids. Like the coin cache, it forgets a generation at a time, only
/// when a batch was committed (`Writer::committed`), so whatever it
/// forgets the database holds.
#[derive(Default)]
pub(super) struct Recent {
    young: Generation,
    old: Generation,
}

#[derive(Default)]
struct Generation {
    spent: Vec<OutNum>,
    coinbases: FxHashSet<Txid>,
}

impl Recent {
    /// Every input's coin, as it is spent: a push, the whole cost on the
    /// path of every input.
    pub(super) fn spent(&mut self, output: OutNum) {
        self.young.spent.push(output);
    }

    fn coinbase(&mut self, txid: Txid) {
        self.young.coinbases.insert(txid);
    }

    fn has_coinbase(&self, txid: &Txid) -> bool {
        self.young.coinbases.contains(txid) || self.old.coinbases.contains(txid)
    }

    /// A linear search, made only for a repeated txid.
    fn was_spent(&self, output: OutNum) -> bool {
        self.young.spent.contains(&output) || self.old.spent.contains(&output)
    }

    /// Everything recorded before the previous call is committed now.
    pub(super) fn committed(&mut self) {
        self.old = std::mem::take(&mut self.young);
    }

    pub(super) fn clear(&mut self) {
        *self = Recent::default();
    }
}

impl Writer<'_> {
    /// Call for coinbase `tx`, numbered `txnum`, before its outputs enter
    /// the coin cache: records the coins it overwrites.
    pub(super) fn overwrite(
        &mut self,
        batch: &mut SortedBatch,
        tx: &ParsedTx,
        txnum: TxNum,
    ) -> Result<()> {
        // The latest earlier tx with this txid, when there is one. In a
        // batch that may not be committed yet, its unspent coins are all
        // in the cache, which forgets only committed coins; otherwise its
        // rows are in the database.
        let in_flight = self.recent.has_coinbase(&tx.txid);
        self.recent.coinbase(tx.txid);
        let committed: Option<TxRow> = match in_flight {
            true => None,
            false => match self.store.find_tx_row(&tx.txid)? {
                Some((_, row)) => Some(row),
                None => return Ok(()),
            },
        };
        for vout in 0..tx.outputs.len() as u32 {
            let point = OutPoint {
                txid: tx.txid,
                vout,
            };
            let coin = match (self.caches.utxos.get(&point), &committed) {
                (Some(unspent), _) => Some(unspent),
                (None, Some(row)) if vout < row.output_count => {
                    let output = row.first_output + u64::from(vout);
                    self.committed_unspent(output)?
                }
                _ => None,
            };
            if let Some(Unspent {
                output,
                value,
                addr: Some(addr),
            }) = coin
            {
                let row = OverwrittenCoin { value, by: txnum };
                batch.put_meta(meta::Overwritten(addr, output), &row);
            }
        }
        Ok(())
    }

    /// A committed output the cache does not hold, if nothing spent it.
    fn committed_unspent(&self, output: OutNum) -> Result<Option<Unspent>> {
        if self.recent.was_spent(output) || self.store.get::<cf::Spends>(&output)?.is_some() {
            return Ok(None);
        }
        let row = self.store.need::<cf::Outputs>(&output)?;
        Ok(Some(Unspent {
            output,
            value: row.value,
            addr: row.addr,
        }))
    }

    /// Call when undoing coinbase `tx`, numbered `txnum`: the coins it
    /// overwrote are unspent again.
    pub(super) fn restore_overwritten(
        &self,
        batch: &mut SortedBatch,
        tx: &TxRow,
        txnum: TxNum,
    ) -> Result<()> {
        let earlier = self.store.txs_with_id(&tx.txid)?;
        let Some((_, previous)) = earlier.into_iter().rev().find(|&(n, _)| n < txnum) else {
            return Ok(());
        };
        for output in previous.outputs() {
            let Some(addr) = self.store.need::<cf::Outputs>(&output)?.addr else {
                continue;
            };
            let entry = meta::Overwritten(addr, output);
            if self.store.meta(entry)?.is_some_and(|c| c.by == txnum) {
                batch.delete_meta(meta::Overwritten(addr, output));
            }
        }
        Ok(())
    }
}
