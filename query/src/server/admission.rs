//! The checks every satflow call passes before its body is even decoded:
//! the bearer token, when the server has one, a deadline that has not
//! already run out, and room among the requests in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::{Request, Status};

use super::limits::{Deadline, InFlight};

#[derive(Clone)]
pub struct Admission {
    token: Option<Arc<str>>,
    in_flight: Arc<InFlight>,
    /// How long a request may run at most (`Deadline`).
    max_request: Duration,
}

impl Admission {
    pub fn new(token: Option<String>, max_in_flight: usize, max_request: Duration) -> Admission {
        Admission {
            token: token.map(Into::into),
            in_flight: InFlight::new(max_in_flight),
            max_request,
        }
    }
}

impl tonic::service::Interceptor for Admission {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(expected) = &self.token {
            let given = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            match given {
                Some(t) if same(t.as_bytes(), expected.as_bytes()) => {}
                Some(_) => return Err(Status::unauthenticated("wrong bearer token")),
                None => {
                    return Err(Status::unauthenticated(
                        "this server requires `authorization: Bearer <token>`",
                    ))
                }
            }
        }
        // Answered here, at once, rather than racing tonic's own timer
        // (which would answer CANCELLED).
        let deadline =
            Deadline::from_metadata(request.metadata(), Instant::now(), self.max_request);
        if deadline.expired() {
            return Err(deadline.exceeded());
        }
        // Both carried by the request until its handler returns: the
        // deadline counts from arrival, not from when a worker is free.
        let place = self.in_flight.enter()?;
        request.extensions_mut().insert(place);
        request.extensions_mut().insert(deadline);
        Ok(request)
    }
}

/// Compares in time independent of where the first difference is, so the
/// token cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
