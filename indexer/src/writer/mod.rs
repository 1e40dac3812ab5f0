//! Turns parsed blocks into rows (`apply`, with the coins inputs spend
//! found by `resolve`) and removes them again (`undo`). Both add to a
//! `SortedBatch` that also carries the new tip, so the database only ever
//! holds whole blocks.

mod apply;
mod bip30;
mod resolve;
mod undo;

use anyhow::Result;
use bitcoin::OutPoint;
use rustc_hash::FxHashMap;
use satflow_schema::address::{AddrStats, HistoryRow};
use satflow_schema::block::ChainPoint;
use satflow_schema::script::AddrKey;
use satflow_schema::{cf, meta, AddrId, NextIds, OutNum, TxNum};

use crate::cache::BoundedMap;
use crate::store::{SortedBatch, Store};

/// An output not yet spent, as the next spender needs it.
#[derive(Clone, Copy, Debug)]
struct Unspent {
    output: OutNum,
    value: u64,
    addr: Option<AddrId>,
}

/// The coin an input spends, once resolved.
struct Spent {
    output: OutNum,
    /// None for a coin from before the index's first block that no
    /// prevouts file described.
    value: Option<u64>,
    addr: Option<AddrId>,
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
    start: Option<ChainPoint>,
    next_outside: OutNum,
    caches: Caches,
    touched: FxHashMap<AddrId, Touch>,
    /// Stats deltas of the batch being built, merged once per address.
    pending_stats: FxHashMap<AddrId, AddrStats>,
    /// `addr_utxos` rows of the batch being built, by (address, output):
    /// an output spent within its own batch never reaches RocksDB, neither
    /// its row nor the row's deletion.
    pending_utxos: FxHashMap<(AddrId, OutNum), u64>,
    /// What batches not yet known to be committed spent, for BIP30.
    recent: bip30::Recent,
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
    addrs: BoundedMap<AddrKey, AddrId>,
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
        crate::recover::remove_above_tip(store)?;
        let mut writer = Writer {
            store,
            ids: NextIds::default(),
            start: None,
            next_outside: OutNum::FIRST_OUTSIDE,
            caches,
            touched: FxHashMap::default(),
            pending_stats: FxHashMap::default(),
            pending_utxos: FxHashMap::default(),
            recent: bip30::Recent::default(),
        };
        writer.reload()?;
        Ok(writer)
    }

    /// Reads where the index stands: its next ids, its start. Call after
    /// rows were added past this writer (the bulk path), with nothing of
    /// the writer's own uncommitted.
    pub fn reload(&mut self) -> Result<()> {
        self.ids = self
            .store
            .tip_block()?
            .map(|b| b.next_ids())
            .unwrap_or_default();
        self.next_outside = match self.store.last::<cf::Outside>()? {
            Some((n, _)) => n + 1,
            None => OutNum::FIRST_OUTSIDE,
        };
        self.start = self.store.start()?;
        Ok(())
    }

    /// Adds the batch's pending address stats and unspent outputs; call
    /// last before committing `batch`.
    pub fn finish_batch(&mut self, batch: &mut SortedBatch) {
        for (addr, delta) in self.pending_stats.drain() {
            batch.merge::<cf::AddrStats>(&addr, &delta);
        }
        for (key, value) in self.pending_utxos.drain() {
            batch.put::<cf::AddrUtxos>(&key, &value);
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
        self.recent.committed();
    }

    fn touch(&mut self, addr: AddrId, delta: Touch) {
        let t = self.touched.entry(addr).or_default();
        t.stats.add(&delta.stats);
        t.opened += delta.opened;
    }

    /// One history row and one stats delta per address the tx touched.
    fn write_touched(&mut self, batch: &mut SortedBatch, txnum: TxNum, dir: Direction) {
        for (&addr, t) in &self.touched {
            let delta = AddrStats {
                tx_count: 1,
                ..t.stats
            };
            let key = (addr, txnum);
            let pending = self.pending_stats.entry(addr).or_default();
            match dir {
                Direction::Apply => {
                    let h = HistoryRow {
                        received: delta.received as u64 - t.opened,
                        sent: delta.sent as u64,
                        opened: t.opened,
                    };
                    batch.put::<cf::History>(&key, &h);
                    pending.add(&delta);
                }
                Direction::Undo => {
                    batch.delete::<cf::History>(&key);
                    pending.add(&delta.negated());
                }
            }
        }
    }
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

pub fn set_tip(batch: &mut SortedBatch, tip: Option<ChainPoint>) {
    match tip {
        Some(point) => batch.put_meta(meta::Tip, &point),
        None => batch.delete_meta(meta::Tip),
    }
}
