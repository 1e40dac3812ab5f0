//! `satflow`: one binary for indexing, querying and generating chains.

mod cli_categorise;
mod cli_export;
mod cli_labels;
mod cli_patterns;
mod cli_query;
mod cli_serve;
mod cli_trace;
mod cli_watch;
mod connect;
mod priority;
mod render;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use satflow_indexer::{IndexOptions, Indexer, Network};

#[derive(Parser)]
#[command(
    name = "satflow",
    version,
    about = "Bitcoin blockchain indexer and analytics database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines on stderr as text, or as JSON objects one a line (for a
    /// log collector); RUST_LOG filters them either way.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Run at the lowest CPU priority (Linux SCHED_IDLE): only on CPU time
    /// nothing else wants. For `index --follow` and `labels import` beside
    /// a `satflow serve` on the same machine, so requests come first.
    #[arg(long, global = true)]
    background: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Index a Bitcoin Core blocks directory (blk*.dat, xor.dat) into RocksDB;
    /// run again to add new blocks and follow reorgs.
    Index(IndexArgs),
    /// Rebuild address clusters with another set of heuristics (no reindexing).
    Cluster(ClusterArgs),
    /// Serve an index over gRPC (package satflow.v1), following the writer.
    Serve(cli_serve::ServeArgs),
    /// Look up blocks, transactions and addresses, from a server or an index.
    Query(cli_query::QueryArgs),
    /// Follow tainted value forward (where it went) or backward (where it came from).
    Trace(TraceCommand),
    /// Suspicious patterns in a range of blocks: peel chains, layering,
    /// structuring, consolidation, CoinJoin reunions and exits, dusting.
    Patterns(PatternsCommand),
    /// Infer which clusters are services (exchanges, pools, mixers, payment
    /// processors, gambling) from their behaviour, kept apart from labels.
    Categorise(cli_categorise::CategoriseArgs),
    /// Import, list and remove address labels (exchanges, pools, sanctioned entities, ...).
    Labels(cli_labels::LabelsArgs),
    /// Watch lists and the alert stream of a running server.
    Watch(cli_watch::WatchArgs),
    /// Export the index to Apache Parquet (Hive partitions by height) for
    /// Spark, DuckDB, Trino or BigQuery; run again to add new blocks.
    Export(cli_export::ExportArgs),
    /// Generate a realistic blocks directory with ground truth, for tests and benchmarks.
    Synth(satflow_synth::SynthArgs),
}

#[derive(Args)]
struct PatternsCommand {
    #[command(flatten)]
    conn: connect::Connection,
    #[command(flatten)]
    args: cli_patterns::PatternsArgs,
}

#[derive(Args)]
struct TraceCommand {
    #[command(flatten)]
    conn: connect::Connection,
    #[command(flatten)]
    args: cli_trace::TraceArgs,
}

#[derive(Args)]
struct IndexArgs {
    /// Bitcoin Core's blocks directory.
    #[arg(long)]
    blocks_dir: PathBuf,
    /// The index database directory (created if missing).
    #[arg(long)]
    db: PathBuf,
    /// Expected network; by default it is read from the blocks' magic bytes.
    #[arg(long)]
    network: Option<Network>,
    /// Parser threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Memory for the bulk path's maps of every unspent output and
    /// address, in MiB (into an empty index; when they outgrow it, they go
    /// to disk, their filters in the page cache; only a budget too small
    /// for what stays in memory sends indexing on block by block); block by
    /// block, half of it budgets the caches. The run's peak is about this
    /// plus 1 GiB, beside the page cache.
    #[arg(long, default_value_t = 2560)]
    cache_mb: usize,
    /// Blk data per committed write batch (per epoch, into an empty index), in MiB.
    #[arg(long, default_value_t = 32.0)]
    batch_mb: f64,
    /// Index block by block even into an empty index, instead of in
    /// parallel epochs (several times slower; the same database).
    #[arg(long)]
    no_bulk: bool,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Keep running: look for new blocks every --poll-ms and index them.
    #[arg(long)]
    follow: bool,
    /// How often --follow looks for new blocks, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    poll_ms: u64,
    /// Do not keep address clusters current (they can be built later with `satflow cluster`).
    #[arg(long)]
    no_cluster: bool,
    /// Do not keep the value-flow graph that taint tracing walks current (the
    /// next run without the flag brings it up to date).
    #[arg(long)]
    no_flow: bool,
    /// Start a new index at this block (hash) rather than genesis, e.g. for a
    /// pruned node's directory; its height is read from its coinbase (BIP34).
    #[arg(long, value_name = "HASH")]
    start_at: Option<bitcoin::BlockHash>,
    /// Directory of `<block hash>.json` prevouts files giving the value and
    /// script of each coin from before --start-at that a block spends (without
    /// one, such inputs are indexed with unknown value and fees are unknown).
    #[arg(long, value_name = "DIR")]
    prevouts: Option<PathBuf>,
    /// Accept headers whose proof of work is not valid, as a chain from
    /// `satflow synth --network main` has (by default such a header is
    /// left out and never part of the chain).
    #[arg(long)]
    no_pow_check: bool,
}

#[derive(Args)]
struct ClusterArgs {
    /// The index database directory.
    #[arg(long)]
    db: PathBuf,
    /// Comma-separated: multi-input (always on), whirlpool, wasabi,
    /// joinmarket (or coinjoin for all three), change-fresh, change-round.
    #[arg(long, default_value = "multi-input,coinjoin")]
    heuristics: satflow_indexer::cluster::Heuristics,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    // Output piped into `head` ends quietly, as with other command-line tools,
    // instead of Rust's default of a panic on the failed write.
    // SAFETY: called first, before any other thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    if cli.background {
        // Before any thread starts: they inherit the policy.
        if let Err(e) = priority::background() {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    let format = cli.log_format;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // With JSON logs, stderr holds nothing but JSON lines.
        Err(e) if format == LogFormat::Json => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Index(a) => index(a),
        Command::Cluster(a) => cluster(a),
        Command::Serve(a) => cli_serve::run(a),
        Command::Query(q) => cli_query::run(q),
        Command::Categorise(a) => cli_categorise::run(a),
        Command::Labels(a) => cli_labels::run(a),
        Command::Watch(a) => cli_watch::run(a),
        Command::Export(a) => cli_export::run(a),
        Command::Trace(t) => cli_query::run_on(t.conn, cli_query::What::Trace(t.args)),
        Command::Patterns(p) => cli_query::run_on(p.conn, cli_query::What::Patterns(p.args)),
        Command::Synth(a) => synth(a),
    }
}

/// Generates a chain under the indexer's progress display (the generator
/// draws none); with --quiet under none at all, since that display logs
/// progress lines where it draws no bar.
fn synth(a: satflow_synth::SynthArgs) -> Result<()> {
    let summary = if a.quiet {
        satflow_synth::run(&a)
    } else {
        let mut progress = satflow_indexer::progress::Progress::new(a.size, false);
        let summary = satflow_synth::run_with_progress(&a, |bytes, height| {
            progress.advance(1, bytes, height)
        });
        progress.finish();
        summary
    };
    println!("{}", serde_json::to_string_pretty(&summary?)?);
    Ok(())
}

fn index(a: IndexArgs) -> Result<()> {
    let opts = IndexOptions {
        network: a.network,
        threads: a.threads,
        cache_mb: a.cache_mb,
        batch_bytes: (a.batch_mb * (1u64 << 20) as f64) as u64,
        quiet: a.quiet,
        cluster: !a.no_cluster,
        flow: !a.no_flow,
        bulk: !a.no_bulk,
        start_at: a.start_at,
        prevouts: a.prevouts,
        check_pow: !a.no_pow_check,
        ..IndexOptions::new(a.blocks_dir, a.db)
    };
    // SIGTERM and SIGINT end the run at the next batch boundary.
    opts.stop.on_signals()?;
    let mut indexer = Indexer::open(opts)?;
    let s = indexer.run()?;
    print_summary(&s);
    if a.follow && !s.stopped {
        indexer.set_quiet(true);
        follow(indexer, s.tip_hash, Duration::from_millis(a.poll_ms));
    }
    Ok(())
}

/// Indexes what the node appends, round after round; each round ends with
/// a flush, which is when servers following the index see the new tip.
/// Errors are logged and retried: the node may be mid-write. Returns when
/// asked to stop, after the round under way.
fn follow(mut indexer: Indexer, mut tip: Option<bitcoin::BlockHash>, poll: Duration) {
    let dir = indexer.options().blocks_dir.display().to_string();
    let stop = indexer.options().stop.clone();
    tracing::info!("following {dir} every {poll:?}");
    loop {
        // Slept in short steps, so a stop is not kept waiting for a long poll.
        let wake = std::time::Instant::now() + poll;
        while !stop.requested() && std::time::Instant::now() < wake {
            std::thread::sleep(poll.min(Duration::from_millis(50)));
        }
        if stop.requested() {
            tracing::info!(
                "stopped by a signal at tip {}",
                tip.map_or("-".into(), |h| h.to_string())
            );
            return;
        }
        let started = std::time::Instant::now();
        match indexer.run() {
            Ok(s) if s.tip_hash != tip => {
                tracing::info!(
                    "tip {} {}: {} block(s) applied, {} rolled back, in {} ms ({} ms of it clustering, {} ms the flow graph)",
                    s.tip_height.unwrap_or(0),
                    s.tip_hash.map_or("-".into(), |h| h.to_string()),
                    s.blocks_applied,
                    s.blocks_undone,
                    started.elapsed().as_millis(),
                    s.cluster_elapsed.as_millis(),
                    s.flow_elapsed.as_millis()
                );
                tip = s.tip_hash;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("indexing new blocks: {e:#}"),
        }
    }
}

fn cluster(a: ClusterArgs) -> Result<()> {
    let store = satflow_indexer::Store::open(&a.db, satflow_indexer::Access::Write)?;
    let started = std::time::Instant::now();
    satflow_indexer::cluster::rebuild(&store, a.heuristics, a.quiet)?;
    println!("heuristics      {}", a.heuristics);
    println!("elapsed         {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn print_summary(s: &satflow_indexer::Summary) {
    let network = s.network.map_or("?".into(), |n| n.to_string());
    println!("network         {network}");
    match (s.tip_height, s.tip_hash) {
        (Some(h), Some(hash)) => println!("tip             {h} {hash}"),
        _ => println!("tip             (none)"),
    }
    println!("records found   {}", s.records_found);
    println!(
        "blocks applied  {} ({} rolled back)",
        s.blocks_applied, s.blocks_undone
    );
    println!("transactions    {}", s.txs);
    println!("inputs/outputs  {} / {}", s.inputs, s.outputs);
    println!("stale blocks    {}", s.stale_blocks);
    for note in &s.notes {
        println!("note            {note}");
    }
    for d in &s.detached {
        println!(
            "detached        {} block(s) whose parent {} is missing",
            d.blocks, d.missing_parent
        );
    }
    println!(
        "elapsed         {:.2} s ({:.2} s of it clustering, {:.2} s the flow graph)",
        s.elapsed.as_secs_f64(),
        s.cluster_elapsed.as_secs_f64(),
        s.flow_elapsed.as_secs_f64()
    );
    println!(
        "blk data        {:.1} MB at {:.1} MB/s",
        s.blk_bytes as f64 / 1e6,
        s.mb_per_sec()
    );
    println!("db size         {:.1} MB", s.db_bytes as f64 / 1e6);
    if s.stopped {
        println!("stopped early   by a signal, after the last whole batch: the next run goes on from the tip");
    }
    // Stages that ran beside others (their busy time) are indented under
    // the stage they belong to.
    println!("stage               wall s   cpu s  peak RSS MiB");
    for stage in &s.stages {
        match stage.cpu {
            Some(cpu) => println!(
                "  {:<18}{:>6.2}  {:>6.2}  {:>12}",
                stage.name,
                stage.wall.as_secs_f64(),
                cpu.as_secs_f64(),
                stage.peak_rss.map_or("?".into(), |b| (b >> 20).to_string())
            ),
            None => println!(
                "    {:<16}{:>6.2}  (busy)",
                stage.name,
                stage.wall.as_secs_f64()
            ),
        }
    }
}
