//! Live monitoring: watches (`rules`), the blocks the server evaluates
//! against them as the index grows (`evaluate`), and the alerts raised,
//! kept in the server's own store (`store`) so that a subscriber resumes
//! from the last id it saw.
//!
//! The server's follow task calls `Monitor::update` after each catch-up.
//! Blocks are evaluated once each, in height order, from the tip the
//! monitor first saw (or `--alerts-from`). A block that left the best
//! chain is unwound first, newest first: each of its alerts gets a
//! retraction, and the new branch's blocks are evaluated like any other.

mod evaluate;
pub mod rules;
mod store;

use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use satflow_proto::v1 as pb;
use satflow_schema::Height;
use tokio::sync::watch;

pub use evaluate::Evaluation;
pub use store::AlertStore;

use crate::built::Built;
use crate::error::{QueryError, Result};
use crate::index::Index;
use crate::patterns::Carry;

/// Watches a server keeps at most.
pub const MAX_WATCHES: usize = 10_000;
/// Watches with an exposure rule, at most: each walks back from every
/// transaction paying its subject or category (see `evaluate`).
pub const MAX_EXPOSURE_WATCHES: usize = 100;
/// Blocks one update evaluates at most, so that catching up on a long
/// stretch does not hold the index's state (and the writer's next
/// catch-up) for long.
const BLOCKS_PER_UPDATE: u32 = 64;

pub struct Monitor {
    store: AlertStore,
    /// One update at a time, and one watch change at a time: each reads
    /// the store and then writes what it read depends on.
    updating: Mutex<()>,
    changing: Mutex<()>,
    /// The newest alert id, for subscribers to wait on.
    newest: watch::Sender<u64>,
    /// On a new store: the first height to evaluate (default: the next block).
    from: Option<u32>,
    /// What the last update's pattern scan carried on (see `Carry`).
    carry: Mutex<Option<Carry>>,
}

/// What one update did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Update {
    pub retracted_blocks: u32,
    pub evaluated_blocks: u32,
    /// The last block evaluated.
    pub height: Option<u32>,
    /// Blocks up to the flow graph's tip are left for the next update.
    pub behind: bool,
}

impl Monitor {
    pub fn open(path: &Path, from: Option<u32>) -> anyhow::Result<Monitor> {
        let store = AlertStore::open(path)?;
        let (newest, _) = watch::channel(store.newest_id()?);
        Ok(Monitor {
            store,
            updating: Mutex::new(()),
            changing: Mutex::new(()),
            newest,
            from,
            carry: Mutex::new(None),
        })
    }

    pub fn store(&self) -> &AlertStore {
        &self.store
    }

    /// Told each new newest alert id.
    pub fn newest(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// Unwinds the blocks that left the index's best chain and evaluates
    /// the new ones (up to `BLOCKS_PER_UPDATE`) against the watches.
    pub fn update(&self, index: &Index) -> Result<Update> {
        let _one = self.updating.lock().unwrap_or_else(PoisonError::into_inner);
        let flow = index.flow_appended()?;
        let g = flow.view();
        let Some(flow_tip) = flow.tip().height() else {
            return Ok(Update::default());
        };
        // A block is judged with the clusters that include it.
        let tip = match Built::read(index.store()) {
            Ok(b) => flow_tip.min(b.height.0),
            Err(QueryError::FailedPrecondition(_)) => flow_tip,
            Err(e) => return Err(e),
        };
        let mut done = Update::default();
        // The index's rows decide what left the chain (the flow graph may
        // lag them, or be lowered while a reorg is applied).
        while let Some((h, hash, _)) = self.store.last_block()? {
            if index.store().block(Height(h))?.map(|b| b.hash) == Some(hash) {
                break;
            }
            self.tell(self.store.retract_last_block(now_ms())?);
            done.retracted_blocks += 1;
        }
        let next = match (self.store.last_block()?, self.store.from_height()?) {
            (Some((h, _, _)), _) => h + 1,
            (None, Some(from)) => from,
            (None, None) => {
                let first = index.store().base_height()?.0;
                let from = self.from.unwrap_or(tip + 1).max(first);
                self.store.set_from_height(from)?;
                from
            }
        };
        let last = tip.min(next.saturating_add(BLOCKS_PER_UPDATE - 1));
        if next <= last {
            let watches = self.watches(index)?;
            let carried = self
                .carry
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            let mut e = Evaluation::new(index, g, &watches, carried)?;
            for h in next..=last {
                let mut alerts = e.block(h)?;
                let now = now_ms();
                for a in &mut alerts {
                    a.raised_at_ms = now;
                }
                let hash = index.block_row(Height(h))?.hash;
                self.tell(self.store.commit_block(h, hash, alerts)?);
                done.evaluated_blocks += 1;
            }
            *self.carry.lock().unwrap_or_else(PoisonError::into_inner) = e.into_carry()?;
        }
        done.height = self.store.last_block()?.map(|(h, _, _)| h);
        done.behind = last < tip;
        Ok(done)
    }

    /// Wakes subscribers when there is a new newest alert.
    fn tell(&self, newest: u64) {
        self.newest
            .send_if_modified(|n| std::mem::replace(n, newest) != newest);
    }

    /// The stored watches, parsed.
    fn watches(&self, index: &Index) -> Result<Vec<rules::Watch>> {
        let mut out = Vec::new();
        for w in self.store.watches()? {
            match rules::parse(&w, index.network()) {
                Ok(p) => out.push(p),
                // Checked when put; a later binary may read fields otherwise.
                Err(e) => tracing::warn!("watch {:?} skipped: {e}", w.name),
            }
        }
        Ok(out)
    }

    /// Checks and stores `w` (replacing the watch of its name).
    pub fn put_watch(&self, index: &Index, w: pb::Watch) -> Result<pb::Watch> {
        let parsed = rules::parse(&w, index.network())?;
        if let rules::Subject::Cluster(id) = parsed.subject {
            Built::read(index.store())?.check_cluster(index.store(), id)?;
        }
        let _one = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let others: Vec<pb::Watch> = self
            .store
            .watches()?
            .into_iter()
            .filter(|o| o.name != w.name)
            .collect();
        let exposure = |w: &pb::Watch| matches!(w.rule, Some(pb::watch::Rule::Exposure(_)));
        if others.len() >= MAX_WATCHES {
            return Err(QueryError::ResourceExhausted(format!(
                "this server keeps at most {MAX_WATCHES} watches; delete some first"
            )));
        }
        if exposure(&w) && others.iter().filter(|o| exposure(o)).count() >= MAX_EXPOSURE_WATCHES {
            return Err(QueryError::ResourceExhausted(format!(
                "this server keeps at most {MAX_EXPOSURE_WATCHES} exposure watches; delete some first"
            )));
        }
        self.store.put_watch(&w)?;
        Ok(w)
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
