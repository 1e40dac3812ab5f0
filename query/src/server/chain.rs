//! `satflow.v1.Chain`: status, blocks, transactions.

use std::sync::Arc;

use satflow_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::shared::Shared;
use crate::{args, chain, page};

/// A transaction's inputs, and outputs, per page when the request leaves
/// page_size at 0: nearly every transaction whole, and a 100,000-output
/// one in pages of ~0.3 MB.
const TX_PAGE: usize = 1000;

pub struct ChainService {
    shared: Arc<Shared>,
}

impl ChainService {
    pub fn new(shared: Arc<Shared>) -> ChainService {
        ChainService { shared }
    }
}

#[tonic::async_trait]
impl pb::chain_server::Chain for ChainService {
    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::ChainStatus>, Status> {
        self.shared
            .answer(&request, |index, _| chain::status(index))
            .await
    }

    async fn get_block(
        &self,
        request: Request<pb::GetBlockRequest>,
    ) -> Result<Response<pb::Block>, Status> {
        let r = request.get_ref();
        let id = args::block_id(r.id.as_ref())?;
        let size = page::page_size(r.tx_page_size);
        let token = r.tx_page_token.clone();
        self.shared
            .answer(&request, move |index, _| {
                chain::block(index, &id, size, &token)
            })
            .await
    }

    async fn get_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::Transaction>, Status> {
        let r = request.get_ref();
        let txid = args::txid("txid", &r.txid)?;
        let size = page::page_size_or(r.page_size, TX_PAGE);
        let token = r.page_token.clone();
        self.shared
            .answer(&request, move |index, _| {
                chain::transaction(index, &txid, size, &token)
            })
            .await
    }

    async fn get_raw_transaction(
        &self,
        request: Request<pb::GetTransactionRequest>,
    ) -> Result<Response<pb::RawTransaction>, Status> {
        let txid = args::txid("txid", &request.get_ref().txid)?;
        self.shared
            .answer(&request, move |index, _| {
                chain::raw_transaction(index, &txid)
            })
            .await
    }
}
