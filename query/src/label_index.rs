//! Every label on an address the index has seen, by the cluster holding
//! it. Which cluster each labeled address is in is worked out once per
//! catch-up, so a summary pays one prefix seek for its own labels and one
//! binary search for its cluster's (see `labels`).
//!
//! Built for millions of labels: the label rows are read in chunks as they
//! are resolved, and what is kept is sorted vectors of fixed-size entries,
//! each label's text held once however many addresses carry it (label sets
//! put one name on thousands of an entity's addresses). Labels on
//! addresses the index has not seen cost nothing once loaded.

use std::sync::{Arc, PoisonError, RwLock};

use rustc_hash::FxHashMap;
use satflow_indexer::labels::{self, Category, Label, PoolTag};
use satflow_indexer::Store;
use satflow_schema::script::AddrKey;
use satflow_schema::{cf, AddrId, ClusterId};

use crate::built;
use crate::error::Result;

/// Label rows resolved to address numbers and clusters per batched lookup.
const CHUNK: usize = 65_536;

/// Every label on an address the index has seen, by the cluster holding it.
#[derive(Default)]
pub struct LabelIndex {
    /// Each labeled address with a label of its own, grouped by cluster
    /// (in the order of `clusters`), then by address.
    members: Vec<(AddrId, Arc<Label>)>,
    /// Each cluster carrying a label, ascending, with where its members
    /// start in `members`; they end where the next cluster's start.
    clusters: Vec<(ClusterId, usize)>,
    /// The address numbers carrying a label, ascending: any other address
    /// costs a summary no label lookup at all.
    labeled: Vec<AddrId>,
    /// Address numbers below this were in the clusters when this was built.
    cover: AddrId,
    /// The index's write sequence it was built at: unchanged, nothing to redo.
    sequence: u64,
    /// Coinbase tags, longest first.
    tags: Vec<PoolTag>,
}

impl LabelIndex {
    /// The labels of cluster `c`, with the member carrying each. A label is
    /// shared by every member carrying the same one (same text, category,
    /// set and source), so its `address` is that of one of them: the member
    /// is the number beside it.
    pub fn of_cluster(&self, c: ClusterId) -> &[(AddrId, Arc<Label>)] {
        match self.clusters.binary_search_by_key(&c, |(id, _)| *id) {
            Ok(i) => &self.members[self.span(i)],
            Err(_) => &[],
        }
    }

    /// Address numbers below this had cluster ids when this was built.
    pub fn cover(&self) -> AddrId {
        self.cover
    }

    /// Every cluster carrying a label.
    pub fn clusters_with_any(&self) -> impl Iterator<Item = ClusterId> + '_ {
        self.clusters.iter().map(|(c, _)| *c)
    }

    /// Clusters carrying a label named in `names` or of a category in
    /// `categories`.
    pub fn clusters_with(&self, names: &[String], categories: &[Category]) -> Vec<ClusterId> {
        (0..self.clusters.len())
            .filter(|&i| {
                self.members[self.span(i)]
                    .iter()
                    .any(|(_, l)| names.contains(&l.label) || categories.contains(&l.category))
            })
            .map(|i| self.clusters[i].0)
            .collect()
    }

    /// No address the index has seen carries a label.
    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether address `id` carries a label of its own.
    pub(crate) fn is_labeled(&self, id: AddrId) -> bool {
        self.labeled.binary_search(&id).is_ok()
    }

    /// Coinbase tags, longest first.
    pub(crate) fn tags(&self) -> &[PoolTag] {
        &self.tags
    }

    /// Where the members of the `i`th cluster lie in `members`.
    fn span(&self, i: usize) -> std::ops::Range<usize> {
        let end = self
            .clusters
            .get(i + 1)
            .map_or(self.members.len(), |(_, start)| *start);
        self.clusters[i].1..end
    }

    fn load(store: &Store, sequence: u64) -> Result<LabelIndex> {
        let started = std::time::Instant::now();
        let cover = built::cover_or_none(store)?;
        let found = Found::read(store, cover)?;
        let (rows, distinct) = (found.rows, found.shared.len());
        let index = LabelIndex {
            cover,
            sequence,
            tags: labels::pool_tags(store)?,
            ..found.index()
        };
        if rows > 0 {
            tracing::info!(
                "label index: {} of {rows} labels on addresses the index has seen, in {} clusters, {distinct} distinct; {:.1} MB, read in {:.2} s",
                index.members.len(),
                index.clusters.len(),
                index.heap_bytes() as f64 / 1e6,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(index)
    }

    /// What the index holds on the heap, the labels' text included.
    fn heap_bytes(&self) -> usize {
        use std::mem::size_of_val;
        let mut text: Vec<&Arc<Label>> = self.members.iter().map(|(_, l)| l).collect();
        text.sort_by_key(|l| Arc::as_ptr(l));
        text.dedup_by_key(|l| Arc::as_ptr(l));
        let text: usize = text
            .iter()
            .map(|l| size_of::<Label>() + 16 + l.label.len() + l.set.len() + l.source.len())
            .sum();
        size_of_val(self.members.as_slice())
            + size_of_val(self.clusters.as_slice())
            + size_of_val(self.labeled.as_slice())
            + text
    }
}

/// What a load has found so far: each label on a seen address with its
/// cluster and number, and each distinct label once.
#[derive(Default)]
struct Found {
    seen: Vec<(ClusterId, AddrId, Arc<Label>)>,
    shared: FxHashMap<(String, String, Category, String), Arc<Label>>,
    /// Label rows read.
    rows: usize,
}

impl Found {
    /// Reads every label row, one thread reading while this one looks
    /// their addresses up (each takes about as long).
    fn read(store: &Store, cover: AddrId) -> Result<Found> {
        let mut found = Found::default();
        std::thread::scope(|s| -> Result<()> {
            let (send, read) = std::sync::mpsc::sync_channel(1);
            let reader = s.spawn(move || -> anyhow::Result<()> {
                let mut rows = labels::iter(store);
                loop {
                    let chunk: Vec<Label> =
                        rows.by_ref().take(CHUNK).collect::<anyhow::Result<_>>()?;
                    if chunk.is_empty() || send.send(chunk).is_err() {
                        return Ok(());
                    }
                }
            });
            for chunk in read {
                found.resolve(store, cover, chunk)?;
            }
            reader
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))?;
            Ok(())
        })?;
        Ok(found)
    }

    /// The labels found, grouped by cluster.
    fn index(mut self) -> LabelIndex {
        // Stable: one member's labels stay in key order.
        self.seen.sort_by_key(|(c, id, _)| (*c, *id));
        let mut clusters: Vec<(ClusterId, usize)> = Vec::new();
        let mut labeled = Vec::with_capacity(self.seen.len());
        let mut members = Vec::with_capacity(self.seen.len());
        for (i, (c, id, l)) in self.seen.into_iter().enumerate() {
            if clusters.last().is_none_or(|(last, _)| *last != c) {
                clusters.push((c, i));
            }
            labeled.push(id);
            members.push((id, l));
        }
        labeled.sort_unstable();
        labeled.dedup();
        LabelIndex {
            members,
            clusters,
            labeled,
            ..LabelIndex::default()
        }
    }

    /// Adds the labels of `chunk` (in address order) whose address the
    /// index has seen, with batched reads: a server redoes this at every
    /// catch-up that brings a block, holding requests back meanwhile.
    fn resolve(&mut self, store: &Store, cover: AddrId, chunk: Vec<Label>) -> Result<()> {
        self.rows += chunk.len();
        let mut keys: Vec<AddrKey> = chunk.iter().map(|l| l.address).collect();
        keys.dedup();
        let ids = store.multi_get::<cf::AddrIds>(&keys)?;
        let covered: Vec<AddrId> = ids
            .iter()
            .flatten()
            .copied()
            .filter(|id| *id < cover)
            .collect();
        let mut clusters = store.multi_get::<cf::ClusterOf>(&covered)?.into_iter();
        // The chunk's addresses in order, each with its number and cluster.
        let mut resolved = keys.iter().zip(ids).map(|(key, id)| {
            let c = id.map(|id| match id < cover {
                // A covered address without a row is a cluster of its own,
                // and so is one the clusters do not cover yet.
                true => clusters.next().flatten().unwrap_or(ClusterId::of(id)),
                false => ClusterId::of(id),
            });
            (*key, id.zip(c))
        });
        let mut at = resolved.next();
        for l in chunk {
            while at.is_some_and(|(key, _)| key != l.address) {
                at = resolved.next();
            }
            let Some((_, Some((id, c)))) = at else {
                continue;
            };
            let address = l.address;
            let shared = self
                .shared
                .entry((l.set, l.label, l.category, l.source))
                .or_insert_with_key(|(set, label, category, source)| {
                    Arc::new(Label {
                        address,
                        label: label.clone(),
                        category: *category,
                        set: set.clone(),
                        source: source.clone(),
                    })
                });
            self.seen.push((c, id, Arc::clone(shared)));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use satflow_schema::script::AddrKind;

    use super::*;

    fn label(name: &str, category: Category) -> Arc<Label> {
        Arc::new(Label {
            address: AddrKey::new(AddrKind::P2pkh, &[0; 20]).unwrap(),
            label: name.into(),
            category,
            set: "s".into(),
            source: String::new(),
        })
    }

    #[test]
    fn labels_are_found_by_cluster_and_address() {
        let (desk, mixer) = (
            label("Desk", Category::Exchange),
            label("Mix", Category::Mixer),
        );
        let found = Found {
            seen: vec![
                (ClusterId(9), AddrId(12), Arc::clone(&mixer)),
                (ClusterId(3), AddrId(5), Arc::clone(&desk)),
                (ClusterId(9), AddrId(10), Arc::clone(&desk)),
                (ClusterId(3), AddrId(4), Arc::clone(&desk)),
                (ClusterId(9), AddrId(10), Arc::clone(&mixer)),
            ],
            ..Found::default()
        };
        let index = found.index();
        let of = |c: u64| -> Vec<(u64, &str)> {
            index
                .of_cluster(ClusterId(c))
                .iter()
                .map(|(id, l)| (id.0, l.label.as_str()))
                .collect()
        };
        assert_eq!(of(3), [(4, "Desk"), (5, "Desk")]);
        // One member's labels keep their order.
        assert_eq!(of(9), [(10, "Desk"), (10, "Mix"), (12, "Mix")]);
        assert_eq!(of(4), []);
        assert!(index.is_labeled(AddrId(10)) && !index.is_labeled(AddrId(11)));
        assert_eq!(index.clusters_with(&[], &[Category::Mixer]), [ClusterId(9)]);
        assert_eq!(
            index.clusters_with(&["Desk".into()], &[]),
            [ClusterId(3), ClusterId(9)]
        );
        assert_eq!(
            index.clusters_with_any().collect::<Vec<_>>(),
            [ClusterId(3), ClusterId(9)]
        );
    }
}
