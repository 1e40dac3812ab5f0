//! Histories: the transactions of an address (`cf::History`) or of a
//! cluster (`cf::ClusterHistory`), read a page at a time. A page is a seek
//! to the token's key, then a scan of one page (never a skip over earlier
//! pages).

use std::ops::Range;

use satflow_indexer::store::Direction;
use satflow_proto::v1 as pb;
use satflow_schema::address::HistoryRow;
use satflow_schema::cf::{self, Family};
use satflow_schema::ids::Id;
use satflow_schema::{AddrId, Height, TxNum};

use crate::error::{QueryError, Result};
use crate::index::Index;
use crate::page::{Listing, Token};

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// One page of an address's history.
#[derive(Clone, Copy)]
pub struct HistoryQuery<'a> {
    pub order: Order,
    /// Inclusive height bounds.
    pub min_height: Option<u32>,
    pub max_height: Option<u32>,
    pub page_size: usize,
    pub page_token: &'a str,
}

/// A page of `F`'s `(id, tx)` rows as history entries; its token is tied
/// to `scope`, the number the caller named (an address's, or a cluster's
/// id, which stays while the key its rows are under may change).
pub(crate) fn page<F, A>(
    index: &Index,
    id: A,
    scope: u64,
    listing: Listing,
    q: &HistoryQuery,
) -> Result<pb::ListAddressHistoryResponse>
where
    F: Family<Key = (A, TxNum), Value = HistoryRow>,
    A: Id + 'static,
{
    let resume = Token::resume("page_token", q.page_token, listing, scope)?.map(TxNum);
    let txnums = tx_range(index, q.min_height.map(Height), q.max_height.map(Height))?;
    let mut rows = rows::<F, A>(index, id, q.order, txnums, resume, q.page_size + 1)?;
    let next_page_token = match rows.len() > q.page_size {
        true => Token {
            listing,
            scope,
            next: rows.pop().expect("more than a page").0 .0,
        }
        .encode(),
        false => String::new(),
    };
    let mut times = BlockTimes::default();
    let entries = rows
        .into_iter()
        .map(|(txnum, h)| {
            let tx = index.tx_row(txnum)?;
            Ok(pb::HistoryEntry {
                txid: tx.txid.to_string(),
                height: tx.height.0,
                time: times.get(index, tx.height)?,
                received: h.received,
                sent: h.sent,
                net: h.net(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(pb::ListAddressHistoryResponse {
        entries,
        next_page_token,
    })
}

/// Up to `limit` rows of `F` for `id` with tx numbers in `txnums`, from
/// `resume` (inclusive) in `order`.
pub(crate) fn rows<F, A>(
    index: &Index,
    id: A,
    order: Order,
    txnums: Range<TxNum>,
    resume: Option<TxNum>,
    limit: usize,
) -> Result<Vec<(TxNum, HistoryRow)>>
where
    F: Family<Key = (A, TxNum), Value = HistoryRow>,
    A: Id + 'static,
{
    if txnums.is_empty() {
        return Ok(Vec::new());
    }
    let last = TxNum(txnums.end.0 - 1);
    let (from, dir) = match order {
        Order::OldestFirst => (
            resume.map_or(txnums.start, |r| r.max(txnums.start)),
            Direction::Forward,
        ),
        Order::NewestFirst => (resume.map_or(last, |r| r.min(last)), Direction::Reverse),
    };
    let mut out = Vec::new();
    for item in index.store().pairs::<F, A, TxNum>(id, from, dir) {
        let (txnum, row) = item?;
        if !txnums.contains(&txnum) || out.len() == limit {
            break;
        }
        out.push((txnum, row));
    }
    Ok(out)
}

/// Every tx number: a history's rows without height bounds.
pub(crate) fn all_txs() -> Range<TxNum> {
    TxNum(0)..TxNum(u64::MAX)
}

/// Heights of an address's first and last transactions: one iterator
/// for both ends of its history, and one lookup of a tx row when they are
/// the same transaction (as for most addresses).
pub(crate) fn seen_heights(index: &Index, id: AddrId) -> Result<(Height, Height)> {
    let (first, last) = index
        .store()
        .first_and_last::<cf::History, _, _>(id, TxNum(0), TxNum(u64::MAX))?
        .ok_or_else(|| {
            QueryError::Internal(anyhow::anyhow!("address {id} has stats but no history"))
        })?;
    let oldest = index.tx_row(first)?.height;
    let newest = match last == first {
        true => oldest,
        false => index.tx_row(last)?.height,
    };
    Ok((oldest, newest))
}

/// Tx numbers of the blocks at heights `min..=max`, clipped to the chain
/// the index holds: above the tip, and below the first block of an index
/// that starts later than genesis (which holds no block there, and whose
/// history from below its start is empty, not unknown).
fn tx_range(index: &Index, min: Option<Height>, max: Option<Height>) -> Result<Range<TxNum>> {
    let (tip_height, tip) = index.tip()?;
    let base = index.base_height();
    let first_tx_at = |h: Height| -> Result<TxNum> {
        match h > tip_height {
            true => Ok(tip.next_ids().tx),
            false => Ok(index.block_row(h.max(base))?.first_tx),
        }
    };
    let start = min.map_or(Ok(TxNum(0)), first_tx_at)?;
    let end = match max {
        Some(h) => first_tx_at(Height(h.0.saturating_add(1)))?,
        None => tip.next_ids().tx,
    };
    Ok(start..end.max(start))
}

/// Header times of the blocks a page touches; consecutive entries often
/// share a block.
#[derive(Default)]
struct BlockTimes {
    last: Option<(Height, u32)>,
}

impl BlockTimes {
    fn get(&mut self, index: &Index, height: Height) -> Result<u32> {
        match self.last {
            Some((h, time)) if h == height => Ok(time),
            _ => {
                let time = index.block_row(height)?.header.time;
                self.last = Some((height, time));
                Ok(time)
            }
        }
    }
}
