//! `Format::TagPack`: GraphSense TagPack YAML. Pack-level `label`,
//! `category`, `source` and `currency` apply to every entry of `tags` that
//! does not give its own.

use anyhow::{Context, Result};
use serde::Deserialize;

use super::entry::{accept, Defaults, Entry, Parsed, Skipped};
use crate::network::Network;

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

pub(super) fn parse(text: &str, network: Network, d: &Defaults) -> Result<Parsed> {
    let pack: Pack = serde_yaml_ng::from_str(text).context("not a TagPack")?;
    let mut out = Parsed::default();
    // YAML entries do not carry lines: find each address in the text, in order.
    let mut from = 0;
    for (i, tag) in pack.tags.iter().enumerate() {
        let Some(addr) = tag.address.as_deref() else {
            out.skipped.push(Skipped {
                line: 0,
                entry: format!("tags[{i}]"),
                reason: "no address".into(),
            });
            continue;
        };
        // An address not found verbatim (a YAML escape) leaves the search
        // where it was, and its line unknown (0).
        let line = match text[from..].find(addr) {
            Some(p) => {
                let at = from + p;
                from = at + addr.len();
                text[..at].matches('\n').count() + 1
            }
            None => 0,
        };
        let currency = tag.currency.as_deref().or(pack.currency.as_deref());
        if let Some(c) = currency.filter(|c| !c.eq_ignore_ascii_case("btc")) {
            out.skipped.push(Skipped {
                line,
                entry: addr.into(),
                reason: format!("a {c} address, not bitcoin"),
            });
            continue;
        }
        accept(
            &mut out,
            network,
            d,
            Entry {
                line,
                address: addr,
                label: tag.label.as_deref().or(pack.label.as_deref()),
                category: tag.category.as_deref().or(pack.category.as_deref()),
                source: tag.source.as_deref().or(pack.source.as_deref()),
            },
        );
    }
    Ok(out)
}
