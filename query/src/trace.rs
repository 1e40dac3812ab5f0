//! What a taint trace needs from the index: its sources and stop
//! addresses as flow-graph numbers, and each hit in terms a caller reads.
//! The flow graph numbers outputs and addresses as the index does, in
//! plain `u64`s: the typed ids are unwrapped and rewrapped at this edge.

use rustc_hash::FxHashSet;
use satflow_indexer::flow::FlowView;
use satflow_indexer::labels::Category;
use satflow_proto::v1 as pb;
use satflow_schema::{cf, AddrId, ClusterId, Height, OutNum};

use crate::args;
use crate::built;
use crate::clusters;
use crate::error::{QueryError, Result};
use crate::history::{self, Order};
use crate::index::Index;
use crate::label_index::LabelIndex;
use crate::labels::label_message;
use crate::taint::{Event, Kind};

/// Output numbers of the coins `sources` name, at most `limit` of them.
pub(crate) fn sources(
    index: &Index,
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
                Some(Source::Outpoint(p)) => out.push(outpoint(index, &field, p)?.0),
                Some(Source::Txid(t)) => {
                    let row = index.tx_row(index.tx_number(&args::txid(&field, t)?)?)?;
                    out.extend(row.outputs().map(|n| n.0));
                }
                Some(Source::Address(a)) => {
                    let key = args::address(&field, a, index.network())?;
                    let id = index.known_address_id(&key)?;
                    coins_of(index, g, id, &mut out, limit)?;
                }
                Some(Source::ClusterId(c)) => {
                    for member in clusters::all_members(index, ClusterId(*c))? {
                        coins_of(index, g, member, &mut out, limit)?;
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

fn outpoint(index: &Index, field: &str, p: &str) -> Result<OutNum> {
    let (txid, vout) = p
        .split_once(':')
        .ok_or_else(|| args::invalid(field, format!("{p:?} is not txid:vout")))?;
    let vout: u32 = vout
        .parse()
        .map_err(|_| args::invalid(field, format!("{p:?}: {vout:?} is not an output index")))?;
    let row = index.tx_row(index.tx_number(&args::txid(field, txid)?)?)?;
    if vout >= row.output_count {
        return Err(QueryError::NotFound(format!(
            "{field}: transaction {txid} has {} outputs, no output {vout}",
            row.output_count
        )));
    }
    Ok(row.first_output + u64::from(vout))
}

/// Every coin ever paid to address `id`, appended to `out`; more than
/// `limit` coins in all is RESOURCE_EXHAUSTED.
pub(crate) fn coins_of(
    index: &Index,
    g: &FlowView<'_>,
    id: AddrId,
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
    let all = history::all_txs();
    let rows = history::rows::<cf::History, _>(index, id, Order::OldestFirst, all, None, left)?;
    for (txnum, row) in rows {
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
            return Err(too_many());
        }
    }
    Ok(())
}

/// Address numbers where a trace stops: the members of the clusters
/// named, and of those carrying the labels or categories named.
pub(crate) fn stop_addresses(index: &Index, r: &pb::TraceRequest) -> Result<FxHashSet<u64>> {
    let categories = r
        .stop_categories
        .iter()
        .enumerate()
        .map(|(i, c)| args::category(&format!("stop_categories[{i}]"), c))
        .collect::<Result<Vec<Category>>>()?;
    let labeled = index
        .label_index()
        .clusters_with(&r.stop_labels, &categories);
    let mut stop = clusters::all_members_of(index, labeled.into_iter())?;
    for &c in &r.stop_cluster_ids {
        stop.extend(clusters::all_members(index, ClusterId(c))?);
    }
    let addresses = &r.stop_addresses;
    for (i, a) in addresses.iter().enumerate() {
        let key = args::address(&format!("stop_addresses[{i}]"), a, index.network())?;
        stop.extend(index.address_id(&key)?);
    }
    Ok(stop.into_iter().map(|a| a.0).collect())
}

/// A trace event as the caller reads it, with the cluster of its address
/// when the clusters cover it.
pub(crate) fn hit(
    index: &Index,
    g: &FlowView<'_>,
    e: &Event,
    clusters_cover: AddrId,
    labels: &LabelIndex,
) -> Result<pb::TraceHit> {
    let n = OutNum(e.output);
    let row = index.output(n)?;
    let (txid, height) = match e.kind {
        Kind::BeforeStart => (index.store().need::<cf::Outside>(&n)?, Height(0)),
        _ => {
            let tx = index.creator(n, &row)?;
            (tx.txid, tx.height)
        }
    };
    let cluster_id = match row.addr {
        Some(a) if a < clusters_cover => {
            Some(built::cluster_or_self(index.store(), a, clusters_cover)?)
        }
        _ => None,
    };
    let value = match e.kind {
        Kind::BeforeStart => row.value,
        _ => g.output(e.output).value,
    };
    // The labels of its cluster, or of the address itself beyond the
    // clusters.
    let holder = cluster_id.or(row.addr.map(ClusterId::of));
    let labels = holder
        .map(|c| labels.of_cluster(c))
        .unwrap_or_default()
        .iter()
        .map(|(member, l)| {
            let from = match Some(*member) == row.addr {
                true => String::new(),
                false => index.address_string(Some(*member))?,
            };
            Ok(label_message(l, from))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(pb::TraceHit {
        kind: reach_kind(e.kind).into(),
        txid: txid.to_string(),
        vout: row.vout,
        height: height.0,
        address: index.address_string(row.addr)?,
        cluster_id: cluster_id.map(|c| c.0),
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
