//! What a taint trace needs from the index: its sources as flow-graph
//! numbers, where it stops (a rule asked per coin), and each hit in terms
//! a caller reads. The flow graph numbers outputs and addresses as the
//! index does, in plain `u64`s: the typed ids are unwrapped and rewrapped
//! at this edge.

use std::sync::Arc;

use bitcoin::Txid;
use rustc_hash::{FxHashMap, FxHashSet};
use satflow_indexer::cluster::view;
use satflow_indexer::flow::FlowView;
use satflow_indexer::labels::Category;
use satflow_indexer::Store;
use satflow_proto::v1 as pb;
use satflow_schema::{cf, AddrId, ClusterId, ClusterKey, Height, OutNum, TxNum};

use crate::args;
use crate::built::{self, Built};
use crate::clusters;
use crate::error::{QueryError, Result};
use crate::history::{self, Order};
use crate::index::Index;
use crate::label_index::{LabelIndex, Wanted};
use crate::labels::{carrier, label_message};
use crate::taint::{Event, Kind, StopAt};

/// Output numbers of the coins `sources` name, at most `limit` of them.
/// `alive` is asked as they are read; false ends with DEADLINE_EXCEEDED.
pub(crate) fn sources(
    index: &Index,
    g: &FlowView<'_>,
    sources: &[pb::TraceSource],
    limit: usize,
    alive: &mut dyn FnMut() -> bool,
) -> Result<Vec<u64>> {
    use pb::trace_source::Source;
    if sources.is_empty() {
        return Err(args::invalid("sources", "name at least one source"));
    }
    let mut out = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        if !alive() {
            return Err(QueryError::DeadlineExceeded);
        }
        let field = format!("sources[{i}]");
        let mut one = || -> Result<()> {
            match &s.source {
                Some(Source::Outpoint(p)) => out.push(outpoint(index, &field, p)?.0),
                Some(Source::Txid(t)) => {
                    let (_, row) = index.tx_by_id(&args::txid(&field, t)?)?;
                    out.extend(row.outputs().map(|n| n.0));
                }
                Some(Source::Address(a)) => {
                    let key = args::address(&field, a, index.network())?;
                    let id = index.known_address_id(&key)?;
                    coins_of(index, g, id, &mut out, limit, alive)?;
                }
                Some(Source::ClusterId(c)) => {
                    let key = built::key_of(index.store(), ClusterId(*c))?;
                    cluster_coins(index, g, key, &mut out, limit, alive)?
                }
                None => {
                    return Err(args::invalid(
                        &field,
                        "set one of outpoint, txid, address, cluster_id",
                    ))
                }
            }
            Ok(())
        };
        one().map_err(|e| name_field(e, &field))?;
        // Addresses and clusters stop at the limit themselves; a txid
        // brings all its outputs at once, and may be named again and again.
        if out.len() > limit {
            return Err(too_many_coins(limit));
        }
    }
    if let Some(&late) = out.iter().find(|&&o| !g.has_output(o)) {
        return Err(QueryError::FailedPrecondition(format!(
            "sources: output {late} is newer than the flow graph (up to height {}); it catches up after the next index run",
            g.tip_height()
        )));
    }
    Ok(out)
}

fn outpoint(index: &Index, field: &str, p: &str) -> Result<OutNum> {
    let (txid, vout) = p
        .split_once(':')
        .ok_or_else(|| args::invalid(field, format!("{p:?} is not txid:vout")))?;
    let vout: u32 = vout
        .parse()
        .map_err(|_| args::invalid(field, format!("{p:?}: {vout:?} is not an output index")))?;
    coin(index, field, &args::txid(field, txid)?, vout)
}

/// The output number of coin `txid:vout`; NOT_FOUND names `field`.
pub(crate) fn coin(index: &Index, field: &str, txid: &Txid, vout: u32) -> Result<OutNum> {
    let txnum = index.tx_number(txid).map_err(|e| name_field(e, field))?;
    let row = index.tx_row(txnum)?;
    if vout >= row.output_count {
        return Err(QueryError::NotFound(format!(
            "{field}: transaction {txid} has {} outputs, no output {vout}",
            row.output_count
        )));
    }
    Ok(row.first_output + u64::from(vout))
}

/// History rows read between two looks at the caller's deadline.
const ROWS_PER_CHECK: usize = 65_536;

/// Every coin ever paid to address `id`, appended to `out`; more than
/// `limit` coins in all is RESOURCE_EXHAUSTED. The history is read a
/// chunk at a time, `alive` asked before each.
pub(crate) fn coins_of(
    index: &Index,
    g: &FlowView<'_>,
    id: AddrId,
    out: &mut Vec<u64>,
    limit: usize,
    alive: &mut dyn FnMut() -> bool,
) -> Result<()> {
    let mut resume = None;
    loop {
        if !alive() {
            return Err(QueryError::DeadlineExceeded);
        }
        // Each coin needs a history row: `limit` rows left is enough to
        // see whether the limit is passed.
        let chunk = (limit.saturating_sub(out.len()) + 1).min(ROWS_PER_CHECK);
        let all = history::all_txs();
        let rows =
            history::rows::<cf::History, _>(index, id, Order::OldestFirst, all, resume, chunk)?;
        for &(txnum, ref row) in &rows {
            if row.received == 0 {
                continue;
            }
            if txnum.0 >= g.tx_count() {
                return Err(QueryError::FailedPrecondition(format!(
                    "a coin of the sources is newer than the flow graph (up to height {}); it catches up after the next index run",
                    g.tip_height()
                )));
            }
            out.extend(
                g.outputs(txnum.0)
                    .filter(|&o| g.output(o).addr == Some(id.0)),
            );
            if out.len() > limit {
                return Err(too_many_coins(limit));
            }
        }
        match rows.last() {
            // Rows that only spend add no coin: read on to the end.
            Some(&(last, _)) if rows.len() == chunk => resume = Some(TxNum(last.0 + 1)),
            _ => return Ok(()),
        }
    }
}

fn too_many_coins(limit: usize) -> QueryError {
    QueryError::ResourceExhausted(format!(
        "the sources hold more than {limit} coins; name fewer, or raise max_transactions"
    ))
}

/// A request's `max_transactions`: `default` for 0 (or `ceiling`, when
/// lower); above `ceiling`, the server's own limit, RESOURCE_EXHAUSTED.
pub(crate) fn max_transactions(asked: u64, default: u64, ceiling: u64) -> Result<u64> {
    match asked {
        0 => Ok(default.min(ceiling)),
        n if n > ceiling => Err(QueryError::ResourceExhausted(format!(
            "max_transactions {n} is above this server's limit of {ceiling} (satflow serve --max-trace-transactions)"
        ))),
        n => Ok(n),
    }
}

/// Every coin ever paid to the addresses of the cluster keyed `c`, appended to
/// `out`. The members are read one by one, so a cluster holding more than
/// `limit` coins is refused (RESOURCE_EXHAUSTED) once they are passed,
/// however many members it has left. `alive` is asked per member.
pub(crate) fn cluster_coins(
    index: &Index,
    g: &FlowView<'_>,
    c: ClusterKey,
    out: &mut Vec<u64>,
    limit: usize,
    alive: &mut dyn FnMut() -> bool,
) -> Result<()> {
    for member in clusters::members_lazily(index, c) {
        if !alive() {
            return Err(QueryError::DeadlineExceeded);
        }
        coins_of(index, g, member?, out, limit, alive)?;
    }
    Ok(())
}

/// Where a trace stops, as a request names it: addresses, and clusters
/// (named, or carrying the labels or categories named). The clusters'
/// members are listed only when they are few (see `listed`).
pub(crate) struct Stops {
    addresses: FxHashSet<u64>,
    clusters: FxHashSet<ClusterKey>,
    /// The labels and categories named, when their clusters were not
    /// listed: each coin's cluster is asked whether it carries one, rather
    /// than every labelled cluster read into a set (an exchange category
    /// may be carried by millions).
    carrying: Option<Carrying>,
    /// Addresses below this have cluster rows.
    cover: AddrId,
}

/// Stop labels and categories, and the label index to ask.
struct Carrying {
    labels: Arc<LabelIndex>,
    wanted: Wanted,
}

impl Stops {
    /// Whether taint stops nowhere.
    pub(crate) fn is_empty(&self) -> bool {
        self.addresses.is_empty() && self.clusters.is_empty() && self.carrying.is_none()
    }

    /// The rule a trace asks, reading the cluster of each address reached
    /// from `store`.
    pub(crate) fn rule(self, store: &Store) -> StopRule<'_> {
        StopRule {
            store,
            cover: self.cover,
            addresses: self.addresses,
            clusters: match self.carrying {
                None => Clusters::Named(self.clusters),
                Some(carrying) => Clusters::Carrying {
                    named: self.clusters,
                    carrying,
                },
            },
            memo: FxHashMap::default(),
            failed: None,
        }
    }
}

/// Where a trace stops: at the addresses of `r.stop_addresses`, and of
/// the clusters `r.stop_cluster_ids` names or that carry a label or
/// category `r.stop_labels` or `r.stop_categories` names. Their members
/// are listed when they are at most `max_listed` (see `listed`).
pub(crate) fn stops(index: &Index, r: &pb::TraceRequest, max_listed: u64) -> Result<Stops> {
    let categories = r
        .stop_categories
        .iter()
        .enumerate()
        .map(|(i, c)| args::category(&format!("stop_categories[{i}]"), c))
        .collect::<Result<Vec<Category>>>()?;
    let mut stops = Stops {
        addresses: FxHashSet::default(),
        clusters: FxHashSet::default(),
        carrying: None,
        cover: built::cover_or_none(index.store())?,
    };
    // The clusters carrying the labels named, when few enough to list.
    let labels = index.label_index();
    let wanted = Wanted::new(r.stop_labels.clone(), &categories);
    let carrying: Vec<ClusterKey> = labels.clusters_carrying(&wanted).take(SIZED + 1).collect();
    if !r.stop_cluster_ids.is_empty() {
        let built = Built::read(index.store())?;
        for (i, &c) in r.stop_cluster_ids.iter().enumerate() {
            let key = built
                .check_cluster(index.store(), ClusterId(c))
                .map_err(|e| name_field(e, &format!("stop_cluster_ids[{i}]")))?;
            stops.clusters.insert(key);
        }
    }
    for (i, a) in r.stop_addresses.iter().enumerate() {
        let key = args::address(&format!("stop_addresses[{i}]"), a, index.network())?;
        stops.addresses.extend(index.address_id(&key)?.map(|a| a.0));
    }
    if carrying.len() <= SIZED {
        let mut clusters = stops.clusters.clone();
        clusters.extend(carrying);
        let clusters: Vec<ClusterKey> = clusters.into_iter().collect();
        if let Some(members) = listed(index.store(), stops.cover, &clusters, max_listed)? {
            stops.addresses.extend(members);
            stops.clusters.clear();
            return Ok(stops);
        }
    }
    if !wanted.is_empty() {
        stops.carrying = Some(Carrying { labels, wanted });
    }
    Ok(stops)
}

/// Addresses whose cluster a `StopRule` remembers, at most: about 17 MiB.
/// Past it, it starts again (the answers are only read again).
const REMEMBERED: usize = 900_000;
/// Clusters stopped at whose sizes are read to tell whether to list them.
const SIZED: usize = 4096;

/// The addresses of `clusters`, when they are at most `SIZED` clusters of
/// at most `max_listed` addresses in all: a stop set that costs a trace
/// no lookup per coin (~10 bytes an address). Beyond, None: each coin's
/// cluster is looked up instead.
fn listed(
    store: &Store,
    cover: AddrId,
    clusters: &[ClusterKey],
    max_listed: u64,
) -> Result<Option<FxHashSet<u64>>> {
    if clusters.len() > SIZED {
        return Ok(None);
    }
    let covered = |c: &ClusterKey| c.holder() < cover;
    let mut size = 0;
    for c in clusters {
        size += match covered(c) {
            true => view::stats(store, *c)?.map_or(1, |s| s.size),
            false => 1,
        };
        if size > max_listed {
            return Ok(None);
        }
    }
    let mut out = FxHashSet::default();
    for c in clusters {
        match covered(c) {
            true => out.extend(view::members(store, *c)?.into_iter().map(|a| a.0)),
            // Beyond the clusters: an address of its own.
            false => {
                out.insert(c.holder().0);
            }
        }
    }
    Ok(Some(out))
}

/// Where a trace stops, asked per coin reached: at the addresses named,
/// and at every address in a cluster stopped at. Which cluster an address
/// is in is one lookup, remembered for the addresses the trace meets
/// again (and, lent to several traces, for those too).
pub(crate) struct StopRule<'a> {
    store: &'a Store,
    /// Addresses below this have cluster rows.
    cover: AddrId,
    addresses: FxHashSet<u64>,
    clusters: Clusters<'a>,
    /// Address → whether it stops, for covered addresses looked up.
    memo: FxHashMap<u64, bool>,
    /// The first lookup that failed: the trace ended there.
    failed: Option<QueryError>,
}

/// The clusters a `StopRule` stops at.
enum Clusters<'a> {
    Named(FxHashSet<ClusterKey>),
    /// Those named, and those carrying a label of `names` or a category of
    /// `categories`.
    Carrying {
        named: FxHashSet<ClusterKey>,
        carrying: Carrying,
    },
    /// Every cluster carrying a label, except `own`.
    Labelled {
        labels: &'a LabelIndex,
        own: Option<ClusterKey>,
    },
}

impl<'a> StopRule<'a> {
    /// Stops at every address of a labelled cluster other than `own`, with
    /// clusters as `labels` has them; their members are listed when they
    /// are at most `max_listed`.
    pub(crate) fn labelled(
        store: &'a Store,
        labels: &'a LabelIndex,
        own: Option<ClusterKey>,
        max_listed: u64,
    ) -> Result<StopRule<'a>> {
        let cover = labels.cover();
        let others: Vec<ClusterKey> = labels
            .clusters_with_any()
            .filter(|c| Some(*c) != own)
            .take(SIZED + 1)
            .collect();
        let (addresses, clusters) = match listed(store, cover, &others, max_listed)? {
            Some(members) => (members, Clusters::Named(FxHashSet::default())),
            None => (FxHashSet::default(), Clusters::Labelled { labels, own }),
        };
        Ok(StopRule {
            store,
            cover,
            addresses,
            clusters,
            memo: FxHashMap::default(),
            failed: None,
        })
    }

    /// Why the last trace asking this rule ended early, if a lookup did.
    pub(crate) fn failure(&mut self) -> Option<QueryError> {
        self.failed.take()
    }

    fn stops_in(&self, c: ClusterKey) -> bool {
        match &self.clusters {
            Clusters::Named(set) => set.contains(&c),
            Clusters::Carrying { named, carrying: k } => {
                named.contains(&c) || k.labels.carries(c, &k.wanted)
            }
            Clusters::Labelled { labels, own } => {
                Some(c) != *own && !labels.of_cluster(c).is_empty()
            }
        }
    }

    /// Whether no cluster is stopped at (so no address is looked up).
    fn no_clusters(&self) -> bool {
        match &self.clusters {
            Clusters::Named(set) => set.is_empty(),
            Clusters::Carrying { named, carrying } => {
                named.is_empty() && carrying.labels.is_empty()
            }
            Clusters::Labelled { labels, .. } => labels.is_empty(),
        }
    }
}

impl StopAt for StopRule<'_> {
    fn stops(&mut self, addr: u64) -> Option<bool> {
        if self.addresses.contains(&addr) {
            return Some(true);
        }
        if self.no_clusters() {
            return Some(false);
        }
        let a = AddrId(addr);
        if a >= self.cover {
            // Beyond the clusters: a cluster of its own, no lookup.
            return Some(self.stops_in(ClusterKey::of(a)));
        }
        if let Some(&stops) = self.memo.get(&addr) {
            return Some(stops);
        }
        let holder = match built::cluster_or_self(self.store, a, self.cover) {
            Ok(c) => c,
            Err(e) => {
                self.failed.get_or_insert(e);
                return None;
            }
        };
        let stops = self.stops_in(holder);
        if self.memo.len() >= REMEMBERED {
            self.memo.clear();
        }
        self.memo.insert(addr, stops);
        Some(stops)
    }
}

/// Clusters and labels whose hit details a trace remembers, at most
/// (a label about 200 bytes: ~15 MB); past it, it starts again.
const HELD: usize = 65_536;

/// What the hits in one cluster share: its id, and its labels with the
/// address of the first member carrying each.
struct Held {
    id: Option<u64>,
    labels: Vec<(AddrId, pb::Label)>,
}

/// A trace's memory of the clusters its hits were in: a trace that keeps
/// reaching one (an exchange's, hop after hop) looks up its id and its
/// labels' first carriers once, not at every hit.
#[derive(Default)]
pub(crate) struct Hits {
    held: FxHashMap<(ClusterKey, bool), Held>,
    /// Labels in `held`.
    labels: usize,
    /// The transaction of the last hit, its txid and height: the coins a
    /// transaction makes are often hit one after another.
    last_tx: Option<(u64, Txid, Height)>,
    /// Satoshis that ended (reached and not passed on) in each holder;
    /// summed by label once, at the end (`by_label`), not at every hit.
    ended: FxHashMap<(ClusterKey, bool), u64>,
}

impl Hits {
    /// What the hits in `holder` share; `clustered`: a cluster of the
    /// built clusters (which has an id), not an address beyond them.
    fn held(
        &mut self,
        index: &Index,
        labels: &LabelIndex,
        holder: ClusterKey,
        clustered: bool,
    ) -> Result<&Held> {
        if !self.held.contains_key(&(holder, clustered)) {
            let id = match clustered {
                true => Some(view::id_of(index.store(), holder)?.0),
                false => None,
            };
            let labels = labels
                .distinct_of(holder, None)
                .into_iter()
                .map(|(member, l, carriers)| {
                    let from = carrier(index, labels, member)?;
                    Ok((member, label_message(l, from, carriers)))
                })
                .collect::<Result<Vec<_>>>()?;
            if self.held.len() + self.labels >= HELD {
                self.held.clear();
                self.labels = 0;
            }
            self.labels += labels.len();
            self.held.insert((holder, clustered), Held { id, labels });
        }
        Ok(&self.held[&(holder, clustered)])
    }

    /// The txid and height of flow-graph transaction `tx`.
    fn tx(&mut self, index: &Index, tx: u64) -> Result<(Txid, Height)> {
        match self.last_tx {
            Some((n, txid, height)) if n == tx => Ok((txid, height)),
            _ => {
                let row = index.tx_row(TxNum(tx))?;
                self.last_tx = Some((tx, row.txid, row.height));
                Ok((row.txid, row.height))
            }
        }
    }

    /// Satoshis that ended in a cluster carrying each (label, category):
    /// a label that several sets give a cluster counts its amount once.
    pub(crate) fn by_label(&self, labels: &LabelIndex) -> FxHashMap<(String, String), u64> {
        let mut sums: FxHashMap<(String, String), u64> = FxHashMap::default();
        for (&(holder, _), &amount) in &self.ended {
            let named: FxHashSet<(&str, &str)> = labels
                .distinct_of(holder, None)
                .into_iter()
                .map(|(_, l, _)| (l.label.as_str(), l.category.name()))
                .collect();
            for (label, category) in named {
                *sums
                    .entry((label.to_owned(), category.to_owned()))
                    .or_default() += amount;
            }
        }
        sums
    }
}

/// A trace event as the caller reads it, with the cluster of its address
/// when the clusters cover it. Where the coin is in the flow graph (all
/// but `BeforeStart`), its value, address and maker come from there: one
/// point read (the maker's txid) instead of three.
pub(crate) fn hit(
    hits: &mut Hits,
    index: &Index,
    g: &FlowView<'_>,
    e: &Event,
    clusters_cover: AddrId,
    labels: &LabelIndex,
) -> Result<pb::TraceHit> {
    let (txid, vout, height, addr, value) = match e.kind {
        Kind::BeforeStart => {
            let n = OutNum(e.output);
            let row = index.output(n)?;
            let txid = index.store().need::<cf::Outside>(&n)?;
            (txid, row.vout, Height(0), row.addr, row.value)
        }
        _ => {
            let tx = g.creator(e.output);
            let (txid, height) = hits.tx(index, tx)?;
            let vout = e.output - g.outputs(tx).start;
            let out = g.output(e.output);
            (txid, vout as u32, height, out.addr.map(AddrId), out.value)
        }
    };
    let cluster = match addr {
        Some(a) if a < clusters_cover => {
            Some(built::cluster_or_self(index.store(), a, clusters_cover)?)
        }
        _ => None,
    };
    // The labels of its cluster, or of the address itself beyond the
    // clusters; a label its own address carries names no other.
    let holder = cluster.or(addr.map(ClusterKey::of));
    let (cluster_id, labels) = match holder {
        Some(c) => {
            let key = (c, cluster.is_some());
            let labelled = !hits.held(index, labels, c, key.1)?.labels.is_empty();
            // Only labelled holders are summed: as many as the label
            // index has at most, where a long trace reaches millions.
            if labelled && e.kind != Kind::Transit {
                *hits.ended.entry(key).or_default() += e.amount;
            }
            let held = &hits.held[&key];
            let labels = held
                .labels
                .iter()
                .map(|(member, l)| match Some(*member) == addr {
                    true => pb::Label {
                        inherited_from: String::new(),
                        ..l.clone()
                    },
                    false => l.clone(),
                })
                .collect();
            (held.id, labels)
        }
        None => (None, Vec::new()),
    };
    Ok(pb::TraceHit {
        kind: reach_kind(e.kind).into(),
        txid: txid.to_string(),
        vout,
        height: height.0,
        address: index.address_string(addr)?,
        cluster_id,
        hop: e.hop,
        amount: e.amount,
        value,
        share: if value == 0 {
            0.0
        } else {
            e.amount as f64 / value as f64
        },
        labels,
    })
}

/// A NOT_FOUND about one request field says which.
fn name_field(e: QueryError, field: &str) -> QueryError {
    match e {
        QueryError::NotFound(m) if !m.starts_with(field) => {
            QueryError::NotFound(format!("{field}: {m}"))
        }
        e => e,
    }
}

fn reach_kind(k: Kind) -> pb::ReachKind {
    match k {
        Kind::Unspent => pb::ReachKind::Unspent,
        Kind::Stopped => pb::ReachKind::Stopped,
        Kind::Transit => pb::ReachKind::Transit,
        Kind::BeyondHops => pb::ReachKind::BeyondHops,
        Kind::OutsideWindow => pb::ReachKind::OutsideWindow,
        Kind::BelowMin => pb::ReachKind::BelowMin,
        Kind::Mined => pb::ReachKind::Mined,
        Kind::BeforeStart => pb::ReachKind::BeforeStart,
        Kind::UnknownValue => pb::ReachKind::UnknownValue,
        Kind::Rejoined => pb::ReachKind::Rejoined,
    }
}
