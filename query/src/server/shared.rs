//! What every request handler shares: the index, and the view lock that
//! lets one request read one state of it while catch-up moves it on.

use std::sync::{PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use tonic::{Request, Response, Status};

use super::limits::{deadline_exceeded, Deadline};
use crate::chain;
use crate::index::Index;

/// What every request handler shares.
pub struct Shared {
    pub index: Index,
    /// Read by requests, written by catch-up.
    view: RwLock<()>,
}

impl Shared {
    pub fn new(index: Index) -> Shared {
        Shared {
            index,
            view: RwLock::new(()),
        }
    }

    /// Runs `job` against the index, unless the caller's deadline passed
    /// while the request waited for a worker or for catch-up.
    pub fn answer<R, T, F>(&self, request: &Request<R>, job: F) -> Result<Response<T>, Status>
    where
        F: FnOnce(&Index, Deadline) -> crate::error::Result<T>,
    {
        let deadline = Deadline::of(request);
        let _view = self.view.read().unwrap_or_else(PoisonError::into_inner);
        if deadline.expired() {
            return Err(deadline_exceeded());
        }
        job(&self.index, deadline)
            .map(Response::new)
            .map_err(Status::from)
    }

    /// Moves to the writer's latest flushed state; returns the tip height.
    /// Waits for a moment without readers rather than queueing for the
    /// lock: std's RwLock favours a waiting writer, which would stop every
    /// new request (and its worker) behind the longest one running.
    pub fn catch_up(&self) -> anyhow::Result<u32> {
        let patience = Instant::now() + Duration::from_millis(200);
        let _view = loop {
            match self.view.try_write() {
                Ok(guard) => break guard,
                Err(TryLockError::Poisoned(e)) => break e.into_inner(),
                Err(TryLockError::WouldBlock) if Instant::now() < patience => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(TryLockError::WouldBlock) => {
                    break self.view.write().unwrap_or_else(PoisonError::into_inner)
                }
            }
        };
        self.index.catch_up()?;
        Ok(chain::status(&self.index)?.tip_height)
    }
}
