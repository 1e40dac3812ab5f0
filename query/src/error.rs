//! What can go wrong answering a query, in terms a caller can act on.

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong: a malformed address, txid or height.
    #[error("{0}")]
    InvalidArgument(String),
    /// Well-formed, but the index holds no such thing.
    #[error("{0}")]
    NotFound(String),
    /// The index could not be read.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<satflow_indexer::schema::RowError> for QueryError {
    fn from(e: satflow_indexer::schema::RowError) -> Self {
        QueryError::Internal(e.into())
    }
}

pub type Result<T> = std::result::Result<T, QueryError>;
