//! Turns parsed blocks into rows (apply) and removes them again (undo).
//! Both add to a `SortedBatch` that also carries the new tip, so the
//! database only ever holds whole blocks.

use anyhow::{anyhow, bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, OutPoint};
use rustc_hash::FxHashMap;

use crate::batch::SortedBatch;
use crate::blkfiles::BlockLoc;
use crate::cache::BoundedMap;
use crate::parse::ParsedBlock;
use crate::prevouts::{Coin, Prevouts};
use crate::schema::{
    cf, decode_inputs, key_pair, key_u32, key_u64, meta, txid_key, AddrStats, BlockRow, Dec,
    HistoryRow, InputRef, NextIds, OutputRow, TxRow, FIRST_OUTSIDE_OUTPUT, OUTSIDE_TX,
};
use crate::script::{classify, AddrKey, ScriptType};
use crate::store::Store;

/// An output not yet spent, as the next spender needs it.
#[derive(Clone, Copy, Debug)]
struct Unspent {
    output: u64,
    value: u64,
    addr: Option<u64>,
}

/// The coin an input spends, once resolved.
struct Spent {
    output: u64,
    /// None for a coin from before the index's first block that no
    /// prevouts file described.
    value: Option<u64>,
    addr: Option<u64>,
    /// Created before the index's first block.
    outside: bool,
}

/// What one transaction did to one address.
#[derive(Clone, Copy, Debug, Default)]
struct Touch {
    stats: AddrStats,
    /// See `HistoryRow::opened`.
    opened: u64,
}

pub struct Writer<'s> {
    store: &'s Store,
    ids: NextIds,
    /// Set for an index that starts after genesis: there, an input may
    /// spend a coin the index never saw created.
    start: Option<(u32, BlockHash)>,
    next_outside: u64,
    caches: Caches,
    touched: FxHashMap<u64, Touch>,
    /// Stats deltas of the batch being built, merged once per address.
    pending_stats: FxHashMap<u64, AddrStats>,
    /// `addr_utxos` rows of the batch being built, by (address, output):
    /// an output spent within its own batch never reaches RocksDB, neither
    /// its row nor the row's deletion.
    pending_utxos: FxHashMap<(u64, u64), u64>,
}

/// Entries per cache generation for a memory budget (bytes per entry are
/// the key, the value and the hash table's overhead, rounded up).
fn generation(budget_bytes: usize, entry_bytes: usize) -> usize {
    budget_bytes / 2 / entry_bytes
}

/// What a writer remembers of the chain: unspent outputs and address
/// numbers, bounded in memory whatever the chain's size. A follower keeps
/// them from one run to the next.
pub struct Caches {
    utxos: BoundedMap<OutPoint, Unspent>,
    addrs: BoundedMap<AddrKey, u64>,
}

impl Caches {
    pub fn new(cache_bytes: usize) -> Caches {
        Caches {
            utxos: BoundedMap::new(generation(cache_bytes * 3 / 4, 96)),
            addrs: BoundedMap::new(generation(cache_bytes / 4, 64)),
        }
    }
}

impl<'s> Writer<'s> {
    /// `caches` must be empty or come from a writer whose last batch was
    /// committed: they hold nothing the database does not.
    pub fn new(store: &'s Store, caches: Caches) -> Result<Writer<'s>> {
        let ids = store.tip_block()?.map(|b| b.next_ids()).unwrap_or_default();
        remove_appended_above(store, ids)?;
        let next_outside = match store.last_key(cf::OUTSIDE)? {
            Some(k) => Dec::new("outside key", &k).u64()? + 1,
            None => FIRST_OUTSIDE_OUTPUT,
        };
        Ok(Writer {
            store,
            ids,
            start: store.start()?,
            next_outside,
            caches,
            touched: FxHashMap::default(),
            pending_stats: FxHashMap::default(),
            pending_utxos: FxHashMap::default(),
        })
    }

    /// Adds the batch's pending address stats and unspent outputs; call
    /// last before committing `batch`.
    pub fn finish_batch(&mut self, batch: &mut SortedBatch) {
        for (addr, delta) in self.pending_stats.drain() {
            batch.merge(cf::ADDR_STATS, key_u64(addr), delta.encode());
        }
        for ((addr, output), value) in self.pending_utxos.drain() {
            batch.put(cf::ADDR_UTXOS, key_pair(addr, output), key_u64(value));
        }
    }

    /// The caches, for the next run's writer (see `new`).
    pub fn into_caches(self) -> Caches {
        self.caches
    }

    /// Call after each committed batch: only then may the caches forget.
    pub fn committed(&mut self) {
        self.caches.utxos.evict_if_full();
        self.caches.addrs.evict_if_full();
    }

    /// `prevouts` describes the coins the block spends, for an index that
    /// starts after genesis; the index's own rows win, and must agree.
    pub fn apply(
        &mut self,
        batch: &mut SortedBatch,
        height: u32,
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
            self.ids.tx += 1;
            self.touched.clear();
            let mut value_in = Some(0u64);
            let mut spent_outputs = Vec::with_capacity(tx.spends.len() * 8);
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
                value_in = value_in.zip(spent.value).map(|(a, b)| a + b);
                spent_outputs.extend_from_slice(&key_u64(spent.output));
                batch.put(
                    cf::SPENDS,
                    key_u64(spent.output),
                    InputRef {
                        tx: txnum,
                        vin: vin as u32,
                    }
                    .encode(),
                );
                if let (Some(a), Some(value)) = (spent.addr, spent.value) {
                    if !spent.outside && self.pending_utxos.remove(&(a, spent.output)).is_none() {
                        batch.delete(cf::ADDR_UTXOS, key_pair(a, spent.output));
                    }
                    self.touch(a, spent_delta(value, spent.outside));
                }
            }
            if !tx.is_coinbase() {
                batch.append(cf::INPUTS, key_u64(txnum), spent_outputs);
            }
            inputs += tx.input_count();
            let first_output = self.ids.output;
            let mut value_out = 0u64;
            for (vout, out) in tx.outputs.iter().enumerate() {
                let output = self.ids.output;
                self.ids.output += 1;
                value_out += out.value;
                let addr = out.addr.map(|k| self.addr_id(batch, k)).transpose()?;
                let row = OutputRow {
                    tx: txnum,
                    vout: vout as u32,
                    value: out.value,
                    script_type: out.script_type,
                    addr,
                };
                batch.append(cf::OUTPUTS, key_u64(output), row.encode());
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
            let fee = match value_in {
                _ if tx.is_coinbase() => Some(0),
                None => None,
                Some(value_in) => Some(value_in.checked_sub(value_out).ok_or_else(|| {
                    anyhow!("block {} at height {height}: tx {} spends {value_in} sat but pays out {value_out}", block.hash, tx.txid)
                })?),
            };
            fees = fees.zip(fee).map(|(a, b)| a + b);
            let row = TxRow {
                txid: tx.txid,
                height,
                position: position as u32,
                version: tx.version,
                locktime: tx.locktime,
                size: tx.size,
                weight: tx.weight,
                fee,
                input_count: tx.input_count(),
                output_count: tx.outputs.len() as u32,
                first_output,
                offset_in_block: tx.offset,
            };
            batch.append(cf::TXS, key_u64(txnum), row.encode());
            batch.put(cf::TXIDS, txid_key(&tx.txid, txnum), []);
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
        batch.put(cf::BLOCKS, key_u32(height), row.encode());
        batch.put(
            cf::BLOCK_HEIGHT,
            block.hash.as_byte_array(),
            key_u32(height),
        );
        set_tip(batch, Some((height, block.hash)));
        Ok(row)
    }

    /// Removes the tip block's rows: the exact inverse of `apply`, computed
    /// from the rows themselves. Commit before undoing the next block.
    pub fn undo_tip(&mut self, batch: &mut SortedBatch) -> Result<BlockRow> {
        let (height, _) = self
            .store
            .tip()?
            .context("nothing to undo: the index is empty")?;
        let row = self
            .store
            .block(height)?
            .with_context(|| format!("tip block row at height {height} is missing"))?;
        // Ids above the new tip are about to be reused.
        self.caches.utxos.clear();
        self.caches.addrs.clear();
        let end = row.next_ids();
        // Newest first, so an output created and spent inside the block
        // ends up deleted, not restored.
        for txnum in (row.first_tx..end.tx).rev() {
            let tx = TxRow::decode(&self.store.need(cf::TXS, &key_u64(txnum))?)?;
            self.touched.clear();
            for output in tx.first_output..tx.first_output + u64::from(tx.output_count) {
                let out = OutputRow::decode(&self.store.need(cf::OUTPUTS, &key_u64(output))?)?;
                batch.delete(cf::OUTPUTS, key_u64(output));
                if let Some(a) = out.addr {
                    batch.delete(cf::ADDR_UTXOS, key_pair(a, output));
                    self.touch(a, received_delta(out.value));
                }
            }
            let spent_outputs = match tx.is_coinbase() {
                true => Vec::new(),
                false => decode_inputs(&self.store.need(cf::INPUTS, &key_u64(txnum))?)?,
            };
            batch.delete(cf::INPUTS, key_u64(txnum));
            for spent in spent_outputs {
                let out = OutputRow::decode(&self.store.need(cf::OUTPUTS, &key_u64(spent))?)?;
                batch.delete(cf::SPENDS, key_u64(spent));
                let outside = out.tx == OUTSIDE_TX;
                if outside {
                    // Only its spend brought it into the index.
                    batch.delete(cf::OUTPUTS, key_u64(spent));
                    batch.delete(cf::OUTSIDE, key_u64(spent));
                    self.next_outside = self.next_outside.min(spent);
                }
                if let Some(a) = out.addr {
                    if !outside {
                        batch.put(cf::ADDR_UTXOS, key_pair(a, spent), key_u64(out.value));
                    }
                    self.touch(a, spent_delta(out.value, outside));
                }
            }
            batch.delete(cf::TXS, key_u64(txnum));
            batch.delete(cf::TXIDS, txid_key(&tx.txid, txnum));
            self.write_touched(batch, txnum, Direction::Undo);
        }
        // After the stats merges, so the deletes win.
        self.finish_batch(batch);
        for addr in row.first_addr..end.addr {
            let key = self.store.need(cf::ADDRS, &key_u64(addr))?;
            batch.delete(cf::ADDR_IDS, key);
            batch.delete(cf::ADDRS, key_u64(addr));
            batch.delete(cf::ADDR_STATS, key_u64(addr));
        }
        batch.delete(cf::BLOCKS, key_u32(height));
        batch.delete(cf::BLOCK_HEIGHT, row.hash.as_byte_array());
        let base = self.start.map_or(0, |(h, _)| h);
        let new_tip = match height.checked_sub(1).filter(|&h| h >= base) {
            Some(h) => Some((
                h,
                self.store
                    .block(h)?
                    .with_context(|| format!("block row at height {h} is missing"))?
                    .hash,
            )),
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

    fn touch(&mut self, addr: u64, delta: Touch) {
        let t = self.touched.entry(addr).or_default();
        t.stats.add(&delta.stats);
        t.opened += delta.opened;
    }

    /// One history row and one stats delta per address the tx touched.
    fn write_touched(&mut self, batch: &mut SortedBatch, txnum: u64, dir: Direction) {
        for (&addr, t) in &self.touched {
            let delta = AddrStats {
                tx_count: 1,
                ..t.stats
            };
            let key = key_pair(addr, txnum);
            let pending = self.pending_stats.entry(addr).or_default();
            match dir {
                Direction::Apply => {
                    let h = HistoryRow {
                        received: delta.received as u64 - t.opened,
                        sent: delta.sent as u64,
                        opened: t.opened,
                    };
                    batch.put(cf::HISTORY, key, h.encode());
                    pending.add(&delta);
                }
                Direction::Undo => {
                    batch.delete(cf::HISTORY, key);
                    pending.add(&delta.negated());
                }
            }
        }
    }

    /// The coin `prevout` names: from the index, or, in an index that
    /// starts after genesis, a coin from before it, described by `given`
    /// when a prevouts file was supplied.
    fn resolve(
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
        let Some((height, _)) = self.start else {
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
        self.next_outside += 1;
        tracing::trace!("{prevout}: a coin from before height {height}");
        let row = OutputRow {
            tx: OUTSIDE_TX,
            vout: prevout.vout,
            value: value.unwrap_or(0),
            script_type,
            addr,
        };
        batch.put(cf::OUTPUTS, key_u64(output), row.encode());
        batch.put(cf::OUTSIDE, key_u64(output), prevout.txid.as_byte_array());
        Ok(Spent {
            output,
            value,
            addr,
            outside: true,
        })
    }

    /// The unspent output from the index; None when its tx is not indexed.
    fn take_unspent(&mut self, prevout: &OutPoint) -> Result<Option<Unspent>> {
        if let Some(u) = self.caches.utxos.remove(prevout) {
            return Ok(Some(u));
        }
        let Some(txnum) = self.store.find_tx(&prevout.txid)? else {
            return Ok(None);
        };
        let tx = TxRow::decode(&self.store.need(cf::TXS, &key_u64(txnum))?)?;
        if prevout.vout >= tx.output_count {
            bail!("its transaction has only {} outputs", tx.output_count);
        }
        let output = tx.first_output + u64::from(prevout.vout);
        let row = OutputRow::decode(&self.store.need(cf::OUTPUTS, &key_u64(output))?)?;
        Ok(Some(Unspent {
            output,
            value: row.value,
            addr: row.addr,
        }))
    }

    fn addr_id(&mut self, batch: &mut SortedBatch, key: AddrKey) -> Result<u64> {
        if let Some(id) = self.caches.addrs.get(&key) {
            return Ok(id);
        }
        let bytes = key.to_bytes();
        let id = match self.store.get(cf::ADDR_IDS, &bytes)? {
            Some(v) => Dec::new("addr id", &v).u64()?,
            None => {
                let id = self.ids.addr;
                self.ids.addr += 1;
                batch.put(cf::ADDR_IDS, &bytes, key_u64(id));
                batch.append(cf::ADDRS, key_u64(id), &bytes);
                id
            }
        };
        self.caches.addrs.insert(key, id);
        Ok(id)
    }
}

/// Removes appended rows (`SortedBatch::commit`) of ids from `ids` on: those
/// of a batch whose other rows a crash lost.
fn remove_appended_above(store: &Store, ids: NextIds) -> Result<()> {
    // Above every 8-byte key.
    let end = [0xff; 9];
    // From here on: coins from before the index's start, not appended.
    let outside = key_u64(FIRST_OUTSIDE_OUTPUT);
    let ranges = [
        (cf::TXS, ids.tx, &end[..]),
        (cf::INPUTS, ids.tx, &end[..]),
        (cf::OUTPUTS, ids.output, &outside[..]),
        (cf::ADDRS, ids.addr, &end[..]),
    ];
    for (family, from, to) in ranges {
        if store.remove_range(family, &key_u64(from), to)? {
            tracing::warn!(
                "{}: removed {family} rows from id {from} on, left by an interrupted run",
                store.path().display()
            );
        }
    }
    Ok(())
}

/// An output paid to the address.
fn received_delta(value: u64) -> Touch {
    Touch {
        stats: AddrStats {
            received: value as i64,
            utxo_count: 1,
            ..Default::default()
        },
        opened: 0,
    }
}

/// A coin of the address spent; one from outside the index is booked as
/// received too (see `HistoryRow::opened`).
fn spent_delta(value: u64, outside: bool) -> Touch {
    let v = value as i64;
    match outside {
        false => Touch {
            stats: AddrStats {
                sent: v,
                utxo_count: -1,
                ..Default::default()
            },
            opened: 0,
        },
        true => Touch {
            stats: AddrStats {
                sent: v,
                received: v,
                ..Default::default()
            },
            opened: value,
        },
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Apply,
    Undo,
}

pub fn set_tip(batch: &mut SortedBatch, tip: Option<(u32, BlockHash)>) {
    match tip {
        Some((height, hash)) => {
            let mut v = height.to_be_bytes().to_vec();
            v.extend_from_slice(hash.as_byte_array());
            batch.put(cf::META, meta::TIP, v);
        }
        None => batch.delete(cf::META, meta::TIP),
    }
}
