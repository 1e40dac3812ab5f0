//! What a taint trace needs from the index: the flow graph, its sources
//! and stop addresses as numbers, and each hit in terms a caller reads.

use std::sync::{Arc, Mutex, PoisonError};

use bitcoin::hashes::Hash;
use bitcoin::Txid;
use rustc_hash::FxHashSet;
use satflow_indexer::cluster::view;
use satflow_indexer::flow::{Flow, FlowView};
use satflow_indexer::schema::{cf, key_u64, Dec, OutputRow};
use satflow_proto::v1 as pb;

use crate::args;
use crate::error::{QueryError, Result};
use crate::labels::{label_message, LabelIndex};
use crate::reader::Index;
use crate::taint::{Event, Kind};
use satflow_indexer::labels::Category;

/// The flow graph as last seen: traces hold a snapshot while catch-up
/// moves on (the files only grow, so an old mapping stays readable). When
/// it cannot be read, why not, for the callers of traces; the rest of the
/// server goes on without it.
pub(crate) struct FlowSlot(Mutex<std::result::Result<Arc<Flow>, String>>);

impl Default for FlowSlot {
    fn default() -> FlowSlot {
        FlowSlot(Mutex::new(Err(String::new())))
    }
}

impl FlowSlot {
    pub fn load(&self, db: &std::path::Path) {
        let flow = match Flow::open(db) {
            Ok(Some(f)) => Ok(Arc::new(f)),
            Ok(None) => Err(
                "the flow graph was not built for this index: run `satflow index` without --no-flow"
                    .into(),
            ),
            Err(e) => Err(format!("the flow graph cannot be read: {e:#}")),
        };
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = flow;
    }

    fn get(&self) -> Result<Arc<Flow>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .map_err(QueryError::FailedPrecondition)
    }
}

impl Index {
    /// The flow graph taint traces walk.
    /// The flow graph, checked to be on the index's chain (it may lag).
    pub fn flow(&self) -> Result<Arc<Flow>> {
        let flow = self.flow.get()?;
        let tip = flow.tip();
        if let Some(h) = tip.height() {
            let ours = self.store.block(h)?.map(|b| b.hash);
            if ours != Some(tip.block_hash()) {
                return Err(QueryError::FailedPrecondition(format!(
                    "the flow graph is on another branch than the index at height {h} (a reorg is being applied); retry after the next index run"
                )));
            }
        }
        Ok(flow)
    }

    /// Output numbers of the coins `sources` name, at most `limit` of them.
    pub fn trace_sources(
        &self,
        g: &FlowView<'_>,
        sources: &[pb::TraceSource],
        limit: usize,
    ) -> Result<Vec<u64>> {
        use pb::trace_source::Source;
        if sources.is_empty() {
            return Err(args::invalid("sources", "name at least one source"));
        }
        let mut out = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let field = format!("sources[{i}]");
            let mut one = || -> Result<()> {
                match &s.source {
                    Some(Source::Outpoint(p)) => out.push(self.outpoint(&field, p)?),
                    Some(Source::Txid(t)) => {
                        let row = self.tx_row(self.tx_number(&args::txid(&field, t)?)?)?;
                        out.extend(
                            row.first_output..row.first_output + u64::from(row.output_count),
                        );
                    }
                    Some(Source::Address(a)) => {
                        let key = args::address(&field, a, self.network())?;
                        let id = self.known_address_id(&key)?;
                        self.coins_of(g, id, &mut out, limit)?;
                    }
                    Some(Source::ClusterId(c)) => {
                        for member in self.cluster_members_of(*c)? {
                            self.coins_of(g, member, &mut out, limit)?;
                        }
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
        }
        if let Some(&late) = out.iter().find(|&&o| !g.has_output(o)) {
            return Err(QueryError::FailedPrecondition(format!(
                "sources: output {late} is newer than the flow graph (up to height {}); it catches up after the next index run",
                g.tip_height()
            )));
        }
        Ok(out)
    }

    fn outpoint(&self, field: &str, p: &str) -> Result<u64> {
        let (txid, vout) = p
            .split_once(':')
            .ok_or_else(|| args::invalid(field, format!("{p:?} is not txid:vout")))?;
        let vout: u32 = vout
            .parse()
            .map_err(|_| args::invalid(field, format!("{p:?}: {vout:?} is not an output index")))?;
        let row = self.tx_row(self.tx_number(&args::txid(field, txid)?)?)?;
        if vout >= row.output_count {
            return Err(QueryError::NotFound(format!(
                "{field}: transaction {txid} has {} outputs, no output {vout}",
                row.output_count
            )));
        }
        Ok(row.first_output + u64::from(vout))
    }

    /// Every coin ever paid to address `id`, appended to `out`.
    /// Every coin ever paid to address `id`, appended to `out`; more than
    /// `limit` coins in all is RESOURCE_EXHAUSTED.
    pub(crate) fn coins_of(
        &self,
        g: &FlowView<'_>,
        id: u64,
        out: &mut Vec<u64>,
        limit: usize,
    ) -> Result<()> {
        let too_many = || {
            QueryError::ResourceExhausted(format!(
                "the sources hold more than {limit} coins; name fewer, or raise max_transactions"
            ))
        };
        // Each coin needs a history row: `limit` rows left is enough to see
        // whether the limit is passed.
        let left = limit.saturating_sub(out.len()) + 1;
        let rows = self.history_rows(
            cf::HISTORY,
            id,
            crate::Order::OldestFirst,
            0..u64::MAX,
            None,
            left,
        )?;
        for (txnum, row) in rows {
            if row.received == 0 {
                continue;
            }
            if txnum >= g.tx_count() {
                return Err(QueryError::FailedPrecondition(format!(
                    "a coin of the sources is newer than the flow graph (up to height {}); it catches up after the next index run",
                    g.tip_height()
                )));
            }
            out.extend(g.outputs(txnum).filter(|&o| g.output(o).addr == Some(id)));
            if out.len() > limit {
                return Err(too_many());
            }
        }
        Ok(())
    }

    /// The addresses of cluster `c`; NOT_FOUND when it is no cluster id.
    pub(crate) fn cluster_members_of(&self, c: u64) -> Result<Vec<u64>> {
        self.cluster_root(c, &self.built()?)?;
        Ok(view::members(&self.store, c)?)
    }

    /// The members of `clusters` (a labelled address the clusters do not
    /// cover yet stands for itself).
    pub(crate) fn members_of_clusters(
        &self,
        clusters: impl Iterator<Item = u64>,
    ) -> Result<FxHashSet<u64>> {
        let mut out = FxHashSet::default();
        for c in clusters {
            match self.cluster_members_of(c) {
                Ok(members) => out.extend(members),
                Err(QueryError::NotFound(_) | QueryError::FailedPrecondition(_)) => {
                    out.insert(c);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The cluster of address `id`, or `id` when it is not below `cover`
    /// (see `clusters_cover_or_none`).
    pub(crate) fn cluster_or_self(&self, id: u64, cover: u64) -> Result<u64> {
        Ok(match id < cover {
            true => view::cluster_of(&self.store, id)?,
            false => id,
        })
    }

    /// Address numbers where a trace stops: the members of the clusters
    /// named, and of those carrying the labels or categories named.
    pub fn stop_addresses(&self, r: &pb::TraceRequest) -> Result<FxHashSet<u64>> {
        let categories = r
            .stop_categories
            .iter()
            .enumerate()
            .map(|(i, c)| args::category(&format!("stop_categories[{i}]"), c))
            .collect::<Result<Vec<Category>>>()?;
        let labeled = self
            .label_index()
            .clusters_with(&r.stop_labels, &categories);
        let mut stop = self.members_of_clusters(labeled.into_iter())?;
        for &c in &r.stop_cluster_ids {
            stop.extend(self.cluster_members_of(c)?);
        }
        let addresses = &r.stop_addresses;
        for (i, a) in addresses.iter().enumerate() {
            let key = args::address(&format!("stop_addresses[{i}]"), a, self.network())?;
            stop.extend(self.address_id(&key)?);
        }
        Ok(stop)
    }

    /// A trace event as the caller reads it, with the cluster of its
    /// address when the clusters cover it.
    pub fn trace_hit(
        &self,
        g: &FlowView<'_>,
        e: &Event,
        clusters_cover: u64,
        labels: &LabelIndex,
    ) -> Result<pb::TraceHit> {
        let row = OutputRow::decode(&self.store.need(cf::OUTPUTS, &key_u64(e.output))?)?;
        let (txid, height) = match e.kind {
            Kind::BeforeStart => {
                let v = self.store.need(cf::OUTSIDE, &key_u64(e.output))?;
                (Txid::from_byte_array(Dec::new("outside", &v).take()?), 0)
            }
            _ => {
                let tx = self.tx_row(row.tx)?;
                (tx.txid, tx.height)
            }
        };
        let cluster_id = match row.addr {
            Some(a) if a < clusters_cover => Some(self.cluster_or_self(a, clusters_cover)?),
            _ => None,
        };
        let value = match e.kind {
            Kind::BeforeStart => row.value,
            _ => g.output(e.output).value,
        };
        let holder = cluster_id.or(row.addr);
        let labels = holder
            .map(|c| labels.of_cluster(c))
            .unwrap_or_default()
            .iter()
            .map(|(member, l)| {
                let from = match Some(*member) == row.addr {
                    true => String::new(),
                    false => self.address_string(Some(*member))?,
                };
                Ok(label_message(l, from))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pb::TraceHit {
            kind: reach_kind(e.kind).into(),
            txid: txid.to_string(),
            vout: row.vout,
            height,
            address: self.address_string(row.addr)?,
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

    /// Address numbers below this are in the clusters; 0 when there are no
    /// clusters.
    pub fn clusters_cover_or_none(&self) -> Result<u64> {
        match self.built() {
            Ok(b) => Ok(b.next_addr),
            Err(QueryError::FailedPrecondition(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }
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
