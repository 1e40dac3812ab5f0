//! Labels as callers see them: on an address itself, inherited from the
//! other addresses of its cluster, and per cluster. The label index
//! (`label_index`) knows which cluster each labeled address is in.

use satflow_indexer::labels::{self, Label};
use satflow_proto::v1 as pb;
use satflow_schema::script::AddrKey;
use satflow_schema::{AddrId, ClusterKey};

use crate::built;
use crate::error::Result;
use crate::index::Index;
use crate::label_index::LabelIndex;

/// Inherited labels listed per summary or cluster, at most: a cluster that
/// gathered thousands of distinct labels (a big cluster where a label set
/// names each deposit address its own way) must not cost a lookup each.
const MAX_LISTED: usize = 100;

/// Labels as an answer lists them: at most `MAX_LISTED` inherited ones,
/// those carried by the most members first, and how many were left out.
pub(crate) struct Listed {
    pub labels: Vec<pb::Label>,
    pub omitted: u64,
}

/// An address's own labels, then those of the rest of its cluster, each
/// distinct one once.
pub(crate) fn of_address(index: &Index, key: &AddrKey, id: AddrId) -> Result<Listed> {
    let label_index = index.label_index();
    if label_index.is_empty() {
        return Ok(Listed {
            labels: Vec::new(),
            omitted: 0,
        });
    }
    let mut out: Vec<pb::Label> = match label_index.is_labeled(id) {
        true => labels::of(index.store(), key)?
            .iter()
            .map(|l| label_message(l, String::new(), 1))
            .collect(),
        false => Vec::new(),
    };
    let c = built::cluster_or_self(index.store(), id, label_index.cover())?;
    let (listed, omitted) = most_carried(label_index.distinct_of(c, Some(id)));
    for (member, l, carriers) in listed {
        out.push(label_message(
            l,
            carrier(index, &label_index, member)?,
            carriers,
        ));
    }
    Ok(Listed {
        labels: out,
        omitted,
    })
}

/// The labels of the members of the cluster keyed `c`, each distinct one
/// once.
pub(crate) fn of_cluster(index: &Index, c: ClusterKey) -> Result<Listed> {
    let label_index = index.label_index();
    let (listed, omitted) = most_carried(label_index.distinct_of(c, None));
    let labels = listed
        .into_iter()
        .map(|(member, l, carriers)| {
            Ok(label_message(
                l,
                carrier(index, &label_index, member)?,
                carriers,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(Listed { labels, omitted })
}

/// The address of `member`, a carrier of a label in `labels`, as answers
/// name it.
pub(crate) fn carrier(index: &Index, labels: &LabelIndex, member: AddrId) -> Result<String> {
    let name = labels.carrier_name(member, || index.address_string(Some(member)))?;
    Ok(name.to_string())
}

/// At most `MAX_LISTED` of `found`, those with the most carriers first
/// (in order of appearance among equals), and how many are left out.
pub(crate) fn most_carried(
    mut found: Vec<(AddrId, &Label, u64)>,
) -> (Vec<(AddrId, &Label, u64)>, u64) {
    found.sort_by_key(|(_, _, carriers)| std::cmp::Reverse(*carriers));
    let omitted = found.len().saturating_sub(MAX_LISTED) as u64;
    found.truncate(MAX_LISTED);
    (found, omitted)
}

/// `inherited_from`: empty for the address's own label.
pub(crate) fn label_message(l: &Label, inherited_from: String, carriers: u64) -> pb::Label {
    pb::Label {
        carriers,
        label: l.label.clone(),
        category: l.category.name().into(),
        set: l.set.clone(),
        source: l.source.clone(),
        inherited_from,
    }
}

#[cfg(test)]
mod tests {
    use satflow_indexer::labels::Category;
    use satflow_schema::script::{AddrKey, AddrKind};

    use super::*;

    #[test]
    fn at_most_a_hundred_are_listed_the_most_carried_first() {
        let names: Vec<String> = (0..150).map(|i| format!("Entity {i}")).collect();
        let labels: Vec<Label> = names
            .iter()
            .map(|n| Label {
                address: AddrKey::new(AddrKind::P2pkh, &[0; 20]).unwrap(),
                label: n.clone(),
                category: Category::Exchange,
                set: "s".into(),
                source: String::new(),
            })
            .collect();
        // Entity i is carried by (i % 7) + 1 members.
        let found = labels
            .iter()
            .enumerate()
            .map(|(i, l)| (AddrId(i as u64), l, (i % 7) as u64 + 1))
            .collect();
        let (listed, omitted) = most_carried(found);
        assert_eq!((listed.len(), omitted), (100, 50));
        assert!(listed.windows(2).all(|w| w[0].2 >= w[1].2));
        // Equals keep their order: the first of those carried 7 times.
        assert_eq!(listed[0].1.label, "Entity 6");
        assert_eq!(listed.last().unwrap().2, 3);
    }
}
