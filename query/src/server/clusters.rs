//! `satflow.v1.Clusters`: clusters, their members and history, the
//! largest ones, and why two addresses share one.

use std::sync::Arc;

use satflow_proto::v1 as pb;
use tonic::{Request, Response, Status};

use satflow_schema::ClusterId;

use super::shared::Shared;
use crate::history::HistoryQuery;
use crate::{args, clusters, link, page};

pub struct ClustersService {
    shared: Arc<Shared>,
}

impl ClustersService {
    pub fn new(shared: Arc<Shared>) -> ClustersService {
        ClustersService { shared }
    }
}

#[tonic::async_trait]
impl pb::clusters_server::Clusters for ClustersService {
    async fn get_cluster(
        &self,
        request: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let id = request.get_ref().id.clone();
        self.shared
            .answer(&request, move |index, _| {
                let cluster = match id {
                    Some(pb::get_cluster_request::Id::ClusterId(c)) => ClusterId(c),
                    Some(pb::get_cluster_request::Id::Address(a)) => {
                        let key = args::address("address", &a, index.network())?;
                        clusters::cluster_id_of(index, &key)?
                    }
                    None => return Err(args::invalid("id", "set either address or cluster_id")),
                };
                clusters::cluster(index, cluster)
            })
            .await
    }

    async fn list_cluster_members(
        &self,
        request: Request<pb::ListClusterMembersRequest>,
    ) -> Result<Response<pb::ListClusterMembersResponse>, Status> {
        let r = request.get_ref().clone();
        self.shared
            .answer(&request, move |index, _| {
                let id = ClusterId(r.cluster_id);
                clusters::members(index, id, page::page_size(r.page_size), &r.page_token)
            })
            .await
    }

    async fn list_cluster_history(
        &self,
        request: Request<pb::ListClusterHistoryRequest>,
    ) -> Result<Response<pb::ListAddressHistoryResponse>, Status> {
        let r = request.get_ref().clone();
        let order = args::order(r.order)?;
        self.shared
            .answer(&request, move |index, _| {
                clusters::history(
                    index,
                    ClusterId(r.cluster_id),
                    &HistoryQuery {
                        order,
                        min_height: None,
                        max_height: None,
                        page_size: page::page_size(r.page_size),
                        page_token: &r.page_token,
                    },
                )
            })
            .await
    }

    async fn list_largest_clusters(
        &self,
        request: Request<pb::ListLargestClustersRequest>,
    ) -> Result<Response<pb::ListLargestClustersResponse>, Status> {
        let r = request.get_ref().clone();
        let by = args::ranking(r.by)?;
        self.shared
            .answer(&request, move |index, _| {
                clusters::largest(index, by, page::page_size(r.page_size), &r.page_token)
            })
            .await
    }

    async fn explain_link(
        &self,
        request: Request<pb::ExplainLinkRequest>,
    ) -> Result<Response<pb::LinkPath>, Status> {
        let r = request.get_ref().clone();
        self.shared
            .answer(&request, move |index, deadline| {
                let from = args::address("from_address", &r.from_address, index.network())?;
                let to = args::address("to_address", &r.to_address, index.network())?;
                link::explain(index, &from, &to, || deadline.expired())
            })
            .await
    }
}
