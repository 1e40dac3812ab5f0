//! Why two addresses share a cluster: a shortest chain of the
//! transactions the heuristics linked them by.

use std::collections::{HashMap, HashSet, VecDeque};

use satflow_indexer::cluster::view::{self, load_tx};
use satflow_indexer::store::Direction;
use satflow_proto::v1 as pb;
use satflow_schema::cf;
use satflow_schema::script::AddrKey;
use satflow_schema::{AddrId, TxNum};

use crate::built::Built;
use crate::error::{QueryError, Result};
use crate::index::Index;

/// Transactions a link search may read before giving up.
const LINK_BUDGET: usize = 200_000;

/// A shortest chain of linking transactions from `from` to `to`; gives up
/// with DeadlineExceeded once `expired()`.
pub(crate) fn explain(
    index: &Index,
    from: &AddrKey,
    to: &AddrKey,
    expired: impl Fn() -> bool,
) -> Result<pb::LinkPath> {
    let store = index.store();
    let built = Built::read(store)?;
    let (a, b) = (index.known_address_id(from)?, index.known_address_id(to)?);
    let (ca, cb) = (view::cluster_of(store, a)?, view::cluster_of(store, b)?);
    if ca != cb {
        return Err(QueryError::NotFound(format!(
            "nothing links them: {} is in cluster {}, {} in cluster {}",
            index.address_string(Some(a))?,
            view::id_of(store, ca)?,
            index.address_string(Some(b))?,
            view::id_of(store, cb)?
        )));
    }
    // Breadth first over addresses; an edge is a tx the heuristics say links two.
    let mut came_from: HashMap<AddrId, (AddrId, TxNum, &'static str)> = HashMap::new();
    let mut queue = VecDeque::from([a]);
    let mut read = HashSet::new();
    'search: while let Some(addr) = queue.pop_front() {
        if addr == b {
            break 'search;
        }
        for r in store.pairs::<cf::History, _, _>(addr, TxNum(0), Direction::Forward) {
            let (txnum, _) = r?;
            if txnum >= built.next_tx {
                break;
            }
            // Checked on every row, read or not: an address's history
            // can be millions of rows of transactions already read.
            if expired() {
                return Err(QueryError::DeadlineExceeded);
            }
            if !read.insert(txnum) {
                continue;
            }
            if read.len() > LINK_BUDGET {
                return Err(QueryError::ResourceExhausted(format!(
                    "no link found within {LINK_BUDGET} transactions ({} addresses reached); the cluster is too large to search this way",
                    came_from.len() + 1
                )));
            }
            let tx = load_tx(store, txnum)?;
            let (linked, _) = built.heuristics.links(&tx);
            if !linked.contains(&addr) {
                continue;
            }
            let inputs: HashSet<AddrId> = tx.inputs.iter().filter_map(|s| s.addr).collect();
            for n in linked {
                if n == a || came_from.contains_key(&n) {
                    continue;
                }
                let reason = match inputs.contains(&n) && inputs.contains(&addr) {
                    true => "common input",
                    false => "change",
                };
                came_from.insert(n, (addr, txnum, reason));
                queue.push_back(n);
            }
        }
    }
    if a != b && !came_from.contains_key(&b) {
        return Err(QueryError::Internal(anyhow::anyhow!(
            "addresses {a} and {b} share cluster {} but no linking transactions were found",
            view::id_of(store, ca)?
        )));
    }
    let mut steps = vec![pb::LinkStep {
        address: index.address_string(Some(b))?,
        txid: String::new(),
        reason: String::new(),
    }];
    let mut at = b;
    while let Some(&(prev, txnum, reason)) = came_from.get(&at) {
        steps.push(pb::LinkStep {
            address: index.address_string(Some(prev))?,
            txid: index.tx_row(txnum)?.txid.to_string(),
            reason: reason.into(),
        });
        at = prev;
    }
    steps.reverse();
    Ok(pb::LinkPath { steps })
}
