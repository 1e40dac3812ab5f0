//! `satflow serve`: command-line settings of the gRPC server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use satflow_query::patterns::list;
use satflow_query::server::{self, AlertOptions, ServeOptions, TlsFiles};
use satflow_query::AsLabels;

#[derive(Args)]
pub struct ServeArgs {
    /// The index database directory.
    #[arg(long)]
    db: PathBuf,
    /// Address to listen on. Beyond loopback, use TLS and a token (the
    /// server warns when it listens wider without both).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Where raw transactions are read (default: the blocks directory of the last index run).
    #[arg(long)]
    blocks_dir: Option<PathBuf>,
    /// File holding a bearer token that every call must carry.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How often to pick up blocks that `satflow index` has added, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    follow_ms: u64,
    /// Requests reading the index at once, each on a thread of its own
    /// (beside the runtime's threads, which only move bytes); more requests
    /// wait for a reader without holding a thread.
    #[arg(long, default_value_t = 4)]
    readers: usize,
    /// Requests accepted and not yet answered; beyond that, RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// How long a request may run, in milliseconds (1 to a day), when its
    /// caller sets no shorter deadline (`grpc-timeout`); beyond that,
    /// RESOURCE_EXHAUSTED. Alert subscriptions stay open regardless.
    #[arg(long, default_value_t = server::MAX_REQUEST.as_millis() as u64)]
    max_request_ms: u64,
    /// Block cache, in MiB: the index's uncompressed data blocks, and the
    /// index and filter partitions lookups read.
    #[arg(long, default_value_t = 1024)]
    cache_mb: usize,
    /// Taint traces running at once (each takes a core while it runs);
    /// beyond that, RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 2)]
    max_traces: usize,
    /// The most transactions a taint trace, or each of the four traces of
    /// an exposure, may be asked to visit (`max_transactions`); above that,
    /// RESOURCE_EXHAUSTED. A trace holds ~13.6 MiB of heap per million
    /// transactions visited: the default costs up to ~136 MiB per trace
    /// running (see --max-traces).
    #[arg(long, default_value_t = server::MAX_TRACE_TXS)]
    max_trace_transactions: u64,
    /// Members of the clusters a trace or exposure stops at that are listed
    /// up front (~10 bytes each); beyond, each coin's cluster is looked up.
    /// For tests and benchmarks.
    #[arg(long, default_value_t = server::MAX_STOP_LISTED, hide = true)]
    max_stop_listed: u64,
    /// The most transactions one page of `ListPatterns` scans (about half
    /// a second of one core per million, on generated mainnet-shaped
    /// chains); a page that reaches it ends early with a token to go on.
    #[arg(long, default_value_t = list::DEFAULT_MAX_SCAN)]
    max_pattern_scan: u64,
    /// Where watches and alerts are kept (default: <db>/alerts, and when
    /// another server holds that one, or it cannot be written, this server
    /// runs without alerts and says so). One server per alert store.
    #[arg(long)]
    alerts: Option<PathBuf>,
    /// Keep no watches and raise no alerts.
    #[arg(long, conflicts_with_all = ["alerts", "alerts_from"])]
    no_alerts: bool,
    /// On a new alert store, evaluate blocks from this height (default:
    /// only blocks indexed from now on).
    #[arg(long)]
    alerts_from: Option<u32>,
    /// Serve Prometheus metrics on this address (`GET /metrics`); off by
    /// default. They carry no secrets but show the server's load: the
    /// server warns when it listens beyond loopback.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Let the categories `satflow categorise` inferred, at this confidence
    /// (percent, 50 to 100) or more, act as labels of set `inferred`: stop
    /// sets, exposure and watches by category then count them. Off by
    /// default: summaries and clusters show inferences apart either way.
    #[arg(long, value_name = "MIN_CONFIDENCE", value_parser = clap::value_parser!(u8).range(50..=100))]
    inferred_labels: Option<u8>,
}

pub fn run(a: ServeArgs) -> Result<()> {
    let opts = ServeOptions {
        db: a.db.clone(),
        listen: a.listen,
        blocks_dir: a.blocks_dir,
        token: crate::connect::read_token(a.token_file.as_ref())?,
        tls: a
            .tls_cert
            .zip(a.tls_key)
            .map(|(cert, key)| TlsFiles { cert, key }),
        follow_every: Duration::from_millis(a.follow_ms.max(1)),
        readers: a.readers.max(1),
        max_in_flight: a.max_in_flight,
        max_request: Duration::from_millis(a.max_request_ms.clamp(1, 24 * 3600 * 1000)),
        cache_mb: a.cache_mb,
        max_traces: a.max_traces.max(1),
        max_trace_txs: a.max_trace_transactions.max(1),
        max_stop_listed: a.max_stop_listed,
        max_pattern_scan: a.max_pattern_scan.max(1),
        alerts: (!a.no_alerts).then(|| AlertOptions {
            required: a.alerts.is_some(),
            dir: a.alerts.unwrap_or_else(|| a.db.join("alerts")),
            from: a.alerts_from,
        }),
        metrics_listen: a.metrics_listen,
        inferred_labels: a
            .inferred_labels
            .map(|min_confidence| AsLabels { min_confidence }),
    };
    // Blocking threads: the readers and alert evaluation, each bounded by
    // its own semaphore or loop (traces and catch-up have threads of their
    // own, at a lower priority).
    let blocking = opts.readers + 4;
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking)
        .enable_all()
        .build()?
        .block_on(server::serve(
            opts,
            |addr| {
                // Scripts and tests wait for this line.
                println!("listening on {addr}");
                tracing::info!("serving satflow.v1 on {addr}");
            },
            shutdown(),
        ))
}

async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
