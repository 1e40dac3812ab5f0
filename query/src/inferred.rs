//! What `satflow categorise` inferred of clusters from their behaviour,
//! as readers see it: the store as of the last refresh (`InferredSlot`),
//! an inference as callers get it beside a summary or cluster, and, where
//! the operator opted in, inferences as labels of set `inferred` (so that
//! stop sets, exposure and watches by category count them).

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use satflow_indexer::labels::Label;
use satflow_indexer::services::{self, Inferred, Service, Store as Inferences};
use satflow_indexer::Store;
use satflow_proto::v1 as pb;
use satflow_schema::{cf, AddrId, ClusterKey};

use crate::error::Result;

/// The store of inferences as last loaded (None before a first run of
/// `satflow categorise`), with the length and time of the file it was
/// loaded from: a catch-up maps it again only when a run replaced it.
#[derive(Default)]
pub(crate) struct InferredSlot(RwLock<(Option<Arc<Inferences>>, Option<Stamp>)>);

type Stamp = (u64, std::time::SystemTime);

impl InferredSlot {
    pub fn get(&self) -> Option<Arc<Inferences>> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Maps the store again when a new run replaced it. A store that
    /// cannot be read is logged once and the previous one kept.
    pub fn reload(&self, db: &Path) {
        let stamp = std::fs::metadata(services::path(db))
            .and_then(|m| Ok((m.len(), m.modified()?)))
            .ok();
        if stamp == self.0.read().unwrap_or_else(PoisonError::into_inner).1 {
            return;
        }
        let mut slot = self.0.write().unwrap_or_else(PoisonError::into_inner);
        match Inferences::open(db) {
            Ok(new) => slot.0 = new.map(Arc::new),
            Err(e) => tracing::warn!("inferred categories left as they were: {e:#}"),
        }
        slot.1 = stamp;
    }
}

/// The answer for cluster `key`: None when not categorised.
pub(crate) fn message(store: Option<&Inferences>, key: ClusterKey) -> Option<pb::InferredCategory> {
    let store = store?;
    let r = store.get(key)?;
    Some(pb::InferredCategory {
        category: r.service.name().into(),
        confidence: u32::from(r.confidence),
        evidence: r.evidence(),
        as_of_height: store.as_of().height.0,
        linked_cluster_id: r.features.linked_to.map(|c| c.0),
    })
}

/// Which inferences act as labels: those of a service at or above
/// `min_confidence` percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsLabels {
    pub min_confidence: u8,
}

/// The inferences `as_labels` admits, each as a label on the address its
/// cluster is keyed by (the one `ClusterKey::holder` names), with that
/// address's number.
pub(crate) fn labels(
    store: &Store,
    inferences: &Inferences,
    as_labels: AsLabels,
) -> Result<Vec<(AddrId, Label)>> {
    let admitted: Vec<Inferred> = Service::SERVICES
        .into_iter()
        .flat_map(|s| inferences.clusters_of(s, as_labels.min_confidence))
        .filter_map(|key| inferences.get(key))
        .collect();
    let holders: Vec<AddrId> = admitted.iter().map(|r| r.key.holder()).collect();
    let keys = store.multi_get::<cf::Addrs>(&holders)?;
    let height = inferences.as_of().height.0;
    Ok(admitted
        .iter()
        .zip(holders)
        .zip(keys)
        .filter_map(|((r, holder), key)| {
            let category = r.service.category()?;
            Some((
                holder,
                Label {
                    address: key?,
                    label: format!("{} (inferred, cluster {})", r.service.name(), r.id.0),
                    category,
                    set: services::LABEL_SET.into(),
                    source: format!(
                        "satflow categorise as of height {height}, confidence {}%",
                        r.confidence
                    ),
                },
            ))
        })
        .collect())
}
