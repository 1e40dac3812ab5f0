//! The query API called in-process, for tests that check index contents
//! rather than the server: string arguments, every page collected.

use std::path::Path;

use satflow_indexer::{address, Access};
use satflow_proto::v1 as pb;
use satflow_query::{addresses, chain, BlockId, HistoryQuery, Index, Order, QueryError};

pub struct Q(pub Index);

impl Q {
    pub fn open(db: &Path) -> Q {
        Q(Index::open(db, Access::ReadOnly).unwrap())
    }

    pub fn status(&self) -> pb::ChainStatus {
        chain::status(&self.0).unwrap()
    }

    pub fn tx(&self, txid: &str) -> pb::Transaction {
        chain::transaction(&self.0, &txid.parse().unwrap(), usize::MAX, "")
            .unwrap_or_else(|e| panic!("{txid}: {e}"))
    }

    /// A block with all its txids.
    pub fn block(&self, height: u32) -> pb::Block {
        chain::block(&self.0, &BlockId::Height(height), usize::MAX, "").unwrap()
    }

    /// None for an address the chain never used.
    pub fn summary(&self, addr: &str) -> Result<Option<pb::AddressSummary>, QueryError> {
        let key = address::parse(addr, self.0.network())
            .map_err(|e| QueryError::InvalidArgument(e.to_string()))?;
        addresses::summary(&self.0, &key)
    }

    /// Every unspent output of the address, in chain order, read
    /// `page_size` at a time.
    pub fn utxos(&self, addr: &str, page_size: usize) -> Vec<pb::Utxo> {
        let key = address::parse(addr, self.0.network()).unwrap();
        let mut token = String::new();
        let mut out = Vec::new();
        loop {
            let page = addresses::utxos(&self.0, &key, page_size, &token).unwrap();
            out.extend(page.utxos);
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }

    /// The whole history, in chain order.
    pub fn history(&self, addr: &str) -> Vec<pb::HistoryEntry> {
        let key = address::parse(addr, self.0.network()).unwrap();
        let mut token = String::new();
        let mut out = Vec::new();
        loop {
            let page = addresses::history(
                &self.0,
                &key,
                &HistoryQuery {
                    order: Order::OldestFirst,
                    min_height: None,
                    max_height: None,
                    page_size: 1000,
                    page_token: &token,
                },
            )
            .unwrap();
            out.extend(page.entries);
            if page.next_page_token.is_empty() {
                return out;
            }
            token = page.next_page_token;
        }
    }
}
