//! `satflow watch`: watch lists and the alert stream of a running server
//! (watches and alerts live in the server's alert store).

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use satflow_proto::v1 as pb;
use tokio_stream::StreamExt;

use crate::connect::{connect, Connection};

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    what: WatchCommand,
}

#[derive(Subcommand)]
enum WatchCommand {
    /// Add a watch, or replace the one of the same name.
    Add(AddArgs),
    /// The watches, the newest alert id and the last block evaluated.
    List,
    /// Delete a watch.
    Remove { name: String },
    /// Print alerts as they are raised: those after --after first.
    Tail {
        /// Start after this alert id (0: every alert kept).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only this watch's alerts (repeatable).
        #[arg(long = "watch")]
        watches: Vec<String>,
    },
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("subject").required(true))]
#[command(group = clap::ArgGroup::new("rule").required(true))]
struct AddArgs {
    name: String,
    #[arg(long, group = "subject")]
    address: Option<String>,
    #[arg(long, group = "subject")]
    cluster: Option<u64>,
    #[arg(long, group = "subject")]
    label: Option<String>,
    #[arg(long, group = "subject")]
    category: Option<String>,
    /// Any transaction paying the subject or spending from it.
    #[arg(long, group = "rule")]
    any: bool,
    /// A transaction paying the subject at least this many satoshis, net of
    /// what it spends from it.
    #[arg(long, group = "rule")]
    incoming_above: Option<u64>,
    /// Coins moving between the subject and this category within --hops.
    #[arg(long, group = "rule")]
    exposure: Option<String>,
    #[arg(long, default_value_t = 3, requires = "exposure")]
    hops: u32,
    /// from (the subject paid with the category's coins), to (the category
    /// paid with the subject's coins) or either.
    #[arg(long, default_value = "either", requires = "exposure")]
    direction: String,
    /// A suspicious pattern of this kind involving the subject:
    /// peel-chain, layering, fan-out-in, fan-in, coinjoin-reunion,
    /// coinjoin-to-exchange or dusting (see `satflow patterns`).
    #[arg(long, group = "rule", value_name = "KIND")]
    pattern: Option<String>,
}

pub fn run(a: WatchArgs) -> Result<()> {
    if a.conn.db.is_some() {
        bail!("watches live in a running server's alert store: give --server, not --db");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let mut c = connect(&a.conn).await?.watches;
            let json = a.conn.json;
            match a.what {
                WatchCommand::Add(w) => {
                    let w = c.put_watch(watch(w)?).await?.into_inner();
                    print(json, &w, describe(&w))
                }
                WatchCommand::List => {
                    let l = c
                        .list_watches(pb::ListWatchesRequest {})
                        .await?
                        .into_inner();
                    let mut t = format!(
                        "newest alert {} · evaluated up to height {}\n",
                        l.newest_alert_id, l.evaluated_height
                    );
                    for w in &l.watches {
                        t += &describe(w);
                        t += "\n";
                    }
                    print(json, &l, t)
                }
                WatchCommand::Remove { name } => {
                    c.delete_watch(pb::DeleteWatchRequest { name: name.clone() })
                        .await?;
                    println!("removed {name}");
                    Ok(())
                }
                WatchCommand::Tail { after, watches } => {
                    let request = pb::SubscribeRequest {
                        after_id: after,
                        watches,
                    };
                    let mut alerts = c.subscribe(request).await?.into_inner();
                    while let Some(a) = alerts.next().await {
                        let a = a?;
                        match json {
                            true => println!("{}", serde_json::to_string(&a)?),
                            false => println!("{}", alert_line(&a)),
                        }
                    }
                    Ok(())
                }
            }
        })
}

fn watch(a: AddArgs) -> Result<pb::Watch> {
    use pb::watch::{Rule, Subject};
    let subject = match (a.address, a.cluster, a.label, a.category) {
        (Some(x), ..) => Subject::Address(x),
        (_, Some(x), ..) => Subject::ClusterId(x),
        (_, _, Some(x), _) => Subject::Label(x),
        (.., Some(x)) => Subject::Category(x),
        _ => bail!("give one of --address, --cluster, --label or --category"),
    };
    let rule = match (a.any, a.incoming_above, a.exposure) {
        _ if a.pattern.is_some() => Rule::Pattern(pb::PatternRule {
            kind: a.pattern.unwrap_or_default(),
        }),
        (true, ..) => Rule::AnyActivity(pb::AnyActivity {}),
        (_, Some(v), _) => Rule::IncomingAbove(v),
        (_, _, Some(category)) => Rule::Exposure(pb::ExposureRule {
            category,
            max_hops: a.hops,
            direction: match a.direction.as_str() {
                "either" => pb::ExposureDirection::ExposureEither,
                "from" => pb::ExposureDirection::ExposureFromCategory,
                "to" => pb::ExposureDirection::ExposureToCategory,
                d => bail!("--direction {d:?}: one of from, to, either"),
            }
            .into(),
        }),
        _ => bail!("give one of --any, --incoming-above, --exposure or --pattern"),
    };
    Ok(pb::Watch {
        name: a.name,
        subject: Some(subject),
        rule: Some(rule),
    })
}

fn describe(w: &pb::Watch) -> String {
    use pb::watch::{Rule, Subject};
    let subject = match &w.subject {
        Some(Subject::Address(a)) => format!("address {a}"),
        Some(Subject::ClusterId(c)) => format!("cluster {c}"),
        Some(Subject::Label(l)) => format!("label {l:?}"),
        Some(Subject::Category(c)) => format!("category {c}"),
        None => "nothing".into(),
    };
    let rule = match &w.rule {
        Some(Rule::AnyActivity(_)) => "any activity".into(),
        Some(Rule::IncomingAbove(v)) => format!("incoming ≥ {v} sat"),
        Some(Rule::Exposure(e)) => format!(
            "exposure to {} within {} hops ({})",
            e.category,
            e.max_hops,
            e.direction().as_str_name()
        ),
        Some(Rule::Pattern(p)) => format!("pattern {}", p.kind),
        None => "no rule".into(),
    };
    format!("{:<20} {subject}: {rule}", w.name)
}

fn alert_line(a: &pb::Alert) -> String {
    let name = a.watch.as_ref().map_or("", |w| w.name.as_str());
    let what = match a.kind() {
        pb::AlertKind::AlertRaised => "alert",
        pb::AlertKind::AlertRetracted => "RETRACTED",
    };
    let mut line = format!(
        "#{} {what} {name} tx {} height {} received {} sent {}",
        a.id, a.txid, a.height, a.received, a.sent
    );
    if a.retracts != 0 {
        line += &format!(" (retracts #{})", a.retracts);
    }
    if let Some(p) = &a.pattern {
        line += &format!(
            "\n    {} of {} txs, {} sat: {}",
            p.kind,
            p.txids.len(),
            p.value,
            p.txids.join(" → ")
        );
    }
    if !a.path.is_empty() {
        let hops: Vec<String> = a
            .path
            .iter()
            .map(|c| format!("{}:{} {}", c.txid, c.vout, c.address))
            .collect();
        line += &format!("\n    path: {}", hops.join(" → "));
    }
    line
}

fn print<T: serde::Serialize>(json: bool, value: &T, table: String) -> Result<()> {
    match json {
        true => println!("{}", serde_json::to_string_pretty(value)?),
        false => println!("{table}"),
    }
    Ok(())
}
