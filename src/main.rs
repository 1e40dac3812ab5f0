//! `satflow`: one binary for indexing, querying and generating chains.

mod cli_query;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use satflow_indexer::{IndexOptions, Network};

#[derive(Parser)]
#[command(
    name = "satflow",
    version,
    about = "Bitcoin blockchain indexer and analytics database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Index a Bitcoin Core blocks directory (blk*.dat, xor.dat) into RocksDB;
    /// run again to add new blocks and follow reorgs.
    Index(IndexArgs),
    /// Look up blocks, transactions and addresses in an index.
    Query(cli_query::QueryArgs),
    /// Generate a realistic blocks directory with ground truth, for tests and benchmarks.
    Synth(satflow_synth::SynthArgs),
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
    /// Memory for the unspent-output and address caches, in MiB.
    #[arg(long, default_value_t = 1024)]
    cache_mb: usize,
    /// Blk data per committed write batch, in MiB.
    #[arg(long, default_value_t = 32.0)]
    batch_mb: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Index(a) => index(a),
        Command::Query(q) => cli_query::run(q),
        Command::Synth(a) => {
            let summary = satflow_synth::run(&a)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
            Ok(())
        }
    }
}

fn index(a: IndexArgs) -> Result<()> {
    let opts = IndexOptions {
        network: a.network,
        threads: a.threads,
        cache_mb: a.cache_mb,
        batch_bytes: (a.batch_mb * (1u64 << 20) as f64) as u64,
        quiet: a.quiet,
        ..IndexOptions::new(a.blocks_dir, a.db)
    };
    let s = satflow_indexer::run(&opts)?;
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
    for d in &s.detached {
        println!(
            "detached        {} block(s) whose parent {} is missing",
            d.blocks, d.missing_parent
        );
    }
    println!("elapsed         {:.2} s", s.elapsed.as_secs_f64());
    println!(
        "blk data        {:.1} MB at {:.1} MB/s",
        s.blk_bytes as f64 / 1e6,
        s.mb_per_sec()
    );
    println!("db size         {:.1} MB", s.db_bytes as f64 / 1e6);
    Ok(())
}
