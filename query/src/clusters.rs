//! Cluster answers: a cluster's figures, its members and history, and the
//! largest clusters. A lone address is a cluster of one under its own
//! number, with no cluster rows: its figures are its own. Callers name
//! clusters by id (their oldest address's number); the rows are read under
//! the key `Built::check_cluster` finds for it.

use rustc_hash::FxHashMap;
use satflow_indexer::cluster::view;
use satflow_indexer::store::Direction;
use satflow_proto::v1 as pb;
use satflow_schema::address::AddrStats;
use satflow_schema::cf;
use satflow_schema::cluster::{ClusterStats, Rank, RankKey};
use satflow_schema::script::AddrKey;
use satflow_schema::{AddrId, ClusterId, ClusterKey, TxNum};

use crate::addresses;
use crate::built::Built;
use crate::error::{QueryError, Result};
use crate::history::{self, HistoryQuery, Order};
use crate::index::Index;
use crate::inferred;
use crate::labels;
use crate::page::{Listing, Token};

/// The cluster holding the address `key`.
pub fn cluster_id_of(index: &Index, key: &AddrKey) -> Result<ClusterId> {
    let id = index.known_address_id(key)?;
    let built = Built::read(index.store())?;
    if id >= built.next_addr {
        return Err(QueryError::NotFound(format!(
            "address {id} is newer than the clusters, which include blocks up to height {}",
            built.height
        )));
    }
    let cluster = view::cluster_of(index.store(), id)?;
    Ok(view::id_of(index.store(), cluster)?)
}

pub fn cluster(index: &Index, id: ClusterId) -> Result<pb::Cluster> {
    let built = Built::read(index.store())?;
    let key = built.check_cluster(index.store(), id)?;
    cluster_keyed(index, &built, id, key)
}

/// Cluster `id`'s answer, its rows read under `key`.
fn cluster_keyed(
    index: &Index,
    built: &Built,
    id: ClusterId,
    key: ClusterKey,
) -> Result<pb::Cluster> {
    let oldest_address = index.address_string(Some(id.named_after()))?;
    let s = match view::stats(index.store(), key)? {
        Some(s) => s,
        None => lone_stats(index, key.holder(), built.next_tx)?,
    };
    let labels = labels::of_cluster(index, key)?;
    // Overwritten coins are not part of its balance, as they are not of
    // its addresses'.
    let lost = lost_by_cluster(index, built)?
        .get(&key)
        .copied()
        .unwrap_or(0);
    Ok(pb::Cluster {
        id: id.0,
        oldest_address,
        size: s.size,
        tx_count: s.tx_count,
        received: s.received,
        sent: s.sent,
        balance: s.balance().saturating_sub(lost),
        first_seen_height: s.first_seen,
        last_seen_height: s.last_seen,
        heuristics: built.heuristics.to_string(),
        as_of_height: built.height.0,
        labels: labels.labels,
        labels_omitted: labels.omitted,
        inferred: inferred::message(index.inferences().as_deref(), key),
    })
}

/// A lone address's figures as a cluster of one, up to the cluster tip
/// `next_tx`: its running totals, less the rows of txs past that tip, read
/// newest first. Clusters lag the index only by the blocks a run has not
/// clustered yet, so this reads as many rows as they lag, however long
/// the address's history (an exchange's hot wallet has millions of rows).
fn lone_stats(index: &Index, addr: AddrId, next_tx: TxNum) -> Result<ClusterStats> {
    let store = index.store();
    let mut past_tip = AddrStats::default();
    let mut newest = None;
    for row in store.pairs::<cf::History, _, _>(addr, TxNum(u64::MAX), Direction::Reverse) {
        let (txnum, row) = row?;
        if txnum < next_tx {
            newest = Some(txnum);
            break;
        }
        past_tip.add(&AddrStats::of_tx(&row));
    }
    let alone = ClusterStats {
        size: 1,
        ..Default::default()
    };
    let Some(newest) = newest else {
        // Not seen before the cluster tip.
        return Ok(alone);
    };
    let oldest = match store
        .pairs::<cf::History, _, _>(addr, TxNum(0), Direction::Forward)
        .next()
    {
        Some(row) => row?.0,
        None => newest,
    };
    let mut all = store.need::<cf::AddrStats>(&addr)?;
    all.add(&past_tip.negated());
    Ok(ClusterStats {
        tx_count: all.tx_count as u64,
        received: all.received as u64,
        sent: all.sent as u64,
        first_seen: index.tx_row(oldest)?.height.0,
        last_seen: index.tx_row(newest)?.height.0,
        ..alone
    })
}

/// One page of a cluster's addresses, oldest first.
pub fn members(
    index: &Index,
    id: ClusterId,
    page_size: usize,
    page_token: &str,
) -> Result<pb::ListClusterMembersResponse> {
    let built = Built::read(index.store())?;
    let key = built.check_cluster(index.store(), id)?;
    // Tokens are tied to the id, which a merge into a larger cluster keeps
    // while the key changes.
    let from = Token::resume("page_token", page_token, Listing::ClusterMembers, id.0)?.unwrap_or(0);
    let mut addresses = Vec::new();
    let mut next_page_token = String::new();
    let rows =
        index
            .store()
            .pairs::<cf::ClusterMembers, _, _>(key, AddrId(from), Direction::Forward);
    for r in rows {
        let (member, ()) = r?;
        if addresses.len() == page_size {
            next_page_token = Token {
                listing: Listing::ClusterMembers,
                scope: id.0,
                next: member.0,
            }
            .encode();
            break;
        }
        addresses.push(index.address_string(Some(member))?);
    }
    if view::stats(index.store(), key)?.is_none() {
        // A lone address: its own only member, and no member rows.
        addresses.push(index.address_string(Some(key.holder()))?);
    }
    Ok(pb::ListClusterMembersResponse {
        addresses,
        next_page_token,
    })
}

/// One page of a cluster's transactions, up to the cluster tip.
pub fn history(
    index: &Index,
    id: ClusterId,
    q: &HistoryQuery,
) -> Result<pb::ListAddressHistoryResponse> {
    let built = Built::read(index.store())?;
    let key = built.check_cluster(index.store(), id)?;
    let listing = match q.order {
        Order::OldestFirst => Listing::ClusterHistoryOldestFirst,
        Order::NewestFirst => Listing::ClusterHistoryNewestFirst,
    };
    // Only what the clusters include: blocks above their tip are not theirs yet.
    let tip = built.height.0;
    let q = HistoryQuery {
        max_height: Some(q.max_height.map_or(tip, |h| h.min(tip))),
        ..*q
    };
    match view::stats(index.store(), key)? {
        Some(_) => history::page::<cf::ClusterHistory, _>(index, key, id.0, listing, &q),
        None => history::page::<cf::History, _>(index, key.holder(), id.0, listing, &q),
    }
}

/// One page of the clusters, largest first `by` size or balance.
pub fn largest(
    index: &Index,
    by: Rank,
    page_size: usize,
    page_token: &str,
) -> Result<pb::ListLargestClustersResponse> {
    let built = Built::read(index.store())?;
    let listing = match by {
        Rank::Size => Listing::LargestBySize,
        Rank::Balance => Listing::LargestByBalance,
    };
    // The ranking's balances count coins a repeated coinbase overwrote
    // (BIP30): clusters that held one are placed by their balance without
    // it instead (two on mainnet).
    let lost = match by {
        Rank::Balance => lost_by_cluster(index, &built)?,
        Rank::Size => FxHashMap::default(),
    };
    let place = |key: ClusterKey, s: &ClusterStats| {
        let mut at = RankKey::new(by, s, key);
        at.value -= lost.get(&key).map_or(0, |&l| l.min(at.value));
        at
    };
    let start = match Token::resume("page_token", page_token, listing, 0)? {
        Some(key) => {
            let key = ClusterKey(key);
            let s = view::stats(index.store(), key)?.ok_or_else(|| {
                QueryError::InvalidArgument(
                    "page_token: its cluster no longer exists; start again".into(),
                )
            })?;
            place(key, &s)
        }
        None => RankKey::end_of(by),
    };
    let order = |k: &RankKey| (k.value, k.cluster.0);
    let mut moved = Vec::new();
    for &key in lost.keys() {
        if let Some(s) = view::stats(index.store(), key)? {
            moved.push(place(key, &s));
        }
    }
    moved.retain(|k| order(k) <= order(&start));
    moved.sort_unstable_by_key(|k| std::cmp::Reverse(order(k)));
    let mut moved = moved.into_iter().peekable();
    let mut ranked = index
        .store()
        .scan::<cf::ClusterRank>(&start, Direction::Reverse)
        .map(|item| item.map(|(key, ())| key))
        .take_while(|item| !matches!(item, Ok(key) if key.rank != by))
        .filter(|item| !matches!(item, Ok(key) if lost.contains_key(&key.cluster)))
        .peekable();
    let mut clusters = Vec::new();
    let mut next_page_token = String::new();
    loop {
        // The larger of the next ranked and the next moved cluster.
        let key = match (ranked.peek(), moved.peek()) {
            (Some(Ok(r)), Some(m)) if order(m) < order(r) => ranked.next(),
            (_, Some(_)) => moved.next().map(Ok),
            (Some(_), None) => ranked.next(),
            (None, None) => break,
        };
        let key = key.expect("peeked")?;
        if clusters.len() == page_size {
            next_page_token = Token {
                listing,
                scope: 0,
                next: key.cluster.0,
            }
            .encode();
            break;
        }
        let id = view::id_of(index.store(), key.cluster)?;
        clusters.push(cluster_keyed(index, &built, id, key.cluster)?);
    }
    Ok(pb::ListLargestClustersResponse {
        clusters,
        next_page_token,
    })
}

/// What each cluster lost to coins a repeated coinbase overwrote (BIP30)
/// before the clusters' tip: coins of its members that cannot be spent.
fn lost_by_cluster(index: &Index, built: &Built) -> Result<FxHashMap<ClusterKey, u64>> {
    let mut lost = FxHashMap::default();
    for (addr, coin) in addresses::all_overwritten(index) {
        if coin.by < built.next_tx {
            *lost
                .entry(view::cluster_of(index.store(), addr)?)
                .or_default() += coin.value;
        }
    }
    Ok(lost)
}

/// The addresses of the cluster keyed `key`, oldest first, each read as it
/// is taken: a caller that stops early reads no further.
pub(crate) fn members_lazily(
    index: &Index,
    key: ClusterKey,
) -> impl Iterator<Item = Result<AddrId>> + '_ {
    let mut rows = index
        .store()
        .pairs::<cf::ClusterMembers, _, _>(key, AddrId(0), Direction::Forward)
        .peekable();
    // A lone address has no member rows: it is its own only member.
    let lone = rows.peek().is_none().then_some(Ok(key.holder()));
    rows.map(|r| r.map(|(m, ())| m).map_err(QueryError::from))
        .chain(lone)
}
