//! `Format::Pools`: bitcoin-data/mining-pools `pools.json`. Payout
//! addresses become mining_pool labels; coinbase tags name the pool that
//! mined a block. A file of a few hundred pools, parsed whole.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::entry::{Accept, Entry};
use super::position::LineStarts;
use super::PoolTag;

#[derive(Deserialize)]
struct PoolsFile {
    coinbase_tags: BTreeMap<String, Pool>,
    payout_addresses: BTreeMap<String, Pool>,
}

#[derive(Deserialize)]
struct Pool {
    name: String,
    #[serde(default)]
    link: String,
}

pub(super) fn read(text: &str, to: &mut Accept<'_>) -> Result<()> {
    let file: PoolsFile = serde_json::from_str(text).context("not a mining-pools pools.json")?;
    let lines = quoted_lines(text);
    let set = to.defaults().set.clone().unwrap_or_default();
    for (addr, pool) in &file.payout_addresses {
        to.entry(Entry {
            line: lines.get(addr.as_str()).copied().unwrap_or(0),
            address: addr,
            label: Some(&pool.name),
            // What the file is about; a given category still wins.
            category: Some("mining_pool"),
            source: Some(pool.link.as_str()).filter(|l| !l.is_empty()),
        })?;
    }
    to.parsed.tags = file
        .coinbase_tags
        .into_iter()
        .filter(|(tag, _)| !tag.is_empty())
        .map(|(tag, pool)| PoolTag {
            tag,
            pool: pool.name,
            set: set.clone(),
        })
        .collect();
    Ok(())
}

/// The line of every JSON string's first occurrence in `text`, in one pass:
/// the map the file parses into keeps no positions, nor the file's order.
fn quoted_lines(text: &str) -> HashMap<&str, usize> {
    let lines = LineStarts::new(text);
    let bytes = text.as_bytes();
    let mut found = HashMap::new();
    let mut at = 0;
    while let Some(open) = bytes[at..].iter().position(|&b| b == b'"') {
        let start = at + open + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        // Both ends are at a quote or the text's end: char boundaries.
        let end = end.min(bytes.len());
        found
            .entry(&text[start..end])
            .or_insert_with(|| lines.line(start));
        at = (end + 1).min(bytes.len());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_keep_their_first_line() {
        let text = "{\n \"a\": \"b \\\" c\",\n \"a\": 1, \"d\": \"é\"\n}";
        let lines = quoted_lines(text);
        assert_eq!(lines["a"], 2);
        assert_eq!(lines["b \\\" c"], 2);
        assert_eq!(lines["d"], 3);
        assert_eq!(lines["é"], 3);
    }
}
