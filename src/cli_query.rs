//! `satflow query`: readable tables (or JSON) over the query API.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use satflow_query::Index;
use serde::Serialize;

#[derive(Args)]
pub struct QueryArgs {
    /// The index database directory.
    #[arg(long, global = true, default_value = "satflow-db")]
    db: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Network, tip and counts.
    Status,
    /// A block by height or hash.
    Block { id: String },
    /// A transaction by txid.
    Tx { txid: String },
    /// An address (or hex scriptPubKey): summary, recent history, unspent outputs.
    Address {
        address: String,
        /// History entries to show, newest first.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

pub fn run(q: QueryArgs) -> Result<()> {
    let index = Index::open(&q.db)?;
    match q.what {
        What::Status => show(q.json, &index.status()?, |s| {
            format!(
                "network {}\ntip     {} {}\ntxs     {}\noutputs {}\naddrs   {}",
                s.network, s.tip_height, s.tip_hash, s.txs, s.outputs, s.addresses
            )
        }),
        What::Block { id } => show(q.json, &index.block(&id)?, |b| {
            format!(
                "height  {}\nhash    {}\nprev    {}\ntime    {}\ntxs     {}\nsize    {}\nweight  {}\nfees    {}",
                b.height, b.hash, b.prev_hash, b.time, b.tx_count, b.size, b.weight, b.fees
            )
        }),
        What::Tx { txid } => show(q.json, &index.tx(&txid)?, |t| {
            let mut s = format!("txid    {}\nheight  {} (position {})\nsize    {} (vsize {}, weight {})\nfee     {}\n", t.txid, t.height, t.position, t.size, t.vsize, t.weight, t.fee);
            for (i, inp) in t.inputs.iter().enumerate() {
                s += &format!(
                    "in  {i:>4} {:>16} {} <- {}\n",
                    inp.value,
                    inp.address.as_deref().unwrap_or("-"),
                    inp.prevout
                );
            }
            for (i, o) in t.outputs.iter().enumerate() {
                let spent = o
                    .spent_by
                    .as_deref()
                    .map_or(String::from("unspent"), |s| format!("spent by {s}"));
                s += &format!(
                    "out {i:>4} {:>16} {} ({}) {spent}\n",
                    o.value,
                    o.address.as_deref().unwrap_or("-"),
                    o.script_type
                );
            }
            s
        }),
        What::Address { address, limit } => {
            let summary = index.address(&address)?;
            let history = index.history(&address, true, limit)?;
            let utxos = index.utxos(&address)?;
            #[derive(Serialize)]
            struct Out<'a> {
                summary: &'a satflow_query::AddressSummary,
                history: &'a [satflow_query::HistoryEntry],
                utxos: &'a [satflow_query::Utxo],
            }
            show(
                q.json,
                &Out {
                    summary: &summary,
                    history: &history,
                    utxos: &utxos,
                },
                |o| {
                    let s = o.summary;
                    let mut t = format!(
                    "address  {}\ntxs      {}\nreceived {}\nsent     {}\nbalance  {}\nutxos    {}\nseen     heights {}..{}\n\nheight  net              txid\n",
                    s.address, s.tx_count, s.received, s.sent, s.balance, s.utxo_count, seen(s.first_seen), seen(s.last_seen)
                );
                    for h in o.history {
                        t += &format!("{:<7} {:>+16} {}\n", h.height, h.net, h.txid);
                    }
                    t
                },
            )
        }
    }
}

fn seen(h: Option<u32>) -> String {
    h.map_or("-".into(), |h| h.to_string())
}

fn show<T: Serialize>(json: bool, value: &T, table: impl Fn(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table(value));
        println!();
    }
    Ok(())
}
