//! What every request handler shares: the index, the pool of reader
//! threads requests read it on, and how catch-up moves the index on
//! without holding requests back. The index is opened twice (`Index::twin`):
//! requests read the active one, each under a read lock of its view, while
//! catch-up moves the other one, under its write lock, and then makes it
//! the active one. So a request reads one state of the index throughout,
//! and waits for no catch-up; catch-up waits for the requests still
//! reading the handle it is about to move, which came before the last swap.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use satflow_indexer::store::RocksMemory;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use super::limits::Deadline;
use crate::chain;
use crate::error::internal;
use crate::index::Index;

/// What every request handler shares.
pub struct Shared {
    /// Two handles on one index; `active` is the one requests start on.
    indexes: [Index; 2],
    active: AtomicUsize,
    /// Per handle: read by requests, written by catch-up.
    views: [RwLock<()>; 2],
    /// Requests reading the index at once: a request waits for a place
    /// without holding a thread, and reads on a blocking thread, so the
    /// runtime's workers stay free for health checks, refusals and the
    /// transport however long reads take.
    readers: Arc<Semaphore>,
}

impl Shared {
    /// `index` must be a follower (`Access::Follow`): it is opened twice.
    pub fn new(index: Index, readers: usize) -> anyhow::Result<Shared> {
        let twin = index.twin()?;
        Ok(Shared {
            indexes: [index, twin],
            active: AtomicUsize::new(0),
            views: Default::default(),
            readers: Arc::new(Semaphore::new(readers.max(1))),
        })
    }

    /// The index as of the last catch-up.
    pub fn index(&self) -> &Index {
        &self.indexes[self.active.load(Ordering::Acquire)]
    }

    /// Block cache hits and misses of both handles.
    pub fn block_cache_counts(&self) -> Option<(u64, u64)> {
        let [a, b] = &self.indexes;
        let (a, b) = (
            a.store().block_cache_counts()?,
            b.store().block_cache_counts()?,
        );
        Some((a.0 + b.0, a.1 + b.1))
    }

    /// What RocksDB holds in memory for both handles: their table readers,
    /// and the block cache they share.
    pub fn rocks_memory(&self) -> anyhow::Result<RocksMemory> {
        let [a, b] = &self.indexes;
        let (a, b) = (a.store().memory()?, b.store().memory()?);
        Ok(RocksMemory {
            table_readers: a.table_readers + b.table_readers,
            ..a
        })
    }

    /// The active index, held so that no catch-up moves it until the
    /// guard is dropped.
    fn reading(&self) -> (&Index, RwLockReadGuard<'_, ()>) {
        loop {
            let i = self.active.load(Ordering::Acquire);
            let view = self.views[i].read().unwrap_or_else(PoisonError::into_inner);
            // A swap between the load and the lock may have let catch-up
            // take this handle: read the other then.
            if self.active.load(Ordering::Acquire) == i {
                return (&self.indexes[i], view);
            }
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
        let place = tokio::time::timeout_at(deadline.instant().into(), place)
            .await
            .map_err(|_| deadline.exceeded())?
            .expect("the reader semaphore is never closed");
        let shared = Arc::clone(self);
        let read = move || {
            let _place = place;
            let (index, _view) = shared.reading();
            if deadline.expired() {
                return Err(deadline.exceeded());
            }
            job(index, deadline)
                .map(Response::new)
                .map_err(|e| deadline.status(e))
        };
        // A panic is a bug: the caller gets INTERNAL, the log the detail.
        tokio::task::spawn_blocking(read)
            .await
            .unwrap_or_else(|e| Err(internal(format_args!("a request's reader failed: {e}"))))
    }

    /// Moves to the writer's latest flushed state; returns the tip height.
    /// Moves the handle requests are not starting on, once the requests
    /// still reading it are done, and then makes it the one they start on;
    /// the flow graph and label index are brought up after, beside the
    /// readers.
    pub fn catch_up(&self) -> anyhow::Result<CaughtUp> {
        let next = 1 - self.active.load(Ordering::Acquire);
        let started = Instant::now();
        let drained = {
            let _view = self.views[next]
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let drained = started.elapsed();
            self.indexes[next].catch_up()?;
            drained
        };
        self.active.store(next, Ordering::Release);
        let index = &self.indexes[next];
        index.refresh()?;
        Ok(CaughtUp {
            tip: chain::status(index)?.tip_height,
            drained,
        })
    }
}

pub struct CaughtUp {
    pub tip: u32,
    /// How long catch-up waited for the requests reading the handle it
    /// moved (no request waits for catch-up).
    pub drained: Duration,
}
