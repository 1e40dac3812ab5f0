//! How answers are printed: a readable table per message, or its JSON.

use anyhow::Result;
use satflow_proto::v1 as pb;
use serde::Serialize;

/// `satflow query cluster`: the cluster and a page of its members.
#[derive(Serialize)]
pub struct ClusterReport {
    pub cluster: pb::Cluster,
    pub members: Vec<String>,
}

pub fn exposure_table(e: &pb::Exposure) -> String {
    let t = format!(
        "risk     {}{}\ntraced   {} sat received, {} sat sent (up to height {})\n",
        e.risk,
        if e.complete {
            ""
        } else {
            " (lower bound: a trace hit its budget)"
        },
        e.received,
        e.sent,
        e.as_of_height
    );
    t + &exposure_rows(
        &e.reasons,
        &[
            ("received directly", &e.direct_received),
            ("sent directly", &e.direct_sent),
            ("received within hops", &e.indirect_received),
            ("sent within hops", &e.indirect_sent),
        ],
    )
}

pub fn screening_table(s: &pb::Screening) -> String {
    let mined = match s.mined_height {
        Some(h) => format!("mined at height {h}"),
        None => "not mined".into(),
    };
    let mut t = format!(
        "tx       {} ({mined})\nrisk     {}{}\ntraced   {} sat received, pays {} sat (up to height {})\n",
        s.txid,
        s.risk,
        if s.complete {
            ""
        } else {
            " (lower bound: a trace hit its budget)"
        },
        s.received,
        s.sent,
        s.as_of_height
    );
    t += &exposure_rows(
        &s.reasons,
        &[
            ("received directly", &s.direct_received),
            ("sent directly", &s.direct_sent),
            ("received within hops", &s.indirect_received),
        ],
    );
    for p in &s.payees {
        let who = match (p.seen, p.cluster_id) {
            (false, _) => "new address".to_string(),
            (true, Some(c)) => format!("cluster {c}"),
            (true, None) => String::new(),
        };
        let mut labels: Vec<String> = p
            .labels
            .iter()
            .map(|l| format!("{} ({})", l.label, l.category))
            .collect();
        if p.labels_omitted > 0 {
            labels.push(format!("and {} more", p.labels_omitted));
        }
        t += &format!(
            "pays {:>4} {:<44} {:>16} sat  {who} {}\n",
            p.vout,
            p.address,
            p.value,
            labels.join(", ")
        );
    }
    t
}

/// The reasons, then one line per category and entity of each listing.
fn exposure_rows(reasons: &[String], lists: &[(&str, &Vec<pb::CategoryExposure>)]) -> String {
    let mut t = String::new();
    for r in reasons {
        t += &format!("  {r}\n");
    }
    for (what, list) in lists {
        for x in list.iter() {
            t += &format!(
                "{what:<22} {:<15} {:<30} {:>16} sat {:>7.2}%\n",
                x.category,
                if x.label.is_empty() {
                    "(all)"
                } else {
                    &x.label
                },
                x.amount,
                x.share * 100.0
            );
        }
    }
    t
}

pub fn cluster_table(c: &pb::Cluster) -> String {
    let mut t = format!(
        "cluster  {} (oldest address {})\naddresses {}\ntxs      {}\nreceived {}\nsent     {}\nbalance  {}\nseen     heights {}..{}\nbuilt    with {} up to height {}",
        c.id, c.oldest_address, c.size, c.tx_count, c.received, c.sent, c.balance, c.first_seen_height, c.last_seen_height, c.heuristics, c.as_of_height
    );
    if let Some(i) = &c.inferred {
        t += &inferred_lines(i);
    }
    t + "\n"
}

/// An inferred category, each line after a newline: the category, then
/// its evidence.
fn inferred_lines(i: &pb::InferredCategory) -> String {
    let mut t = format!(
        "\ninferred {} ({}% confidence, as of height {}; from behaviour, not a label)",
        i.category, i.confidence, i.as_of_height
    );
    for e in &i.evidence {
        t += &format!("\n         {e}");
    }
    t
}

pub fn tx_table(t: &pb::Transaction) -> String {
    let mut s = format!(
        "txid     {}\nblock    {} (height {}, position {}, time {})\nsize     {} (vsize {}, weight {})\nversion  {}  locktime {}\nfee      {}\n",
        t.txid, t.block_hash, t.height, t.position, t.time, t.size, t.vsize, t.weight, t.version, t.locktime, amount(t.fee)
    );
    if !t.wtxid.is_empty() && t.wtxid != t.txid {
        s += &format!("wtxid    {}\n", t.wtxid);
    }
    if t.coinbase {
        s += "in       coinbase\n";
    }
    for (i, inp) in t.inputs.iter().enumerate() {
        s += &format!(
            "in  {i:>4} {:>16} {} <- {}:{}\n",
            amount(inp.value),
            or_dash(&inp.address),
            inp.prev_txid,
            inp.prev_vout
        );
    }
    for o in &t.outputs {
        let spent = o.spent_by.as_ref().map_or("unspent".into(), |s| {
            format!("spent by {}:{} at {}", s.txid, s.vin, s.height)
        });
        s += &format!(
            "out {:>4} {:>16} {} ({}) {spent}\n",
            o.vout,
            o.value,
            or_dash(&o.address),
            o.script_type
        );
        if !o.op_return_data.is_empty() {
            s += &format!("         data {}\n", o.op_return_data);
        }
    }
    s
}

/// `satflow query address`: its summary, a page of history and of unspent outputs.
#[derive(Serialize)]
pub struct AddressReport {
    pub summary: pb::AddressSummary,
    pub history: pb::ListAddressHistoryResponse,
    pub utxos: pb::ListAddressUtxosResponse,
}

pub fn address_table(o: &AddressReport) -> String {
    let s = &o.summary;
    let mut t = format!(
        "address  {} ({})\ntxs      {}\nreceived {}\nsent     {}\nbalance  {}\nutxos    {}\nseen     heights {}..{}\n\nheight  net              txid\n",
        s.address, s.script_type, s.tx_count, s.received, s.sent, s.balance, s.utxo_count, s.first_seen_height, s.last_seen_height
    );
    if let Some(i) = &s.inferred {
        t.insert_str(
            t.find("\n\nheight").expect("the header"),
            &inferred_lines(i),
        );
    }
    for h in &o.history.entries {
        t += &format!("{:<7} {:>+16} {}\n", h.height, h.net, h.txid);
    }
    if !o.history.next_page_token.is_empty() {
        t += "...     (more)\n";
    }
    t += "\nunspent  value            outpoint\n";
    for u in &o.utxos.utxos {
        t += &format!("{:<8} {:>16} {}:{}\n", u.height, u.value, u.txid, u.vout);
    }
    if !o.utxos.next_page_token.is_empty() {
        t += "...      (more)\n";
    }
    t
}

/// 64 hex digits: a txid rather than an address.
pub fn looks_like_txid(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An amount the index may not know (see `satflow index --start-at`).
pub fn amount(sat: Option<u64>) -> String {
    sat.map_or("unknown".into(), |v| v.to_string())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Prints `value` as pretty JSON, or as the text `table` makes of it.
pub fn show<T: Serialize>(json: bool, value: &T, table: impl Fn(&T) -> String) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", table(value));
        println!();
    }
    Ok(())
}
