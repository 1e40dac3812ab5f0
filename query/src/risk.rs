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
use satflow_schema::{AddrId, ClusterId, ClusterKey};

use crate::args;
use crate::built;
use crate::error::{QueryError, Result};
use crate::index::Index;
use crate::label_index::LabelIndex;
use crate::taint::{trace_with, Direction, End, Event, Kind, Limits, PolicyName, Sink, Stop};
use crate::trace::{cluster_coins, coins_of, max_transactions, StopRule};

const DEFAULT_HOPS: u32 = 3;
const DEFAULT_TXS: u64 = 100_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
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

    pub(crate) fn name(self) -> &'static str {
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
pub(crate) struct Side {
    pub total: u64,
    pub by: BTreeMap<(Category, String), u64>,
    pub complete: bool,
}

/// What an exposure or a screening is asked: checked, defaults filled in.
pub(crate) struct Asked {
    pub policy: PolicyName,
    /// Hops for the indirect figures.
    pub hops: u32,
    pub max_txs: u64,
    pub rules: Vec<pb::RiskRule>,
}

/// Rules one request may set: each is checked against every category and
/// entity of the four sides, and may add a reason to the answer.
const MAX_RULES: usize = 100;

impl Asked {
    /// `max_transactions` may be at most `ceiling` (the server's limit).
    pub(crate) fn new(
        policy: i32,
        hops: u32,
        asked_txs: u64,
        rules: &[pb::RiskRule],
        ceiling: u64,
    ) -> Result<Asked> {
        let policy = args::policy(policy)?;
        if policy == PolicyName::Tiho {
            return Err(args::invalid("policy", "tiho traces forward only"));
        }
        if rules.len() > MAX_RULES {
            return Err(args::invalid(
                "rules",
                format!("{} rules; at most {MAX_RULES}", rules.len()),
            ));
        }
        let rules = match rules.is_empty() {
            true => default_rules(),
            false => rules.to_vec(),
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
        Ok(Asked {
            policy,
            hops: if hops == 0 { DEFAULT_HOPS } else { hops },
            max_txs: max_transactions(asked_txs, DEFAULT_TXS, ceiling)?,
            rules,
        })
    }

    /// The most coins a subject may hold.
    pub(crate) fn coin_limit(&self) -> usize {
        self.max_txs.min(10_000_000) as usize
    }
}

/// The traces of one exposure: from the subject's coins, stopping at every
/// address of a labelled cluster but the subject's own (listed up front
/// when they are few, else asked per coin reached and remembered across
/// the traces), totalled by category and entity.
pub(crate) struct Tracer<'a> {
    index: &'a Index,
    g: FlowView<'a>,
    labels: &'a LabelIndex,
    stop: StopRule<'a>,
    asked: &'a Asked,
    alive: &'a mut dyn FnMut() -> bool,
}

impl<'a> Tracer<'a> {
    /// `alive` is asked every few thousand transactions; false ends the
    /// exposure with DEADLINE_EXCEEDED.
    pub(crate) fn new(
        index: &'a Index,
        g: FlowView<'a>,
        labels: &'a LabelIndex,
        own: Option<ClusterKey>,
        asked: &'a Asked,
        max_listed: u64,
        alive: &'a mut dyn FnMut() -> bool,
    ) -> Result<Tracer<'a>> {
        Ok(Tracer {
            index,
            g,
            labels,
            // Listing more members than the traces may visit transactions
            // would cost more than looking up every coin they reach.
            stop: StopRule::labelled(index.store(), labels, own, max_listed.min(asked.max_txs))?,
            asked,
            alive,
        })
    }

    /// One side from `coins`: backward (who paid them) or forward (whom
    /// they paid), within `max_hops`. With `stop_sources`, a coin of
    /// `coins` held by a labelled cluster is exposure already.
    pub(crate) fn side(
        &mut self,
        coins: &[u64],
        direction: Direction,
        max_hops: u32,
        stop_sources: bool,
    ) -> Result<Side> {
        let limits = Limits {
            max_hops,
            max_txs: self.asked.max_txs,
            stop: Stop::at(&mut self.stop),
            stop_sources,
            ..Limits::default()
        };
        let mut sink = Stopped {
            events: Vec::new(),
            alive: &mut *self.alive,
        };
        let (totals, end) = trace_with(
            self.asked.policy,
            self.g,
            direction,
            coins,
            &limits,
            &mut sink,
        )
        .expect("tiho refused by Asked::new");
        drop(limits);
        if let Some(e) = self.stop.failure() {
            return Err(e);
        }
        if end == End::Stopped {
            return Err(QueryError::DeadlineExceeded);
        }
        let mut by = BTreeMap::new();
        for (i, e) in sink.events.iter().enumerate() {
            if i % 1024 == 1023 && !(self.alive)() {
                return Err(QueryError::DeadlineExceeded);
            }
            if let Some(addr) = self.g.output(e.output).addr {
                tally(self.index, self.labels, AddrId(addr), e.amount, &mut by)?;
            }
        }
        Ok(Side {
            total: totals.source,
            by,
            complete: end == End::Complete,
        })
    }
}

/// `max_transactions` may be at most `ceiling` (the server's limit); the
/// labelled clusters' members are listed up front when they are at most
/// `max_listed`, else each coin's cluster is looked up. `alive` is asked
/// every few thousand transactions; false ends the exposure with
/// DEADLINE_EXCEEDED.
pub(crate) fn exposure(
    index: &Index,
    r: &pb::ExposureRequest,
    ceiling: u64,
    max_listed: u64,
    alive: &mut dyn FnMut() -> bool,
) -> Result<pb::Exposure> {
    use pb::exposure_request::Subject;
    let asked = Asked::new(r.policy, r.hops, r.max_transactions, &r.rules, ceiling)?;
    let flow = index.flow()?;
    let g = flow.view();
    let limit = asked.coin_limit();
    // The subject's coins, and the cluster that is the subject itself.
    let (coins, own, is_tx) = match &r.subject {
        Some(Subject::Address(a)) => {
            let key = args::address("address", a, index.network())?;
            let id = index.known_address_id(&key)?;
            let mut coins = Vec::new();
            coins_of(index, &g, id, &mut coins, limit, alive)?;
            let cover = built::cover_or_none(index.store())?;
            let own = built::cluster_or_self(index.store(), id, cover)?;
            (coins, Some(own), false)
        }
        Some(Subject::ClusterId(c)) => {
            let mut coins = Vec::new();
            let c = built::key_of(index.store(), ClusterId(*c))?;
            cluster_coins(index, &g, c, &mut coins, limit, alive)?;
            (coins, Some(c), false)
        }
        Some(Subject::Txid(t)) => {
            let (_, row) = index.tx_by_id(&args::txid("txid", t)?)?;
            let outputs = row.outputs().map(|o| o.0);
            (outputs.filter(|&o| g.has_output(o)).collect(), None, true)
        }
        None => return Err(args::invalid("subject", "set address, cluster_id or txid")),
    };
    let labels = index.label_index();
    let hops = asked.hops;
    let mut t = Tracer::new(index, g, &labels, own, &asked, max_listed, alive)?;
    // Direct: for a transaction, its inputs (one hop back) and outputs
    // (no hop forward, its own payees being its direct exposure); for an
    // address or cluster, one hop either way.
    let direct_sent_hops = if is_tx { 0 } else { 1 };
    let received = t.side(&coins, Direction::Backward, 1, false)?;
    let sent = t.side(&coins, Direction::Forward, direct_sent_hops, is_tx)?;
    let far_received = t.side(&coins, Direction::Backward, hops, false)?;
    let far_sent = t.side(
        &coins,
        Direction::Forward,
        hops.max(direct_sent_hops),
        is_tx,
    )?;
    let within_received = format!("received within {hops} hops");
    let within_sent = format!("sent within {hops} hops");
    let (risk, reasons) = score(
        &asked.rules,
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

/// Adds `amount`, held at address `addr`, to each (category, label) of
/// its cluster.
fn tally(
    index: &Index,
    labels: &LabelIndex,
    addr: AddrId,
    amount: u64,
    by: &mut BTreeMap<(Category, String), u64>,
) -> Result<()> {
    let holder = built::cluster_or_self(index.store(), addr, labels.cover())?;
    tally_cluster(labels, holder, amount, by);
    Ok(())
}

/// Adds `amount`, held in cluster `holder`, to each of its (category,
/// label).
pub(crate) fn tally_cluster(
    labels: &LabelIndex,
    holder: ClusterKey,
    amount: u64,
    by: &mut BTreeMap<(Category, String), u64>,
) {
    let mut seen = FxHashSet::default();
    for (_, l, _) in labels.distinct_of(holder, None) {
        if seen.insert((l.category, l.label.clone())) {
            *by.entry((l.category, l.label.clone())).or_default() += amount;
        }
    }
}

/// Category totals (label empty), then each entity, largest first.
pub(crate) fn listing(side: &Side) -> Vec<pb::CategoryExposure> {
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
pub(crate) fn score(rules: &[pb::RiskRule], sides: &[(&str, &Side)]) -> (Level, Vec<String>) {
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
