//! `satflow.v1.Risk`: exposure of an address, cluster or transaction to
//! labelled entities and its risk level, and the screening of a
//! transaction not yet mined. Both run traces, so each takes a trace slot
//! and its low-priority thread, like `Taint.Trace`.

use std::sync::Arc;

use satflow_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::limits::Deadline;
use super::shared::Shared;
use super::taint::{Slots, TraceBounds};
use crate::error::QueryError;
use crate::index::Index;
use crate::risk::Asked;
use crate::{risk, screen};

pub struct RiskService {
    shared: Arc<Shared>,
    slots: Slots,
    bounds: TraceBounds,
}

impl RiskService {
    pub fn new(shared: Arc<Shared>, slots: Slots, bounds: TraceBounds) -> RiskService {
        RiskService {
            shared,
            slots,
            bounds,
        }
    }
}

impl RiskService {
    /// Refuses a request whose knobs are bad or above the server's limits
    /// before it takes a trace slot (so it is told why, not that the
    /// server is busy).
    fn check(
        &self,
        policy: i32,
        hops: u32,
        max_transactions: u64,
        rules: &[pb::RiskRule],
    ) -> Result<(), Status> {
        Asked::new(policy, hops, max_transactions, rules, self.bounds.max_txs)
            .map(drop)
            .map_err(Status::from)
    }

    /// Runs `job` on a trace thread holding a trace slot (it runs
    /// traces), with the server's trace bounds and the caller's deadline.
    async fn traced<R, T, F>(&self, request: Request<R>, job: F) -> Result<Response<T>, Status>
    where
        R: Send + 'static,
        T: Send + 'static,
        F: FnOnce(&Index, &R, TraceBounds, &mut dyn FnMut() -> bool) -> crate::error::Result<T>
            + Send
            + 'static,
    {
        let slot = self.slots.take()?;
        let deadline = Deadline::of(&request);
        let r = request.into_inner();
        let shared = Arc::clone(&self.shared);
        let bounds = self.bounds;
        let answer = self
            .slots
            .threads
            .run(move || {
                let _held = slot;
                job(shared.index(), &r, bounds, &mut || !deadline.expired())
            })
            .await
            .unwrap_or_else(|| {
                Err(QueryError::Internal(anyhow::anyhow!(
                    "a risk task panicked"
                )))
            });
        answer.map(Response::new).map_err(|e| deadline.status(e))
    }
}

#[tonic::async_trait]
impl pb::risk_server::Risk for RiskService {
    async fn get_exposure(
        &self,
        request: Request<pb::ExposureRequest>,
    ) -> Result<Response<pb::Exposure>, Status> {
        let r = request.get_ref();
        self.check(r.policy, r.hops, r.max_transactions, &r.rules)?;
        self.traced(request, |index, r, b, alive| {
            risk::exposure(index, r, b.max_txs, b.max_listed, alive)
        })
        .await
    }

    async fn screen_transaction(
        &self,
        request: Request<pb::ScreenTransactionRequest>,
    ) -> Result<Response<pb::Screening>, Status> {
        let r = request.get_ref();
        self.check(r.policy, r.hops, r.max_transactions, &r.rules)?;
        self.traced(request, |index, r, b, alive| {
            screen::screen(index, r, b.max_txs, b.max_listed, alive)
        })
        .await
    }
}
