//! The rows of a run of blocks read back from the index, with what they
//! refer to resolved: the txid, height, value and address of every coin an
//! input spends, and address numbers turned into address strings.
//!
//! A block's rows are id ranges (`indexer/SCHEMA.md`), so a run of blocks is
//! three sequential scans (txs, outputs, inputs) plus batched point reads
//! for the spent coins, their transactions and the addresses.

use std::collections::VecDeque;
use std::ops::{Range, RangeInclusive};

use anyhow::{bail, Context, Result};
use bitcoin::hashes::Hash;
use bitcoin::Txid;
use rayon::prelude::*;
use rocksdb::{Direction, IteratorMode};
use rustc_hash::FxHashMap;
use satflow_indexer::schema::{
    cf, decode_inputs, key_u64, BlockRow, Dec, OutputRow, TxRow, OUTSIDE_TX,
};
use satflow_indexer::script::{AddrKey, ScriptType};
use satflow_indexer::{address, Network, Store};

/// Keys per batched point read.
const READ_BATCH: usize = 4096;

/// Blocks `heights` of the best chain, row by row.
pub struct Chunk {
    pub blocks: Vec<(u32, BlockRow)>,
    pub txs: Vec<TxRow>,
    /// In chain order; `tx` indexes `txs`.
    pub outputs: Vec<(usize, OutputRow)>,
    /// In chain order; `tx` indexes `txs`. Coinbases have none.
    pub inputs: Vec<Input>,
    addresses: FxHashMap<u64, String>,
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
    pub height: Option<u32>,
    /// None when the index does not know it (a coin from before its first
    /// block that no prevouts file described).
    pub value: Option<u64>,
    pub script_type: ScriptType,
    pub addr: Option<u64>,
}

impl Chunk {
    /// `recent` holds the rows of the chunks read before, and gets this one's.
    pub fn read(
        store: &Store,
        network: Network,
        heights: RangeInclusive<u32>,
        recent: &mut Recent,
    ) -> Result<Chunk> {
        let blocks = heights
            .map(|h| {
                let row = store
                    .block(h)?
                    .with_context(|| format!("the index has no block at height {h}"))?;
                Ok((h, row))
            })
            .collect::<Result<Vec<_>>>()?;
        let (Some((first_height, first)), Some((last_height, last))) =
            (blocks.first(), blocks.last())
        else {
            bail!("an empty height range");
        };
        let (first_height, last_height) = (*first_height, *last_height);
        let (first, end) = (first.clone(), last.next_ids());

        let txs: Vec<TxRow> = scan(store, cf::TXS, first.first_tx, end.tx, |_, v| {
            Ok(TxRow::decode(v)?)
        })?;
        let rows = scan(
            store,
            cf::OUTPUTS,
            first.first_output,
            end.output,
            |_, v| Ok(OutputRow::decode(v)?),
        )?;
        let mut outputs = Vec::with_capacity(rows.len());
        let mut rows = rows.into_iter();
        for (i, tx) in txs.iter().enumerate() {
            let txnum = first.first_tx + i as u64;
            for _ in 0..tx.output_count {
                match rows.next() {
                    Some(o) if o.tx == txnum => outputs.push((i, o)),
                    _ => bail!("index is inconsistent: the outputs of tx {txnum} are not where its row says"),
                }
            }
        }
        if rows.next().is_some() {
            bail!("index is inconsistent: more outputs than the txs of heights {first_height}..={last_height} hold");
        }
        let spent: Vec<(u64, Vec<u64>)> =
            scan(store, cf::INPUTS, first.first_tx, end.tx, |k, v| {
                Ok((Dec::new("inputs key", k).u64()?, decode_inputs(v)?))
            })?;

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
            let tx = (txnum - first.first_tx) as usize;
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
    pub fn address(&self, addr: Option<u64>) -> Option<&str> {
        addr.map(|a| self.addresses[&a].as_str())
    }
}

/// The transactions and outputs of the last chunks read. Most coins are
/// spent within hours of being created, often in the same block: those
/// need no point read.
#[derive(Default)]
pub struct Recent(VecDeque<Window>);

struct Window {
    first_tx: u64,
    txs: Vec<(Txid, u32)>,
    first_output: u64,
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

    fn output(&self, n: u64) -> Option<OutputRow> {
        self.0.iter().find_map(|w| {
            let i = n.checked_sub(w.first_output)?;
            w.outputs.get(usize::try_from(i).ok()?).copied()
        })
    }

    fn tx(&self, t: u64) -> Option<(Txid, u32)> {
        self.0.iter().find_map(|w| {
            let i = t.checked_sub(w.first_tx)?;
            w.txs.get(usize::try_from(i).ok()?).copied()
        })
    }

    /// The rows of sorted `ids`: from memory when recent, else read.
    fn or_read<T: Copy + Send>(
        &self,
        store: &Store,
        family: &'static str,
        ids: &[u64],
        cached: fn(&Recent, u64) -> Option<T>,
        decode: impl Fn(&[u8]) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        let found: Vec<Option<T>> = ids.iter().map(|&n| cached(self, n)).collect();
        let missing: Vec<u64> = ids
            .iter()
            .zip(&found)
            .filter(|(_, f)| f.is_none())
            .map(|(n, _)| *n)
            .collect();
        let mut read = get_all(store, family, &missing, decode)?.into_iter();
        found
            .into_iter()
            .map(|f| {
                f.or_else(|| read.next())
                    .context("fewer rows read than asked for")
            })
            .collect()
    }
}

/// Rows `from..end` of a family keyed by u64 ids, each of which must exist
/// except in `inputs` (no row for a coinbase).
fn scan<T>(
    store: &Store,
    family: &'static str,
    from: u64,
    end: u64,
    decode: impl Fn(&[u8], &[u8]) -> Result<T>,
) -> Result<Vec<T>> {
    let mut rows = Vec::new();
    let start = key_u64(from);
    let iter = store.db().iterator_cf(
        store.cf(family),
        IteratorMode::From(&start, Direction::Forward),
    );
    let mut expected = from;
    for item in iter {
        let (k, v) = item.with_context(|| format!("reading {family}"))?;
        let id = Dec::new("key", &k).u64()?;
        if id >= end {
            break;
        }
        if family != cf::INPUTS && id != expected {
            bail!("index is inconsistent: {family} row {expected} is missing");
        }
        expected = id + 1;
        rows.push(decode(&k, &v).with_context(|| format!("{family} row {id}"))?);
    }
    if family != cf::INPUTS && expected != end {
        bail!("index is inconsistent: {family} ends at {expected}, before {end}");
    }
    Ok(rows)
}

/// Spent coins by output number, read in three batched lookups: the
/// outputs, then their transactions (or, for coins from before the
/// index's first block, the txids kept in `outside`).
struct Prevouts(FxHashMap<u64, Prevout>);

impl Prevouts {
    fn read(store: &Store, spent: impl Iterator<Item = u64>, recent: &Recent) -> Result<Prevouts> {
        let mut numbers: Vec<u64> = spent.collect();
        numbers.sort_unstable();
        numbers.dedup();
        let rows = recent.or_read(store, cf::OUTPUTS, &numbers, Recent::output, |v| {
            Ok(OutputRow::decode(v)?)
        })?;

        let mut txnums: Vec<u64> = rows
            .iter()
            .map(|o| o.tx)
            .filter(|&t| t != OUTSIDE_TX)
            .collect();
        txnums.sort_unstable();
        txnums.dedup();
        let txs: FxHashMap<u64, (Txid, u32)> = txnums
            .iter()
            .copied()
            .zip(recent.or_read(store, cf::TXS, &txnums, Recent::tx, |v| {
                let t = TxRow::decode(v)?;
                Ok((t.txid, t.height))
            })?)
            .collect();
        let outside: Vec<u64> = numbers
            .iter()
            .zip(&rows)
            .filter(|(_, o)| o.tx == OUTSIDE_TX)
            .map(|(n, _)| *n)
            .collect();
        let outside_txids: FxHashMap<u64, Txid> = outside
            .iter()
            .copied()
            .zip(get_all(store, cf::OUTSIDE, &outside, |v| {
                Ok(Txid::from_byte_array(Dec::new("outside", v).take()?))
            })?)
            .collect();

        let mut map = FxHashMap::default();
        for (n, o) in numbers.into_iter().zip(rows) {
            let (txid, height) = match o.tx {
                OUTSIDE_TX => (outside_txids[&n], None),
                t => {
                    let (txid, height) = txs[&t];
                    (txid, Some(height))
                }
            };
            let known = o.script_type != ScriptType::Unknown;
            map.insert(
                n,
                Prevout {
                    txid,
                    vout: o.vout,
                    height,
                    value: known.then_some(o.value),
                    script_type: o.script_type,
                    addr: o.addr,
                },
            );
        }
        Ok(Prevouts(map))
    }

    fn get(&self, n: u64) -> Result<Prevout> {
        self.0
            .get(&n)
            .copied()
            .with_context(|| format!("index is inconsistent: spent output {n} was not read"))
    }
}

/// Rows that must exist, for sorted `ids`, in the same order. Point reads
/// are most of an export's time: they are spread over the cores.
fn get_all<T: Send>(
    store: &Store,
    family: &'static str,
    ids: &[u64],
    decode: impl Fn(&[u8]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let parts = ids
        .par_chunks(READ_BATCH)
        .map(|part| {
            let keys: Vec<Vec<u8>> = part.iter().map(|&n| key_u64(n).to_vec()).collect();
            part.iter()
                .zip(store.multi_get(family, &keys)?)
                .map(|(n, v)| {
                    let v = v.with_context(|| {
                        format!("index is inconsistent: {family} row {n} is missing")
                    })?;
                    decode(&v).with_context(|| format!("{family} row {n}"))
                })
                .collect::<Result<Vec<T>>>()
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
    addrs: impl Iterator<Item = u64>,
    created: Range<u64>,
) -> Result<FxHashMap<u64, String>> {
    let mut ids: Vec<u64> = addrs.collect();
    ids.sort_unstable();
    ids.dedup();
    let decode = |v: &[u8]| AddrKey::from_bytes(v).context("corrupt address key");
    let older = match created.is_empty() {
        true => ids.len(),
        false => ids.partition_point(|&n| n < created.start),
    };
    let mut keys = get_all(store, cf::ADDRS, &ids[..older], decode)?;
    if older < ids.len() {
        let fresh = scan(store, cf::ADDRS, created.start, created.end, |_, v| {
            decode(v)
        })?;
        for &n in &ids[older..] {
            let key = fresh.get((n - created.start) as usize).with_context(|| {
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
