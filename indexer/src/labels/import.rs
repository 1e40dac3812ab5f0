//! `satflow labels import`: the formats a label set comes in, reading one
//! (`parse`), and storing what it holds (`import`).

use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::entry::{Defaults, Parsed};
use super::{add, lines, pools, tagpack};
use crate::network::Network;
use crate::store::Store;

/// The formats `satflow labels import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// GraphSense TagPack YAML: pack-level `label`, `category`, `source`,
    /// `currency`, overridden per entry of `tags`.
    TagPack,
    /// `address,label,category,source` per line; a header line is skipped.
    Csv,
    /// One address per line (e.g. the OFAC list); label and category given.
    List,
    /// bitcoin-data/mining-pools `pools.json`: payout addresses become
    /// mining_pool labels, coinbase tags name the pool of a block.
    Pools,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        match s {
            "tagpack" => Ok(Format::TagPack),
            "csv" => Ok(Format::Csv),
            "list" => Ok(Format::List),
            "pools" => Ok(Format::Pools),
            _ => Err(format!("unknown format {s:?}: tagpack, csv, list or pools")),
        }
    }
}

/// Reads a label set; entries that are not addresses of `network`, belong
/// to another chain, or lack a label or category are listed in `skipped`
/// with their line.
pub fn parse(path: &Path, format: Format, network: Network, defaults: &Defaults) -> Result<Parsed> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut d = defaults.clone();
    if d.set.is_none() {
        d.set = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    match format {
        Format::TagPack => {
            tagpack::parse(&text, network, &d).with_context(|| path.display().to_string())
        }
        Format::Csv => Ok(lines::parse(&text, network, &d, true)),
        Format::List => Ok(lines::parse(&text, network, &d, false)),
        Format::Pools => {
            pools::parse(&text, network, &d).with_context(|| path.display().to_string())
        }
    }
}

/// Imports a label set into the index; returns what was skipped.
pub fn import(store: &Store, path: &Path, format: Format, defaults: &Defaults) -> Result<Parsed> {
    let network = store
        .network()?
        .context("the index holds no blocks yet: its network is unknown")?;
    let parsed = parse(path, format, network, defaults)?;
    if parsed.labels.is_empty() && parsed.tags.is_empty() && !parsed.skipped.is_empty() {
        bail!(
            "{}: no entry could be imported ({} skipped, the first at line {}: {})",
            path.display(),
            parsed.skipped.len(),
            parsed.skipped[0].line,
            parsed.skipped[0].reason
        );
    }
    add(store, &parsed.labels, &parsed.tags)?;
    Ok(parsed)
}
