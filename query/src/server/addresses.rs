//! `satflow.v1.Addresses`: summaries (one or many), history, unspent outputs.

use std::sync::Arc;

use satflow_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::shared::Shared;
use crate::addresses;
use crate::error::QueryError;
use crate::history::HistoryQuery;
use crate::{args, page};

/// Addresses per batch call; more is INVALID_ARGUMENT.
pub const MAX_BATCH: usize = 1000;

pub struct AddressesService {
    shared: Arc<Shared>,
}

impl AddressesService {
    pub fn new(shared: Arc<Shared>) -> AddressesService {
        AddressesService { shared }
    }
}

#[tonic::async_trait]
impl pb::addresses_server::Addresses for AddressesService {
    async fn get_address_summary(
        &self,
        request: Request<pb::GetAddressSummaryRequest>,
    ) -> Result<Response<pb::AddressSummary>, Status> {
        let given = request.get_ref().address.clone();
        self.shared
            .answer(&request, move |index, _| {
                let key = args::address("address", &given, index.network())?;
                addresses::summary_as_requested(index, &key, &given)?.ok_or_else(|| {
                    QueryError::NotFound(format!("address {given} has no history in the index"))
                })
            })
            .await
    }

    async fn batch_get_address_summaries(
        &self,
        request: Request<pb::BatchGetAddressSummariesRequest>,
    ) -> Result<Response<pb::BatchGetAddressSummariesResponse>, Status> {
        let addresses = request.get_ref().addresses.clone();
        if addresses.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "addresses: {} given, at most {MAX_BATCH} per call",
                addresses.len()
            )));
        }
        self.shared
            .answer(&request, move |index, deadline| {
                // Parse all first: a malformed entry fails the call before any work.
                let keys = addresses
                    .iter()
                    .enumerate()
                    .map(|(i, a)| args::address(&format!("addresses[{i}]"), a, index.network()))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut results = Vec::with_capacity(keys.len());
                for (address, key) in addresses.into_iter().zip(&keys) {
                    if deadline.expired() {
                        return Err(QueryError::DeadlineExceeded);
                    }
                    let summary = addresses::summary_as_requested(index, key, &address)?;
                    results.push(pb::AddressResult {
                        address,
                        found: summary.is_some(),
                        summary,
                    });
                }
                Ok(pb::BatchGetAddressSummariesResponse { results })
            })
            .await
    }

    async fn list_address_history(
        &self,
        request: Request<pb::ListAddressHistoryRequest>,
    ) -> Result<Response<pb::ListAddressHistoryResponse>, Status> {
        let r = request.get_ref().clone();
        let order = args::order(r.order)?;
        args::height_range(r.min_height, r.max_height)?;
        self.shared
            .answer(&request, move |index, _| {
                let key = args::address("address", &r.address, index.network())?;
                addresses::history(
                    index,
                    &key,
                    &HistoryQuery {
                        order,
                        min_height: r.min_height,
                        max_height: r.max_height,
                        page_size: page::page_size(r.page_size),
                        page_token: &r.page_token,
                    },
                )
            })
            .await
    }

    async fn list_address_utxos(
        &self,
        request: Request<pb::ListAddressUtxosRequest>,
    ) -> Result<Response<pb::ListAddressUtxosResponse>, Status> {
        let r = request.get_ref().clone();
        self.shared
            .answer(&request, move |index, _| {
                let key = args::address("address", &r.address, index.network())?;
                addresses::utxos(index, &key, page::page_size(r.page_size), &r.page_token)
            })
            .await
    }
}
