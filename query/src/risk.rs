//! Risk exposure: taint traces from a subject's coins that stop at every
//! labelled cluster, totalled by category and entity, and a risk level
//! from rules an analyst can read.
//!
//! Received exposure traces the subject's coins backward (who paid it),
//! sent exposure forward (whom it paid). Direct exposure is one transaction
//! away: the payers and payees of the subject's own transactions (for a
//! transaction subject, its inputs and its outputs); indirect exposure is
//! within `hops` and includes the direct.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet;
use satflow_indexer::flow::FlowView;
use satflow_indexer::labels::Category;
use satflow_proto::v1 as pb;
use satflow_schema::{AddrId, ClusterId};

use crate::args;
use crate::built;
use crate::clusters;
use crate::error::{QueryError, Result};
use crate::index::Index;
use crate::label_index::LabelIndex;
use crate::taint::{trace_with, Direction, End, Event, Kind, Limits, PolicyName, Sink};
use crate::trace::coins_of;

const DEFAULT_HOPS: u32 = 3;
const DEFAULT_TXS: u64 = 100_000;
const MAX_TXS: u64 = 100_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Low,
    Medium,
    High,
    Severe,
}

impl Level {
    fn parse(field: &str, s: &str) -> Result<Level> {
        Ok(match s {
            "low" => Level::Low,
            "medium" => Level::Medium,
            "high" => Level::High,
            "severe" => Level::Severe,
            _ => {
                return Err(args::invalid(
                    field,
                    format!("{s:?}: low, medium, high or severe"),
                ))
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Severe => "severe",
        }
    }
}

/// The rules used when a request gives none: any sanctioned exposure is
/// severe; 1% from ransomware, darknet markets, thefts or scams is high;
/// 5% through mixers or 20% from gambling is medium.
pub fn default_rules() -> Vec<pb::RiskRule> {
    let rule = |category: &str, min_share: f64, min_amount: u64, level: &str| pb::RiskRule {
        category: category.into(),
        min_share,
        min_amount,
        level: level.into(),
    };
    vec![
        rule("sanctioned", 0.0, 1, "severe"),
        rule("ransomware", 0.01, 1, "high"),
        rule("darknet_market", 0.01, 1, "high"),
        rule("theft", 0.01, 1, "high"),
        rule("scam", 0.01, 1, "high"),
        rule("mixer", 0.05, 1, "medium"),
        rule("gambling", 0.2, 1, "medium"),
    ]
}

/// Keeps the stopped coins; asks `alive` whether to go on.
struct Stopped<'a> {
    events: Vec<Event>,
    alive: &'a mut dyn FnMut() -> bool,
}

impl Sink for Stopped<'_> {
    fn event(&mut self, e: Event) -> bool {
        if e.kind == Kind::Stopped {
            self.events.push(e);
        }
        true
    }

    fn alive(&mut self) -> bool {
        (self.alive)()
    }
}

/// One side's exposure: (category, label) → satoshis, and the traced total.
struct Side {
    total: u64,
    by: BTreeMap<(Category, String), u64>,
    complete: bool,
}

/// `alive` is asked every few thousand transactions; false ends the
/// exposure with DEADLINE_EXCEEDED.
pub(crate) fn exposure(
    index: &Index,
    r: &pb::ExposureRequest,
    alive: &mut dyn FnMut() -> bool,
) -> Result<pb::Exposure> {
    use pb::exposure_request::Subject;
    let policy = args::policy(r.policy)?;
    if policy == PolicyName::Tiho {
        return Err(args::invalid("policy", "tiho traces forward only"));
    }
    let hops = if r.hops == 0 { DEFAULT_HOPS } else { r.hops };
    let max_txs = match r.max_transactions {
        0 => DEFAULT_TXS,
        n if n > MAX_TXS => {
            return Err(args::invalid(
                "max_transactions",
                format!("{n} is above the limit of {MAX_TXS}"),
            ))
        }
        n => n,
    };
    let rules = match r.rules.is_empty() {
        true => default_rules(),
        false => r.rules.clone(),
    };
    for (i, rule) in rules.iter().enumerate() {
        args::category(&format!("rules[{i}].category"), &rule.category)?;
        Level::parse(&format!("rules[{i}].level"), &rule.level)?;
        if !(0.0..=1.0).contains(&rule.min_share) {
            return Err(args::invalid(
                &format!("rules[{i}].min_share"),
                format!("{} is not a share between 0 and 1", rule.min_share),
            ));
        }
    }
    let flow = index.flow()?;
    let g = flow.view();
    let limit = max_txs.min(10_000_000) as usize;
    // The subject's coins, and the cluster that is the subject itself.
    let (coins, own, is_tx) = match &r.subject {
        Some(Subject::Address(a)) => {
            let key = args::address("address", a, index.network())?;
            let id = index.known_address_id(&key)?;
            let mut coins = Vec::new();
            coins_of(index, &g, id, &mut coins, limit)?;
            let cover = built::cover_or_none(index.store())?;
            let own = built::cluster_or_self(index.store(), id, cover)?;
            (coins, Some(own), false)
        }
        Some(Subject::ClusterId(c)) => {
            let mut coins = Vec::new();
            let c = ClusterId(*c);
            for m in clusters::all_members(index, c)? {
                coins_of(index, &g, m, &mut coins, limit)?;
            }
            (coins, Some(c), false)
        }
        Some(Subject::Txid(t)) => {
            let row = index.tx_row(index.tx_number(&args::txid("txid", t)?)?)?;
            let outputs = row.outputs().map(|o| o.0);
            (outputs.filter(|&o| g.has_output(o)).collect(), None, true)
        }
        None => return Err(args::invalid("subject", "set address, cluster_id or txid")),
    };
    let labels = index.label_index();
    let others = labels.clusters_with_any().filter(|c| Some(*c) != own);
    let stop: FxHashSet<u64> = clusters::all_members_of(index, others)?
        .into_iter()
        .map(|a| a.0)
        .collect();
    let mut side = |direction: Direction, max_hops: u32| -> Result<Side> {
        let limits = Limits {
            max_hops,
            max_txs,
            stop: stop.clone(),
            // A transaction's own payees are its direct exposure.
            stop_sources: is_tx && direction == Direction::Forward,
            ..Limits::default()
        };
        let mut sink = Stopped {
            events: Vec::new(),
            alive: &mut *alive,
        };
        let (totals, end) = trace_with(policy, g, direction, &coins, &limits, &mut sink)
            .expect("tiho refused above");
        if end == End::Stopped {
            return Err(QueryError::DeadlineExceeded);
        }
        let events = sink.events;
        let mut by = BTreeMap::new();
        for e in &events {
            tally(index, &g, e, &labels, &mut by)?;
        }
        Ok(Side {
            total: totals.source,
            by,
            complete: end == End::Complete,
        })
    };
    // Direct: for a transaction, its inputs (one hop back) and outputs
    // (no hop forward); for an address or cluster, one hop either way.
    let direct_sent_hops = if is_tx { 0 } else { 1 };
    let received = side(Direction::Backward, 1)?;
    let sent = side(Direction::Forward, direct_sent_hops)?;
    let far_received = side(Direction::Backward, hops)?;
    let far_sent = side(Direction::Forward, hops.max(direct_sent_hops))?;
    let within_received = format!("received within {hops} hops");
    let within_sent = format!("sent within {hops} hops");
    let (risk, reasons) = score(
        &rules,
        &[
            ("received directly", &received),
            ("sent directly", &sent),
            (&within_received, &far_received),
            (&within_sent, &far_sent),
        ],
    );
    Ok(pb::Exposure {
        received: far_received.total,
        sent: far_sent.total,
        direct_received: listing(&received),
        direct_sent: listing(&sent),
        indirect_received: listing(&far_received),
        indirect_sent: listing(&far_sent),
        risk: risk.name().into(),
        reasons,
        complete: [&received, &sent, &far_received, &far_sent]
            .iter()
            .all(|s| s.complete),
        as_of_height: g.tip_height(),
    })
}

/// Adds a stopped coin's amount to each (category, label) of its cluster.
fn tally(
    index: &Index,
    g: &FlowView<'_>,
    e: &Event,
    labels: &LabelIndex,
    by: &mut BTreeMap<(Category, String), u64>,
) -> Result<()> {
    let Some(addr) = g.output(e.output).addr.map(AddrId) else {
        return Ok(());
    };
    let holder = built::cluster_or_self(index.store(), addr, labels.cover())?;
    let mut seen = FxHashSet::default();
    for (_, l) in labels.of_cluster(holder) {
        if seen.insert((l.category, l.label.clone())) {
            *by.entry((l.category, l.label.clone())).or_default() += e.amount;
        }
    }
    Ok(())
}

/// Category totals (label empty), then each entity, largest first.
fn listing(side: &Side) -> Vec<pb::CategoryExposure> {
    let share = |amount: u64| match side.total {
        0 => 0.0,
        t => amount as f64 / t as f64,
    };
    let mut categories: BTreeMap<Category, u64> = BTreeMap::new();
    for ((c, _), amount) in &side.by {
        *categories.entry(*c).or_default() += amount;
    }
    let mut out: Vec<pb::CategoryExposure> = categories
        .into_iter()
        .map(|(c, amount)| (c, String::new(), amount))
        .chain(side.by.iter().map(|((c, l), a)| (*c, l.clone(), *a)))
        .map(|(c, label, amount)| pb::CategoryExposure {
            category: c.name().into(),
            label,
            amount,
            share: share(amount),
        })
        .collect();
    out.sort_by(|a, b| {
        (a.label.is_empty(), a.amount)
            .cmp(&(b.label.is_empty(), b.amount))
            .reverse()
    });
    out
}

/// The highest level among the rules that fire on any side, and why.
fn score(rules: &[pb::RiskRule], sides: &[(&str, &Side)]) -> (Level, Vec<String>) {
    let mut level = Level::Low;
    let mut reasons = Vec::new();
    for rule in rules {
        let category: Category = rule.category.parse().expect("checked");
        let fired = Level::parse("", &rule.level).expect("checked");
        for (what, side) in sides {
            let amount: u64 = side
                .by
                .iter()
                .filter(|((c, _), _)| *c == category)
                .map(|(_, a)| a)
                .sum();
            let share = if side.total == 0 {
                0.0
            } else {
                amount as f64 / side.total as f64
            };
            if amount > 0 && amount >= rule.min_amount && share >= rule.min_share {
                level = level.max(fired);
                reasons.push(format!(
                    "{category}: {:.2}% ({amount} sat) {what} ≥ {:.2}% and {} sat → {}",
                    share * 100.0,
                    rule.min_share * 100.0,
                    rule.min_amount,
                    fired.name()
                ));
            }
        }
    }
    (level, reasons)
}
