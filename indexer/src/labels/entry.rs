//! What every import format shares: the defaults an import is given, what
//! it yields (labels, coinbase tags, skipped entries with their line), and
//! `accept`, the checks every entry goes through whatever its format.

use super::{Category, Label, PoolTag};
use crate::address;
use crate::network::Network;

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

/// One entry of a label set, as its file gives it.
pub(super) struct Entry<'a> {
    pub line: usize,
    pub address: &'a str,
    pub label: Option<&'a str>,
    pub category: Option<&'a str>,
    pub source: Option<&'a str>,
}

/// Checks one entry and adds it, or notes why not. Given defaults win over
/// the file's category (e.g. `--category sanctioned` for an OFAC pack that
/// says `user`); the file's label and source win over the defaults.
pub(super) fn accept(out: &mut Parsed, network: Network, d: &Defaults, e: Entry<'_>) {
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
