//! `satflow --background`: the whole process at the lowest CPU priority,
//! for work that runs beside `satflow serve` on one machine (`index
//! --follow`, `labels import`). Under Linux's SCHED_IDLE policy a thread
//! runs only when no ordinary thread wants its core, so requests are
//! answered first and the indexer takes what they leave: on a saturated
//! machine the index lags (the server's `satflow_index_lag_blocks` metric shows
//! by how much) instead of every request waiting behind it. A nice value
//! would not do: niced threads still get a share of the core each time
//! they are due, and a request arriving then waits for the slice to end.

use anyhow::{Context, Result};

/// Puts the calling thread under SCHED_IDLE; threads it starts after
/// inherit the policy, so this is called before any other thread exists.
pub fn background() -> Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the policy of the calling thread (pid 0) from a valid
    // parameter; lowering one's own priority needs no privilege.
    let failed = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0;
    if failed {
        return Err(std::io::Error::last_os_error())
            .context("--background: setting the SCHED_IDLE scheduling policy");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: reads the calling thread's policy.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn the_policy_holds_for_the_thread_and_those_it_starts() {
        let before = policy();
        let (own, started) = std::thread::spawn(|| {
            background().unwrap();
            (policy(), std::thread::spawn(policy).join().unwrap())
        })
        .join()
        .unwrap();
        assert_eq!((own, started), (libc::SCHED_IDLE, libc::SCHED_IDLE));
        assert_eq!(policy(), before, "other threads keep theirs");
    }
}
