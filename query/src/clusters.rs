//! Cluster answers: a cluster's figures, its members and history, the
//! largest clusters, and the chain of transactions linking two addresses.

use std::collections::{HashMap, HashSet, VecDeque};

use rocksdb::{Direction, IteratorMode};
use satflow_indexer::cluster::rows::{rank_key, ClusterStats, Rank};
use satflow_indexer::cluster::view::{self, load_tx, pairs};
use satflow_indexer::cluster::{self, Heuristics};
use satflow_indexer::schema::{cf, key_u64, split_pair, AddrStats};
use satflow_indexer::script::AddrKey;
use satflow_proto::v1 as pb;

use crate::error::{QueryError, Result};
use crate::page::{Listing, Token};
use crate::reader::{HistoryQuery, Index, Order};

/// Transactions a link search may read before giving up.
const LINK_BUDGET: usize = 200_000;

/// What the clusters were built with and up to where.
pub(crate) struct Built {
    heuristics: Heuristics,
    pub height: u32,
    /// Tx and address numbers at and above these are not in the clusters yet.
    next_tx: u64,
    pub next_addr: u64,
}

impl Index {
    pub(crate) fn built(&self) -> Result<Built> {
        let not_built = || {
            QueryError::FailedPrecondition(
                "address clusters were not built for this index: run `satflow cluster --db <dir>`"
                    .into(),
            )
        };
        let heuristics = cluster::heuristics(&self.store)?.ok_or_else(not_built)?;
        let (height, _) = cluster::tip(&self.store)?.ok_or_else(not_built)?;
        let next = self.block_row(height)?.next_ids();
        Ok(Built {
            heuristics,
            height,
            next_tx: next.tx,
            next_addr: next.addr,
        })
    }

    pub fn cluster_id_of(&self, key: &AddrKey) -> Result<u64> {
        let id = self.known_address_id(key)?;
        let built = self.built()?;
        if id >= built.next_addr {
            return Err(QueryError::NotFound(format!(
                "address {id} is newer than the clusters, which include blocks up to height {}",
                built.height
            )));
        }
        Ok(view::cluster_of(&self.store, id)?)
    }

    /// Checks that `id` names a cluster (its lowest address number).
    pub(crate) fn cluster_root(&self, id: u64, built: &Built) -> Result<()> {
        if id >= built.next_addr {
            return Err(QueryError::NotFound(format!(
                "no cluster {id}: the clusters hold {} addresses (up to height {})",
                built.next_addr, built.height
            )));
        }
        match view::cluster_of(&self.store, id)? {
            c if c == id => Ok(()),
            c => Err(QueryError::NotFound(format!(
                "{id} is not a cluster id: address {id} belongs to cluster {c}"
            ))),
        }
    }

    pub fn cluster(&self, id: u64) -> Result<pb::Cluster> {
        let built = self.built()?;
        self.cluster_root(id, &built)?;
        let oldest_address = self.address_string(Some(id))?;
        let s = match view::stats(&self.store, id)? {
            Some(s) => s,
            None => self.lone_stats(id, built.next_tx)?,
        };
        Ok(pb::Cluster {
            id,
            oldest_address,
            size: s.size,
            tx_count: s.tx_count,
            received: s.received,
            sent: s.sent,
            balance: s.balance(),
            first_seen_height: s.first_seen,
            last_seen_height: s.last_seen,
            heuristics: built.heuristics.to_string(),
            as_of_height: built.height,
            labels: self.cluster_labels(id)?,
        })
    }

    /// A lone address's figures as a cluster of one, up to the cluster tip.
    fn lone_stats(&self, id: u64, next_tx: u64) -> Result<ClusterStats> {
        let (_, tip) = self.tip()?;
        let alone = ClusterStats {
            size: 1,
            ..Default::default()
        };
        if next_tx == tip.next_ids().tx {
            // The clusters are as new as the index: the running totals answer.
            let all = AddrStats::decode(&self.store.need(cf::ADDR_STATS, &key_u64(id))?)?;
            return Ok(ClusterStats {
                tx_count: all.tx_count as u64,
                received: all.received as u64,
                sent: all.sent as u64,
                first_seen: self.seen_height(id, Order::OldestFirst)?,
                last_seen: self.seen_height(id, Order::NewestFirst)?,
                ..alone
            });
        }
        let mut s = alone;
        for (txnum, row) in view::history(&self.store, id, false, next_tx)? {
            s.add_tx(self.tx_row(txnum)?.height, row.credited(), row.sent);
        }
        Ok(s)
    }

    pub fn cluster_members(
        &self,
        id: u64,
        page_size: usize,
        page_token: &str,
    ) -> Result<pb::ListClusterMembersResponse> {
        let built = self.built()?;
        self.cluster_root(id, &built)?;
        let from =
            Token::resume("page_token", page_token, Listing::ClusterMembers, id)?.unwrap_or(0);
        let mut addresses = Vec::new();
        let mut next_page_token = String::new();
        for r in pairs(&self.store, cf::CLUSTER_MEMBERS, id, from) {
            let (member, _) = r?;
            if addresses.len() == page_size {
                next_page_token = Token {
                    listing: Listing::ClusterMembers,
                    scope: id,
                    next: member,
                }
                .encode();
                break;
            }
            addresses.push(self.address_string(Some(member))?);
        }
        if view::stats(&self.store, id)?.is_none() {
            // A lone address: its own only member, and no member rows.
            addresses.push(self.address_string(Some(id))?);
        }
        Ok(pb::ListClusterMembersResponse {
            addresses,
            next_page_token,
        })
    }

    pub fn cluster_history(
        &self,
        id: u64,
        q: &HistoryQuery,
    ) -> Result<pb::ListAddressHistoryResponse> {
        let built = self.built()?;
        self.cluster_root(id, &built)?;
        let listing = match q.order {
            Order::OldestFirst => Listing::ClusterHistoryOldestFirst,
            Order::NewestFirst => Listing::ClusterHistoryNewestFirst,
        };
        let family = match view::stats(&self.store, id)? {
            Some(_) => cf::CLUSTER_HISTORY,
            None => cf::HISTORY,
        };
        // Only what the clusters include: blocks above their tip are not theirs yet.
        let q = HistoryQuery {
            max_height: Some(q.max_height.map_or(built.height, |h| h.min(built.height))),
            ..*q
        };
        self.history_page(family, id, listing, &q)
    }

    pub fn largest_clusters(
        &self,
        by: Rank,
        page_size: usize,
        page_token: &str,
    ) -> Result<pb::ListLargestClustersResponse> {
        self.built()?;
        let listing = match by {
            Rank::Size => Listing::LargestBySize,
            Rank::Balance => Listing::LargestByBalance,
        };
        let start = match Token::resume("page_token", page_token, listing, 0)? {
            Some(id) => {
                let s = view::stats(&self.store, id)?.ok_or_else(|| {
                    QueryError::InvalidArgument(
                        "page_token: its cluster no longer exists; start again".into(),
                    )
                })?;
                rank_key(by, &s, id).to_vec()
            }
            None => vec![by as u8 + 1],
        };
        let mut clusters = Vec::new();
        let mut next_page_token = String::new();
        let iter = self.store.db().iterator_cf(
            self.store.cf(cf::CLUSTER_RANK),
            IteratorMode::From(&start, Direction::Reverse),
        );
        for item in iter {
            let (k, _) = item.map_err(|e| QueryError::Internal(e.into()))?;
            if k.first() != Some(&(by as u8)) {
                break;
            }
            let (_, id) = split_pair(&k[1..])?;
            if clusters.len() == page_size {
                next_page_token = Token {
                    listing,
                    scope: 0,
                    next: id,
                }
                .encode();
                break;
            }
            clusters.push(self.cluster(id)?);
        }
        Ok(pb::ListLargestClustersResponse {
            clusters,
            next_page_token,
        })
    }

    /// A shortest chain of linking transactions from `from` to `to`;
    /// gives up with DeadlineExceeded once `expired()`.
    pub fn explain_link(
        &self,
        from: &AddrKey,
        to: &AddrKey,
        expired: impl Fn() -> bool,
    ) -> Result<pb::LinkPath> {
        let built = self.built()?;
        let (a, b) = (self.known_address_id(from)?, self.known_address_id(to)?);
        let (ca, cb) = (
            view::cluster_of(&self.store, a)?,
            view::cluster_of(&self.store, b)?,
        );
        if ca != cb {
            return Err(QueryError::NotFound(format!(
                "nothing links them: {} is in cluster {ca}, {} in cluster {cb}",
                self.address_string(Some(a))?,
                self.address_string(Some(b))?
            )));
        }
        // Breadth first over addresses; an edge is a tx the heuristics say links two.
        let mut came_from: HashMap<u64, (u64, u64, &'static str)> = HashMap::new();
        let mut queue = VecDeque::from([a]);
        let mut read = HashSet::new();
        'search: while let Some(addr) = queue.pop_front() {
            if addr == b {
                break 'search;
            }
            for r in pairs(&self.store, cf::HISTORY, addr, 0) {
                let (txnum, _) = r?;
                if txnum >= built.next_tx {
                    break;
                }
                if !read.insert(txnum) {
                    continue;
                }
                if expired() {
                    return Err(QueryError::DeadlineExceeded);
                }
                if read.len() > LINK_BUDGET {
                    return Err(QueryError::ResourceExhausted(format!(
                        "no link found within {LINK_BUDGET} transactions ({} addresses reached); the cluster is too large to search this way",
                        came_from.len() + 1
                    )));
                }
                let tx = load_tx(&self.store, txnum)?;
                let (linked, _) = built.heuristics.links(&tx);
                if !linked.contains(&addr) {
                    continue;
                }
                let inputs: HashSet<u64> = tx.inputs.iter().filter_map(|s| s.addr).collect();
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
                "addresses {a} and {b} share cluster {ca} but no linking transactions were found"
            )));
        }
        let mut steps = vec![pb::LinkStep {
            address: self.address_string(Some(b))?,
            txid: String::new(),
            reason: String::new(),
        }];
        let mut at = b;
        while let Some(&(prev, txnum, reason)) = came_from.get(&at) {
            steps.push(pb::LinkStep {
                address: self.address_string(Some(prev))?,
                txid: self.tx_row(txnum)?.txid.to_string(),
                reason: reason.into(),
            });
            at = prev;
        }
        steps.reverse();
        Ok(pb::LinkPath { steps })
    }
}
