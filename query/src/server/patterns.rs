//! `satflow.v1.Patterns`: suspicious patterns over a range of blocks, a
//! page at a time, each page's scan bounded by the server's limit.

use std::sync::Arc;

use satflow_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::shared::Shared;
use crate::patterns::list;

pub struct PatternsService {
    shared: Arc<Shared>,
    max_scan: u64,
}

impl PatternsService {
    pub fn new(shared: Arc<Shared>, max_scan: u64) -> PatternsService {
        PatternsService { shared, max_scan }
    }
}

#[tonic::async_trait]
impl pb::patterns_server::Patterns for PatternsService {
    async fn list_patterns(
        &self,
        request: Request<pb::ListPatternsRequest>,
    ) -> Result<Response<pb::ListPatternsResponse>, Status> {
        let r = request.get_ref().clone();
        let max_scan = self.max_scan;
        self.shared
            .answer(&request, move |index, deadline| {
                list::list(index, &r, max_scan, &mut || !deadline.expired())
            })
            .await
    }
}
