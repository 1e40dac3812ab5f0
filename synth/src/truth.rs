//! Ground-truth files in `DIR/truth/`, written as the chain is generated (addresses and
//! CoinJoins stream block by block; actors, flows and the summary are small and come last).
//! Formats are documented in synth/README.md.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::actors::Actors;
use crate::flows::Flows;
use crate::txbuild::{BuiltTx, TxPlan};
use crate::Summary;

pub struct TruthWriter {
    dir: PathBuf,
    addresses: BufWriter<File>,
    coinjoins: BufWriter<File>,
}

fn create(dir: &Path, name: &str, header: &str) -> anyhow::Result<BufWriter<File>> {
    let path = dir.join(name);
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    writer
        .write_all(header.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(writer)
}

impl TruthWriter {
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(TruthWriter {
            dir: dir.to_path_buf(),
            addresses: create(dir, "addresses.csv", "address,actor_id\n")?,
            coinjoins: create(dir, "coinjoins.csv", "txid,kind,height\n")?,
        })
    }

    /// Rows for one main-chain block: its fresh addresses and its CoinJoins.
    pub fn block(
        &mut self,
        height: u32,
        coinbase: &BuiltTx,
        plans: &[TxPlan],
        built: &[BuiltTx],
    ) -> anyhow::Result<()> {
        let path = self.dir.join("addresses.csv");
        for tx in std::iter::once(coinbase).chain(built) {
            self.addresses
                .write_all(tx.rows.as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        for (plan, tx) in plans.iter().zip(built) {
            if let Some(kind) = plan.tag.coinjoin {
                writeln!(self.coinjoins, "{},{},{height}", tx.txid, kind.name()).with_context(
                    || format!("writing {}", self.dir.join("coinjoins.csv").display()),
                )?;
            }
        }
        Ok(())
    }

    /// Writes actors.csv, flows.jsonl (hops up to `tip`) and summary.json, and flushes all.
    pub fn finish(
        mut self,
        actors: &Actors,
        flows: &Flows,
        tip: u32,
        summary: &Summary,
    ) -> anyhow::Result<()> {
        for (writer, name) in [
            (&mut self.addresses, "addresses.csv"),
            (&mut self.coinjoins, "coinjoins.csv"),
        ] {
            writer
                .flush()
                .with_context(|| format!("writing {}", self.dir.join(name).display()))?;
        }
        let mut out = create(&self.dir, "actors.csv", "actor_id,kind,name\n")?;
        for (id, actor) in actors.iter() {
            writeln!(out, "{id},{},{}", actor.kind.name(), actor.name)?;
        }
        out.flush()
            .with_context(|| format!("writing {}", self.dir.join("actors.csv").display()))?;

        let mut out = create(&self.dir, "flows.jsonl", "")?;
        for record in flows.records(tip) {
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
        out.flush()
            .with_context(|| format!("writing {}", self.dir.join("flows.jsonl").display()))?;

        let path = self.dir.join("summary.json");
        let json = serde_json::to_string_pretty(summary)?;
        std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }
}
