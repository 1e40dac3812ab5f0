//! What every import format shares: the defaults an import is given, what
//! it yields (how many labels it stored, coinbase tags, skipped entries
//! with their line), and `Accept`, the checks every entry goes through
//! whatever its format, on its way to the import's write batches.

use anyhow::Result;

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

/// How many skipped entries an import lists; the rest are only counted, so
/// that a file of millions of another network's addresses costs no more
/// memory than a good one.
const LISTED_SKIPS: usize = 1000;

/// What an import did.
#[derive(Debug, Default)]
pub struct Parsed {
    /// How many labels it stored: the labels themselves went to the index
    /// batch by batch as the file was read.
    pub labels: Stored,
    /// Coinbase tags and the pools they name (`Format::Pools`).
    pub tags: Vec<PoolTag>,
    /// The first 1,000 entries left out (`LISTED_SKIPS`), in file order.
    pub skipped: Vec<Skipped>,
    /// Every entry left out, listed or not.
    pub skipped_total: usize,
}

/// How many labels an import stored: a count with `len`, as the list of
/// them it stands for (the labels themselves are in the index).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored(usize);

impl Stored {
    pub fn len(self) -> usize {
        self.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One entry of a label set, as its file gives it.
pub(super) struct Entry<'a> {
    pub line: usize,
    pub address: &'a str,
    pub label: Option<&'a str>,
    pub category: Option<&'a str>,
    pub source: Option<&'a str>,
}

/// Where a format's reader hands its entries: checks each, passes the
/// labels on to `sink` (the import's bounded write batch), and notes what
/// it leaves out.
pub(super) struct Accept<'a> {
    network: Network,
    defaults: &'a Defaults,
    sink: &'a mut dyn FnMut(&Label) -> Result<()>,
    pub parsed: Parsed,
}

impl<'a> Accept<'a> {
    pub fn new(
        network: Network,
        defaults: &'a Defaults,
        sink: &'a mut dyn FnMut(&Label) -> Result<()>,
    ) -> Accept<'a> {
        Accept {
            network,
            defaults,
            sink,
            parsed: Parsed::default(),
        }
    }

    pub fn defaults(&self) -> &Defaults {
        self.defaults
    }

    pub fn skip(&mut self, line: usize, entry: &str, reason: String) {
        self.parsed.skipped_total += 1;
        if self.parsed.skipped.len() < LISTED_SKIPS {
            self.parsed.skipped.push(Skipped {
                line,
                entry: entry.into(),
                reason,
            });
        }
    }

    /// Checks one entry and passes it on, or notes why not.
    pub fn entry(&mut self, e: Entry<'_>) -> Result<()> {
        match self.check(&e) {
            Ok(label) => {
                (self.sink)(&label)?;
                self.parsed.labels.0 += 1;
            }
            Err(reason) => self.skip(e.line, e.address, reason),
        }
        Ok(())
    }

    /// The label `e` makes, or why it makes none. Given defaults win over
    /// the file's category (e.g. `--category sanctioned` for an OFAC pack
    /// that says `user`); the file's label and source win over the
    /// defaults.
    fn check(&self, e: &Entry<'_>) -> Result<Label, String> {
        let d = self.defaults;
        let address = address::parse(e.address, self.network).map_err(|err| format!("{err:#}"))?;
        let category = match (d.category, e.category) {
            (Some(c), _) => c,
            (None, Some(name)) => {
                Category::from_set_name(name).ok_or(format!("unknown category {name:?}"))?
            }
            (None, None) => return Err("no category (give --category)".into()),
        };
        let label = e
            .label
            .map(str::to_owned)
            .or_else(|| d.label.clone())
            .ok_or("no label (give --label)")?;
        let source = e
            .source
            .map(str::to_owned)
            .or_else(|| d.source.clone())
            .unwrap_or_default();
        Ok(Label {
            address,
            label,
            category,
            set: d.set.clone().unwrap_or_default(),
            source,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Runs `read` over an `Accept` that keeps the labels (mainnet, the
    /// given defaults): what a format's reader yields, without a store.
    pub fn accepted(
        defaults: &Defaults,
        read: impl FnOnce(&mut Accept<'_>) -> Result<()>,
    ) -> Result<(Vec<Label>, Parsed)> {
        let mut labels = Vec::new();
        let mut keep = |l: &Label| {
            labels.push(l.clone());
            Ok(())
        };
        let mut accept = Accept::new(Network::Main, defaults, &mut keep);
        read(&mut accept)?;
        let parsed = accept.parsed;
        Ok((labels, parsed))
    }

    #[test]
    fn skips_are_listed_up_to_a_bound_and_all_counted() {
        let d = Defaults::default();
        let (labels, parsed) = accepted(&d, |a| {
            for line in 1..=LISTED_SKIPS + 5 {
                a.entry(Entry {
                    line,
                    address: "not-an-address",
                    label: Some("x"),
                    category: Some("exchange"),
                    source: None,
                })?;
            }
            Ok(())
        })
        .unwrap();
        assert!(labels.is_empty() && parsed.labels.is_empty());
        assert_eq!(parsed.skipped.len(), LISTED_SKIPS);
        assert_eq!(parsed.skipped_total, LISTED_SKIPS + 5);
        assert_eq!(parsed.skipped[0].line, 1);
    }
}
