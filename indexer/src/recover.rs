//! Rows a killed run left above the tip. Both writers persist the rows of
//! the append-only families (`txs`, `outputs`, `inputs`, `addrs`) before
//! anything that refers to them, and the tip last; the bulk path also
//! ingests `blocks` and `block_height` before its tip (its `txids`,
//! `addr_ids`, `spends` and `history` wait in run files, and those above
//! the tip are dropped unread: `Store::merge_runs`). So after a crash
//! every row above the tip can be found from the appended rows above it,
//! which are removed last: a crash during recovery leaves them to find
//! again. A row is removed only where it points above the tip: the rows
//! below it stay whatever the rows above hold.

use anyhow::Result;
use satflow_schema::{cf, AddrId, Height, NextIds, OutNum, TxNum, TxidPrefix};

use crate::store::Direction::Forward;
use crate::store::Store;

/// Removes every row of the blocks above the tip.
pub fn remove_above_tip(store: &Store) -> Result<()> {
    let ids: NextIds = store.tip_block()?.map(|b| b.next_ids()).unwrap_or_default();
    let height = match store.tip()? {
        Some(tip) => Height(tip.height.0 + 1),
        None => store.base_height()?,
    };
    let mut batch = store.batch();
    let mut stranded = 0usize;
    for row in store.scan::<cf::Txs>(&ids.tx, Forward) {
        let (txnum, tx) = row?;
        batch.delete::<cf::Txids>(&(TxidPrefix::of(&tx.txid), txnum));
        stranded += 1;
    }
    for row in store.scan::<cf::Inputs>(&ids.tx, Forward) {
        let (txnum, spent) = row?;
        for output in spent {
            // Only a spend from above the tip: below it, the coin may be
            // spent by a tx that stays.
            if store
                .get::<cf::Spends>(&output)?
                .is_some_and(|s| s.tx >= ids.tx)
            {
                batch.delete::<cf::Spends>(&output);
            }
            if let Some(addr) = store.get::<cf::Outputs>(&output)?.and_then(|o| o.addr) {
                batch.delete::<cf::History>(&(addr, txnum));
            }
        }
    }
    for row in store.scan::<cf::Outputs>(&ids.output, Forward) {
        let (output, out) = row?;
        if output.is_outside() {
            break;
        }
        if let (Some(addr), Some(txnum)) = (out.addr, out.tx.filter(|&t| t >= ids.tx)) {
            batch.delete::<cf::History>(&(addr, txnum));
        }
    }
    for row in store.scan::<cf::Addrs>(&ids.addr, Forward) {
        let (_, key) = row?;
        if store
            .get::<cf::AddrIds>(&key)?
            .is_some_and(|id| id >= ids.addr)
        {
            batch.delete::<cf::AddrIds>(&key);
        }
    }
    for row in store.scan::<cf::Blocks>(&height, Forward) {
        let (h, block) = row?;
        if store.get::<cf::BlockHeight>(&block.hash)? == Some(h) {
            batch.delete::<cf::BlockHeight>(&block.hash);
        }
        batch.delete::<cf::Blocks>(&h);
    }
    if !batch.is_empty() {
        store.write(batch)?;
        store.flush()?;
    }
    let removed = [
        (
            "txs",
            ids.tx.0,
            store.remove_range::<cf::Txs>(&ids.tx, &TxNum(u64::MAX))?,
        ),
        (
            "inputs",
            ids.tx.0,
            store.remove_range::<cf::Inputs>(&ids.tx, &TxNum(u64::MAX))?,
        ),
        // Up to the coins from before the index's start, which are not appended.
        (
            "outputs",
            ids.output.0,
            store.remove_range::<cf::Outputs>(&ids.output, &OutNum::FIRST_OUTSIDE)?,
        ),
        (
            "addrs",
            ids.addr.0,
            store.remove_range::<cf::Addrs>(&ids.addr, &AddrId(u64::MAX))?,
        ),
    ];
    for (family, from, _) in removed.iter().filter(|r| r.2) {
        tracing::warn!(
            "{}: removed {family} rows from id {from} on ({stranded} transactions), left by an interrupted run",
            store.path().display()
        );
    }
    Ok(())
}
