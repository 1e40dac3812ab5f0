//! `satflow.v1.Risk`: exposure of an address, cluster or transaction to
//! labelled entities, and its risk level. Exposure runs four traces, so it
//! takes a trace slot and a blocking thread, like `Taint.Trace`.

use std::sync::Arc;

use satflow_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::limits::{deadline_exceeded, Deadline};
use super::shared::Shared;
use super::taint::Slots;
use crate::error::QueryError;
use crate::risk;

pub struct RiskService {
    shared: Arc<Shared>,
    slots: Slots,
}

impl RiskService {
    pub fn new(shared: Arc<Shared>, slots: Slots) -> RiskService {
        RiskService { shared, slots }
    }
}

#[tonic::async_trait]
impl pb::risk_server::Risk for RiskService {
    async fn get_exposure(
        &self,
        request: Request<pb::ExposureRequest>,
    ) -> Result<Response<pb::Exposure>, Status> {
        let slot = self.slots.take()?;
        let deadline = Deadline::of(&request);
        let r = request.into_inner();
        let shared = Arc::clone(&self.shared);
        let answer = tokio::task::spawn_blocking(move || {
            let _held = slot;
            risk::exposure(&shared.index, &r, &mut || !deadline.expired())
        })
        .await
        .map_err(|e| Status::internal(format!("the exposure failed: {e}")))?;
        match answer {
            Err(QueryError::DeadlineExceeded) => Err(deadline_exceeded()),
            other => other.map(Response::new).map_err(Status::from),
        }
    }
}
