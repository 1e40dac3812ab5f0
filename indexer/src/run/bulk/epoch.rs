//! One epoch of the bulk path: consecutive blocks, parsed, turned into the
//! rows they add to every family. Each step runs on every worker: numbers
//! by prefix sums of the blocks' counts, address ids (`addrs`), the
//! epoch's outputs into the unspent map and then its inputs resolved
//! against it (`coins`, two phases, so an input may spend an output of the
//! same epoch), and the rows, built per block.

use std::ops::Range;

use anyhow::Result;
use rayon::prelude::*;
use satflow_schema::address::HistoryRow;
use satflow_schema::block::{BlockRow, ChainPoint};
use satflow_schema::meta::{self, OverwrittenCoin};
use satflow_schema::script::{AddrKey, ScriptType};
use satflow_schema::tx::{InputRef, OutputRow};
use satflow_schema::{cf, AddrId, Height, NextIds, OutNum, TxNum, TxidPrefix};

use super::addrs::{AddrMap, Numbered};
use super::coins::{Coin, CoinKey, Coins, Want};
use crate::chain::Node;
use crate::cluster::{self, Heuristics, Spent, TxView};
use crate::flow::{Appender, Shape};
use crate::parse::{ParsedBlock, ParsedTx};
use crate::ranges;
use crate::run::pipeline::Committed;
use crate::store::SortedBatch;
use crate::writer::set_tip;

/// An epoch's rows, ready to ingest, and what comes after it.
pub(super) struct Epoch {
    pub batch: SortedBatch,
    pub done: Committed,
    pub next: NextIds,
    /// Pairs of addresses the clustering heuristics link, when asked for.
    pub links: Vec<(AddrId, AddrId)>,
}

/// A transaction of the epoch and where it lies.
struct TxAt<'a> {
    tx: &'a ParsedTx,
    block: usize,
    num: TxNum,
    /// Its first output's position among the epoch's outputs.
    first_output: usize,
    /// Its first input's position among the epoch's inputs.
    first_input: usize,
}

impl TxAt<'_> {
    /// Its inputs' positions among the epoch's inputs.
    fn inputs(&self) -> Range<usize> {
        self.first_input..self.first_input + self.tx.spends.len()
    }
}

/// Where the epoch's blocks and transactions lie, and their ids: prefix
/// sums of the per-block and per-tx counts.
struct Layout<'a> {
    first_height: Height,
    ids: NextIds,
    txs: Vec<TxAt<'a>>,
    /// Per block, then one past the last: its first tx's position.
    block_txs: Vec<usize>,
    /// Per block, then one past the last: its first output's position.
    block_outputs: Vec<usize>,
}

impl<'a> Layout<'a> {
    fn new(blocks: &'a [(Node, ParsedBlock)], first_height: Height, ids: NextIds) -> Layout<'a> {
        let mut layout = Layout {
            first_height,
            ids,
            txs: Vec::new(),
            block_txs: vec![0],
            block_outputs: vec![0],
        };
        let (mut outputs, mut inputs) = (0, 0);
        for (b, (_, block)) in blocks.iter().enumerate() {
            for tx in &block.txs {
                let num = ids.tx + layout.txs.len() as u64;
                layout.txs.push(TxAt {
                    tx,
                    block: b,
                    num,
                    first_output: outputs,
                    first_input: inputs,
                });
                outputs += tx.outputs.len();
                inputs += tx.spends.len();
            }
            layout.block_txs.push(layout.txs.len());
            layout.block_outputs.push(outputs);
        }
        layout
    }

    fn output(&self, position: usize) -> OutNum {
        self.ids.output + position as u64
    }

    fn height(&self, block: usize) -> Height {
        Height(self.first_height.0 + block as u32)
    }

    fn outputs(&self) -> usize {
        *self.block_outputs.last().expect("one past the last block")
    }

    /// The position among the epoch's inputs of tx `i`'s first input (the
    /// epoch's input count for one past the last tx).
    fn first_input(&self, i: usize) -> usize {
        self.txs.get(i).map_or_else(
            || self.txs.last().map_or(0, |t| t.inputs().end),
            |t| t.first_input,
        )
    }

    /// How many entries blocks `blocks` add to the flow graph.
    fn shape(&self, blocks: &Range<usize>) -> Shape {
        let txs = self.block_txs[blocks.start]..self.block_txs[blocks.end];
        Shape {
            blocks: blocks.len(),
            txs: txs.len(),
            inputs: self.first_input(txs.end) - self.first_input(txs.start),
            outputs: self.block_outputs[blocks.end] - self.block_outputs[blocks.start],
        }
    }
}

/// The batches an epoch's rows are built in, kept from one epoch to the
/// next with their allocations (see `SortedBatch::concat_from`).
#[derive(Default)]
pub(super) struct Batches {
    /// One per group of consecutive blocks, per chunk of new addresses,
    /// and one for the overwritten coins; empty between epochs.
    parts: Vec<SortedBatch>,
    /// Epochs' batches back from being ingested, empty.
    spare: Vec<SortedBatch>,
}

impl Batches {
    /// An epoch's batch, ingested and emptied, for a later epoch.
    pub fn give_back(&mut self, batch: SortedBatch) {
        self.spare.push(batch);
    }
}

/// New addresses per batch of their `addrs` and `addr_ids` rows.
const ADDRESS_CHUNK: usize = 1 << 16;

/// What an epoch feeds besides the rows: the flow graph, and the
/// clustering heuristics whose links to find.
pub(super) struct Derived<'a> {
    pub graph: Option<&'a mut Appender>,
    pub heuristics: Option<Heuristics>,
}

/// The rows of `blocks`, the first at `first_height` with ids from `ids`,
/// and what `derived` asks for, built in `batches`. Updates `addrs` and
/// `coins`; after an error they are of no further use.
pub(super) fn build(
    blocks: &[(Node, ParsedBlock)],
    first_height: Height,
    ids: NextIds,
    addrs: &mut AddrMap,
    coins: &mut Coins,
    batches: &mut Batches,
    derived: Derived,
) -> Result<Epoch> {
    let layout = Layout::new(blocks, first_height, ids);
    let keys: Vec<Option<AddrKey>> = layout
        .txs
        .par_iter()
        .flat_map_iter(|t| t.tx.outputs.iter().map(|o| o.addr))
        .collect();
    let numbered = addrs.number(&keys, ids.addr)?;
    coins.insert_all(layout.txs.par_iter().flat_map_iter(|t| {
        let numbered = &numbered;
        let layout = &layout;
        t.tx.outputs
            .iter()
            .enumerate()
            // OP_RETURN outputs can never be spent: not worth a slot.
            .filter(|(_, out)| out.script_type != ScriptType::OpReturn)
            .map(move |(vout, out)| {
                let at = t.first_output + vout;
                let coin = Coin::new(
                    layout.output(at),
                    out.value,
                    numbered.ids[at],
                    out.script_type,
                );
                (CoinKey::new(&t.tx.txid, vout as u32), coin)
            })
    }));
    let spent = resolve(&layout, blocks, coins)?;
    let groups = block_groups(&layout, ranges::parts());
    let chunks = numbered.new.len().div_ceil(ADDRESS_CHUNK);
    let count = groups.len() + chunks + 1;
    if batches.parts.len() < count {
        batches.parts.resize_with(count, SortedBatch::default);
    }
    let parts = &mut batches.parts[..count];
    let (block_parts, rest) = parts.split_at_mut(groups.len());
    let (address_parts, last) = rest.split_at_mut(chunks);
    block_parts
        .par_iter_mut()
        .zip(&groups)
        .try_for_each(|(batch, group)| {
            group
                .clone()
                .try_for_each(|b| block_rows(b, blocks, &layout, &numbered, &spent, batch))
        })?;
    new_addresses(&numbered.new, ids.addr, address_parts);
    overwritten(&layout, coins, &mut last[0]);
    let mut batch = batches.spare.pop().unwrap_or_default();
    batch.concat_from(parts);
    let mut done = Committed::default();
    for (b, (node, block)) in blocks.iter().enumerate() {
        done.add(layout.height(b).0, node, block);
    }
    if let Some((node, _)) = blocks.last() {
        let height = layout.height(blocks.len() - 1);
        set_tip(
            &mut batch,
            Some(ChainPoint {
                height,
                hash: node.hash,
            }),
        );
    }
    if let Some(graph) = derived.graph {
        append_flow(graph, blocks, &layout, &groups, &numbered, &spent)?;
        graph.checkpoint_behind()?;
    }
    let links = match derived.heuristics {
        None => Vec::new(),
        Some(h) => layout
            .txs
            .par_iter()
            .flat_map_iter(|t| links(&h, t, &spent[t.inputs()], &layout, &numbered))
            .collect(),
    };
    let next = NextIds {
        tx: ids.tx + layout.txs.len() as u64,
        output: layout.output(layout.outputs()),
        addr: ids.addr + numbered.new.len() as u64,
    };
    Ok(Epoch {
        batch,
        done,
        next,
        links,
    })
}

/// The coins the epoch's inputs spend, in input order, taken from the
/// unspent map. The map holds the whole epoch's outputs: an input takes
/// only a coin made before its own tx.
fn resolve(
    layout: &Layout,
    blocks: &[(Node, ParsedBlock)],
    coins: &mut Coins,
) -> Result<Vec<Coin>> {
    let wants: Vec<Want> = layout
        .txs
        .par_iter()
        .flat_map_iter(|t| {
            let before = layout.output(t.first_output);
            t.tx.spends.iter().map(move |prevout| Want {
                key: CoinKey::of(prevout),
                before,
            })
        })
        .collect();
    coins.take_all(wants.into_par_iter(), |input| {
        let t = &layout.txs[layout.txs.partition_point(|t| t.first_input <= input) - 1];
        let vin = input - t.first_input;
        format!(
            "block {} at height {}: tx {} input {vin} spends {}",
            blocks[t.block].1.hash,
            layout.height(t.block),
            t.tx.txid,
            t.tx.spends[vin]
        )
    })
}

/// The epoch's blocks in groups of consecutive blocks with about as many
/// outputs each, about `n` of them: the rows of a group go to one batch.
fn block_groups(layout: &Layout, n: usize) -> Vec<Range<usize>> {
    let blocks = layout.block_outputs.len() - 1;
    let per_group = layout.outputs().div_ceil(n.max(1)).max(1);
    let mut groups = Vec::with_capacity(n + 1);
    let mut first = 0;
    for b in 0..blocks {
        let outputs = layout.block_outputs[b + 1] - layout.block_outputs[first];
        if outputs >= per_group || b + 1 == blocks {
            groups.push(first..b + 1);
            first = b + 1;
        }
    }
    groups
}

/// Adds the rows of block `b` to `batch`: its txs, txids, outputs,
/// inputs, spends and history, and the block's own.
fn block_rows(
    b: usize,
    blocks: &[(Node, ParsedBlock)],
    layout: &Layout,
    numbered: &Numbered,
    spent: &[Coin],
    batch: &mut SortedBatch,
) -> Result<()> {
    let (node, block) = &blocks[b];
    let height = layout.height(b);
    let (mut fees, mut inputs) = (0u64, 0u32);
    let mut touched: Vec<(AddrId, HistoryRow)> = Vec::new();
    let txs = layout.block_txs[b]..layout.block_txs[b + 1];
    for (position, t) in layout.txs[txs].iter().enumerate() {
        let (tx, coins) = (t.tx, &spent[t.inputs()]);
        touched.clear();
        let mut value_in = 0u64;
        for (vin, coin) in coins.iter().enumerate() {
            value_in = value_in.saturating_add(coin.value);
            let spender = InputRef {
                tx: t.num,
                vin: vin as u32,
            };
            batch.put::<cf::Spends>(&coin.output, &spender);
            if let Some(a) = coin.addr() {
                let sent = HistoryRow {
                    sent: coin.value,
                    ..Default::default()
                };
                touched.push((a, sent));
            }
        }
        if !tx.is_coinbase() {
            let outputs: Vec<OutNum> = coins.iter().map(|c| c.output).collect();
            batch.append::<cf::Inputs>(&t.num, &outputs);
        }
        inputs += tx.input_count();
        for (vout, out) in tx.outputs.iter().enumerate() {
            let at = t.first_output + vout;
            let addr = numbered.ids[at];
            let row = OutputRow {
                tx: Some(t.num),
                vout: vout as u32,
                value: out.value,
                script_type: out.script_type,
                addr,
            };
            batch.append::<cf::Outputs>(&layout.output(at), &row);
            if let Some(a) = addr {
                let received = HistoryRow {
                    received: out.value,
                    ..Default::default()
                };
                touched.push((a, received));
            }
        }
        let fee = tx.fee(value_in, &block.hash, height)?;
        fees = fees.saturating_add(fee);
        let row = tx.row(
            height,
            position as u32,
            Some(fee),
            layout.output(t.first_output),
        );
        batch.append::<cf::Txs>(&t.num, &row);
        batch.put::<cf::Txids>(&(TxidPrefix::of(&tx.txid), t.num), &());
        // One history row per address the tx touched.
        touched.sort_unstable_by_key(|(a, _)| *a);
        for same in touched.chunk_by(|x, y| x.0 == y.0) {
            let mut row = HistoryRow::default();
            same.iter().for_each(|(_, r)| row.add(r));
            batch.put::<cf::History>(&(same[0].0, t.num), &row);
        }
    }
    // Addresses first seen in this block, and in the blocks before it.
    let (from, to) = (layout.block_outputs[b], layout.block_outputs[b + 1]);
    let seen_before = numbered
        .first_seen
        .partition_point(|&p| (p as usize) < from);
    let seen_here = numbered.first_seen.partition_point(|&p| (p as usize) < to) - seen_before;
    let row = BlockRow {
        hash: block.hash,
        header: block.header,
        loc: node.loc,
        weight: block.weight,
        tx_count: block.txs.len() as u32,
        input_count: inputs,
        output_count: (to - from) as u32,
        fees: Some(fees),
        first_tx: layout.ids.tx + layout.block_txs[b] as u64,
        first_output: layout.output(from),
        first_addr: layout.ids.addr + seen_before as u64,
        new_addrs: seen_here as u32,
    };
    batch.put::<cf::Blocks>(&height, &row);
    batch.put::<cf::BlockHeight>(&block.hash, &height);
    Ok(())
}

/// The address pairs `h` links in tx `t`, which spends `coins`: the same
/// view of the tx a cluster build reads from the rows.
fn links(
    h: &Heuristics,
    t: &TxAt,
    coins: &[Coin],
    layout: &Layout,
    numbered: &Numbered,
) -> Vec<(AddrId, AddrId)> {
    if coins.is_empty() {
        return Vec::new();
    }
    // Ids are given at first sight: an address is fresh when its id is at
    // least the next id as it stood before the tx.
    let seen = numbered
        .first_seen
        .partition_point(|&p| (p as usize) < t.first_output);
    let fresh_from = layout.ids.addr + seen as u64;
    let view = TxView {
        inputs: coins
            .iter()
            .map(|c| Spent {
                addr: c.addr(),
                script: c.script(),
            })
            .collect(),
        outputs: t
            .tx
            .outputs
            .iter()
            .enumerate()
            .map(|(vout, out)| {
                let addr = numbered.ids[t.first_output + vout];
                let coin = cluster::Coin {
                    addr,
                    value: out.value,
                    script: out.script_type,
                };
                (coin, addr.is_some_and(|a| a >= fresh_from))
            })
            .collect(),
    };
    let (linked, _) = h.links(&view);
    linked.windows(2).map(|w| (w[0], w[1])).collect()
}

/// The epoch's blocks, txs, inputs and outputs in the flow graph, from
/// memory rather than read back from the rows, each group of blocks
/// written on a worker of its own; the coins' spenders are marked at the
/// run's end (`flow::set_spenders`).
fn append_flow(
    graph: &mut Appender,
    blocks: &[(Node, ParsedBlock)],
    layout: &Layout,
    groups: &[Range<usize>],
    numbered: &Numbered,
    spent: &[Coin],
) -> Result<()> {
    let shapes: Vec<Shape> = groups.iter().map(|g| layout.shape(g)).collect();
    let whole = layout.shape(&(0..blocks.len()));
    let parts = graph.room(whole)?.split(&shapes);
    parts
        .into_par_iter()
        .zip(groups)
        .try_for_each(|(mut room, group)| {
            for b in group.clone() {
                let first_tx = layout.ids.tx + layout.block_txs[b] as u64;
                room.block(first_tx, &blocks[b].1.hash);
                for t in &layout.txs[layout.block_txs[b]..layout.block_txs[b + 1]] {
                    room.tx(layout.output(t.first_output));
                    for coin in &spent[t.inputs()] {
                        room.input(coin.output, coin.value)?;
                    }
                    for (vout, out) in t.tx.outputs.iter().enumerate() {
                        room.output(out.value, numbered.ids[t.first_output + vout]);
                    }
                }
            }
            debug_assert!(room.full(), "a group's entries fill its part");
            Ok(())
        })
}

/// The `meta::Overwritten` rows of the coins the epoch's coinbases
/// overwrote (BIP30), as the writer's `bip30` writes them. Called after
/// the epoch's inputs are resolved: a coin an input took first was spent,
/// not overwritten. Its overwriter is of this epoch, since the coin gave
/// way to it here; only a coinbase's counts, as in the writer.
fn overwritten(layout: &Layout, coins: &mut Coins, batch: &mut SortedBatch) {
    for o in coins.overwritten() {
        let Some(addr) = o.coin.addr() else {
            continue;
        };
        let by = (o.by - layout.ids.output) as usize;
        let t = &layout.txs[layout.txs.partition_point(|t| t.first_output <= by) - 1];
        if t.tx.is_coinbase() {
            let row = OverwrittenCoin {
                value: o.coin.value,
                by: t.num,
            };
            batch.put_meta(meta::Overwritten(addr, o.coin.output), &row);
        }
    }
}

/// `addrs` and `addr_ids` rows of the addresses numbered from `first`,
/// into a batch per `ADDRESS_CHUNK` of them.
fn new_addresses(new: &[AddrKey], first: AddrId, batches: &mut [SortedBatch]) {
    new.par_chunks(ADDRESS_CHUNK)
        .zip(batches.par_iter_mut())
        .enumerate()
        .for_each(|(c, (keys, batch))| {
            for (i, key) in keys.iter().enumerate() {
                let id = first + (c * ADDRESS_CHUNK + i) as u64;
                batch.append::<cf::Addrs>(&id, key);
                batch.put::<cf::AddrIds>(key, &id);
            }
        })
}
