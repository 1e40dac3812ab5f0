//! Labels as callers see them: on an address itself, inherited from the
//! other addresses of its cluster, and per cluster for traces. Which
//! cluster each labeled address is in is worked out once per catch-up
//! (label sets hold thousands of addresses, not millions), so a summary
//! pays one prefix seek for its own labels and one lookup for its
//! cluster's.

use std::sync::{Arc, PoisonError, RwLock};

use bitcoin::consensus::deserialize;
use bitcoin::Transaction;
use rustc_hash::{FxHashMap, FxHashSet};
use satflow_indexer::labels::{self, Category, Label, PoolTag};
use satflow_indexer::schema::{cf, key_u64, Dec};
use satflow_indexer::script::AddrKey;
use satflow_proto::v1 as pb;

use crate::error::Result;
use crate::reader::Index;

/// Every label on an address the index has seen, by the cluster holding it.
#[derive(Default)]
pub struct LabelIndex {
    by_cluster: FxHashMap<u64, Vec<(u64, Label)>>,
    /// The address numbers carrying a label: any other address costs a
    /// summary no label lookup at all.
    labeled: FxHashSet<u64>,
    /// Address numbers below this were in the clusters when this was built.
    cover: u64,
    /// The index's write sequence it was built at: unchanged, nothing to redo.
    sequence: u64,
    /// Coinbase tags, longest first.
    tags: Vec<PoolTag>,
}

impl LabelIndex {
    /// The labels of cluster `c`, with the member carrying each.
    pub fn of_cluster(&self, c: u64) -> &[(u64, Label)] {
        self.by_cluster.get(&c).map_or(&[], Vec::as_slice)
    }

    /// Address numbers below this had cluster ids when this was built.
    pub fn cover(&self) -> u64 {
        self.cover
    }

    /// Every cluster carrying a label.
    pub fn clusters_with_any(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_cluster.keys().copied()
    }

    /// Clusters carrying a label named in `names` or of a category in
    /// `categories`.
    pub fn clusters_with(&self, names: &[String], categories: &[Category]) -> Vec<u64> {
        self.by_cluster
            .iter()
            .filter(|(_, ls)| {
                ls.iter()
                    .any(|(_, l)| names.contains(&l.label) || categories.contains(&l.category))
            })
            .map(|(&c, _)| c)
            .collect()
    }
}

#[derive(Default)]
pub(crate) struct LabelSlot(RwLock<Arc<LabelIndex>>);

impl LabelSlot {
    pub fn get(&self) -> Arc<LabelIndex> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Index {
    /// Re-reads the labels and the clusters of the labeled addresses, unless
    /// nothing was written since the last time.
    pub(crate) fn load_labels(&self) -> Result<()> {
        let sequence = self.store.db().latest_sequence_number();
        let current = self.labels.get();
        if current.sequence == sequence && sequence != 0 {
            return Ok(());
        }
        let cover = self.clusters_cover_or_none()?;
        // Batched reads: a server redoes this at every catch-up that brings
        // a block, holding requests back meanwhile.
        let all = labels::all(&self.store)?;
        let keys: Vec<Vec<u8>> = all.iter().map(|l| l.address.to_bytes()).collect();
        let mut seen = Vec::new();
        for (l, id) in all
            .into_iter()
            .zip(self.store.multi_get(cf::ADDR_IDS, &keys)?)
        {
            if let Some(id) = id {
                seen.push((Dec::new("addr id", &id).u64()?, l));
            }
        }
        let covered: Vec<Vec<u8>> = seen
            .iter()
            .filter(|(id, _)| *id < cover)
            .map(|(id, _)| key_u64(*id).to_vec())
            .collect();
        let mut clusters = self.store.multi_get(cf::CLUSTER_OF, &covered)?.into_iter();
        let mut by_cluster: FxHashMap<u64, Vec<(u64, Label)>> = FxHashMap::default();
        let mut labeled = FxHashSet::default();
        for (id, l) in seen {
            // A covered address without a row is a cluster of its own.
            let c = match (id < cover).then(|| clusters.next().flatten()).flatten() {
                Some(v) => Dec::new("cluster id", &v).u64()?,
                None => id,
            };
            labeled.insert(id);
            by_cluster.entry(c).or_default().push((id, l));
        }
        let tags = labels::pool_tags(&self.store)?;
        *self
            .labels
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(LabelIndex {
            by_cluster,
            labeled,
            cover,
            sequence,
            tags,
        });
        Ok(())
    }

    /// The pool that mined the block whose coinbase is tx number `coinbase`:
    /// by coinbase tag, else by a mining_pool label on a coinbase output.
    pub(crate) fn block_pool(&self, coinbase: u64) -> Result<String> {
        let index = self.labels.get();
        let row = self.tx_row(coinbase)?;
        if !index.tags.is_empty() {
            // Tags are read from the blk files (checked against the txid);
            // without them, labels still answer.
            let coinbase = self.raw_transaction(&row.txid).ok();
            if let Some(tx) = coinbase.and_then(|raw| deserialize::<Transaction>(&raw.raw).ok()) {
                let script = tx
                    .input
                    .first()
                    .map_or(&[][..], |i| i.script_sig.as_bytes());
                let found = index
                    .tags
                    .iter()
                    .filter(|t| !t.tag.is_empty())
                    .find(|t| script.windows(t.tag.len()).any(|w| w == t.tag.as_bytes()));
                if let Some(t) = found {
                    return Ok(t.pool.clone());
                }
            }
        }
        for n in row.first_output..row.first_output + u64::from(row.output_count) {
            let Some(addr) = self.output(n)?.addr else {
                continue;
            };
            let key = self.address_key(addr)?;
            if let Some(l) = labels::of(&self.store, &key)?
                .into_iter()
                .find(|l| l.category == Category::MiningPool)
            {
                return Ok(l.label);
            }
        }
        Ok(String::new())
    }

    pub fn label_index(&self) -> Arc<LabelIndex> {
        self.labels.get()
    }

    /// An address's own labels, then those of the rest of its cluster.
    pub(crate) fn address_labels(&self, key: &AddrKey, id: u64) -> Result<Vec<pb::Label>> {
        let index = self.labels.get();
        if index.by_cluster.is_empty() {
            return Ok(Vec::new());
        }
        let mut out: Vec<pb::Label> = match index.labeled.contains(&id) {
            true => labels::of(&self.store, key)?
                .iter()
                .map(|l| label_message(l, String::new()))
                .collect(),
            false => Vec::new(),
        };
        let c = self.cluster_or_self(id, index.cover)?;
        for (member, l) in index.of_cluster(c).iter().filter(|(m, _)| *m != id) {
            out.push(label_message(l, self.address_string(Some(*member))?));
        }
        Ok(out)
    }

    /// The labels of cluster `c`'s members.
    pub(crate) fn cluster_labels(&self, c: u64) -> Result<Vec<pb::Label>> {
        self.labels
            .get()
            .of_cluster(c)
            .iter()
            .map(|(member, l)| Ok(label_message(l, self.address_string(Some(*member))?)))
            .collect()
    }
}

/// `inherited_from`: empty for the address's own label.
pub(crate) fn label_message(l: &Label, inherited_from: String) -> pb::Label {
    pb::Label {
        label: l.label.clone(),
        category: l.category.name().into(),
        set: l.set.clone(),
        source: l.source.clone(),
        inherited_from,
    }
}
