//! Every label on an address the index has seen, by the cluster holding
//! it. Which cluster each labeled address is in is worked out once per
//! catch-up (label sets hold thousands of addresses, not millions), so a
//! summary pays one prefix seek for its own labels and one lookup for its
//! cluster's (see `labels`).

use std::sync::{Arc, PoisonError, RwLock};

use rustc_hash::{FxHashMap, FxHashSet};
use satflow_indexer::labels::{self, Category, Label, PoolTag};
use satflow_indexer::Store;
use satflow_schema::script::AddrKey;
use satflow_schema::{cf, AddrId, ClusterId};

use crate::built;
use crate::error::Result;

/// Every label on an address the index has seen, by the cluster holding it.
#[derive(Default)]
pub struct LabelIndex {
    by_cluster: FxHashMap<ClusterId, Vec<(AddrId, Label)>>,
    /// The address numbers carrying a label: any other address costs a
    /// summary no label lookup at all.
    labeled: FxHashSet<AddrId>,
    /// Address numbers below this were in the clusters when this was built.
    cover: AddrId,
    /// The index's write sequence it was built at: unchanged, nothing to redo.
    sequence: u64,
    /// Coinbase tags, longest first.
    tags: Vec<PoolTag>,
}

impl LabelIndex {
    /// The labels of cluster `c`, with the member carrying each.
    pub fn of_cluster(&self, c: ClusterId) -> &[(AddrId, Label)] {
        self.by_cluster.get(&c).map_or(&[], Vec::as_slice)
    }

    /// Address numbers below this had cluster ids when this was built.
    pub fn cover(&self) -> AddrId {
        self.cover
    }

    /// Every cluster carrying a label.
    pub fn clusters_with_any(&self) -> impl Iterator<Item = ClusterId> + '_ {
        self.by_cluster.keys().copied()
    }

    /// Clusters carrying a label named in `names` or of a category in
    /// `categories`.
    pub fn clusters_with(&self, names: &[String], categories: &[Category]) -> Vec<ClusterId> {
        self.by_cluster
            .iter()
            .filter(|(_, ls)| {
                ls.iter()
                    .any(|(_, l)| names.contains(&l.label) || categories.contains(&l.category))
            })
            .map(|(&c, _)| c)
            .collect()
    }

    /// No address the index has seen carries a label.
    pub(crate) fn is_empty(&self) -> bool {
        self.by_cluster.is_empty()
    }

    /// Whether address `id` carries a label of its own.
    pub(crate) fn is_labeled(&self, id: AddrId) -> bool {
        self.labeled.contains(&id)
    }

    /// Coinbase tags, longest first.
    pub(crate) fn tags(&self) -> &[PoolTag] {
        &self.tags
    }

    fn load(store: &Store, sequence: u64) -> Result<LabelIndex> {
        let cover = built::cover_or_none(store)?;
        // Batched reads: a server redoes this at every catch-up that brings
        // a block, holding requests back meanwhile.
        let all = labels::all(store)?;
        let keys: Vec<AddrKey> = all.iter().map(|l| l.address).collect();
        let ids = store.multi_get::<cf::AddrIds>(&keys)?;
        let seen: Vec<(AddrId, Label)> = all
            .into_iter()
            .zip(ids)
            .filter_map(|(l, id)| Some((id?, l)))
            .collect();
        let covered: Vec<AddrId> = seen
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| *id < cover)
            .collect();
        let mut clusters = store.multi_get::<cf::ClusterOf>(&covered)?.into_iter();
        let mut by_cluster: FxHashMap<ClusterId, Vec<(AddrId, Label)>> = FxHashMap::default();
        let mut labeled = FxHashSet::default();
        for (id, l) in seen {
            // A covered address without a row is a cluster of its own.
            let c = match (id < cover).then(|| clusters.next().flatten()).flatten() {
                Some(c) => c,
                None => ClusterId::of(id),
            };
            labeled.insert(id);
            by_cluster.entry(c).or_default().push((id, l));
        }
        Ok(LabelIndex {
            by_cluster,
            labeled,
            cover,
            sequence,
            tags: labels::pool_tags(store)?,
        })
    }
}

/// The label index as of the last catch-up.
#[derive(Default)]
pub(crate) struct LabelSlot(RwLock<Arc<LabelIndex>>);

impl LabelSlot {
    pub fn get(&self) -> Arc<LabelIndex> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Re-reads the labels and the clusters of the labeled addresses, unless
    /// nothing was written since the last time.
    pub fn reload(&self, store: &Store) -> Result<()> {
        let sequence = store.sequence();
        if self.get().sequence == sequence && sequence != 0 {
            return Ok(());
        }
        let index = LabelIndex::load(store, sequence)?;
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(index);
        Ok(())
    }
}
