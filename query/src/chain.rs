//! The chain: the index's status, blocks, transactions and raw
//! transactions, as `satflow.v1` messages.

use std::time::{SystemTime, UNIX_EPOCH};

use bitcoin::{BlockHash, Txid};
use satflow_indexer::labels::{self, Category};
use satflow_proto::v1 as pb;
use satflow_schema::{cf, meta, Height, TxNum};

use crate::error::{QueryError, Result};
use crate::index::Index;
use crate::page::{Listing, Token};
use crate::scripts;

pub enum BlockId {
    Height(u32),
    Hash(BlockHash),
}

pub fn status(index: &Index) -> Result<pb::ChainStatus> {
    let (height, tip) = index.tip()?;
    let next = tip.next_ids();
    let (best, lag_blocks) = behind(index, height)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Ok(pb::ChainStatus {
        network: index.network().to_string(),
        tip_height: height.0,
        tip_hash: tip.hash.to_string(),
        tip_time: tip.header.time,
        tx_count: next.tx.0,
        output_count: next.output.0,
        address_count: next.addr.0,
        lag_seconds: now - i64::from(tip.header.time),
        first_height: index.base_height().0,
        best_header_height: best.0,
        lag_blocks,
    })
}

/// The best header `satflow index` found at its last scan (`tip` when it
/// recorded none), and how many blocks `tip` is behind it.
pub fn behind(index: &Index, tip: Height) -> Result<(Height, u32)> {
    let best = index
        .store()
        .meta(meta::BestHeader)?
        .map_or(tip, |p| p.height);
    Ok((best, best.0.saturating_sub(tip.0)))
}

/// A block's header fields and one page of its txids.
pub fn block(index: &Index, id: &BlockId, page_size: usize, page_token: &str) -> Result<pb::Block> {
    let height = match id {
        BlockId::Height(h) => Height(*h),
        BlockId::Hash(hash) => index.store().height_of(hash)?.ok_or_else(|| {
            QueryError::NotFound(format!("block {hash} is not on the indexed best chain"))
        })?,
    };
    let row = index.block_row(height)?;
    let scope = u64::from(height.0);
    let start =
        Token::resume("tx_page_token", page_token, Listing::BlockTxids, scope)?.unwrap_or(0);
    let end = u64::from(row.tx_count).min(start.saturating_add(page_size as u64));
    let txids = (start..end)
        .map(|pos| Ok(index.tx_row(row.first_tx + pos)?.txid.to_string()))
        .collect::<Result<Vec<_>>>()?;
    let next_tx_page_token = match end < u64::from(row.tx_count) {
        true => Token {
            listing: Listing::BlockTxids,
            scope,
            next: end,
        }
        .encode(),
        false => String::new(),
    };
    let h = &row.header;
    Ok(pb::Block {
        height: height.0,
        hash: row.hash.to_string(),
        prev_hash: h.prev_blockhash.to_string(),
        merkle_root: h.merkle_root.to_string(),
        version: h.version.to_consensus(),
        time: h.time,
        bits: h.bits.to_consensus(),
        nonce: h.nonce,
        tx_count: row.tx_count,
        size: row.loc.len,
        weight: row.weight,
        fees: row.fees,
        file: row.loc.file,
        offset: row.loc.offset,
        txids,
        next_tx_page_token,
        pool: block_pool(index, row.first_tx)?,
    })
}

pub fn transaction(
    index: &Index,
    txid: &Txid,
    page_size: usize,
    page_token: &str,
) -> Result<pb::Transaction> {
    let (txnum, row) = index.tx_by_id(txid)?;
    let block = index.block_row(row.height)?;
    let spent_outputs = match row.is_coinbase() {
        true => Vec::new(),
        false => index.store().need::<cf::Inputs>(&txnum)?,
    };
    let (input_count, output_count) = (spent_outputs.len() as u32, row.output_count);
    // One token resumes both lists: the first input in its high half, the
    // first output in its low half.
    let resume = Token::resume("page_token", page_token, Listing::TxInputsOutputs, txnum.0)?;
    let (first_input, first_output) = resume.map_or((0, 0), |n| ((n >> 32) as u32, n as u32));
    if first_input > input_count || first_output > output_count {
        return Err(QueryError::InvalidArgument(
            "page_token: beyond the transaction's inputs or outputs".into(),
        ));
    }
    let size = page_size.min(u32::MAX as usize) as u32;
    let end_input = first_input.saturating_add(size).min(input_count);
    let end_output = first_output.saturating_add(size).min(output_count);
    let next_page_token = match end_input < input_count || end_output < output_count {
        true => Token {
            listing: Listing::TxInputsOutputs,
            scope: txnum.0,
            next: u64::from(end_input) << 32 | u64::from(end_output),
        }
        .encode(),
        false => String::new(),
    };
    let inputs = spent_outputs[first_input as usize..end_input as usize]
        .iter()
        .map(|&n| {
            let out = index.output(n)?;
            let prev_txid = match out.tx {
                None => index.store().need::<cf::Outside>(&n)?,
                Some(tx) => index.tx_row(tx)?.txid,
            };
            Ok(pb::Input {
                prev_txid: prev_txid.to_string(),
                prev_vout: out.vout,
                value: out.known_value(),
                address: index.address_string(out.addr)?,
                script_type: out.script_type.name().into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Scripts and the wtxid come from the blk files; without them the
    // answer keeps what the index holds.
    let tx = index.try_read_tx(&row)?;
    let outputs = (first_output..end_output)
        .map(|vout| row.first_output + u64::from(vout))
        .map(|n| {
            let out = index.output(n)?;
            let spent_by = match index.store().get::<cf::Spends>(&n)? {
                Some(r) => {
                    let spender = index.tx_row(r.tx)?;
                    Some(pb::Spend {
                        txid: spender.txid.to_string(),
                        vin: r.vin,
                        height: spender.height.0,
                    })
                }
                None => {
                    index.built()?;
                    None
                }
            };
            let script = tx
                .as_ref()
                .and_then(|t| t.output.get(out.vout as usize))
                .map(|o| o.script_pubkey.as_bytes());
            let address = match script.and_then(|s| scripts::witness_address(s, index.network())) {
                Some(a) => a,
                None => index.address_string(out.addr)?,
            };
            Ok(pb::Output {
                vout: out.vout,
                value: out.value,
                script_type: out.script_type.name().into(),
                address,
                spent_by,
                script_kind: scripts::kind(out.script_type).into(),
                script_pubkey: script.map(hex::encode).unwrap_or_default(),
                op_return_data: script
                    .and_then(scripts::op_return_data)
                    .map(hex::encode)
                    .unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(pb::Transaction {
        txid: row.txid.to_string(),
        block_hash: block.hash.to_string(),
        height: row.height.0,
        time: block.header.time,
        position: row.position,
        version: row.version,
        locktime: row.locktime,
        size: row.size,
        vsize: row.vsize(),
        weight: row.weight,
        fee: row.fee,
        coinbase: row.is_coinbase(),
        inputs,
        outputs,
        wtxid: tx
            .map(|t| t.compute_wtxid().to_string())
            .unwrap_or_default(),
        input_count,
        output_count,
        first_input,
        first_output,
        next_page_token,
    })
}

/// The transaction's bytes, read back from its blk file and checked
/// against its txid.
pub fn raw_transaction(index: &Index, txid: &Txid) -> Result<pb::RawTransaction> {
    let (_, row) = index.tx_by_id(txid)?;
    let (raw, _) = index.read_tx(&row)?;
    Ok(pb::RawTransaction {
        txid: txid.to_string(),
        height: row.height.0,
        raw,
    })
}

/// The pool that mined the block whose coinbase is tx number `coinbase`:
/// by coinbase tag, else by a mining_pool label on a coinbase output.
fn block_pool(index: &Index, coinbase: TxNum) -> Result<String> {
    let label_index = index.label_index();
    let row = index.tx_row(coinbase)?;
    if !label_index.tags().is_empty() {
        // Tags are read from the blk files (checked against the txid);
        // without them, labels still answer.
        if let Some(tx) = index.try_read_tx(&row)? {
            let script = tx
                .input
                .first()
                .map_or(&[][..], |i| i.script_sig.as_bytes());
            let found = label_index
                .tags()
                .iter()
                .filter(|t| !t.tag.is_empty())
                .find(|t| script.windows(t.tag.len()).any(|w| w == t.tag.as_bytes()));
            if let Some(t) = found {
                return Ok(t.pool.clone());
            }
        }
    }
    for n in row.outputs() {
        let Some(addr) = index.output(n)?.addr else {
            continue;
        };
        let key = index.address_key(addr)?;
        if let Some(l) = labels::of(index.store(), &key)?
            .into_iter()
            .find(|l| l.category == Category::MiningPool)
        {
            return Ok(l.label);
        }
    }
    Ok(String::new())
}
