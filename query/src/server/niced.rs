//! Threads that run at a lower CPU priority than the request readers: for
//! traces (which may walk for seconds) and for catch-up. The kernel shares
//! a busy CPU between threads by weight, not by what they serve, so a
//! trace on an ordinary thread takes as much of a core as the readers
//! answering sub-millisecond summaries beside it, and each of those
//! waits behind it. At nice `NICE` a thread weighs about a tenth of a
//! reader: on an idle machine it runs as fast as before; on a busy one
//! the short requests go first.
//!
//! Not SCHED_IDLE, as `satflow --background` is for a whole process:
//! these threads share locks with the readers (RocksDB's block cache), and
//! one starved while holding such a lock would hold the readers too.

use std::future::Future;

use anyhow::Context;
use tokio::sync::oneshot;

/// The nice value of these threads (readers are at the process's own, 0
/// unless the operator started it niced): a weight of 110 against 1024.
const NICE: i32 = 10;

/// A fixed set of low-priority threads.
pub struct NicedPool {
    pool: rayon::ThreadPool,
}

impl NicedPool {
    /// `threads` threads named `name-N`.
    pub fn new(name: &'static str, threads: usize) -> anyhow::Result<NicedPool> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.max(1))
            .thread_name(move |i| format!("{name}-{i}"))
            .start_handler(|_| lower_priority())
            .build()
            .with_context(|| format!("starting the {name} threads"))?;
        Ok(NicedPool { pool })
    }

    /// Runs `job` on one of the threads; its result, or `None` if it
    /// panicked (the pool logs the panic).
    pub fn run<T, F>(&self, job: F) -> impl Future<Output = Option<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.spawn(move || {
            // A receiver that went away (the caller gave up) wants nothing.
            let _ = tx.send(job());
        });
        async move { rx.await.ok() }
    }

    /// Runs `job` on one of the threads, for work that reports on its own
    /// (a trace streams its events). A panic ends the job, not the thread.
    /// The job runs inside the caller's tokio runtime, if any, as it would
    /// on the runtime's blocking threads: a trace waits on its channel with
    /// a timeout from there.
    pub fn spawn<F>(&self, job: F)
    where
        F: FnOnce() + Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok();
        self.pool.spawn(move || {
            let _inside = runtime.as_ref().map(tokio::runtime::Handle::enter);
            let job = std::panic::AssertUnwindSafe(job);
            if std::panic::catch_unwind(job).is_err() {
                tracing::error!("a job on a low-priority thread panicked");
            }
        });
    }
}

/// Raises this thread's nice value by `NICE` (to 19 at most). Linux keeps
/// a nice value per thread, so the process's other threads keep theirs.
/// Raising it needs no privilege; where it fails anyway, the thread runs
/// as before.
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id.
    let failed = unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        libc::setpriority(libc::PRIO_PROCESS, tid, (now + NICE).min(19)) != 0
    };
    if failed {
        tracing::debug!(
            "could not lower a thread's priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value of the calling thread.
    fn nice() -> i32 {
        // SAFETY: as above.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn jobs_run_niced_and_the_caller_keeps_its_priority() {
        let before = nice();
        let pool = NicedPool::new("test", 2).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let theirs = rt.block_on(pool.run(nice)).unwrap();
        assert_eq!(theirs, (before + NICE).min(19));
        assert_eq!(nice(), before);
        // Inside the caller's runtime, as on its blocking threads.
        let inside = || tokio::runtime::Handle::try_current().is_ok();
        assert_eq!(rt.block_on(async { pool.run(inside).await }), Some(true));
        // A panicking job answers None, and the pool goes on.
        assert_eq!(rt.block_on(pool.run(|| -> u8 { panic!("boom") })), None);
        assert_eq!(rt.block_on(pool.run(|| 7)), Some(7));
    }
}
