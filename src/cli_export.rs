//! `satflow export`: the index as Apache Parquet for distributed engines.
//! Run again after new blocks, it writes only what changed.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use satflow_export::{ExportOptions, Table};

#[derive(Args)]
pub struct ExportArgs {
    /// The index database directory (read only: `satflow index` may keep running).
    #[arg(long)]
    db: PathBuf,
    /// The export directory: one directory per table, a manifest beside them.
    #[arg(long)]
    out: PathBuf,
    /// First height (default: the index's first block); on the first export only.
    #[arg(long)]
    from: Option<u32>,
    /// Last height (default: the index tip).
    #[arg(long)]
    to: Option<u32>,
    /// Comma-separated: blocks, transactions, inputs, outputs,
    /// address_clusters, labels (default: all the index has).
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<Table>>,
    /// A height partition closes once its blocks hold this much blk data
    /// (default 1024 MB, which makes files of roughly 100–300 MB at today's
    /// block sizes); on the first export only.
    #[arg(long, value_name = "MB")]
    partition_mb: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let s = satflow_export::export(&ExportOptions {
        db: a.db,
        out: a.out,
        from: a.from,
        to: a.to,
        tables: a.tables,
        partition_mb: a.partition_mb,
        quiet: a.quiet,
    })?;
    let secs = s.elapsed.as_secs_f64();
    match &s.tip {
        Some(t) => println!("index tip       {} {}", t.height, t.hash),
        None => println!("index tip       (none)"),
    }
    println!(
        "partitions      {} written, {} dropped (reorg or unfinished)",
        s.partitions_written, s.partitions_dropped
    );
    println!(
        "{:<18} {:>14} {:>12} {:>14} {:>12}",
        "table", "rows written", "MB written", "rows in export", "MB in export"
    );
    for (table, total) in &s.exported {
        let w = s.tables.get(table).copied().unwrap_or_default();
        println!(
            "{:<18} {:>14} {:>12.1} {:>14} {:>12.1}",
            table.name(),
            w.rows,
            w.bytes as f64 / 1e6,
            total.rows,
            total.bytes as f64 / 1e6
        );
    }
    let rows: u64 = s.tables.values().map(|w| w.rows).sum();
    println!(
        "elapsed         {secs:.2} s: {:.1} MB/s of blk data, {:.0} rows/s",
        s.blk_bytes as f64 / 1e6 / secs.max(1e-9),
        rows as f64 / secs.max(1e-9)
    );
    Ok(())
}
