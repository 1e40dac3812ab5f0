//! Labels: who is behind an address (an exchange, a mining pool, a
//! sanctioned entity), imported from public label sets. Rows are keyed by
//! the address itself, not its number, so a label may name an address the
//! chain has not used yet, and labels survive reindexing into the same
//! database and cluster rebuilds alike.
//!
//! Family `labels`: key = address key · set · 0x00 · label (UTF-8), value =
//! category (u8) · source (UTF-8). An address key's kind byte fixes its
//! length, so one address's rows are one key prefix.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use rocksdb::{IteratorMode, WriteBatch};
use serde::Deserialize;

use crate::address;
use crate::network::Network;
use crate::schema::cf;
use crate::script::AddrKey;
use crate::store::Store;

/// The category vocabulary. Imports map the names label sets use onto it
/// (GraphSense's `miner` is a mining pool, `mixing_service` a mixer, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Category {
    Exchange = 1,
    MiningPool = 2,
    Mixer = 3,
    Sanctioned = 4,
    DarknetMarket = 5,
    Ransomware = 6,
    Scam = 7,
    Gambling = 8,
    Service = 9,
    Theft = 10,
    Other = 11,
}

impl Category {
    pub const ALL: [Category; 11] = [
        Category::Exchange,
        Category::MiningPool,
        Category::Mixer,
        Category::Sanctioned,
        Category::DarknetMarket,
        Category::Ransomware,
        Category::Scam,
        Category::Gambling,
        Category::Service,
        Category::Theft,
        Category::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Category::Exchange => "exchange",
            Category::MiningPool => "mining_pool",
            Category::Mixer => "mixer",
            Category::Sanctioned => "sanctioned",
            Category::DarknetMarket => "darknet_market",
            Category::Ransomware => "ransomware",
            Category::Scam => "scam",
            Category::Gambling => "gambling",
            Category::Service => "service",
            Category::Theft => "theft",
            Category::Other => "other",
        }
    }

    fn from_u8(b: u8) -> Option<Category> {
        Category::ALL.into_iter().find(|c| *c as u8 == b)
    }

    /// A label set's category name, in our vocabulary or one of the other
    /// names label sets use for it.
    pub fn from_set_name(s: &str) -> Option<Category> {
        let s = s.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        if let Some(c) = Category::ALL.into_iter().find(|c| c.name() == s) {
            return Some(c);
        }
        Some(match s.as_str() {
            "miner" | "mining" | "pool" => Category::MiningPool,
            "mixing_service" | "mixing" | "coinjoin" => Category::Mixer,
            "market" | "darknet" | "darkweb" => Category::DarknetMarket,
            "wallet_service" | "walletservice" | "organization" | "payment_processor" => {
                Category::Service
            }
            "sanction" | "sanctions" | "ofac" => Category::Sanctioned,
            "hack" | "stolen" => Category::Theft,
            "user" | "unknown" => Category::Other,
            _ => return None,
        })
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Category {
    type Err = String;

    fn from_str(s: &str) -> Result<Category, String> {
        Category::from_set_name(s).ok_or_else(|| {
            let names: Vec<_> = Category::ALL.iter().map(|c| c.name()).collect();
            format!("unknown category {s:?}: one of {}", names.join(", "))
        })
    }
}

/// One label on one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    pub address: AddrKey,
    pub label: String,
    pub category: Category,
    /// The label set it was imported with (the file's stem by default), the
    /// unit `satflow labels remove` takes away.
    pub set: String,
    /// Where the label set says it comes from (often a URL).
    pub source: String,
}

fn row_key(l: &Label) -> Vec<u8> {
    let mut k = l.address.to_bytes();
    k.extend_from_slice(l.set.as_bytes());
    k.push(0);
    k.extend_from_slice(l.label.as_bytes());
    k
}

fn decode(k: &[u8], v: &[u8]) -> Result<Label> {
    let kind_len = crate::script::AddrKind::from_u8(*k.first().context("empty label key")?)
        .context("label key of unknown address kind")?
        .hash_len();
    let (addr, rest) = k
        .split_at_checked(1 + kind_len)
        .context("short label key")?;
    let address = AddrKey::from_bytes(addr).context("corrupt label address")?;
    let sep = rest
        .iter()
        .position(|&b| b == 0)
        .context("label key without separator")?;
    let (&category, source) = v.split_first().context("empty label row")?;
    Ok(Label {
        address,
        set: String::from_utf8_lossy(&rest[..sep]).into_owned(),
        label: String::from_utf8_lossy(&rest[sep + 1..]).into_owned(),
        category: Category::from_u8(category).context("corrupt label category")?,
        source: String::from_utf8_lossy(source).into_owned(),
    })
}

/// Every label, in address order.
pub fn all(store: &Store) -> Result<Vec<Label>> {
    store
        .db()
        .iterator_cf(store.cf(cf::LABELS), IteratorMode::Start)
        .map(|item| {
            let (k, v) = item.context("reading labels")?;
            decode(&k, &v)
        })
        .collect()
}

/// The labels of one address.
pub fn of(store: &Store, address: &AddrKey) -> Result<Vec<Label>> {
    let prefix = address.to_bytes();
    let mut out = Vec::new();
    for item in store.db().prefix_iterator_cf(store.cf(cf::LABELS), &prefix) {
        let (k, v) = item.context("reading labels")?;
        if !k.starts_with(&prefix) {
            break;
        }
        out.push(decode(&k, &v)?);
    }
    Ok(out)
}

/// Stores `labels` and `tags` (one already there is kept once).
pub fn add(store: &Store, labels: &[Label], tags: &[PoolTag]) -> Result<()> {
    let mut batch = WriteBatch::default();
    for t in tags {
        batch.put_cf(
            store.cf(cf::POOL_TAGS),
            t.tag.as_bytes(),
            format!("{}\0{}", t.set, t.pool),
        );
    }
    for l in labels {
        let mut v = vec![l.category as u8];
        v.extend_from_slice(l.source.as_bytes());
        batch.put_cf(store.cf(cf::LABELS), row_key(l), v);
    }
    store.write(batch)?;
    store.flush()
}

/// Removes every label and coinbase tag of set `set`; returns how many.
pub fn remove_set(store: &Store, set: &str) -> Result<usize> {
    let mut batch = WriteBatch::default();
    let mut n = 0;
    for l in all(store)?.into_iter().filter(|l| l.set == set) {
        batch.delete_cf(store.cf(cf::LABELS), row_key(&l));
        n += 1;
    }
    for t in pool_tags(store)?.into_iter().filter(|t| t.set == set) {
        batch.delete_cf(store.cf(cf::POOL_TAGS), t.tag.as_bytes());
        n += 1;
    }
    store.write(batch)?;
    store.flush()?;
    Ok(n)
}

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

/// What the import defaults to where a file says nothing.
#[derive(Clone, Debug, Default)]
pub struct Defaults {
    pub label: Option<String>,
    pub category: Option<Category>,
    pub source: Option<String>,
    /// The label set's name; the file's stem when None.
    pub set: Option<String>,
}

/// An entry left out of an import, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub line: usize,
    pub entry: String,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub labels: Vec<Label>,
    /// Coinbase tags and the pools they name (`Format::Pools`).
    pub tags: Vec<PoolTag>,
    pub skipped: Vec<Skipped>,
}

/// A string a mining pool writes into its coinbase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolTag {
    pub tag: String,
    pub pool: String,
    pub set: String,
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
        Format::TagPack => tagpack(&text, network, &d).with_context(|| path.display().to_string()),
        Format::Csv => Ok(lines(&text, network, &d, true)),
        Format::List => Ok(lines(&text, network, &d, false)),
        Format::Pools => pools(&text, network, &d).with_context(|| path.display().to_string()),
    }
}

#[derive(Deserialize)]
struct PoolsFile {
    coinbase_tags: std::collections::BTreeMap<String, Pool>,
    payout_addresses: std::collections::BTreeMap<String, Pool>,
}

#[derive(Deserialize)]
struct Pool {
    name: String,
    #[serde(default)]
    link: String,
}

fn pools(text: &str, network: Network, d: &Defaults) -> Result<Parsed> {
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

/// Every coinbase tag, longest first (the most specific match wins).
pub fn pool_tags(store: &Store) -> Result<Vec<PoolTag>> {
    let mut tags = store
        .db()
        .iterator_cf(store.cf(cf::POOL_TAGS), IteratorMode::Start)
        .map(|item| {
            let (k, v) = item.context("reading pool tags")?;
            let v = String::from_utf8_lossy(&v);
            let (set, pool) = v.split_once('\0').context("corrupt pool tag row")?;
            Ok(PoolTag {
                tag: String::from_utf8_lossy(&k).into_owned(),
                pool: pool.into(),
                set: set.into(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    tags.sort_by_key(|t| std::cmp::Reverse(t.tag.len()));
    Ok(tags)
}

struct Entry<'a> {
    line: usize,
    address: &'a str,
    label: Option<&'a str>,
    category: Option<&'a str>,
    source: Option<&'a str>,
}

fn lines(text: &str, network: Network, d: &Defaults, csv: bool) -> Parsed {
    let mut out = Parsed::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = match csv {
            true => line.split(',').map(str::trim).collect(),
            false => vec![line],
        };
        if csv && i == 0 && f[0].eq_ignore_ascii_case("address") {
            continue;
        }
        let field = |n: usize| f.get(n).copied().filter(|s| !s.is_empty());
        accept(
            &mut out,
            network,
            d,
            Entry {
                line: i + 1,
                address: f[0],
                label: field(1),
                category: field(2),
                source: field(3),
            },
        );
    }
    out
}

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

fn tagpack(text: &str, network: Network, d: &Defaults) -> Result<Parsed> {
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

/// Checks one entry and adds it, or notes why not. Given defaults win over
/// the file's category (e.g. `--category sanctioned` for an OFAC pack that
/// says `user`); the file's label and source win over the defaults.
fn accept(out: &mut Parsed, network: Network, d: &Defaults, e: Entry<'_>) {
    let mut skip = |reason: String| {
        out.skipped.push(Skipped {
            line: e.line,
            entry: e.address.into(),
            reason,
        })
    };
    let address = match address::parse(e.address, network) {
        Ok(a) => a,
        Err(err) => return skip(format!("{err:#}")),
    };
    let category = match (d.category, e.category) {
        (Some(c), _) => c,
        (None, Some(name)) => match Category::from_set_name(name) {
            Some(c) => c,
            None => return skip(format!("unknown category {name:?}")),
        },
        (None, None) => return skip("no category (give --category)".into()),
    };
    let Some(label) = e.label.map(str::to_owned).or_else(|| d.label.clone()) else {
        return skip("no label (give --label)".into());
    };
    let source = e
        .source
        .map(str::to_owned)
        .or_else(|| d.source.clone())
        .unwrap_or_default();
    out.labels.push(Label {
        address,
        label,
        category,
        set: d.set.clone().unwrap_or_default(),
        source,
    });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_category_names_map_onto_the_vocabulary() {
        for (name, c) in [
            ("exchange", Category::Exchange),
            ("miner", Category::MiningPool),
            ("mixing_service", Category::Mixer),
            ("market", Category::DarknetMarket),
            ("wallet_service", Category::Service),
            ("Darknet Market", Category::DarknetMarket),
            ("user", Category::Other),
        ] {
            assert_eq!(Category::from_set_name(name), Some(c), "{name}");
        }
        assert!("exchanges and friends".parse::<Category>().is_err());
        for c in Category::ALL {
            assert_eq!(c.name().parse::<Category>(), Ok(c));
            assert_eq!(Category::from_u8(c as u8), Some(c));
        }
    }

    #[test]
    fn rows_round_trip() {
        let l = Label {
            address: address::parse("1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d", Network::Main).unwrap(),
            label: "OFAC SDN".into(),
            category: Category::Sanctioned,
            set: "ofac".into(),
            source: "https://sanctionssearch.ofac.treas.gov/".into(),
        };
        let mut v = vec![l.category as u8];
        v.extend_from_slice(l.source.as_bytes());
        assert_eq!(decode(&row_key(&l), &v).unwrap(), l);
    }
}
