//! A chunk of chain rows as one Arrow record batch per chain table, in the
//! column order of `Table::schema`.

use anyhow::{anyhow, Result};
use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};

use crate::read::Chunk;
use crate::tables::Table;

/// The rows of `table` in `chunk`.
pub fn batch(table: Table, chunk: &Chunk) -> Result<RecordBatch> {
    let columns = match table {
        Table::Blocks => blocks(chunk)?,
        Table::Transactions => transactions(chunk)?,
        Table::Inputs => inputs(chunk)?,
        Table::Outputs => outputs(chunk)?,
        Table::AddressClusters | Table::Labels => {
            unreachable!("{table} is not a chain table")
        }
    };
    Ok(RecordBatch::try_new(table.schema(), columns)?)
}

fn blocks(c: &Chunk) -> Result<Vec<ArrayRef>> {
    let n = c.blocks.len();
    let (mut height, mut hash, mut prev, mut merkle) = (
        Int32Builder::with_capacity(n),
        hashes(n),
        hashes(n),
        hashes(n),
    );
    let mut time = timestamps(n);
    let (mut version, mut bits, mut nonce) = (
        Int32Builder::with_capacity(n),
        Int64Builder::with_capacity(n),
        Int64Builder::with_capacity(n),
    );
    let counts: [Int32Builder; 5] = std::array::from_fn(|_| Int32Builder::with_capacity(n));
    let [mut txs, mut ins, mut outs, mut size, mut weight] = counts;
    let mut fees = Int64Builder::with_capacity(n);
    for (h, b) in &c.blocks {
        height.append_value(int32(h.0)?);
        hash.append_value(hex(b.hash));
        prev.append_value(hex(b.header.prev_blockhash));
        merkle.append_value(hex(b.header.merkle_root));
        time.append_value(micros(b.header.time));
        version.append_value(b.header.version.to_consensus());
        bits.append_value(i64::from(b.header.bits.to_consensus()));
        nonce.append_value(i64::from(b.header.nonce));
        txs.append_value(int32(b.tx_count)?);
        ins.append_value(int32(b.input_count)?);
        outs.append_value(int32(b.output_count)?);
        size.append_value(int32(b.loc.len)?);
        weight.append_value(int32(b.weight)?);
        fees.append_option(b.fees.map(sats).transpose()?);
    }
    Ok(vec![
        finish(height),
        finish(hash),
        finish(prev),
        finish(merkle),
        finish(time),
        finish(version),
        finish(bits),
        finish(nonce),
        finish(txs),
        finish(ins),
        finish(outs),
        finish(size),
        finish(weight),
        finish(fees),
    ])
}

fn transactions(c: &Chunk) -> Result<Vec<ArrayRef>> {
    let n = c.txs.len();
    let mut height = Int32Builder::with_capacity(n);
    let mut time = timestamps(n);
    let mut position = Int32Builder::with_capacity(n);
    let mut txid = hashes(n);
    let mut version = Int32Builder::with_capacity(n);
    let mut locktime = Int64Builder::with_capacity(n);
    let sizes: [Int32Builder; 5] = std::array::from_fn(|_| Int32Builder::with_capacity(n));
    let [mut size, mut vsize, mut weight, mut ins, mut outs] = sizes;
    let mut fee = Int64Builder::with_capacity(n);
    let mut value = Int64Builder::with_capacity(n);
    let mut coinbase = BooleanBuilder::with_capacity(n);

    let mut output_value = vec![0u64; n];
    for (tx, o) in &c.outputs {
        output_value[*tx] = output_value[*tx]
            .checked_add(o.value)
            .ok_or_else(|| anyhow!("the outputs of tx {} overflow", c.txs[*tx].txid))?;
    }
    let mut blocks = c.blocks.iter().peekable();
    for (t, total) in c.txs.iter().zip(output_value) {
        // Txs come in block order: move to the block of this tx's height.
        while blocks.next_if(|(h, _)| *h < t.height).is_some() {}
        let (_, block) = blocks
            .peek()
            .ok_or_else(|| anyhow!("tx {} lies outside its chunk's blocks", t.txid))?;
        height.append_value(int32(t.height.0)?);
        time.append_value(micros(block.header.time));
        position.append_value(int32(t.position)?);
        txid.append_value(hex(t.txid));
        version.append_value(t.version);
        locktime.append_value(i64::from(t.locktime));
        size.append_value(int32(t.size)?);
        vsize.append_value(int32(t.vsize())?);
        weight.append_value(int32(t.weight)?);
        fee.append_option(t.fee.map(sats).transpose()?);
        ins.append_value(int32(t.input_count)?);
        outs.append_value(int32(t.output_count)?);
        value.append_value(sats(total)?);
        coinbase.append_value(t.is_coinbase());
    }
    Ok(vec![
        finish(height),
        finish(time),
        finish(position),
        finish(txid),
        finish(version),
        finish(locktime),
        finish(size),
        finish(vsize),
        finish(weight),
        finish(fee),
        finish(ins),
        finish(outs),
        finish(value),
        finish(coinbase),
    ])
}

fn inputs(c: &Chunk) -> Result<Vec<ArrayRef>> {
    let n = c.inputs.len();
    let mut height = Int32Builder::with_capacity(n);
    let (mut txid, mut prev_txid) = (hashes(n), hashes(n));
    let (mut index, mut vout) = (
        Int32Builder::with_capacity(n),
        Int32Builder::with_capacity(n),
    );
    let mut prev_height = Int32Builder::with_capacity(n);
    let mut value = Int64Builder::with_capacity(n);
    let mut script = StringBuilder::with_capacity(n, n * 6);
    let mut address = StringBuilder::with_capacity(n, n * 40);
    for i in &c.inputs {
        let tx = &c.txs[i.tx];
        height.append_value(int32(tx.height.0)?);
        txid.append_value(hex(tx.txid));
        index.append_value(int32(i.index)?);
        prev_txid.append_value(hex(i.prev.txid));
        vout.append_value(int32(i.prev.vout)?);
        prev_height.append_option(i.prev.height.map(|h| int32(h.0)).transpose()?);
        value.append_option(i.prev.value.map(sats).transpose()?);
        script.append_value(i.prev.script_type.name());
        address.append_option(c.address(i.prev.addr));
    }
    Ok(vec![
        finish(height),
        finish(txid),
        finish(index),
        finish(prev_txid),
        finish(vout),
        finish(prev_height),
        finish(value),
        finish(script),
        finish(address),
    ])
}

fn outputs(c: &Chunk) -> Result<Vec<ArrayRef>> {
    let n = c.outputs.len();
    let mut height = Int32Builder::with_capacity(n);
    let mut txid = hashes(n);
    let mut vout = Int32Builder::with_capacity(n);
    let mut value = Int64Builder::with_capacity(n);
    let mut script = StringBuilder::with_capacity(n, n * 6);
    let mut address = StringBuilder::with_capacity(n, n * 40);
    for (tx, o) in &c.outputs {
        let tx = &c.txs[*tx];
        height.append_value(int32(tx.height.0)?);
        txid.append_value(hex(tx.txid));
        vout.append_value(int32(o.vout)?);
        value.append_value(sats(o.value)?);
        script.append_value(o.script_type.name());
        address.append_option(c.address(o.addr));
    }
    Ok(vec![
        finish(height),
        finish(txid),
        finish(vout),
        finish(value),
        finish(script),
        finish(address),
    ])
}

/// Hashes in display order, as explorers and Bitcoin Core print them.
fn hex(hash: impl std::fmt::Display) -> String {
    hash.to_string()
}

fn hashes(n: usize) -> StringBuilder {
    StringBuilder::with_capacity(n, n * 64)
}

fn timestamps(n: usize) -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(n).with_timezone("+00:00")
}

fn finish(mut b: impl arrow_array::builder::ArrayBuilder) -> ArrayRef {
    b.finish()
}

fn micros(unix_seconds: u32) -> i64 {
    i64::from(unix_seconds) * 1_000_000
}

/// Counts, sizes and heights of a valid chain are far below 2^31.
fn int32(n: u32) -> Result<i32> {
    i32::try_from(n).map_err(|_| anyhow!("{n} does not fit a 32-bit signed column"))
}

/// Amounts of a valid chain are at most 21 M BTC (2.1e15 sat).
fn sats(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| anyhow!("{n} sat does not fit a 64-bit signed column"))
}
