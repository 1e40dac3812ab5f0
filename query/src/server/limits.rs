//! Bounds on the work one request may take: client deadlines and a fixed
//! number of index readers, with a short queue in front of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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
    pub const NONE: Deadline = Deadline(None);

    pub fn from_metadata(metadata: &MetadataMap, arrived: Instant) -> Deadline {
        let timeout = metadata
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        Deadline(timeout.map(|t| arrived + t.saturating_sub(AHEAD_OF_TRANSPORT)))
    }

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
    Status::deadline_exceeded("the request's deadline passed before it was answered")
}

/// Admits at most `readers` requests to the index at once; up to `queue`
/// more wait for a turn (until their deadline), and beyond that a request
/// is refused with RESOURCE_EXHAUSTED at once rather than piling up.
pub struct Gate {
    readers: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
}

/// A reader's place, given back when dropped: it moves with the work onto
/// its thread, so work that outlives its caller's deadline still counts.
pub struct Turn {
    _permit: OwnedSemaphorePermit,
}

impl Gate {
    pub fn new(readers: usize, queue: usize) -> Gate {
        Gate {
            readers: Arc::new(Semaphore::new(readers.max(1))),
            waiting: AtomicUsize::new(0),
            queue,
        }
    }

    pub async fn enter(&self, deadline: Deadline) -> Result<Turn, Status> {
        if let Ok(permit) = Arc::clone(&self.readers).try_acquire_owned() {
            return Ok(Turn { _permit: permit });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Status::resource_exhausted(format!(
                "server busy: {} requests already waiting for an index reader; retry with backoff",
                self.queue
            )));
        }
        let acquire = Arc::clone(&self.readers).acquire_owned();
        let permit = match deadline.instant() {
            Some(d) => tokio::time::timeout_at(d.into(), acquire).await.ok(),
            None => Some(acquire.await),
        };
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match permit {
            Some(p) => Ok(Turn {
                _permit: p.expect("the semaphore is never closed"),
            }),
            None => Err(deadline_exceeded()),
        }
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

    #[tokio::test]
    async fn a_full_queue_is_refused_and_a_waiter_times_out() {
        let gate = Gate::new(1, 1);
        let held = gate.enter(Deadline::NONE).await.unwrap();
        let soon = Deadline(Some(Instant::now() + Duration::from_millis(30)));
        let waiter = gate.enter(soon);
        tokio::pin!(waiter);
        // The waiter takes the only queue place...
        assert!(futures_poll_once(waiter.as_mut()).await.is_none());
        // ...so the next request is refused at once...
        let refused = gate.enter(Deadline::NONE).await.err().unwrap();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        // ...and the waiter gives up at its deadline.
        let late = waiter.await.err().unwrap();
        assert_eq!(late.code(), tonic::Code::DeadlineExceeded);
        drop(held);
        assert!(gate.enter(Deadline::NONE).await.is_ok());
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::time::timeout(Duration::from_millis(5), f).await.ok()
    }
}
