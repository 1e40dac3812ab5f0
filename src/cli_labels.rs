//! `satflow labels import|list|remove`: label sets in the index. They are
//! written beside the index's rows, so run them while `satflow index` is
//! not writing; a running server sees them at its next catch-up.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use satflow_indexer::labels::{self, Category, Defaults, Format, Label};
use satflow_indexer::{address, Access, Store};

#[derive(Args)]
pub struct LabelsArgs {
    /// The index database directory.
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Import label sets. Entries that are not addresses of the index's
    /// network, belong to another chain, or lack a label or category are
    /// listed with their line and skipped.
    Import {
        /// tagpack (GraphSense YAML), csv (address,label,category,source,
        /// quoted fields, an optional header row), list (one address per
        /// line) or pools (bitcoin-data/mining-pools pools.json: payout
        /// addresses and coinbase tags). CSV and lists are streamed; a file
        /// that breaks its format stops the import at the line named, with
        /// the labels before it stored.
        #[arg(long)]
        format: Format,
        /// Label for entries that carry none (required for a list).
        #[arg(long)]
        label: Option<String>,
        /// Category for every entry, over what the file says (e.g.
        /// sanctioned for the OFAC list).
        #[arg(long)]
        category: Option<Category>,
        /// Source for entries that name none.
        #[arg(long)]
        source: Option<String>,
        /// Name of the label set (default: the file name without extension).
        #[arg(long)]
        set: Option<String>,
        files: Vec<PathBuf>,
    },
    /// List labels: all, one address's, or one set's.
    List {
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        set: Option<String>,
    },
    /// Remove a label set.
    Remove {
        #[arg(long)]
        set: String,
    },
}

pub fn run(a: LabelsArgs) -> Result<()> {
    let db = a.db.context("--db is required")?;
    let store = Store::open(&db, Access::Write)?;
    match a.what {
        What::Import {
            format,
            label,
            category,
            source,
            set,
            files,
        } => {
            for f in &files {
                let defaults = Defaults {
                    label: label.clone(),
                    category,
                    source: source.clone(),
                    set: set.clone(),
                };
                let parsed = labels::import(&store, f, format, &defaults)?;
                println!(
                    "{}: {} labels and {} coinbase tags imported, {} entries skipped",
                    f.display(),
                    parsed.labels.len(),
                    parsed.tags.len(),
                    parsed.skipped_total
                );
                for s in &parsed.skipped {
                    println!("  line {}: {}: {}", s.line, s.entry, s.reason);
                }
                let unlisted = parsed.skipped_total - parsed.skipped.len();
                if unlisted > 0 {
                    println!("  and {unlisted} more");
                }
            }
        }
        What::List { address, set } => {
            let network = store.network()?.context("the index holds no blocks yet")?;
            // Printed as they are read, buffered: there may be millions.
            let mut out = BufWriter::new(std::io::stdout().lock());
            let mut print = |l: Label| -> Result<()> {
                if set.as_ref().is_none_or(|s| *s == l.set) {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}",
                        address::encode(&l.address, network),
                        l.label,
                        l.category,
                        l.set,
                        l.source
                    )?;
                }
                Ok(())
            };
            match &address {
                Some(a) => {
                    for l in labels::of(&store, &address::parse(a, network)?)? {
                        print(l)?;
                    }
                }
                None => {
                    for l in labels::iter(&store) {
                        print(l?)?;
                    }
                }
            }
            out.flush()?;
        }
        What::Remove { set } => {
            let n = labels::remove_set(&store, &set)?;
            println!("{n} labels of set {set} removed");
        }
    }
    Ok(())
}
