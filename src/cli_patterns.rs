//! `satflow patterns`: the suspicious patterns of a range of blocks over the
//! gRPC API (`Patterns/ListPatterns`), read page by page.

use anyhow::Result;
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
            " (more follow: raise --limit or start after the last height shown)"
        } else {
            ""
        }
    );
    t
}
