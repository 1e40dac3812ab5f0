//! Answers over a satflow index: chain status, blocks, transactions and
//! address history. The gRPC server and the CLI both call these.

mod error;
mod reader;

pub use error::QueryError;
pub use reader::{
    AddressSummary, BlockInfo, HistoryEntry, Index, InputInfo, OutputInfo, Status, TxInfo, Utxo,
};
