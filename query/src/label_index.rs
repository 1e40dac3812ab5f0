//! Every label on an address the index has seen, by the cluster holding
//! it. Which cluster each labeled address is in is worked out once per
//! catch-up, so a summary pays one prefix seek for its own labels and one
//! binary search for its cluster's (see `labels`).
//!
//! Built for millions of labels: the label rows are read in chunks as they
//! are resolved, and what is kept is sorted vectors of fixed-size entries,
//! each label's text held once however many addresses carry it (label sets
//! put one name on thousands of an entity's addresses). Labels on
//! addresses the index has not seen cost nothing once loaded. Between
//! label imports, a catch-up does not read the label rows again: it looks
//! up the labels of the addresses new since, and the clusters of the
//! labelled ones (`LabelIndex::advance`).

use std::collections::hash_map::Entry;
use std::sync::{Arc, PoisonError, RwLock};

use rustc_hash::FxHashMap;
use satflow_indexer::labels::{self, Category, Label, PoolTag};
use satflow_indexer::services::Store as Inferences;
use satflow_indexer::store::Direction;
use satflow_indexer::Store;
use satflow_schema::block::ChainPoint;
use satflow_schema::script::AddrKey;
use satflow_schema::{cf, meta, AddrId, ClusterKey};

use crate::built;
use crate::error::Result;
use crate::inferred;

/// Label rows resolved to address numbers and clusters per batched lookup.
const CHUNK: usize = 65_536;

/// The labels a request asks about, by name or by category. Names are
/// kept sorted without repeats and categories as a bit set, so each label
/// a cluster carries costs one binary search however many names a
/// request lists (a trace's stop labels are the caller's to choose).
#[derive(Clone, Debug, Default)]
pub struct Wanted {
    names: Vec<String>,
    categories: u32,
}

impl Wanted {
    pub fn new(mut names: Vec<String>, categories: &[Category]) -> Wanted {
        names.sort_unstable();
        names.dedup();
        let categories = categories.iter().fold(0, |set, &c| set | Wanted::bit(c));
        Wanted { names, categories }
    }

    pub const fn category(c: Category) -> Wanted {
        Wanted {
            names: Vec::new(),
            categories: Wanted::bit(c),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.categories == 0
    }

    fn matches(&self, l: &Label) -> bool {
        self.categories & Wanted::bit(l.category) != 0 || self.names.binary_search(&l.label).is_ok()
    }

    const fn bit(c: Category) -> u32 {
        1 << c as u32
    }
}

/// Every label on an address the index has seen, by the cluster holding it.
#[derive(Default)]
pub struct LabelIndex {
    /// Each labeled address with a label of its own, grouped by cluster
    /// (in the order of `clusters`), then by address.
    members: Vec<(AddrId, Arc<Label>)>,
    /// Each cluster carrying a label, ascending, with where its members
    /// start in `members`; they end where the next cluster's start.
    clusters: Vec<(ClusterKey, usize)>,
    /// Each cluster's distinct labels (`Carried`), in the order of
    /// `clusters`, each cluster's in order of first appearance among its
    /// members; none for a cluster of one entry, which is its own (most
    /// labelled clusters are one address).
    carried: Vec<Carried>,
    /// Per cluster, where its distinct labels start in `carried`.
    carried_at: Vec<usize>,
    /// The address numbers carrying a label, ascending: any other address
    /// costs a summary no label lookup at all.
    labeled: Vec<AddrId>,
    /// Address numbers below this were in the clusters when this was built.
    cover: AddrId,
    /// Address numbers below this were looked up for labels.
    next_addr: AddrId,
    /// The index's tip when this was built: while that block stays on the
    /// best chain, the numbers below `next_addr` name the same addresses.
    tip: Option<ChainPoint>,
    /// The index's write sequence it was built at: unchanged, nothing to redo.
    sequence: u64,
    /// `meta::LabelsVersion` it was built at: unchanged, no label row
    /// changed, and only new addresses and clusters need a look.
    labels_version: u64,
    /// Label rows read at the last whole build.
    rows: usize,
    /// Built by `advance` rather than by reading every label row.
    moved_on: bool,
    /// Coinbase tags, longest first.
    tags: Vec<PoolTag>,
    /// The inferences taken in as labels: the store's block and size, and
    /// the least confidence admitted; a different store means a rebuild.
    inferred: Option<(ChainPoint, usize, u8)>,
    /// Carriers' addresses as text, as answers name them.
    names: CarrierNames,
}

/// Carriers' addresses as text, as answers name the member a label is
/// inherited from: each made once (an `addrs` read and an encoding), not
/// at every summary in the cluster. A summary in an exchange's cluster
/// lists up to 100 inherited labels; making their addresses anew took a
/// tenth of the server's CPU in `benches/serve_under_load` at 5,000
/// requests a second. At most `NAMED` are kept (~10 MB); past that, the
/// map is emptied and they are made again.
#[derive(Default)]
struct CarrierNames(RwLock<FxHashMap<AddrId, Arc<str>>>);

const NAMED: usize = 100_000;

impl CarrierNames {
    fn get(&self, member: AddrId, make: impl FnOnce() -> Result<String>) -> Result<Arc<str>> {
        let found = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&member)
            .cloned();
        if let Some(name) = found {
            return Ok(name);
        }
        let name: Arc<str> = make()?.into();
        let mut names = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if names.len() >= NAMED {
            names.clear();
        }
        names.insert(member, Arc::clone(&name));
        Ok(name)
    }

    /// Those of numbers below `end`, which a reorg leaves as they were.
    fn below(&self, end: AddrId) -> CarrierNames {
        let names = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let kept = names.iter().filter(|(id, _)| **id < end);
        CarrierNames(RwLock::new(
            kept.map(|(id, n)| (*id, Arc::clone(n))).collect(),
        ))
    }
}

/// One distinct label of a cluster (the label index shares one `Label`
/// among all the members carrying the same text, category, set and source,
/// so the pointer tells them apart), as positions in `members`: worked out
/// once per build, so that listing a cluster's labels costs its distinct
/// labels, not its members (an exchange's label on a million deposit
/// addresses is one entry, read without a million steps).
#[derive(Clone, Copy)]
struct Carried {
    /// The first entry carrying it.
    first: usize,
    /// The first entry carrying it of another member than `first`'s;
    /// `first` when none does.
    second: usize,
    /// Entries carrying it.
    carriers: u64,
}

/// A cluster's distinct labels. A cluster of one labelled entry has no
/// `carried` entries of its own: its one is made on the spot, without the
/// allocation a `Vec` would cost each lookup.
enum CarriedIn<'a> {
    Alone(Carried),
    Many(&'a [Carried]),
}

impl std::ops::Deref for CarriedIn<'_> {
    type Target = [Carried];

    fn deref(&self) -> &[Carried] {
        match self {
            CarriedIn::Alone(one) => std::slice::from_ref(one),
            CarriedIn::Many(all) => all,
        }
    }
}

/// Inferences to take in as labels, where the operator opted in.
pub(crate) type AsLabels<'a> = Option<(&'a Inferences, inferred::AsLabels)>;

fn inferred_key(as_labels: AsLabels<'_>) -> Option<(ChainPoint, usize, u8)> {
    as_labels.map(|(s, a)| (s.as_of(), s.len(), a.min_confidence))
}

impl LabelIndex {
    /// The labels of cluster `c`, with the member carrying each. A label is
    /// shared by every member carrying the same one (same text, category,
    /// set and source), so its `address` is that of one of them: the member
    /// is the number beside it.
    pub fn of_cluster(&self, c: ClusterKey) -> &[(AddrId, Arc<Label>)] {
        match self.clusters.binary_search_by_key(&c, |(id, _)| *id) {
            Ok(i) => &self.members[self.span(i)],
            Err(_) => &[],
        }
    }

    /// Each distinct label of cluster `c` once, in order of first
    /// appearance among its members (ascending address), with the first
    /// member carrying it and how many do. With `except`, as though that
    /// member carried none: a summary lists an address's own labels apart
    /// from those it inherits from the rest of its cluster.
    pub(crate) fn distinct_of(
        &self,
        c: ClusterKey,
        except: Option<AddrId>,
    ) -> Vec<(AddrId, &Label, u64)> {
        let Ok(i) = self.clusters.binary_search_by_key(&c, |(id, _)| *id) else {
            return Vec::new();
        };
        let members = &self.members[self.span(i)];
        let own = match except {
            Some(id) => {
                let from = members.partition_point(|(m, _)| *m < id);
                let to = members.partition_point(|(m, _)| *m <= id);
                &members[from..to]
            }
            None => &[][..],
        };
        let mut moved = false;
        let mut out: Vec<(usize, &Label, u64)> = Vec::new();
        for d in self.carried_in(i).iter() {
            let (member, label) = &self.members[d.first];
            let theirs = own.iter().filter(|(_, l)| Arc::ptr_eq(l, label)).count() as u64;
            if theirs == d.carriers {
                continue;
            }
            // Among the others, it first appears where another member does.
            let first = match Some(*member) == except {
                true => d.second,
                false => d.first,
            };
            moved |= first != d.first;
            out.push((first, label, d.carriers - theirs));
        }
        if moved {
            out.sort_by_key(|(at, _, _)| *at);
        }
        out.into_iter()
            .map(|(at, l, n)| (self.members[at].0, l, n))
            .collect()
    }

    /// The address of `member`, a label carrier, as text: `make` makes it
    /// the first time it is asked for.
    pub(crate) fn carrier_name(
        &self,
        member: AddrId,
        make: impl FnOnce() -> Result<String>,
    ) -> Result<Arc<str>> {
        self.names.get(member, make)
    }

    /// Whether this was built by moving the previous index on to new
    /// blocks (no label changed) rather than by reading every label row.
    pub fn moved_on(&self) -> bool {
        self.moved_on
    }

    /// Address numbers below this had cluster ids when this was built.
    pub fn cover(&self) -> AddrId {
        self.cover
    }

    /// Every cluster carrying a label.
    pub fn clusters_with_any(&self) -> impl Iterator<Item = ClusterKey> + '_ {
        self.clusters.iter().map(|(c, _)| *c)
    }

    /// Clusters carrying a label named in `names` or of a category in
    /// `categories`. Reads every labelled cluster's distinct labels (unless
    /// nothing is asked): for a set built once, as the watch evaluator's;
    /// a request asks `carries` of the clusters it meets instead.
    pub fn clusters_with(&self, wanted: &Wanted) -> Vec<ClusterKey> {
        self.clusters_carrying(wanted).collect()
    }

    /// `clusters_with` as it finds them, for a caller that takes only the
    /// first few.
    pub(crate) fn clusters_carrying<'s>(
        &'s self,
        wanted: &'s Wanted,
    ) -> impl Iterator<Item = ClusterKey> + 's {
        let clusters = if wanted.is_empty() {
            0
        } else {
            self.clusters.len()
        };
        (0..clusters)
            .filter(move |&i| self.carries_in(i, wanted))
            .map(|i| self.clusters[i].0)
    }

    /// Whether cluster `c` carries a label `wanted` names: a lookup,
    /// where `clusters_with` reads every labelled cluster.
    pub(crate) fn carries(&self, c: ClusterKey, wanted: &Wanted) -> bool {
        self.clusters
            .binary_search_by_key(&c, |(id, _)| *id)
            .is_ok_and(|i| self.carries_in(i, wanted))
    }

    /// `carries` for the `i`th cluster.
    fn carries_in(&self, i: usize, wanted: &Wanted) -> bool {
        self.carried_in(i)
            .iter()
            .any(|d| wanted.matches(&self.members[d.first].1))
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

    /// The distinct labels of the `i`th cluster.
    fn carried_in(&self, i: usize) -> CarriedIn<'_> {
        let members = self.span(i);
        if members.len() == 1 {
            return CarriedIn::Alone(Carried {
                first: members.start,
                second: members.start,
                carriers: 1,
            });
        }
        let end = self
            .carried_at
            .get(i + 1)
            .copied()
            .unwrap_or(self.carried.len());
        CarriedIn::Many(&self.carried[self.carried_at[i]..end])
    }

    /// Reads every label row, and takes in the inferences `as_labels` admits.
    fn load(store: &Store, sequence: u64, as_labels: AsLabels<'_>) -> Result<LabelIndex> {
        let started = std::time::Instant::now();
        let labels_version = store.meta(meta::LabelsVersion)?.unwrap_or(0);
        let cover = built::cover_or_none(store)?;
        let mut found = Found::read(store, cover)?;
        if let Some((inferences, admit)) = as_labels {
            let labels = inferred::labels(store, inferences, admit)?;
            let ids: Vec<AddrId> = labels.iter().map(|(id, _)| *id).collect();
            for ((id, l), c) in labels.into_iter().zip(clusters_of(store, cover, &ids)?) {
                let shared = found.share_new(l);
                found.seen.push((c, id, shared));
            }
        }
        let (rows, distinct) = (found.rows, found.shared.len());
        let index = LabelIndex {
            cover,
            next_addr: next_addr(store)?,
            tip: store.tip()?,
            sequence,
            labels_version,
            rows,
            tags: labels::pool_tags(store)?,
            inferred: inferred_key(as_labels),
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

    /// This index moved on to the store as it is now, when no label row
    /// changed since it was built: the labels of the addresses numbered
    /// since, and the clusters of every labelled address looked up again
    /// (blocks merge clusters). Costs the labelled addresses the index has
    /// seen, not every label row. None when a whole rebuild is due: labels
    /// were imported or removed, or more addresses are new than there are
    /// label rows to read.
    fn advance(
        &self,
        store: &Store,
        sequence: u64,
        as_labels: AsLabels<'_>,
    ) -> Result<Option<LabelIndex>> {
        let labels_version = store.meta(meta::LabelsVersion)?.unwrap_or(0);
        if self.sequence == 0
            || labels_version != self.labels_version
            || self.inferred != inferred_key(as_labels)
        {
            return Ok(None);
        }
        // A reorg gives the numbers above its fork out again: past one that
        // undid the block this was built at, every number is read afresh.
        if let Some(tip) = self.tip {
            let block = store.get::<cf::Blocks>(&tip.height)?;
            if block.is_none_or(|b| b.hash != tip.hash) {
                return Ok(None);
            }
        }
        let next = next_addr(store)?;
        let from = self.next_addr.min(next);
        if (next.0 - from.0) as usize > self.rows {
            return Ok(None);
        }
        let cover = built::cover_or_none(store)?;
        let mut found = Found {
            rows: self.rows,
            ..Found::default()
        };
        let kept: Vec<(AddrId, Arc<Label>)> = self
            .members
            .iter()
            .filter(|(id, _)| *id < from)
            .cloned()
            .collect();
        let ids: Vec<AddrId> = kept.iter().map(|(id, _)| *id).collect();
        for ((id, l), c) in kept.into_iter().zip(clusters_of(store, cover, &ids)?) {
            found.seen.push((c, id, l));
        }
        // Each distinct label once, for the new addresses' labels to share.
        let mut distinct: Vec<&Arc<Label>> = self.members.iter().map(|(_, l)| l).collect();
        distinct.sort_unstable_by_key(|l| Arc::as_ptr(l));
        distinct.dedup_by_key(|l| Arc::as_ptr(l));
        for l in distinct {
            found.share(l);
        }
        let mut new = Vec::new();
        for row in store.scan::<cf::Addrs>(&from, Direction::Forward) {
            let (id, key) = row?;
            if id >= next {
                break;
            }
            for l in labels::of(store, &key)? {
                new.push((id, l));
            }
        }
        let ids: Vec<AddrId> = new.iter().map(|(id, _)| *id).collect();
        for ((id, l), c) in new.into_iter().zip(clusters_of(store, cover, &ids)?) {
            let shared = found.share_new(l);
            found.seen.push((c, id, shared));
        }
        Ok(Some(LabelIndex {
            cover,
            next_addr: next,
            tip: store.tip()?,
            sequence,
            labels_version,
            rows: self.rows,
            moved_on: true,
            tags: self.tags.clone(),
            inferred: self.inferred,
            names: self.names.below(from),
            ..found.index()
        }))
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
            + size_of_val(self.carried.as_slice())
            + size_of_val(self.carried_at.as_slice())
            + size_of_val(self.labeled.as_slice())
            + text
    }
}

/// What a load has found so far: each label on a seen address with its
/// cluster and number, and each distinct label once.
#[derive(Default)]
struct Found {
    seen: Vec<(ClusterKey, AddrId, Arc<Label>)>,
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
        let mut clusters: Vec<(ClusterKey, usize)> = Vec::new();
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
        let (mut carried, mut carried_at) = (Vec::new(), Vec::with_capacity(clusters.len()));
        for (i, &(_, start)) in clusters.iter().enumerate() {
            let end = clusters.get(i + 1).map_or(members.len(), |(_, s)| *s);
            carried_at.push(carried.len());
            if end - start == 1 {
                continue;
            }
            // A map of its own per cluster: clearing one that a big cluster
            // grew would cost its whole capacity for every cluster after.
            let mut seen: FxHashMap<*const Label, usize> = FxHashMap::default();
            for (at, (member, l)) in members[start..end].iter().enumerate() {
                let at = start + at;
                match seen.entry(Arc::as_ptr(l)) {
                    Entry::Vacant(e) => {
                        e.insert(carried.len());
                        carried.push(Carried {
                            first: at,
                            second: at,
                            carriers: 1,
                        });
                    }
                    Entry::Occupied(e) => {
                        let d: &mut Carried = &mut carried[*e.get()];
                        d.carriers += 1;
                        if d.second == d.first && members[d.first].0 != *member {
                            d.second = at;
                        }
                    }
                }
            }
        }
        LabelIndex {
            members,
            clusters,
            carried,
            carried_at,
            labeled,
            ..LabelIndex::default()
        }
    }

    /// Adds the labels of `chunk` (in address order) whose address the
    /// index has seen, with batched reads (a whole rebuild: at start, and
    /// after labels were imported or removed).
    fn resolve(&mut self, store: &Store, cover: AddrId, chunk: Vec<Label>) -> Result<()> {
        self.rows += chunk.len();
        let mut keys: Vec<AddrKey> = chunk.iter().map(|l| l.address).collect();
        keys.dedup();
        let ids = store.multi_get::<cf::AddrIds>(&keys)?;
        let seen: Vec<AddrId> = ids.iter().flatten().copied().collect();
        let mut clusters = clusters_of(store, cover, &seen)?.into_iter();
        // The chunk's addresses in order, each with its number and cluster.
        let mut resolved = keys.iter().zip(ids).map(|(key, id)| {
            let c = id.map(|_| clusters.next().expect("one cluster per seen address"));
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
            let shared = self.share_new(l);
            self.seen.push((c, id, shared));
        }
        Ok(())
    }

    /// The one shared copy of label `l`, made on first sight.
    fn share_new(&mut self, l: Label) -> Arc<Label> {
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
        Arc::clone(shared)
    }

    /// Takes `l` as the shared copy of its label, unless one is known.
    fn share(&mut self, l: &Arc<Label>) {
        self.shared
            .entry((l.set.clone(), l.label.clone(), l.category, l.source.clone()))
            .or_insert_with(|| Arc::clone(l));
    }
}

/// The cluster of each of `ids`: a covered address without a cluster row
/// is a cluster of its own, and so is one the clusters do not cover yet.
fn clusters_of(store: &Store, cover: AddrId, ids: &[AddrId]) -> Result<Vec<ClusterKey>> {
    let covered: Vec<AddrId> = ids.iter().copied().filter(|id| *id < cover).collect();
    let mut rows = store.multi_get::<cf::ClusterOf>(&covered)?.into_iter();
    Ok(ids
        .iter()
        .map(|&id| match id < cover {
            true => rows.next().flatten().unwrap_or(ClusterKey::of(id)),
            false => ClusterKey::of(id),
        })
        .collect())
}

/// The first address number the index has not given out.
fn next_addr(store: &Store) -> Result<AddrId> {
    Ok(store
        .tip_block()?
        .map(|b| b.next_ids().addr)
        .unwrap_or_default())
}

/// The label index as of the last catch-up.
#[derive(Default)]
pub(crate) struct LabelSlot(RwLock<Arc<LabelIndex>>);

impl LabelSlot {
    pub fn get(&self) -> Arc<LabelIndex> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Brings the labels and the clusters of the labelled addresses up to
    /// the store, unless nothing was written since the last time: moved on
    /// from the last index when no label changed, else read whole.
    /// Inferences `as_labels` admits are taken in as labels of set
    /// `inferred`.
    pub fn reload(&self, store: &Store, as_labels: AsLabels<'_>) -> Result<()> {
        let sequence = store.sequence();
        let last = self.get();
        if last.sequence == sequence && sequence != 0 && last.inferred == inferred_key(as_labels) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let index = match last.advance(store, sequence, as_labels)? {
            Some(moved_on) => {
                tracing::debug!(
                    "label index moved on: {} labels on seen addresses, in {:.1} ms",
                    moved_on.members.len(),
                    started.elapsed().as_secs_f64() * 1e3
                );
                moved_on
            }
            None => LabelIndex::load(store, sequence, as_labels)?,
        };
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

    /// Each distinct label once, first carrier named, carriers counted;
    /// with a member left out, as though it carried none.
    #[test]
    fn a_label_many_members_carry_is_listed_once_with_its_count() {
        // Same text, another identity: the label index shares one only when
        // set and source match too.
        let (desk, hot, mix) = (
            label("Desk", Category::Exchange),
            label("Desk", Category::Exchange),
            label("Mix", Category::Mixer),
        );
        let seen = [
            (3, &desk),
            (3, &mix),
            (4, &hot),
            (5, &desk),
            (9, &desk),
            (9, &mix),
            (12, &mix),
        ];
        let mut seen: Vec<_> = seen
            .iter()
            .map(|(a, l)| (ClusterKey(3), AddrId(*a), Arc::clone(l)))
            .collect();
        // A cluster of one labelled entry, which keeps no list of its own.
        seen.push((ClusterKey(20), AddrId(20), Arc::clone(&mix)));
        let index = Found {
            seen,
            ..Found::default()
        }
        .index();
        let of = |c: u64, except: Option<u64>| -> Vec<(u64, &str, u64)> {
            index
                .distinct_of(ClusterKey(c), except.map(AddrId))
                .into_iter()
                .map(|(m, l, n)| (m.0, l.label.as_str(), n))
                .collect()
        };
        assert_eq!(of(3, None), [(3, "Desk", 3), (3, "Mix", 3), (4, "Desk", 1)]);
        // Without 3, its labels appear first where 4 and 5 carry them.
        assert_eq!(
            of(3, Some(3)),
            [(4, "Desk", 1), (5, "Desk", 2), (9, "Mix", 2)]
        );
        // Without 4, its label is carried by no one else.
        assert_eq!(of(3, Some(4)), [(3, "Desk", 3), (3, "Mix", 3)]);
        assert_eq!(of(3, Some(7)), of(3, None));
        assert!(of(4, None).is_empty());
        assert_eq!(of(20, None), [(20, "Mix", 1)]);
        assert!(of(20, Some(20)).is_empty());
        assert_eq!(
            index.clusters_with(&Wanted::category(Category::Mixer)),
            [ClusterKey(3), ClusterKey(20)]
        );
        assert!(index.clusters_with(&Wanted::default()).is_empty());
        // Asked of one cluster, as a trace asks of each coin's.
        let carries = |c: u64, names: &[&str], categories: &[Category]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            index.carries(ClusterKey(c), &Wanted::new(names, categories))
        };
        assert!(carries(3, &["Desk"], &[]) && carries(3, &[], &[Category::Mixer]));
        assert!(carries(20, &["Nope", "Mix"], &[]) && carries(20, &[], &[Category::Mixer]));
        assert!(!carries(20, &["Desk"], &[Category::Exchange]));
        assert!(!carries(3, &[], &[]) && !carries(3, &["Nope"], &[Category::Scam]));
        // Not a labelled cluster.
        assert!(!carries(4, &["Desk"], &[Category::Exchange]));
    }

    /// A carrier's address is made once, then remembered; moved on past
    /// new blocks, only the numbers below the old end are kept.
    #[test]
    fn carriers_addresses_are_made_once() {
        let names = CarrierNames::default();
        let made = std::cell::Cell::new(0);
        let make = |text: &str| {
            made.set(made.get() + 1);
            Ok(text.to_string())
        };
        assert_eq!(&*names.get(AddrId(5), || make("five")).unwrap(), "five");
        assert_eq!(&*names.get(AddrId(5), || make("other")).unwrap(), "five");
        assert_eq!(&*names.get(AddrId(9), || make("nine")).unwrap(), "nine");
        assert_eq!(made.get(), 2);
        // A failure is passed on, and nothing is remembered of it.
        let failed = names.get(AddrId(7), || Err(anyhow::anyhow!("no row").into()));
        assert!(failed.is_err());
        let kept = names.below(AddrId(9));
        assert_eq!(&*kept.get(AddrId(5), || make("again")).unwrap(), "five");
        assert_eq!(
            &*kept.get(AddrId(9), || make("nine, anew")).unwrap(),
            "nine, anew"
        );
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn labels_are_found_by_cluster_and_address() {
        let (desk, mixer) = (
            label("Desk", Category::Exchange),
            label("Mix", Category::Mixer),
        );
        let found = Found {
            seen: vec![
                (ClusterKey(9), AddrId(12), Arc::clone(&mixer)),
                (ClusterKey(3), AddrId(5), Arc::clone(&desk)),
                (ClusterKey(9), AddrId(10), Arc::clone(&desk)),
                (ClusterKey(3), AddrId(4), Arc::clone(&desk)),
                (ClusterKey(9), AddrId(10), Arc::clone(&mixer)),
            ],
            ..Found::default()
        };
        let index = found.index();
        let of = |c: u64| -> Vec<(u64, &str)> {
            index
                .of_cluster(ClusterKey(c))
                .iter()
                .map(|(id, l)| (id.0, l.label.as_str()))
                .collect()
        };
        assert_eq!(of(3), [(4, "Desk"), (5, "Desk")]);
        // One member's labels keep their order.
        assert_eq!(of(9), [(10, "Desk"), (10, "Mix"), (12, "Mix")]);
        assert_eq!(of(4), []);
        assert!(index.is_labeled(AddrId(10)) && !index.is_labeled(AddrId(11)));
        assert_eq!(
            index.clusters_with(&Wanted::category(Category::Mixer)),
            [ClusterKey(9)]
        );
        assert_eq!(
            index.clusters_with(&Wanted::new(vec!["Desk".into()], &[])),
            [ClusterKey(3), ClusterKey(9)]
        );
        assert_eq!(
            index.clusters_with_any().collect::<Vec<_>>(),
            [ClusterKey(3), ClusterKey(9)]
        );
    }
}
