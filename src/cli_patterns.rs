//! `satflow patterns`: the suspicious patterns of a range of blocks over the
//! gRPC API (`Patterns/ListPatterns`), read page by page.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use satflow_proto::v1 as pb;
use satflow_query::client::PatternsClient;
use serde::Serialize;

use crate::render::show;

#[derive(Args, Clone)]
pub struct PatternsArgs {
    /// First block to scan (below the index's first block: from that one).
    #[arg(long, default_value_t = 0)]
    from_height: u32,
    /// Last block to scan (default: the tip).
    #[arg(long)]
    to_height: Option<u32>,
    /// Only this kind (repeatable): peel-chain, layering, fan-out-in,
    /// fan-in, coinjoin-reunion, coinjoin-to-exchange, dusting.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Only patterns with a transaction spending from or paying this address.
    #[arg(long, conflicts_with = "cluster")]
    address: Option<String>,
    /// Only patterns with a transaction spending from or paying this cluster.
    #[arg(long)]
    cluster: Option<u64>,
    /// Patterns to print at most.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// A detector threshold, NAME=VALUE (repeatable), e.g.
    /// peel_min_steps=4 or dusting_max_value=546; the names are the fields
    /// of `PatternParams` in proto/satflow/v1/pattern.proto.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
}

/// What is printed: the patterns, and how far the blocks were scanned.
#[derive(Serialize)]
struct Report {
    patterns: Vec<pb::Pattern>,
    scanned_to: u32,
    /// More patterns may follow (`--limit` was reached).
    more: bool,
}

pub async fn run(client: &mut PatternsClient, args: &PatternsArgs, json: bool) -> Result<()> {
    use pb::list_patterns_request::Subject;
    let mut request = pb::ListPatternsRequest {
        from_height: args.from_height,
        to_height: args.to_height,
        kinds: args.kinds.clone(),
        subject: match (&args.address, args.cluster) {
            (Some(a), _) => Some(Subject::Address(a.clone())),
            (None, Some(c)) => Some(Subject::ClusterId(c)),
            (None, None) => None,
        },
        params: Some(thresholds(&args.params)?),
        ..Default::default()
    };
    let mut report = Report {
        patterns: Vec::new(),
        scanned_to: 0,
        more: false,
    };
    loop {
        request.page_size = (args.limit - report.patterns.len()).min(1_000) as u32;
        let page = client.list_patterns(request.clone()).await?.into_inner();
        report.patterns.extend(page.patterns);
        report.scanned_to = page.scanned_to;
        // A page may end at the server's scan limit with nothing in it.
        if !json && report.patterns.is_empty() && !page.next_page_token.is_empty() {
            eprintln!("scanned to block {}", page.scanned_to);
        }
        report.more = !page.next_page_token.is_empty();
        if !report.more || report.patterns.len() >= args.limit {
            break;
        }
        request.page_token = page.next_page_token;
    }
    show(json, &report, table)
}

/// `--param NAME=VALUE` flags as the request's thresholds.
fn thresholds(given: &[String]) -> Result<pb::PatternParams> {
    let mut p = pb::PatternParams::default();
    for g in given {
        let Some((name, value)) = g.split_once('=') else {
            bail!("--param {g:?}: give NAME=VALUE");
        };
        let bad = |e: &dyn std::fmt::Display| anyhow!("--param {name}: {value:?}: {e}");
        let int = || value.trim().parse::<u32>().map_err(|e| bad(&e));
        let sat = || value.trim().parse::<u64>().map_err(|e| bad(&e));
        let share = || value.trim().parse::<f64>().map_err(|e| bad(&e));
        match name.trim() {
            "peel_min_steps" => p.peel_min_steps = Some(int()?),
            "peel_max_share" => p.peel_max_share = Some(share()?),
            "peel_max_gap" => p.peel_max_gap = Some(int()?),
            "layering_min_hops" => p.layering_min_hops = Some(int()?),
            "layering_max_blocks" => p.layering_max_blocks = Some(int()?),
            "layering_min_forward" => p.layering_min_forward = Some(share()?),
            "fan_out_in_min_coins" => p.fan_out_in_min_coins = Some(int()?),
            "fan_out_in_max_blocks" => p.fan_out_in_max_blocks = Some(int()?),
            "fan_out_in_max_split_inputs" => p.fan_out_in_max_split_inputs = Some(int()?),
            "fan_in_min_inputs" => p.fan_in_min_inputs = Some(int()?),
            "fan_in_max_value" => p.fan_in_max_value = Some(sat()?),
            "fan_in_max_outputs" => p.fan_in_max_outputs = Some(int()?),
            "fan_in_min_payers" => p.fan_in_min_payers = Some(share()?),
            "coinjoin_to_exchange_max_hops" => p.coinjoin_to_exchange_max_hops = Some(int()?),
            "coinjoin_to_exchange_max_blocks" => {
                p.coinjoin_to_exchange_max_blocks = Some(int()?)
            }
            "dusting_min_outputs" => p.dusting_min_outputs = Some(int()?),
            "dusting_max_value" => p.dusting_max_value = Some(sat()?),
            "dusting_min_used" => p.dusting_min_used = Some(share()?),
            other => bail!("--param {other:?}: no such threshold (see PatternParams in proto/satflow/v1/pattern.proto)"),
        }
    }
    Ok(p)
}

fn table(r: &Report) -> String {
    let mut t = format!(
        "{:>8}  {:<20}  {:>5}  {:>16}  transactions\n",
        "height", "pattern", "size", "value (BTC)"
    );
    for p in &r.patterns {
        let txs = match &p.txids[..] {
            [one] => one.clone(),
            [first, .., last] => format!("{first} … {last} ({} txs)", p.txids.len()),
            [] => String::new(),
        };
        t += &format!(
            "{:>8}  {:<20}  {:>5}  {:>16.8}  {txs}\n",
            p.height,
            p.kind,
            p.size,
            p.value as f64 / 1e8
        );
    }
    t += &format!(
        "{} patterns, blocks scanned to {}{}",
        r.patterns.len(),
        r.scanned_to,
        if r.more {
            " (more follow: raise --limit)"
        } else {
            ""
        }
    );
    t
}
