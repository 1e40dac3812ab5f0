//! What every request handler shares: the index, the pool of reader
//! threads requests read it on, and the view lock that lets one request
//! read one state of it while catch-up moves it on.

use std::sync::{Arc, PoisonError, RwLock, TryLockError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::limits::{deadline_exceeded, Deadline};
use crate::chain;
use crate::error::internal;
use crate::index::Index;

/// What every request handler shares.
pub struct Shared {
    pub index: Index,
    /// Read by requests, written by catch-up.
    view: RwLock<()>,
    /// Requests reading the index at once: a request waits for a place
    /// without holding a thread, and reads on a blocking thread, so the
    /// runtime's workers stay free for health checks, refusals and the
    /// transport however long reads take.
    readers: Arc<Semaphore>,
}

impl Shared {
    pub fn new(index: Index, readers: usize) -> Shared {
        Shared {
            index,
            view: RwLock::new(()),
            readers: Arc::new(Semaphore::new(readers.max(1))),
        }
    }

    /// Runs `job` against the index on a reader thread, unless the caller's
    /// deadline passes while the request waits for one or for catch-up.
    pub async fn answer<R, T, F>(
        self: &Arc<Self>,
        request: &Request<R>,
        job: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(&Index, Deadline) -> crate::error::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let deadline = Deadline::of(request);
        let place = Arc::clone(&self.readers).acquire_owned();
        let place = match deadline.instant() {
            Some(by) => tokio::time::timeout_at(by.into(), place)
                .await
                .map_err(|_| deadline_exceeded())?,
            None => place.await,
        }
        .expect("the reader semaphore is never closed");
        let shared = Arc::clone(self);
        let read = move || {
            let _place = place;
            let _view = shared.view.read().unwrap_or_else(PoisonError::into_inner);
            if deadline.expired() {
                return Err(deadline_exceeded());
            }
            job(&shared.index, deadline)
                .map(Response::new)
                .map_err(Status::from)
        };
        // A panic is a bug: the caller gets INTERNAL, the log the detail.
        tokio::task::spawn_blocking(read)
            .await
            .unwrap_or_else(|e| Err(internal(format_args!("a request's reader failed: {e}"))))
    }

    /// Moves to the writer's latest flushed state; returns the tip height.
    /// Holds the view lock only while the store moves; the flow graph and
    /// label index are brought up after, beside the readers.
    /// Waits for a moment without readers rather than queueing for the
    /// lock: std's RwLock favours a waiting writer, which would stop every
    /// new request behind the longest one running.
    pub fn catch_up(&self) -> anyhow::Result<CaughtUp> {
        let held = {
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
            let locked = Instant::now();
            self.index.catch_up()?;
            locked.elapsed()
        };
        self.index.refresh()?;
        Ok(CaughtUp {
            tip: chain::status(&self.index)?.tip_height,
            held,
        })
    }
}

pub struct CaughtUp {
    pub tip: u32,
    /// How long requests were held back while the store moved.
    pub held: Duration,
}
