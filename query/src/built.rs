//! What the address clusters were built with and up to where, and what
//! follows from it: which addresses they cover, and which numbers are
//! cluster ids. Read from the store alone, so that the label index (which
//! the `Index` handle reloads at each catch-up) can use it too.

use satflow_indexer::cluster::{self, view, Heuristics};
use satflow_indexer::Store;
use satflow_schema::{AddrId, ClusterId, ClusterKey, Height, TxNum};

use crate::error::{QueryError, Result};

/// What the clusters were built with and up to where.
pub(crate) struct Built {
    pub heuristics: Heuristics,
    pub height: Height,
    /// Tx and address numbers at and above these are not in the clusters yet.
    pub next_tx: TxNum,
    pub next_addr: AddrId,
}

impl Built {
    /// FAILED_PRECONDITION when the clusters were never built.
    pub fn read(store: &Store) -> Result<Built> {
        let not_built = || {
            QueryError::FailedPrecondition(
                "address clusters were not built for this index: run `satflow cluster --db <dir>`"
                    .into(),
            )
        };
        let heuristics = cluster::heuristics(store)?.ok_or_else(not_built)?;
        let height = cluster::tip(store)?.ok_or_else(not_built)?.height;
        let next = store
            .block(height)?
            .ok_or_else(|| QueryError::NotFound(format!("no block at height {height}")))?
            .next_ids();
        Ok(Built {
            heuristics,
            height,
            next_tx: next.tx,
            next_addr: next.addr,
        })
    }

    /// The key of the cluster `id` names (its lowest address number);
    /// NOT_FOUND when it names none.
    pub fn check_cluster(&self, store: &Store, id: ClusterId) -> Result<ClusterKey> {
        if id.named_after() >= self.next_addr {
            return Err(QueryError::NotFound(format!(
                "no cluster {id}: the clusters hold {} addresses (up to height {})",
                self.next_addr, self.height
            )));
        }
        let key = view::cluster_of(store, id.named_after())?;
        match view::id_of(store, key)? {
            c if c == id => Ok(key),
            c => Err(QueryError::NotFound(format!(
                "{id} is not a cluster id: address {id} belongs to cluster {c}"
            ))),
        }
    }
}

/// The key of the cluster callers know as `id`: FAILED_PRECONDITION
/// without clusters, NOT_FOUND when `id` names none.
pub(crate) fn key_of(store: &Store, id: ClusterId) -> Result<ClusterKey> {
    Built::read(store)?.check_cluster(store, id)
}

/// Address numbers below this are in the clusters; 0 when there are no
/// clusters.
pub(crate) fn cover_or_none(store: &Store) -> Result<AddrId> {
    match Built::read(store) {
        Ok(b) => Ok(b.next_addr),
        Err(QueryError::FailedPrecondition(_)) => Ok(AddrId(0)),
        Err(e) => Err(e),
    }
}

/// The key of address `addr`'s cluster, or its own when it is not below
/// `cover` (see `cover_or_none`).
pub(crate) fn cluster_or_self(store: &Store, addr: AddrId, cover: AddrId) -> Result<ClusterKey> {
    Ok(match addr < cover {
        true => view::cluster_of(store, addr)?,
        false => ClusterKey::of(addr),
    })
}
