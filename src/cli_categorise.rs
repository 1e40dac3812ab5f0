//! `satflow categorise`: infer which clusters are services from their
//! behaviour (the indexer's `services`), and list what was inferred.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use satflow_indexer::services::{self, Service};
use satflow_indexer::{Access, Store};

#[derive(Args)]
pub struct CategoriseArgs {
    /// The index database directory.
    #[arg(long)]
    db: PathBuf,
    /// List the categorised clusters of the store as it is instead of
    /// categorising anew: one line each (id, category, confidence,
    /// transactions, evidence), ordinary wallets left out.
    #[arg(long)]
    list: bool,
    /// With --list: only this category (exchange, mining_pool, mixer,
    /// payment_processor, gambling, ordinary).
    #[arg(long)]
    category: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: CategoriseArgs) -> Result<()> {
    let only = match a.category.as_deref() {
        Some(name) => Some(Service::parse(name).ok_or_else(|| {
            anyhow::anyhow!(
                "--category {name}: not one of {}",
                Service::ALL.map(Service::name).join(", ")
            )
        })?),
        None => None,
    };
    if a.list {
        let Some(store) = services::Store::open(&a.db)? else {
            bail!(
                "{}: not categorised yet; run `satflow categorise --db {}`",
                a.db.display(),
                a.db.display()
            );
        };
        println!("as of height {}", store.as_of().height.0);
        for r in store.iter() {
            let shown = match only {
                Some(s) => r.service == s,
                None => r.service != Service::Ordinary,
            };
            if shown {
                println!(
                    "{}\t{}\t{}%\t{} txs\t{}",
                    r.id.0,
                    r.service.name(),
                    r.confidence,
                    r.features.txs,
                    r.evidence().join("; ")
                );
            }
        }
        return Ok(());
    }
    if only.is_some() {
        bail!("--category goes with --list");
    }
    // Read-only: runs beside `satflow index --follow`, which holds the lock.
    let store = Store::open(&a.db, Access::ReadOnly)?;
    let s = services::categorise(&store, &a.db, a.quiet)?;
    if let Some(p) = s.as_of {
        println!("as of             {} {}", p.height.0, p.hash);
    }
    println!("history rows      {}", s.rows);
    for (service, n) in Service::ALL.iter().zip(s.per_service) {
        println!("{:<17} {n}", service.name());
    }
    println!("elapsed           {:.2} s", s.elapsed.as_secs_f64());
    Ok(())
}
