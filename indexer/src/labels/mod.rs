//! Labels: who is behind an address (an exchange, a mining pool, a
//! sanctioned entity), imported from public label sets. Rows are keyed by
//! the address itself, not its number, so a label may name an address the
//! chain has not used yet, and labels survive reindexing into the same
//! database and cluster rebuilds alike.
//!
//! This module holds the rows (`cf::Labels`, `cf::PoolTags`, whose layouts
//! `satflow_schema::label` owns); `import` reads a label set in one of the
//! `Format`s (`tagpack`, `csv_file`, `lines` for plain lists, `pools`;
//! `position` finds the lines of the formats parsed whole), through the
//! checks `entry` applies to every format alike, and `write` stores it in
//! bounded batches.

mod csv_file;
mod entry;
mod import;
mod lines;
mod pools;
mod position;
mod tagpack;
mod write;

use anyhow::Result;
use satflow_schema::cf;
use satflow_schema::label::{LabelKey, LabelValue, PoolTagValue};
use satflow_schema::script::AddrKey;

pub use entry::{Defaults, Parsed, Skipped, Stored};
pub use import::{import, Format};
pub use satflow_schema::label::Category;

use crate::store::Store;

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

impl Label {
    fn key(&self) -> LabelKey {
        LabelKey {
            address: self.address,
            set: self.set.clone(),
            label: self.label.clone(),
        }
    }

    fn value(&self) -> LabelValue {
        LabelValue {
            category: self.category,
            source: self.source.clone(),
        }
    }

    fn from_row((key, value): (LabelKey, LabelValue)) -> Label {
        Label {
            address: key.address,
            label: key.label,
            category: value.category,
            set: key.set,
            source: value.source,
        }
    }
}

/// A string a mining pool writes into its coinbase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolTag {
    pub tag: String,
    pub pool: String,
    pub set: String,
}

impl PoolTag {
    fn value(&self) -> PoolTagValue {
        PoolTagValue {
            set: self.set.clone(),
            pool: self.pool.clone(),
        }
    }

    fn from_row((tag, value): (String, PoolTagValue)) -> PoolTag {
        PoolTag {
            tag,
            pool: value.pool,
            set: value.set,
        }
    }
}

/// Every label, in address order, read as the iterator goes: millions of
/// labels are never held at once.
pub fn iter(store: &Store) -> impl Iterator<Item = Result<Label>> + '_ {
    store
        .scan_all::<cf::Labels>()
        .map(|row| row.map(Label::from_row))
}

/// Every label, in address order.
pub fn all(store: &Store) -> Result<Vec<Label>> {
    iter(store).collect()
}

/// The labels of one address.
pub fn of(store: &Store, address: &AddrKey) -> Result<Vec<Label>> {
    store
        .scan_prefix::<cf::Labels, AddrKey>(address)
        .map(|row| row.map(Label::from_row))
        .collect()
}

/// Every coinbase tag, longest first (the most specific match wins).
pub fn pool_tags(store: &Store) -> Result<Vec<PoolTag>> {
    let mut tags = store
        .scan_all::<cf::PoolTags>()
        .map(|row| row.map(PoolTag::from_row))
        .collect::<Result<Vec<_>>>()?;
    tags.sort_by_key(|t| std::cmp::Reverse(t.tag.len()));
    Ok(tags)
}

/// Removes every label and coinbase tag of set `set`; returns how many.
pub fn remove_set(store: &Store, set: &str) -> Result<usize> {
    let mut writer = write::Writer::new(store)?;
    let mut n = 0;
    // The iterator reads a snapshot: the batches written meanwhile do not
    // disturb it.
    for l in iter(store) {
        let l = l?;
        if l.set == set {
            writer.delete(&l)?;
            n += 1;
        }
    }
    for t in pool_tags(store)?.into_iter().filter(|t| t.set == set) {
        writer.delete_tag(&t)?;
        n += 1;
    }
    writer.finish()?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use satflow_schema::Codec;

    use super::*;
    use crate::address;
    use crate::network::Network;

    #[test]
    fn rows_round_trip() {
        let l = Label {
            address: address::parse("1NpHuti9NSM9fVTXLkvSDU4AnhqGQ5N53d", Network::Main).unwrap(),
            label: "OFAC SDN".into(),
            category: Category::Sanctioned,
            set: "ofac".into(),
            source: "https://sanctionssearch.ofac.treas.gov/".into(),
        };
        // The bytes labels were stored as before the typed schema.
        let mut k = l.address.to_bytes();
        k.extend_from_slice(b"ofac\0OFAC SDN");
        let mut v = vec![l.category as u8];
        v.extend_from_slice(l.source.as_bytes());
        assert_eq!(l.key().encode(), k);
        assert_eq!(l.value().encode(), v);
        let row = (
            LabelKey::decode(&k).unwrap(),
            LabelValue::decode(&v).unwrap(),
        );
        assert_eq!(Label::from_row(row), l);

        let t = PoolTag {
            tag: "/F2Pool/".into(),
            pool: "F2Pool".into(),
            set: "pools".into(),
        };
        assert_eq!(t.value().encode(), b"pools\0F2Pool");
        let row = (
            t.tag.clone(),
            PoolTagValue::decode(&t.value().encode()).unwrap(),
        );
        assert_eq!(PoolTag::from_row(row), t);
    }
}
