//! The checks every satflow call passes before its body is even decoded:
//! the bearer token, when the server has one, and a deadline that has not
//! already run out.

use std::time::Instant;

use tonic::{Request, Status};

use super::limits::{deadline_exceeded, Deadline};

#[derive(Clone)]
pub struct Admission {
    token: Option<std::sync::Arc<str>>,
}

impl Admission {
    pub fn new(token: Option<String>) -> Admission {
        Admission {
            token: token.map(Into::into),
        }
    }
}

impl tonic::service::Interceptor for Admission {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
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
        if Deadline::from_metadata(request.metadata(), Instant::now()).expired() {
            return Err(deadline_exceeded());
        }
        Ok(request)
    }
}

/// Compares in time independent of where the first difference is, so the
/// token cannot be guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
