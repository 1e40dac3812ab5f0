//! `satflow.v1.Risk`: exposure of an address, cluster or transaction to
//! labelled entities, and its risk level.

use std::sync::Arc;

use satflow_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Shared;

pub struct RiskService {
    shared: Arc<Shared>,
}

impl RiskService {
    pub fn new(shared: Arc<Shared>) -> RiskService {
        RiskService { shared }
    }
}

#[tonic::async_trait]
impl pb::risk_server::Risk for RiskService {
    async fn get_exposure(
        &self,
        request: Request<pb::ExposureRequest>,
    ) -> Result<Response<pb::Exposure>, Status> {
        let r = request.get_ref().clone();
        self.shared
            .answer(&request, move |index, _| index.exposure(&r))
    }
}
