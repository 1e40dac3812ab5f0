//! Bounds on what requests may take: client deadlines, and how many
//! requests may be in flight at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::Status;

/// When a request must be answered by, from its `grpc-timeout` header.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Option<Instant>);

/// tonic's own timeout layer answers CANCELLED when the client's timeout
/// fires; ending our work this much earlier makes the caller see
/// DEADLINE_EXCEEDED, the code the gRPC spec asks for.
const AHEAD_OF_TRANSPORT: Duration = Duration::from_millis(2);

impl Deadline {
    pub fn from_metadata(metadata: &MetadataMap, arrived: Instant) -> Deadline {
        let timeout = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Deadline(timeout.map(|t| arrived + t.saturating_sub(AHEAD_OF_TRANSPORT)))
    }

    /// The deadline admission noted when `request` arrived; without it (a
    /// call that bypassed admission), counted from now.
    pub fn of<T>(request: &tonic::Request<T>) -> Deadline {
        request
            .extensions()
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| Deadline::from_metadata(request.metadata(), Instant::now()))
    }

    /// When the caller stops waiting, if it said.
    pub fn instant(&self) -> Option<Instant> {
        self.0
    }

    pub fn expired(&self) -> bool {
        self.0.is_some_and(|d| Instant::now() >= d)
    }
}

/// `grpc-timeout`: at most 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

pub fn deadline_exceeded() -> Status {
    crate::error::QueryError::DeadlineExceeded.into()
}

/// Requests accepted and not yet answered, at most `limit`: beyond that a
/// request is refused at once with RESOURCE_EXHAUSTED rather than joining
/// a backlog it would only time out in. Counted from admission (before a
/// worker picks the request up) until its handler returns.
pub struct InFlight {
    count: AtomicUsize,
    limit: usize,
}

/// One request's place, given back when the last clone drops (the request
/// carries it in its extensions).
#[derive(Clone)]
pub struct Place {
    _inner: Arc<PlaceInner>,
}

struct PlaceInner(Arc<InFlight>);

impl Drop for PlaceInner {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    pub fn new(limit: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            count: AtomicUsize::new(0),
            limit: limit.max(1),
        })
    }

    pub fn enter(self: &Arc<Self>) -> Result<Place, Status> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "server busy: {} requests already in progress; retry with backoff",
                self.limit
            )));
        }
        Ok(Place {
            _inner: Arc::new(PlaceInner(Arc::clone(self))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1n"), Some(Duration::from_nanos(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        for bad in ["", "S", "123456789S", "5x", "-5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn requests_beyond_the_limit_are_refused_until_one_finishes() {
        let in_flight = InFlight::new(2);
        let first = in_flight.enter().unwrap();
        let second = in_flight.enter().unwrap();
        let refused = in_flight.enter().err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // A place is held until its last clone drops.
        let copy = first.clone();
        drop(first);
        assert!(in_flight.enter().is_err());
        drop(copy);
        let third = in_flight.enter().unwrap();
        drop((second, third));
        assert_eq!(in_flight.count.load(Ordering::Acquire), 0);
    }
}
