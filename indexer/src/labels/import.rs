//! `satflow labels import`: the formats a label set comes in, and storing
//! what one holds (`import`), streamed: CSV and lists are read record by
//! record, and every format's labels go to the index in bounded write
//! batches (see `write`).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

use super::entry::{Accept, Defaults, Parsed};
use super::write::Writer;
use super::{csv_file, lines, pools, tagpack, Label};
use crate::store::Store;

/// The formats `satflow labels import` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// GraphSense TagPack YAML: pack-level `label`, `category`, `source`,
    /// `currency`, overridden per entry of `tags`.
    TagPack,
    /// CSV `address,label,category,source` (quoted fields, an optional
    /// header row).
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

/// Imports a label set into the index. Entries that are not addresses of
/// the index's network, belong to another chain, or lack a label or
/// category are listed in `skipped` with their line; a file that breaks its
/// format's rules is an error naming the file and line, and the labels read
/// before it stay stored (importing the fixed file again rewrites them
/// unchanged).
pub fn import(store: &Store, path: &Path, format: Format, defaults: &Defaults) -> Result<Parsed> {
    let network = store
        .network()?
        .context("the index holds no blocks yet: its network is unknown")?;
    let mut d = defaults.clone();
    if d.set.is_none() {
        d.set = path.file_stem().map(|s| s.to_string_lossy().into_owned());
    }
    if d.set.as_deref() == Some(crate::services::LABEL_SET) {
        bail!(
            "{}: the label set name {:?} is kept for the categories `satflow categorise` infers; name the set otherwise (--set)",
            path.display(),
            crate::services::LABEL_SET
        );
    }
    let mut writer = Writer::new(store)?;
    let mut put = |l: &Label| writer.put(l);
    let mut accept = Accept::new(network, &d, &mut put);
    let read = read(path, format, &mut accept);
    let parsed = accept.parsed;
    if let Err(e) = read {
        // What was read before stays: flushed, as the doc above says.
        writer.finish()?;
        return Err(e.context(path.display().to_string()));
    }
    if parsed.labels.is_empty() && parsed.tags.is_empty() && !parsed.skipped.is_empty() {
        bail!(
            "{}: no entry could be imported ({} skipped, the first at line {}: {})",
            path.display(),
            parsed.skipped_total,
            parsed.skipped[0].line,
            parsed.skipped[0].reason
        );
    }
    for t in &parsed.tags {
        writer.put_tag(t)?;
    }
    writer.finish()?;
    Ok(parsed)
}

fn read(path: &Path, format: Format, to: &mut Accept<'_>) -> Result<()> {
    let whole = || std::fs::read_to_string(path).context("reading");
    match format {
        Format::TagPack => tagpack::read(&whole()?, to),
        Format::Pools => pools::read(&whole()?, to),
        Format::Csv => csv_file::read(File::open(path).context("opening")?, to),
        Format::List => lines::read(BufReader::new(File::open(path).context("opening")?), to),
    }
}
