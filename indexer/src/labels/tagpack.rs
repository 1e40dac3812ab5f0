//! `Format::TagPack`: GraphSense TagPack YAML. Pack-level `label`,
//! `category`, `source` and `currency` apply to every entry of `tags` that
//! does not give its own.
//!
//! The YAML parser reads a document whole (its events, then the pack), so a
//! TagPack is held in memory while it is imported: TagPacks are curated
//! files of thousands of tags, and the bulk label sets come as CSV or
//! lists, which are streamed. Its labels still go to the index in bounded
//! batches.

use anyhow::{Context, Result};
use serde::Deserialize;

use super::entry::{Accept, Entry};
use super::position::LineStarts;

#[derive(Deserialize)]
struct Pack {
    label: Option<String>,
    category: Option<String>,
    source: Option<String>,
    currency: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
}

#[derive(Deserialize)]
struct Tag {
    address: Option<String>,
    label: Option<String>,
    category: Option<String>,
    source: Option<String>,
    currency: Option<String>,
}

pub(super) fn read(text: &str, to: &mut Accept<'_>) -> Result<()> {
    let pack: Pack = serde_yaml_ng::from_str(text).context("not a TagPack")?;
    // YAML values carry no lines: each address is found in the text after
    // the previous one, and its line looked up by offset.
    let lines = LineStarts::new(text);
    let mut from = 0;
    for (i, tag) in pack.tags.iter().enumerate() {
        let Some(addr) = tag.address.as_deref() else {
            to.skip(0, &format!("tags[{i}]"), "no address".into());
            continue;
        };
        // An address not found verbatim (a YAML escape) leaves the search
        // where it was, and its line unknown (0).
        let line = match text[from..].find(addr) {
            Some(p) => {
                let at = from + p;
                from = at + addr.len();
                lines.line(at)
            }
            None => 0,
        };
        let currency = tag.currency.as_deref().or(pack.currency.as_deref());
        if let Some(c) = currency.filter(|c| !c.eq_ignore_ascii_case("btc")) {
            to.skip(line, addr, format!("a {c} address, not bitcoin"));
            continue;
        }
        to.entry(Entry {
            line,
            address: addr,
            label: tag.label.as_deref().or(pack.label.as_deref()),
            category: tag.category.as_deref().or(pack.category.as_deref()),
            source: tag.source.as_deref().or(pack.source.as_deref()),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::entry::tests::accepted;
    use super::super::entry::Defaults;
    use super::*;

    #[test]
    fn tags_get_their_own_lines() {
        let text = "label: Pack\ncategory: exchange\ntags:\n\
                    - address: 1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d\n\
                    - address: 0xdeadbeef\n  currency: ETH\n\
                    - label: none\n\
                    - address: \"not-an-address\"\n  label: Own\n";
        let (labels, parsed) = accepted(&Defaults::default(), |a| read(text, a)).unwrap();
        assert_eq!(labels.len(), 1);
        assert_eq!(labels[0].label, "Pack");
        let skipped: Vec<_> = parsed
            .skipped
            .iter()
            .map(|s| (s.line, s.entry.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [(5, "0xdeadbeef"), (0, "tags[2]"), (8, "not-an-address")]
        );
    }
}
