//! What can go wrong answering a query, in terms a caller can act on, and
//! the gRPC status code each maps to.

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The request itself is wrong: a malformed address, txid or token.
    /// Messages start with the request field at fault.
    #[error("{0}")]
    InvalidArgument(String),
    /// Well-formed, but the index holds no such thing.
    #[error("{0}")]
    NotFound(String),
    /// The server cannot answer this until something outside it changes:
    /// the blk files for raw transactions are gone or were rewritten, or
    /// the clusters were never built.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The work would exceed its budget (e.g. a link search visiting too
    /// many transactions); the message says what was found so far.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The caller's deadline passed while the work was under way.
    #[error("the request's deadline passed before it was answered")]
    DeadlineExceeded,
    /// The index could not be read.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<satflow_schema::RowError> for QueryError {
    fn from(e: satflow_schema::RowError) -> Self {
        QueryError::Internal(e.into())
    }
}

impl From<QueryError> for tonic::Status {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::InvalidArgument(m) => tonic::Status::invalid_argument(m),
            QueryError::NotFound(m) => tonic::Status::not_found(m),
            QueryError::FailedPrecondition(m) => tonic::Status::failed_precondition(m),
            QueryError::ResourceExhausted(m) => tonic::Status::resource_exhausted(m),
            QueryError::DeadlineExceeded => {
                tonic::Status::deadline_exceeded(QueryError::DeadlineExceeded.to_string())
            }
            QueryError::Internal(e) => {
                tracing::error!("internal error: {e:#}");
                tonic::Status::internal(format!("{e:#}"))
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, QueryError>;
