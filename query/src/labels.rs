//! Labels as callers see them: on an address itself, inherited from the
//! other addresses of its cluster, and per cluster. The label index
//! (`label_index`) knows which cluster each labeled address is in.

use satflow_indexer::labels::{self, Label};
use satflow_proto::v1 as pb;
use satflow_schema::script::AddrKey;
use satflow_schema::{AddrId, ClusterId};

use crate::built;
use crate::error::Result;
use crate::index::Index;

/// An address's own labels, then those of the rest of its cluster.
pub(crate) fn of_address(index: &Index, key: &AddrKey, id: AddrId) -> Result<Vec<pb::Label>> {
    let label_index = index.label_index();
    if label_index.is_empty() {
        return Ok(Vec::new());
    }
    let mut out: Vec<pb::Label> = match label_index.is_labeled(id) {
        true => labels::of(index.store(), key)?
            .iter()
            .map(|l| label_message(l, String::new()))
            .collect(),
        false => Vec::new(),
    };
    let c = built::cluster_or_self(index.store(), id, label_index.cover())?;
    for (member, l) in label_index.of_cluster(c).iter().filter(|(m, _)| *m != id) {
        out.push(label_message(l, index.address_string(Some(*member))?));
    }
    Ok(out)
}

/// The labels of cluster `c`'s members.
pub(crate) fn of_cluster(index: &Index, c: ClusterId) -> Result<Vec<pb::Label>> {
    index
        .label_index()
        .of_cluster(c)
        .iter()
        .map(|(member, l)| Ok(label_message(l, index.address_string(Some(*member))?)))
        .collect()
}

/// `inherited_from`: empty for the address's own label.
pub(crate) fn label_message(l: &Label, inherited_from: String) -> pb::Label {
    pb::Label {
        label: l.label.clone(),
        category: l.category.name().into(),
        set: l.set.clone(),
        source: l.source.clone(),
        inherited_from,
    }
}
