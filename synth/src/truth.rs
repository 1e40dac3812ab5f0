//! Ground-truth files in `DIR/truth/`, written as the chain is generated (addresses and
//! CoinJoins stream block by block, pattern instances as each completes; actors, flows and the
//! summary are small and come last). Formats are documented in synth/README.md.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use bitcoin::Txid;

use crate::actors::Actors;
use crate::flows::Flows;
use crate::txbuild::{BuiltTx, PatternKind, TxPlan};
use crate::Summary;

/// Peel chains still under way when the chain ends are listed if they made this many hops.
const MIN_OPEN_PEEL_HOPS: usize = 2;

pub struct TruthWriter {
    dir: PathBuf,
    addresses: BufWriter<File>,
    coinjoins: BufWriter<File>,
    patterns: BufWriter<File>,
    /// Main-chain transactions of pattern instances not complete yet, by instance.
    open: BTreeMap<u32, (PatternKind, Vec<(u32, Txid)>)>,
    /// Instances written, by kind.
    written: BTreeMap<PatternKind, u64>,
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
            patterns: create(dir, "patterns.csv", "kind,instance,height,txid\n")?,
            open: BTreeMap::new(),
            written: BTreeMap::new(),
        })
    }

    /// Rows of one instance, oldest first.
    fn write_instance(
        &mut self,
        instance: u32,
        kind: PatternKind,
        rows: &[(u32, Txid)],
    ) -> anyhow::Result<()> {
        for (height, txid) in rows {
            writeln!(self.patterns, "{},{instance},{height},{txid}", kind.name())
                .with_context(|| format!("writing {}", self.dir.join("patterns.csv").display()))?;
        }
        *self.written.entry(kind).or_default() += 1;
        Ok(())
    }

    /// Collects the pattern transactions of a main-chain block; an instance is written once
    /// its last transaction is in. A reunion also lists the CoinJoins its inputs come from.
    fn patterns(&mut self, height: u32, plans: &[TxPlan], built: &[BuiltTx]) -> anyhow::Result<()> {
        for (plan, tx) in plans.iter().zip(built) {
            let Some(tag) = plan.tag.pattern else {
                continue;
            };
            let (_, rows) = self
                .open
                .entry(tag.instance)
                .or_insert_with(|| (tag.kind, Vec::new()));
            if tag.kind == PatternKind::CoinJoinReunion {
                let mut sources: Vec<(u32, Txid)> = plan
                    .inputs
                    .iter()
                    .map(|u| (u.height, u.outpoint.txid))
                    .collect();
                sources.sort();
                sources.dedup();
                rows.extend(sources);
            }
            rows.push((height, tx.txid));
            if tag.last {
                let (kind, rows) = self.open.remove(&tag.instance).expect("just inserted");
                self.write_instance(tag.instance, kind, &rows)?;
            }
        }
        Ok(())
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
        self.patterns(height, plans, built)
    }

    /// Writes the peel chains still under way to patterns.csv (other unfinished instances
    /// are left out), actors.csv, flows.jsonl (hops up to `tip`) and summary.json, with the
    /// instance counts in `summary.patterns`, and flushes all.
    pub fn finish(
        mut self,
        actors: &Actors,
        flows: &Flows,
        tip: u32,
        summary: &mut Summary,
    ) -> anyhow::Result<()> {
        for (instance, (kind, rows)) in std::mem::take(&mut self.open) {
            if kind == PatternKind::PeelChain && rows.len() >= MIN_OPEN_PEEL_HOPS {
                self.write_instance(instance, kind, &rows)?;
            }
        }
        summary.patterns = PatternKind::ALL
            .iter()
            .map(|k| (k.name(), self.written.get(k).copied().unwrap_or(0)))
            .collect();
        for (writer, name) in [
            (&mut self.addresses, "addresses.csv"),
            (&mut self.coinjoins, "coinjoins.csv"),
            (&mut self.patterns, "patterns.csv"),
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
