//! Bounds on what requests may take: client deadlines, and how many
//! requests may be in flight at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::Status;

/// How long a request may run when its caller sets no shorter deadline
/// (`satflow serve --max-request-ms`): every loop that asks its deadline
/// is then bounded in time, whatever a caller omits. Two minutes: a trace
/// of the default ceiling, 10 M transactions, streams in ~80 s at the
/// 4 GB bench's pace (1 M in 7.6 s, README: Speed).
pub const MAX_REQUEST: Duration = Duration::from_secs(120);

/// When a request must be answered by: its caller's `grpc-timeout`, if
/// any, and the server's own limit.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    client: Option<Instant>,
    server: Instant,
    /// The server's limit, to name it when it is the one that ran out.
    limit: Duration,
}

/// tonic's own timeout layer answers CANCELLED when the client's timeout
/// fires; ending our work this much earlier makes the caller see
/// DEADLINE_EXCEEDED, the code the gRPC spec asks for.
const AHEAD_OF_TRANSPORT: Duration = Duration::from_millis(2);

impl Deadline {
    pub fn from_metadata(metadata: &MetadataMap, arrived: Instant, limit: Duration) -> Deadline {
        let timeout = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Deadline {
            client: timeout.map(|t| arrived + t.saturating_sub(AHEAD_OF_TRANSPORT)),
            server: arrived + limit,
            limit,
        }
    }

    /// The deadline admission noted when `request` arrived; without it (a
    /// call that bypassed admission), counted from now with the default
    /// limit.
    pub fn of<T>(request: &tonic::Request<T>) -> Deadline {
        request
            .extensions()
            .get::<Deadline>()
            .copied()
            .unwrap_or_else(|| {
                Deadline::from_metadata(request.metadata(), Instant::now(), MAX_REQUEST)
            })
    }

    /// When the request's work must end: the earlier of the two.
    pub fn instant(&self) -> Instant {
        self.client.map_or(self.server, |c| c.min(self.server))
    }

    /// When the caller stops waiting, if it said: all that bounds a
    /// subscription, which is meant to stay open.
    pub fn client(&self) -> Option<Instant> {
        self.client
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.instant()
    }

    /// The status of a request that ran out of time: DEADLINE_EXCEEDED
    /// when its caller's deadline ended it, RESOURCE_EXHAUSTED naming the
    /// limit when the server's did.
    pub fn exceeded(&self) -> Status {
        match self.client {
            Some(c) if c <= self.server => deadline_exceeded(),
            _ => Status::resource_exhausted(format!(
                "the request ran past this server's limit of {} ms (satflow serve --max-request-ms); ask for less, or set a deadline and ask the operator for more",
                self.limit.as_millis()
            )),
        }
    }

    /// `e` as the caller sees it, a deadline named as `exceeded` does.
    pub fn status(&self, e: crate::error::QueryError) -> Status {
        match e {
            crate::error::QueryError::DeadlineExceeded => self.exceeded(),
            e => e.into(),
        }
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
    fn the_earlier_deadline_ends_a_request_and_names_itself() {
        let now = Instant::now();
        let with = |timeout: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", timeout.parse().unwrap());
            m
        };
        let limit = Duration::from_secs(60);
        // No deadline from the caller: the server's limit, named.
        let d = Deadline::from_metadata(&MetadataMap::new(), now, limit);
        assert_eq!((d.instant(), d.client()), (now + limit, None));
        let status = d.exceeded();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert!(status
            .message()
            .contains("60000 ms (satflow serve --max-request-ms)"));
        // A caller's shorter deadline ends it, as DEADLINE_EXCEEDED.
        let d = Deadline::from_metadata(&with("5S"), now, limit);
        assert_eq!(
            d.instant(),
            now + Duration::from_secs(5) - AHEAD_OF_TRANSPORT
        );
        assert_eq!(d.exceeded().code(), tonic::Code::DeadlineExceeded);
        // A longer one is cut to the limit; a subscription keeps it.
        let d = Deadline::from_metadata(&with("2H"), now, limit);
        assert_eq!(d.instant(), now + limit);
        assert_eq!(d.exceeded().code(), tonic::Code::ResourceExhausted);
        assert!(d.client().unwrap() > now + limit);
        // Only a deadline error is renamed.
        let other = d.status(crate::error::QueryError::NotFound("x".into()));
        assert_eq!(other.code(), tonic::Code::NotFound);
        let d = Deadline::from_metadata(&MetadataMap::new(), now, Duration::ZERO);
        assert!(d.expired());
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
