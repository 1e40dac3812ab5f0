//! Screening a transaction before it is mined: where the coins it spends
//! came from and whom it pays, scored with the rules of an exposure
//! (`risk`). The coins it spends are in the index and the flow graph, so
//! the received side is traced from them as `risk` traces a subject's
//! coins; its outputs are not, so the sent side is its payees' clusters
//! and labels, looked up directly.

use std::collections::BTreeMap;

use bitcoin::consensus::deserialize;
use bitcoin::{Amount, Transaction};
use satflow_indexer::address;
use satflow_indexer::cluster::view;
use satflow_indexer::flow::FlowView;
use satflow_proto::v1 as pb;
use satflow_schema::script::classify;

use crate::args;
use crate::built;
use crate::error::{QueryError, Result};
use crate::index::Index;
use crate::label_index::LabelIndex;
use crate::labels::{carrier, label_message, most_carried};
use crate::risk::{listing, score, tally_cluster, Asked, Side, Tracer};
use crate::scripts;
use crate::taint::Direction;
use crate::trace::coin;

/// Labels listed across all payees of one screening, at most.
const MAX_PAYEE_LABELS: usize = 10_000;

/// Inputs or outputs looked up between two asks of `alive`.
const CHECK_EVERY: usize = 256;

/// `ceiling` and `max_listed` as for `risk::exposure`; `alive` false ends
/// the screening with DEADLINE_EXCEEDED.
pub(crate) fn screen(
    index: &Index,
    r: &pb::ScreenTransactionRequest,
    ceiling: u64,
    max_listed: u64,
    alive: &mut dyn FnMut() -> bool,
) -> Result<pb::Screening> {
    let asked = Asked::new(r.policy, r.hops, r.max_transactions, &r.rules, ceiling)?;
    let tx = parse(&r.raw_transaction)?;
    let txid = tx.compute_txid();
    let mined = match index.tx_number(&txid) {
        Ok(n) => Some(index.tx_row(n)?),
        Err(QueryError::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    let flow = index.flow()?;
    let g = flow.view();
    let hops = asked.hops;
    // Traced back as `risk` traces a transaction once mined: from its
    // outputs, through it (the first hop) to the coins it spent and their
    // holders. Before, from the coins it spends, whose holders are direct.
    let (coins, direct_hops, stop_sources) = match &mined {
        Some(row) => {
            let outputs = row.outputs().map(|o| o.0).filter(|&o| g.has_output(o));
            (outputs.collect(), 1, false)
        }
        None => (spent_coins(index, &g, &tx, alive)?, 0, true),
    };
    let labels = index.label_index();
    let (payees, paid) = payees(index, &labels, &tx, alive)?;
    let mut t = Tracer::new(index, g, &labels, None, &asked, max_listed, alive)?;
    let direct = t.side(&coins, Direction::Backward, direct_hops, stop_sources)?;
    // `hops` is at least 1, and may be as large as a caller writes it.
    let within = t.side(
        &coins,
        Direction::Backward,
        (hops - 1).saturating_add(direct_hops),
        stop_sources,
    )?;
    let within_received = format!("received within {hops} hops");
    let (risk, reasons) = score(
        &asked.rules,
        &[
            ("received directly", &direct),
            (&within_received, &within),
            ("sent directly", &paid),
        ],
    );
    Ok(pb::Screening {
        txid: txid.to_string(),
        received: direct.total,
        sent: paid.total,
        direct_received: listing(&direct),
        indirect_received: listing(&within),
        direct_sent: listing(&paid),
        payees,
        risk: risk.name().into(),
        reasons,
        complete: direct.complete && within.complete,
        as_of_height: g.tip_height(),
        mined_height: mined.map(|row| row.height.0),
    })
}

/// The coins `tx` spends, as the flow graph numbers them.
fn spent_coins(
    index: &Index,
    g: &FlowView<'_>,
    tx: &Transaction,
    alive: &mut dyn FnMut() -> bool,
) -> Result<Vec<u64>> {
    let mut coins = Vec::with_capacity(tx.input.len());
    for (i, input) in tx.input.iter().enumerate() {
        if i % CHECK_EVERY == CHECK_EVERY - 1 && !alive() {
            return Err(QueryError::DeadlineExceeded);
        }
        let field = format!("inputs[{i}]");
        let p = input.previous_output;
        let n = coin(index, &field, &p.txid, p.vout)?;
        if !g.has_output(n.0) {
            return Err(QueryError::FailedPrecondition(format!(
                "{field}: coin {p} is newer than the flow graph (up to height {}); it catches up after the next index run",
                g.tip_height()
            )));
        }
        coins.push(n.0);
    }
    Ok(coins)
}

fn parse(raw: &str) -> Result<Transaction> {
    let bytes = hex::decode(raw.trim())
        .map_err(|e| args::invalid("raw_transaction", format!("not hex: {e}")))?;
    let tx: Transaction = deserialize(&bytes)
        .map_err(|e| args::invalid("raw_transaction", format!("not a transaction: {e}")))?;
    if tx.is_coinbase() {
        return Err(args::invalid(
            "raw_transaction",
            "a coinbase spends no coins to screen",
        ));
    }
    // Consensus bounds each output and their sum; the sums below rely on it.
    let mut total = 0u64;
    for (vout, out) in tx.output.iter().enumerate() {
        total = total.saturating_add(out.value.to_sat());
        if total > Amount::MAX_MONEY.to_sat() {
            return Err(args::invalid(
                &format!("raw_transaction.outputs[{vout}]"),
                "the outputs pay more than 21 million BTC",
            ));
        }
    }
    Ok(tx)
}

/// Each output's payee, and what the outputs pay to labelled clusters.
/// Each payee lists at most `labels::MAX_LISTED` labels, and all of them
/// together at most `MAX_PAYEE_LABELS`: a transaction of tens of thousands
/// of outputs into one much-labelled cluster must not make an answer of
/// gigabytes. The rest are counted in `labels_omitted`.
fn payees(
    index: &Index,
    labels: &LabelIndex,
    tx: &Transaction,
    alive: &mut dyn FnMut() -> bool,
) -> Result<(Vec<pb::ScreenedPayee>, Side)> {
    let mut paid = Side {
        total: 0,
        by: BTreeMap::new(),
        complete: true,
    };
    let mut payees = Vec::with_capacity(tx.output.len());
    let mut room = MAX_PAYEE_LABELS;
    for (vout, out) in tx.output.iter().enumerate() {
        if vout % CHECK_EVERY == CHECK_EVERY - 1 && !alive() {
            return Err(QueryError::DeadlineExceeded);
        }
        let value = out.value.to_sat();
        paid.total += value;
        let script = out.script_pubkey.as_bytes();
        let key = classify(script).1;
        let id = key.map(|k| index.address_id(&k)).transpose()?.flatten();
        let cluster = id
            .map(|a| built::cluster_or_self(index.store(), a, labels.cover()))
            .transpose()?;
        let (mut shown, mut omitted) = (Vec::new(), 0);
        if let (Some(a), Some(c)) = (id, cluster) {
            tally_cluster(labels, c, value, &mut paid.by);
            let (listed, left) = most_carried(labels.distinct_of(c, None));
            let kept = listed.len().min(room);
            omitted = left + (listed.len() - kept) as u64;
            room -= kept;
            for (member, l, carriers) in listed.into_iter().take(kept) {
                let from = match member == a {
                    true => String::new(),
                    false => carrier(index, labels, member)?,
                };
                shown.push(label_message(l, from, carriers));
            }
        }
        let address = match (scripts::witness_address(script, index.network()), key) {
            (Some(a), _) => a,
            (None, Some(k)) => address::encode(&k, index.network()),
            (None, None) => String::new(),
        };
        payees.push(pb::ScreenedPayee {
            vout: vout as u32,
            value,
            address,
            seen: id.is_some(),
            cluster_id: cluster
                .map(|c| view::id_of(index.store(), c).map(|id| id.0))
                .transpose()?,
            labels: shown,
            labels_omitted: omitted,
        });
    }
    Ok((payees, paid))
}
