//! The rows of a run of blocks read back from the index, with what they
//! refer to resolved: the txid, height, value and address of every coin an
//! input spends, and address numbers turned into address strings.
//!
//! A block's rows are id ranges (`schema/SCHEMA.md`), so a run of blocks is
//! three sequential scans (txs, outputs, inputs) plus batched point reads
//! for the spent coins, their transactions and the addresses.

use std::collections::VecDeque;
use std::fmt::Display;
use std::ops::Range;

use anyhow::{bail, Context, Result};
use bitcoin::Txid;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use satflow_indexer::store::Direction;
use satflow_indexer::{address, Network, Store};
use satflow_schema::block::BlockRow;
use satflow_schema::cf::{self, Family};
use satflow_schema::ids::Id;
use satflow_schema::script::ScriptType;
use satflow_schema::tx::{OutputRow, TxRow};
use satflow_schema::{AddrId, Height, OutNum, TxNum};

/// Keys per batched point read.
const READ_BATCH: usize = 4096;

/// Blocks `first..=last` of the best chain, row by row.
pub struct Chunk {
    pub blocks: Vec<(Height, BlockRow)>,
    pub txs: Vec<TxRow>,
    /// In chain order; `tx` indexes `txs`.
    pub outputs: Vec<(usize, OutputRow)>,
    /// In chain order; `tx` indexes `txs`. Coinbases have none.
    pub inputs: Vec<Input>,
    addresses: FxHashMap<AddrId, String>,
}

pub struct Input {
    pub tx: usize,
    pub index: u32,
    pub prev: Prevout,
}

/// The coin an input spends.
#[derive(Clone, Copy)]
pub struct Prevout {
    pub txid: Txid,
    pub vout: u32,
    /// None for a coin from before the index's first block.
    pub height: Option<Height>,
    /// None when the index does not know it (a coin from before its first
    /// block that no prevouts file described).
    pub value: Option<u64>,
    pub script_type: ScriptType,
    pub addr: Option<AddrId>,
}

impl Chunk {
    /// `recent` holds the rows of the chunks read before, and gets this one's.
    pub fn read(
        store: &Store,
        network: Network,
        (first_height, last_height): (Height, Height),
        recent: &mut Recent,
    ) -> Result<Chunk> {
        let blocks = (first_height.0..=last_height.0)
            .map(|h| {
                let row = store
                    .block(Height(h))?
                    .with_context(|| format!("the index has no block at height {h}"))?;
                Ok((Height(h), row))
            })
            .collect::<Result<Vec<_>>>()?;
        let (Some((_, first)), Some((_, last))) = (blocks.first(), blocks.last()) else {
            bail!("an empty height range");
        };
        let (first, end) = (first.clone(), last.next_ids());

        let txs = dense::<cf::Txs>(store, first.first_tx, end.tx)?;
        let rows = dense::<cf::Outputs>(store, first.first_output, end.output)?;
        let mut outputs = Vec::with_capacity(rows.len());
        let mut rows = rows.into_iter();
        for (i, tx) in txs.iter().enumerate() {
            let txnum = first.first_tx + i as u64;
            for _ in 0..tx.output_count {
                match rows.next() {
                    Some(o) if o.tx == Some(txnum) => outputs.push((i, o)),
                    _ => bail!("index is inconsistent: the outputs of tx {txnum} are not where its row says"),
                }
            }
        }
        if rows.next().is_some() {
            bail!("index is inconsistent: more outputs than the txs of heights {first_height}..={last_height} hold");
        }
        // Sparse: a coinbase has no `inputs` row.
        let spent: Vec<(TxNum, Vec<OutNum>)> = store
            .scan::<cf::Inputs>(&first.first_tx, Direction::Forward)
            .take_while(|r| !matches!(r, Ok((t, _)) if *t >= end.tx))
            .collect::<Result<_>>()?;

        recent.push(Window {
            first_tx: first.first_tx,
            txs: txs.iter().map(|t| (t.txid, t.height)).collect(),
            first_output: first.first_output,
            outputs: outputs.iter().map(|(_, o)| *o).collect(),
        });
        let spent_outputs = spent.iter().flat_map(|(_, outs)| outs.iter().copied());
        let prevouts = Prevouts::read(store, spent_outputs, recent)?;
        let mut inputs = Vec::new();
        for (txnum, outs) in &spent {
            let tx = (*txnum - first.first_tx) as usize;
            for (index, n) in outs.iter().enumerate() {
                inputs.push(Input {
                    tx,
                    index: index as u32,
                    prev: prevouts.get(*n)?,
                });
            }
        }

        let addrs = outputs
            .iter()
            .filter_map(|(_, o)| o.addr)
            .chain(inputs.iter().filter_map(|i| i.prev.addr));
        let addresses = address_strings(store, network, addrs, first.first_addr..end.addr)?;
        Ok(Chunk {
            blocks,
            txs,
            outputs,
            inputs,
            addresses,
        })
    }

    /// The address string of an address number of this chunk.
    pub fn address(&self, addr: Option<AddrId>) -> Option<&str> {
        addr.map(|a| self.addresses[&a].as_str())
    }
}

/// The transactions and outputs of the last chunks read. Most coins are
/// spent within hours of being created, often in the same block: those
/// need no point read.
#[derive(Default)]
pub struct Recent(VecDeque<Window>);

struct Window {
    first_tx: TxNum,
    txs: Vec<(Txid, Height)>,
    first_output: OutNum,
    outputs: Vec<OutputRow>,
}

/// Chunks kept: about 8 × 50,000 transactions, some 60 MB.
const RECENT_CHUNKS: usize = 8;

impl Recent {
    fn push(&mut self, w: Window) {
        if self.0.len() == RECENT_CHUNKS {
            self.0.pop_front();
        }
        self.0.push_back(w);
    }

    fn output(&self, n: OutNum) -> Option<OutputRow> {
        self.0
            .iter()
            .find_map(|w| nth(&w.outputs, n.0.checked_sub(w.first_output.0)?).copied())
    }

    fn tx(&self, t: TxNum) -> Option<(Txid, Height)> {
        self.0
            .iter()
            .find_map(|w| nth(&w.txs, t.0.checked_sub(w.first_tx.0)?).copied())
    }

    /// The rows of `F` for sorted `ids`, as `T`: from memory when recent,
    /// else read.
    fn or_read<F, T>(
        &self,
        store: &Store,
        ids: &[F::Key],
        cached: fn(&Recent, F::Key) -> Option<T>,
        from_row: fn(F::Value) -> T,
    ) -> Result<Vec<T>>
    where
        F: Family,
        F::Key: Copy + Sync + Display,
        F::Value: Send,
    {
        let found: Vec<Option<T>> = ids.iter().map(|&n| cached(self, n)).collect();
        let missing: Vec<F::Key> = ids
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(n, _)| *n)
            .collect();
        let mut read = get_all::<F>(store, &missing)?.into_iter().map(from_row);
        found
            .into_iter()
            .map(|f| {
                f.or_else(|| read.next())
                    .context("fewer rows read than asked for")
            })
            .collect()
    }
}

fn nth<T>(rows: &[T], i: u64) -> Option<&T> {
    rows.get(usize::try_from(i).ok()?)
}

/// Rows `from..end` of a family keyed by dense ids, each of which must
/// exist.
fn dense<F>(store: &Store, from: F::Key, end: F::Key) -> Result<Vec<F::Value>>
where
    F: Family,
    F::Key: Id + Display,
{
    let mut rows = Vec::new();
    let mut expected = from;
    for row in store.scan::<F>(&from, Direction::Forward) {
        let (id, value) = row?;
        if id >= end {
            break;
        }
        if id != expected {
            bail!(
                "index is inconsistent: {} row {expected} is missing",
                F::NAME
            );
        }
        expected = F::Key::new(id.get() + 1);
        rows.push(value);
    }
    if expected != end {
        bail!(
            "index is inconsistent: {} ends at {expected}, before {end}",
            F::NAME
        );
    }
    Ok(rows)
}

/// Spent coins by output number, read in three batched lookups: the
/// outputs, then their transactions (or, for coins from before the
/// index's first block, the txids kept in `outside`).
struct Prevouts(FxHashMap<OutNum, Prevout>);

impl Prevouts {
    fn read(
        store: &Store,
        spent: impl Iterator<Item = OutNum>,
        recent: &Recent,
    ) -> Result<Prevouts> {
        let mut numbers: Vec<OutNum> = spent.collect();
        numbers.sort_unstable();
        numbers.dedup();
        let rows = recent.or_read::<cf::Outputs, _>(store, &numbers, Recent::output, |o| o)?;

        let mut txnums: Vec<TxNum> = rows.iter().filter_map(|o| o.tx).collect();
        txnums.sort_unstable();
        txnums.dedup();
        let txs: FxHashMap<TxNum, (Txid, Height)> = txnums
            .iter()
            .copied()
            .zip(recent.or_read::<cf::Txs, _>(store, &txnums, Recent::tx, |t| (t.txid, t.height))?)
            .collect();
        let outside: Vec<OutNum> = numbers
            .iter()
            .zip(&rows)
            .filter(|(_, o)| o.tx.is_none())
            .map(|(n, _)| *n)
            .collect();
        let outside_txids: FxHashMap<OutNum, Txid> = outside
            .iter()
            .copied()
            .zip(get_all::<cf::Outside>(store, &outside)?)
            .collect();

        let mut map = FxHashMap::default();
        for (n, o) in numbers.into_iter().zip(rows) {
            let (txid, height) = match o.tx {
                None => (outside_txids[&n], None),
                Some(t) => {
                    let (txid, height) = txs[&t];
                    (txid, Some(height))
                }
            };
            map.insert(
                n,
                Prevout {
                    txid,
                    vout: o.vout,
                    height,
                    value: o.known_value(),
                    script_type: o.script_type,
                    addr: o.addr,
                },
            );
        }
        Ok(Prevouts(map))
    }

    fn get(&self, n: OutNum) -> Result<Prevout> {
        self.0
            .get(&n)
            .copied()
            .with_context(|| format!("index is inconsistent: spent output {n} was not read"))
    }
}

/// Rows of `F` that must exist, for sorted `ids`, in the same order. Point
/// reads are most of an export's time: they are spread over the cores.
fn get_all<F>(store: &Store, ids: &[F::Key]) -> Result<Vec<F::Value>>
where
    F: Family,
    F::Key: Sync + Display,
    F::Value: Send,
{
    let parts = ids
        .par_chunks(READ_BATCH)
        .map(|part| {
            part.iter()
                .zip(store.multi_get::<F>(part)?)
                .map(|(n, v)| {
                    v.with_context(|| {
                        format!("index is inconsistent: {} row {n} is missing", F::NAME)
                    })
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(parts.into_iter().flatten().collect())
}

/// Address numbers → their strings on `network`, encoded in parallel
/// (base58 and bech32 checksums cost more than the reads). Those in
/// `created`, the addresses a run of blocks gave numbers to, are one key
/// range: scanned rather than looked up one by one.
pub(crate) fn address_strings(
    store: &Store,
    network: Network,
    addrs: impl Iterator<Item = AddrId>,
    created: Range<AddrId>,
) -> Result<FxHashMap<AddrId, String>> {
    let mut ids: Vec<AddrId> = addrs.collect();
    ids.sort_unstable();
    ids.dedup();
    let older = match created.is_empty() {
        true => ids.len(),
        false => ids.partition_point(|&n| n < created.start),
    };
    let mut keys = get_all::<cf::Addrs>(store, &ids[..older])?;
    if older < ids.len() {
        let fresh = dense::<cf::Addrs>(store, created.start, created.end)?;
        for &n in &ids[older..] {
            let key = nth(&fresh, n - created.start).with_context(|| {
                format!(
                    "index is inconsistent: address {n} lies past the addresses its block created"
                )
            })?;
            keys.push(*key);
        }
    }
    Ok(ids
        .into_par_iter()
        .zip(keys)
        .map(|(n, k)| (n, address::encode(&k, network)))
        .collect())
}
