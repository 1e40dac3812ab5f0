//! `satflow trace`: a taint trace over the gRPC API, printed hit by hit as
//! it streams in, then its summary.

use anyhow::{bail, Result};
use clap::Args;
use satflow_proto::v1 as pb;
use satflow_query::client::TaintClient;
use satflow_query::taint::PolicyName;

#[derive(Args, Clone)]
pub struct TraceArgs {
    /// Where to start (repeatable): an outpoint `txid:vout`, a txid (all its
    /// outputs), `cluster:<id>`, or an address or hex scriptPubKey.
    #[arg(long = "from", required = true, value_name = "SOURCE")]
    sources: Vec<String>,
    /// poison, haircut, fifo, lifo or tiho.
    #[arg(long, default_value = "haircut")]
    policy: PolicyName,
    /// Trace where the coins came from instead of where they went.
    #[arg(long)]
    backward: bool,
    /// Transactions to follow from a source.
    #[arg(long, default_value_t = 10)]
    hops: u32,
    /// Transactions to visit in all before giving up (0: the server's default, 1,000,000).
    #[arg(long, default_value_t = 0)]
    max_txs: u64,
    /// Do not follow amounts below this many satoshis.
    #[arg(long, default_value_t = 0)]
    min_amount: u64,
    /// Stop at this cluster (repeatable), e.g. an exchange's.
    #[arg(long)]
    stop_cluster: Vec<u64>,
    /// Stop at this address (repeatable).
    #[arg(long)]
    stop_address: Vec<String>,
    /// Stop at the clusters carrying this label (repeatable).
    #[arg(long)]
    stop_label: Vec<String>,
    /// Stop at the clusters carrying a label of this category (repeatable), e.g. exchange.
    #[arg(long)]
    stop_category: Vec<String>,
    /// Follow only transactions at or above this height.
    #[arg(long, default_value_t = 0)]
    from_height: u32,
    /// Follow only transactions at or below this height.
    #[arg(long)]
    to_height: Option<u32>,
    /// Also print every coin the taint passes through.
    #[arg(long)]
    transit: bool,
    /// Hits to print (the summary counts them all).
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

impl TraceArgs {
    fn request(&self) -> pb::TraceRequest {
        use pb::trace_source::Source;
        let sources = self
            .sources
            .iter()
            .map(|s| {
                let source = if let Some(id) = s.strip_prefix("cluster:") {
                    match id.parse() {
                        Ok(id) => Source::ClusterId(id),
                        Err(_) => Source::Address(s.clone()),
                    }
                } else if s.contains(':') {
                    Source::Outpoint(s.clone())
                } else if crate::render::looks_like_txid(s) {
                    Source::Txid(s.clone())
                } else {
                    Source::Address(s.clone())
                };
                pb::TraceSource {
                    source: Some(source),
                }
            })
            .collect();
        let policy = match self.policy {
            PolicyName::Poison => pb::TaintPolicy::Poison,
            PolicyName::Haircut => pb::TaintPolicy::Haircut,
            PolicyName::Fifo => pb::TaintPolicy::Fifo,
            PolicyName::Lifo => pb::TaintPolicy::Lifo,
            PolicyName::Tiho => pb::TaintPolicy::Tiho,
        };
        let direction = match self.backward {
            false => pb::TraceDirection::Forward,
            true => pb::TraceDirection::Backward,
        };
        pb::TraceRequest {
            sources,
            direction: direction.into(),
            policy: policy.into(),
            max_hops: self.hops,
            max_transactions: self.max_txs,
            min_amount: self.min_amount,
            stop_cluster_ids: self.stop_cluster.clone(),
            stop_addresses: self.stop_address.clone(),
            stop_labels: self.stop_label.clone(),
            stop_categories: self.stop_category.clone(),
            from_height: self.from_height,
            to_height: self.to_height,
            include_transit: self.transit,
        }
    }
}

pub async fn run(client: &mut TaintClient, args: &TraceArgs, json: bool) -> Result<()> {
    let mut stream = client.trace(args.request()).await?.into_inner();
    let mut shown = 0;
    if !json {
        println!(
            "{:<14} {:>3} {:>16} {:>7}  {:<68} {:<42} cluster",
            "reached", "hop", "amount", "share", "coin", "address"
        );
    }
    let mut summarised = false;
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) if summarised => return Ok(()),
            Ok(None) => bail!("the trace ended without its summary"),
            Err(status) => bail!("the trace ended early: {status}"),
        };
        summarised |= matches!(event.event, Some(pb::trace_event::Event::Summary(_)));
        match event.event {
            Some(pb::trace_event::Event::Hit(h)) if json => {
                println!("{}", serde_json::to_string(&h)?)
            }
            Some(pb::trace_event::Event::Hit(h)) => {
                shown += 1;
                if shown <= args.limit {
                    println!(
                        "{:<14} {:>3} {:>16} {:>6.2}%  {:<68} {:<42} {}",
                        kind_name(h.kind),
                        h.hop,
                        h.amount,
                        h.share * 100.0,
                        format!("{}:{}", h.txid, h.vout),
                        if h.address.is_empty() {
                            "-"
                        } else {
                            &h.address
                        },
                        h.cluster_id.map_or("-".into(), |c| c.to_string())
                            + &labels_text(&h.labels)
                    );
                } else if shown == args.limit + 1 {
                    println!("… (more hits: --limit)");
                }
            }
            Some(pb::trace_event::Event::Summary(s)) if json => {
                println!("{}", serde_json::to_string(&s)?)
            }
            Some(pb::trace_event::Event::Summary(s)) => print_summary(&s),
            None => {}
        }
    }
}

fn kind_name(kind: i32) -> &'static str {
    pb::ReachKind::try_from(kind).map_or("?", |k| match k {
        pb::ReachKind::Unspent => "unspent",
        pb::ReachKind::Stopped => "stopped",
        pb::ReachKind::Transit => "transit",
        pb::ReachKind::BeyondHops => "beyond hops",
        pb::ReachKind::OutsideWindow => "outside window",
        pb::ReachKind::BelowMin => "below min",
        pb::ReachKind::Mined => "mined",
        pb::ReachKind::BeforeStart => "before start",
        pb::ReachKind::UnknownValue => "unknown value",
        pb::ReachKind::Rejoined => "rejoined source",
    })
}

fn print_summary(s: &pb::TraceSummary) {
    println!(
        "\n{} trace over the chain up to height {}: {} transactions visited",
        if s.complete { "complete" } else { "unfinished" },
        s.as_of_height,
        s.transactions_visited
    );
    for (what, sat) in [
        ("traced", s.source_amount),
        ("unspent", s.unspent),
        ("stopped", s.stopped),
        ("beyond hops", s.beyond_hops),
        ("outside window", s.outside_window),
        ("below min", s.below_min),
        ("mined", s.mined),
        ("before start", s.before_start),
        ("unknown value", s.unknown_value),
        ("rejoined", s.rejoined),
        ("to fees", s.to_fees),
        ("rounding", s.rounding),
        ("unfinished", s.unfinished),
    ] {
        if sat > 0 || what == "traced" {
            println!("{what:<15} {sat:>16} sat");
        }
    }
    println!("clusters reached: {}", s.cluster_count);
    for c in s.clusters.iter().take(10) {
        println!("  cluster {:<12} {:>16} sat", c.cluster_id, c.amount);
    }
    for l in &s.labels {
        println!("  {} ({}) {:>16} sat", l.label, l.category, l.amount);
    }
}

/// " [label (category), …]", or nothing.
fn labels_text(labels: &[pb::Label]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let names: Vec<String> = labels
        .iter()
        .map(|l| format!("{} ({})", l.label, l.category))
        .collect();
    format!(" [{}]", names.join(", "))
}
