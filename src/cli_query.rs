//! `satflow query`: readable tables (or JSON) over the gRPC API, from a
//! running server or from an index served in-process for one query.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use satflow_proto::v1 as pb;
use satflow_query::client::{self, Clients, ConnectOptions};
use satflow_query::patterns::list;
use satflow_query::server::{self, ServeOptions};

use crate::connect::{connect, Connection};
use crate::render::{
    address_table, amount, cluster_table, exposure_table, looks_like_txid, screening_table, show,
    tx_table, AddressReport, ClusterReport,
};

#[derive(Args)]
pub struct QueryArgs {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
pub enum What {
    /// Network, tip and counts.
    Status,
    /// A block by height or hash, with a page of its txids.
    Block {
        id: String,
        #[arg(long, default_value_t = 20)]
        txids: u32,
    },
    /// A transaction by txid.
    Tx {
        txid: String,
        /// Print the raw transaction in hex.
        #[arg(long)]
        raw: bool,
    },
    /// An address (or hex scriptPubKey): summary, history, unspent outputs.
    Address {
        address: String,
        /// History entries, and unspent outputs, to show.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// History oldest first (default newest first).
        #[arg(long)]
        oldest_first: bool,
    },
    /// The cluster of an address, or a cluster by id: figures and members.
    Cluster {
        /// An address, or a cluster id (a number).
        id: String,
        /// Members to list.
        #[arg(long, default_value_t = 20)]
        members: u32,
    },
    /// Clusters of two or more addresses, largest first.
    Largest {
        /// Rank by balance instead of size.
        #[arg(long)]
        by_balance: bool,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Why two addresses share a cluster: the linking transactions.
    Link { from: String, to: String },
    /// Exposure to labelled entities and the risk level of an address, a
    /// transaction (txid) or a cluster (cluster:ID).
    Exposure {
        subject: String,
        /// Hops for the indirect figures.
        #[arg(long, default_value_t = 3)]
        hops: u32,
    },
    /// Screen a transaction, mined or not, from its raw hex (`-` reads it
    /// from standard input): where the coins it spends came from, whom it
    /// pays, and the risk level.
    Screen {
        raw: String,
        /// Hops for the indirect figures.
        #[arg(long, default_value_t = 3)]
        hops: u32,
    },
    /// Taint tracing (`satflow trace`).
    #[command(skip)]
    Trace(crate::cli_trace::TraceArgs),
    /// Suspicious patterns (`satflow patterns`).
    #[command(skip)]
    Patterns(crate::cli_patterns::PatternsArgs),
}

pub fn run(q: QueryArgs) -> Result<()> {
    run_on(q.conn, q.what)
}

/// Answers `what` from the server or index `conn` names.
pub fn run_on(conn: Connection, what: What) -> Result<()> {
    let q = Q { conn, what };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            match q.conn.db.clone() {
                Some(db) => in_process(db, q).await,
                None => ask(connect(&q.conn).await?, &q).await,
            }
        })
}

/// Serves the index on an ephemeral loopback port for this one query, so
/// `--db` answers through exactly the same API as a server.
async fn in_process(db: PathBuf, q: Q) -> Result<()> {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let opts = ServeOptions {
        db,
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        blocks_dir: None,
        token: None,
        tls: None,
        follow_every: std::time::Duration::from_secs(3600),
        readers: 1,
        max_in_flight: 16,
        // The one query is its user's own, however long it takes.
        max_request: std::time::Duration::from_secs(24 * 3600),
        cache_mb: 64,
        max_traces: 1,
        max_trace_txs: server::MAX_TRACE_TXS,
        max_stop_listed: server::MAX_STOP_LISTED,
        max_pattern_scan: list::DEFAULT_MAX_SCAN,
        alerts: None,
        metrics_listen: None,
        inferred_labels: None,
    };
    let serving = tokio::spawn(server::serve(
        opts,
        |addr| {
            let _ = ready_tx.send(addr);
        },
        async {
            let _ = stop_rx.await;
        },
    ));
    let Ok(addr) = ready_rx.await else {
        return serving.await?;
    };
    let answer = async {
        ask(
            client::connect(&format!("http://{addr}"), ConnectOptions::default()).await?,
            &q,
        )
        .await
    }
    .await;
    let _ = stop_tx.send(());
    serving.await??;
    answer
}

/// One command: what to ask, and where.
struct Q {
    conn: Connection,
    what: What,
}

async fn ask(mut c: Clients, q: &Q) -> Result<()> {
    let json = q.conn.json;
    match &q.what {
        What::Status => {
            let s = c
                .chain
                .get_status(pb::GetStatusRequest {})
                .await?
                .into_inner();
            show(json, &s, |s| {
                format!(
                    "network   {}\nheights   {}..{}\ntip       {}\ntip time  {} ({} s ago)\nbehind    {} blocks (best header {})\ntxs       {}\noutputs   {}\naddresses {}",
                    s.network, s.first_height, s.tip_height, s.tip_hash, s.tip_time, s.lag_seconds, s.lag_blocks, s.best_header_height, s.tx_count, s.output_count, s.address_count
                )
            })
        }
        What::Block { id, txids } => {
            let id = match id.len() {
                64 => pb::get_block_request::Id::Hash(id.clone()),
                _ => pb::get_block_request::Id::Height(
                    id.parse()
                        .with_context(|| format!("{id:?} is neither a height nor a block hash"))?,
                ),
            };
            let request = pb::GetBlockRequest {
                id: Some(id),
                tx_page_size: *txids,
                tx_page_token: String::new(),
            };
            let b = c.chain.get_block(request).await?.into_inner();
            show(json, &b, |b| {
                let mut t = format!(
                    "height  {}\nhash    {}\nprev    {}\nmerkle  {}\ntime    {}\nbits    {:08x}\nnonce   {}\ntxs     {}\nsize    {} (weight {})\nfees    {}\nfile    blk{:05}.dat at {}\n",
                    b.height, b.hash, b.prev_hash, b.merkle_root, b.time, b.bits, b.nonce, b.tx_count, b.size, b.weight, amount(b.fees), b.file, b.offset
                );
                for txid in &b.txids {
                    t += &format!("        {txid}\n");
                }
                if b.txids.len() < b.tx_count as usize {
                    t += &format!("        ... {} more\n", b.tx_count as usize - b.txids.len());
                }
                t
            })
        }
        What::Tx { txid, raw: true } => {
            let request = pb::GetTransactionRequest {
                txid: txid.clone(),
                ..Default::default()
            };
            let r = c.chain.get_raw_transaction(request).await?.into_inner();
            show(json, &r, |r| hex::encode(&r.raw))
        }
        What::Tx { txid, raw: false } => {
            // Every page: a transaction is at most a block's size.
            let mut request = pb::GetTransactionRequest {
                txid: txid.clone(),
                page_size: 10_000,
                ..Default::default()
            };
            let mut t = c.chain.get_transaction(request.clone()).await?.into_inner();
            while !t.next_page_token.is_empty() {
                request.page_token = std::mem::take(&mut t.next_page_token);
                let page = c.chain.get_transaction(request.clone()).await?.into_inner();
                t.inputs.extend(page.inputs);
                t.outputs.extend(page.outputs);
                t.next_page_token = page.next_page_token;
            }
            show(json, &t, tx_table)
        }
        What::Address {
            address,
            limit,
            oldest_first,
        } => {
            let summary = c
                .addresses
                .get_address_summary(pb::GetAddressSummaryRequest {
                    address: address.clone(),
                })
                .await?
                .into_inner();
            let order = match oldest_first {
                true => pb::Order::OldestFirst,
                false => pb::Order::NewestFirst,
            };
            let history = c
                .addresses
                .list_address_history(pb::ListAddressHistoryRequest {
                    address: address.clone(),
                    page_size: *limit,
                    order: order.into(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let utxos = c
                .addresses
                .list_address_utxos(pb::ListAddressUtxosRequest {
                    address: address.clone(),
                    page_size: *limit,
                    page_token: String::new(),
                })
                .await?
                .into_inner();
            let report = AddressReport {
                summary,
                history,
                utxos,
            };
            show(json, &report, address_table)
        }
        What::Cluster { id, members } => {
            let id = match id.parse::<u64>() {
                Ok(n) => pb::get_cluster_request::Id::ClusterId(n),
                Err(_) => pb::get_cluster_request::Id::Address(id.clone()),
            };
            let cluster = c
                .clusters
                .get_cluster(pb::GetClusterRequest { id: Some(id) })
                .await?
                .into_inner();
            let listed = c
                .clusters
                .list_cluster_members(pb::ListClusterMembersRequest {
                    cluster_id: cluster.id,
                    page_size: *members,
                    page_token: String::new(),
                })
                .await?
                .into_inner();
            let report = ClusterReport {
                cluster,
                members: listed.addresses,
            };
            show(json, &report, |r| {
                let mut t = cluster_table(&r.cluster);
                t += "\nmembers\n";
                for a in &r.members {
                    t += &format!("  {a}\n");
                }
                if (r.members.len() as u64) < r.cluster.size {
                    t += &format!("  ... {} more\n", r.cluster.size - r.members.len() as u64);
                }
                t
            })
        }
        What::Largest { by_balance, limit } => {
            let by = match by_balance {
                true => pb::ClusterRanking::Balance,
                false => pb::ClusterRanking::Size,
            };
            let list = c
                .clusters
                .list_largest_clusters(pb::ListLargestClustersRequest {
                    by: by.into(),
                    page_size: *limit,
                    page_token: String::new(),
                })
                .await?
                .into_inner();
            show(json, &list, |l| {
                let mut t = format!(
                    "{:<12} {:>10} {:>10} {:>18}  oldest address\n",
                    "cluster", "addresses", "txs", "balance"
                );
                for c in &l.clusters {
                    t += &format!(
                        "{:<12} {:>10} {:>10} {:>18}  {}\n",
                        c.id, c.size, c.tx_count, c.balance, c.oldest_address
                    );
                }
                t
            })
        }
        What::Link { from, to } => {
            let path = c
                .clusters
                .explain_link(pb::ExplainLinkRequest {
                    from_address: from.clone(),
                    to_address: to.clone(),
                })
                .await?
                .into_inner();
            show(json, &path, |p| {
                let mut t = String::new();
                for s in &p.steps {
                    t += &s.address;
                    if !s.txid.is_empty() {
                        t += &format!("\n  -- {} ({}) -->\n", s.txid, s.reason);
                    }
                }
                t + "\n"
            })
        }
        What::Exposure { subject, hops } => {
            use pb::exposure_request::Subject;
            let subject = match subject.strip_prefix("cluster:").map(str::parse) {
                Some(Ok(id)) => Subject::ClusterId(id),
                _ if looks_like_txid(subject) => Subject::Txid(subject.clone()),
                _ => Subject::Address(subject.clone()),
            };
            let e = c
                .risk
                .get_exposure(pb::ExposureRequest {
                    subject: Some(subject),
                    hops: *hops,
                    ..Default::default()
                })
                .await?
                .into_inner();
            show(json, &e, exposure_table)
        }
        What::Screen { raw, hops } => {
            let raw_transaction = match raw.as_str() {
                "-" => std::io::read_to_string(std::io::stdin())?,
                hex => hex.to_string(),
            };
            let s = c
                .risk
                .screen_transaction(pb::ScreenTransactionRequest {
                    raw_transaction,
                    hops: *hops,
                    ..Default::default()
                })
                .await?
                .into_inner();
            show(json, &s, screening_table)
        }
        What::Trace(args) => crate::cli_trace::run(&mut c.taint, args, json).await,
        What::Patterns(args) => crate::cli_patterns::run(&mut c.patterns, args, json).await,
    }
}
