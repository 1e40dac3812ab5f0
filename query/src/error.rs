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
            QueryError::InvalidArgument(m) => tonic::Status::invalid_argument(cut(m)),
            QueryError::NotFound(m) => tonic::Status::not_found(cut(m)),
            QueryError::FailedPrecondition(m) => tonic::Status::failed_precondition(cut(m)),
            QueryError::ResourceExhausted(m) => tonic::Status::resource_exhausted(cut(m)),
            QueryError::DeadlineExceeded => {
                tonic::Status::deadline_exceeded(QueryError::DeadlineExceeded.to_string())
            }
            QueryError::Internal(e) => internal(format_args!("{e:#}")),
        }
    }
}

/// The most of a message a caller gets back, in bytes.
const MAX_MESSAGE: usize = 1024;

/// `m`, cut to `MAX_MESSAGE` bytes: messages quote what the caller sent,
/// which may be megabytes, and a `grpc-message` trailer is a header.
fn cut(mut m: String) -> String {
    if m.len() > MAX_MESSAGE {
        let end = (0..=MAX_MESSAGE)
            .rev()
            .find(|&i| m.is_char_boundary(i))
            .unwrap_or(0);
        let more = m.len() - end;
        m.truncate(end);
        m += &format!("… ({more} bytes more)");
    }
    m
}

/// INTERNAL for a remote caller: the detail (paths, RocksDB messages)
/// stays in the server's log, and the caller gets an id to quote that
/// finds it there.
pub fn internal(detail: std::fmt::Arguments<'_>) -> tonic::Status {
    let id = incident_id();
    tracing::error!(incident = %id, "internal error: {detail}");
    tonic::Status::internal(format!(
        "internal error {id}; the server's log has the detail"
    ))
}

/// Unique within a process, and across restarts by its start time:
/// `<process start, unix seconds, hex>-<sequence>`.
fn incident_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static STARTED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let started = *STARTED.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    });
    format!("{started:x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

pub type Result<T> = std::result::Result<T, QueryError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_reach_callers_without_their_detail() {
        let e = QueryError::Internal(anyhow::anyhow!(
            "reading /var/lib/satflow/db/000123.sst: Corruption: block checksum mismatch"
        ));
        let first = tonic::Status::from(e);
        let second = tonic::Status::from(QueryError::Internal(anyhow::anyhow!("again")));
        assert_eq!(first.code(), tonic::Code::Internal);
        assert!(!first.message().contains("/var/lib"), "{}", first.message());
        assert!(
            !first.message().contains("Corruption"),
            "{}",
            first.message()
        );
        assert!(first.message().starts_with("internal error "));
        // Each incident has its own id.
        assert_ne!(first.message(), second.message());
    }

    #[test]
    fn a_message_quoting_megabytes_reaches_callers_cut() {
        let quoted = "é".repeat(600_000);
        let e = QueryError::InvalidArgument(format!("address: {quoted:?} is not an address"));
        let status = tonic::Status::from(e);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let m = status.message();
        assert!(m.starts_with("address: \"éé"), "{}", &m[..40]);
        assert!(m.len() < MAX_MESSAGE + 40, "{} bytes", m.len());
        assert!(m.ends_with(" bytes more)"), "{}", &m[m.len() - 40..]);
        let short = tonic::Status::from(QueryError::NotFound("no such block".into()));
        assert_eq!(short.message(), "no such block");
    }
}
