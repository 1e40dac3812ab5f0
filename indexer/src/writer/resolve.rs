//! Finding the coin an input spends (the cache, the index, or a prevouts
//! file for coins from before the index's start) and address ids.

use anyhow::{bail, Result};
use bitcoin::OutPoint;
use satflow_schema::block::ChainPoint;
use satflow_schema::cf;
use satflow_schema::script::{classify, AddrKey, ScriptType};
use satflow_schema::tx::OutputRow;
use satflow_schema::AddrId;

use super::{Spent, Unspent, Writer};
use crate::prevouts::Coin;
use crate::store::SortedBatch;

impl Writer<'_> {
    /// The coin `prevout` names: from the index, or, in an index that
    /// starts after genesis, a coin from before it, described by `given`
    /// when a prevouts file was supplied.
    pub(super) fn resolve(
        &mut self,
        batch: &mut SortedBatch,
        prevout: &OutPoint,
        given: Option<&Coin>,
    ) -> Result<Spent> {
        if let Some(u) = self.take_unspent(prevout)? {
            if let Some(c) = given.filter(|c| c.value != u.value) {
                bail!(
                    "the prevouts file says {} sat, the index {} sat",
                    c.value,
                    u.value
                );
            }
            return Ok(Spent {
                output: u.output,
                value: Some(u.value),
                addr: u.addr,
                outside: false,
            });
        }
        let Some(ChainPoint { height, .. }) = self.start else {
            bail!("its transaction is not in the index");
        };
        let (value, script_type, addr) = match given {
            Some(c) => {
                let (kind, key) = classify(&c.script);
                let addr = key.map(|k| self.addr_id(batch, k)).transpose()?;
                (Some(c.value), kind, addr)
            }
            None => (None, ScriptType::Unknown, None),
        };
        let output = self.next_outside;
        self.next_outside = output + 1;
        tracing::trace!("{prevout}: a coin from before height {height}");
        let row = OutputRow {
            tx: None,
            vout: prevout.vout,
            value: value.unwrap_or(0),
            script_type,
            addr,
        };
        batch.put::<cf::Outputs>(&output, &row);
        batch.put::<cf::Outside>(&output, &prevout.txid);
        Ok(Spent {
            output,
            value,
            addr,
            outside: true,
        })
    }

    /// The unspent output from the index; None when its tx is not indexed.
    pub(super) fn take_unspent(&mut self, prevout: &OutPoint) -> Result<Option<Unspent>> {
        if let Some(u) = self.caches.utxos.remove(prevout) {
            return Ok(Some(u));
        }
        let Some((_, tx)) = self.store.find_tx_row(&prevout.txid)? else {
            return Ok(None);
        };
        if prevout.vout >= tx.output_count {
            bail!("its transaction has only {} outputs", tx.output_count);
        }
        let output = tx.first_output + u64::from(prevout.vout);
        let row = self.store.need::<cf::Outputs>(&output)?;
        Ok(Some(Unspent {
            output,
            value: row.value,
            addr: row.addr,
        }))
    }

    pub(super) fn addr_id(&mut self, batch: &mut SortedBatch, key: AddrKey) -> Result<AddrId> {
        if let Some(id) = self.caches.addrs.get(&key) {
            return Ok(id);
        }
        let id = match self.store.get::<cf::AddrIds>(&key)? {
            Some(id) => id,
            None => {
                let id = self.ids.addr;
                self.ids.addr = id + 1;
                batch.put::<cf::AddrIds>(&key, &id);
                batch.append::<cf::Addrs>(&id, &key);
                id
            }
        };
        self.caches.addrs.insert(key, id);
        Ok(id)
    }
}
