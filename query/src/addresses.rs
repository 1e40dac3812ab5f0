//! Addresses: an address's summary, a page of its history, a page of its
//! unspent outputs, as `satflow.v1` messages.

use bitcoin::{Transaction, Txid};
use satflow_indexer::address;
use satflow_indexer::store::Direction;
use satflow_proto::v1 as pb;
use satflow_schema::meta::OverwrittenCoin;
use satflow_schema::script::AddrKey;
use satflow_schema::{cf, AddrId, OutNum};

use crate::built;
use crate::error::Result;
use crate::history::{self, HistoryQuery, Order};
use crate::index::Index;
use crate::inferred;
use crate::labels;
use crate::page::{Listing, Token};
use crate::scripts;

/// The address's coins that a later transaction with the same txid
/// overwrote (BIP30: `meta::Overwritten`, in output order). They can never
/// be spent, and Bitcoin Core's UTXO set does not hold them, so they are
/// left out of the address's balance, unspent count and unspent outputs;
/// its `addr_stats` and `addr_utxos` rows, like its history, still count
/// them, so that `received` and `sent` stay the sums of its history. The
/// index holds them all, read once per catch-up: mainnet has two.
fn overwritten(index: &Index, id: AddrId) -> Vec<(OutNum, OverwrittenCoin)> {
    index
        .overwritten_while(id, |a| a == id)
        .into_iter()
        .map(|(_, output, coin)| (output, coin))
        .collect()
}

/// Every overwritten coin (see `overwritten`) of every address, for the
/// figures of clusters.
pub(crate) fn all_overwritten(index: &Index) -> Vec<(AddrId, OverwrittenCoin)> {
    index
        .overwritten_while(AddrId(0), |_| true)
        .into_iter()
        .map(|(addr, _, coin)| (addr, coin))
        .collect()
}

/// None when the chain never paid to or spent from the address.
pub fn summary(index: &Index, key: &AddrKey) -> Result<Option<pb::AddressSummary>> {
    let Some(id) = index.address_id(key)? else {
        return Ok(None);
    };
    let stats = match index.store().get::<cf::AddrStats>(&id)? {
        Some(stats) => stats,
        None => {
            index.built()?;
            index.store().need::<cf::AddrStats>(&id)?
        }
    };
    let overwritten = overwritten(index, id);
    let lost: u64 = overwritten.iter().map(|(_, c)| c.value).sum();
    let (first_seen, last_seen) = history::seen_heights(index, id)?;
    let labels = labels::of_address(index, key, id)?;
    // Only with a store of inferences: a summary costs no lookup otherwise.
    let inferred = match index.inferences() {
        Some(store) => {
            let cover = index.label_index().cover();
            let cluster = built::cluster_or_self(index.store(), id, cover)?;
            inferred::message(Some(&store), cluster)
        }
        None => None,
    };
    Ok(Some(pb::AddressSummary {
        address: address::encode(key, index.network()),
        script_type: key.kind().name().into(),
        tx_count: stats.tx_count as u64,
        received: stats.received as u64,
        sent: stats.sent as u64,
        balance: (stats.balance() as u64).saturating_sub(lost),
        utxo_count: (stats.utxo_count as u64).saturating_sub(overwritten.len() as u64),
        first_seen_height: first_seen.0,
        last_seen_height: last_seen.0,
        labels: labels.labels,
        labels_omitted: labels.omitted,
        inferred,
    }))
}

/// `summary` of the address a request named `given`: as `summary`, but a
/// witness program the index files under its script's hash (pay-to-anchor,
/// witness v2+) named by its bech32m address or its script in hex is shown
/// as its bech32m address, as asked.
pub fn summary_as_requested(
    index: &Index,
    key: &AddrKey,
    given: &str,
) -> Result<Option<pb::AddressSummary>> {
    let mut summary = summary(index, key)?;
    if let (Some(s), Some(shown)) = (
        summary.as_mut(),
        scripts::requested_witness_address(given, index.network()),
    ) {
        s.address = shown;
    }
    Ok(summary)
}

/// One page of the transactions touching `key`.
pub fn history(
    index: &Index,
    key: &AddrKey,
    q: &HistoryQuery,
) -> Result<pb::ListAddressHistoryResponse> {
    let id = index.known_address_id(key)?;
    let listing = match q.order {
        Order::OldestFirst => Listing::HistoryOldestFirst,
        Order::NewestFirst => Listing::HistoryNewestFirst,
    };
    history::page::<cf::History, _>(index, id, id.0, listing, q)
}

/// One page of `key`'s unspent outputs, in chain order.
pub fn utxos(
    index: &Index,
    key: &AddrKey,
    page_size: usize,
    page_token: &str,
) -> Result<pb::ListAddressUtxosResponse> {
    let id = index.known_address_id(key)?;
    let first = Token::resume("page_token", page_token, Listing::Utxos, id.0)?.unwrap_or(0);
    let mut utxos = Vec::new();
    let mut next_page_token = String::new();
    let mut last_read: Option<(Txid, Option<Transaction>)> = None;
    let overwritten = overwritten(index, id);
    let rows = index
        .store()
        .pairs::<cf::AddrUtxos, _, _>(id, OutNum(first), Direction::Forward);
    for item in rows {
        let (n, value) = item?;
        if overwritten.iter().any(|(o, _)| *o == n) {
            continue;
        }
        if utxos.len() == page_size {
            next_page_token = Token {
                listing: Listing::Utxos,
                scope: id.0,
                next: n.0,
            }
            .encode();
            break;
        }
        let out = index.output(n)?;
        let tx = index.creator(n, &out)?;
        // One blk read per transaction of the page: a page lists an
        // address's coins in chain order, so a tx's coins are adjacent.
        if last_read.as_ref().map(|(txid, _)| txid) != Some(&tx.txid) {
            last_read = Some((tx.txid, index.try_read_tx(&tx)?));
        }
        let raw = last_read.as_ref().and_then(|(_, t)| t.as_ref());
        let script_pubkey = raw
            .and_then(|t| t.output.get(out.vout as usize))
            .map(|o| hex::encode(o.script_pubkey.as_bytes()))
            .unwrap_or_default();
        utxos.push(pb::Utxo {
            txid: tx.txid.to_string(),
            vout: out.vout,
            value,
            height: tx.height.0,
            coinbase: tx.is_coinbase(),
            script_kind: scripts::kind(out.script_type).into(),
            script_pubkey,
        });
    }
    if utxos.is_empty() {
        index.built()?;
    }
    Ok(pb::ListAddressUtxosResponse {
        utxos,
        next_page_token,
    })
}
