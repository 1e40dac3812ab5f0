//! `Format::Pools`: bitcoin-data/mining-pools `pools.json`. Payout
//! addresses become mining_pool labels; coinbase tags name the pool that
//! mined a block.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::entry::{accept, Defaults, Entry, Parsed};
use super::{Category, PoolTag};
use crate::network::Network;

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

pub(super) fn parse(text: &str, network: Network, d: &Defaults) -> Result<Parsed> {
    let file: PoolsFile = serde_json::from_str(text).context("not a mining-pools pools.json")?;
    let mut out = Parsed::default();
    let set = d.set.clone().unwrap_or_default();
    let line_of = |needle: &str| {
        text.find(&format!("\"{needle}\""))
            .map_or(0, |at| text[..at].matches('\n').count() + 1)
    };
    for (addr, pool) in &file.payout_addresses {
        let with = Defaults {
            category: Some(d.category.unwrap_or(Category::MiningPool)),
            ..d.clone()
        };
        accept(
            &mut out,
            network,
            &with,
            Entry {
                line: line_of(addr),
                address: addr,
                label: Some(&pool.name),
                category: None,
                source: Some(&pool.link)
                    .filter(|l| !l.is_empty())
                    .map(|l| l.as_str()),
            },
        );
    }
    out.tags = file
        .coinbase_tags
        .into_iter()
        .filter(|(tag, _)| !tag.is_empty())
        .map(|(tag, pool)| PoolTag {
            tag,
            pool: pool.name,
            set: set.clone(),
        })
        .collect();
    Ok(out)
}
