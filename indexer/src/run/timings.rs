//! Where a run's time goes: wall and CPU time per stage. Top-level stages
//! run one after another, so the process's CPU time over a stage is that
//! stage's. Inside the bulk path the stages overlap (parse, resolve,
//! ingest); for those the busy time of each is kept, to show which one
//! the others wait for.

use std::time::{Duration, Instant};

/// One stage of a run.
#[derive(Clone, Debug)]
pub struct Stage {
    pub name: &'static str,
    pub wall: Duration,
    /// The process's CPU time (all threads) over the stage; None for a
    /// stage that ran beside others.
    pub cpu: Option<Duration>,
    /// The process's peak resident memory so far, in bytes, at the stage's
    /// end (Linux); None for a stage that ran beside others.
    pub peak_rss: Option<u64>,
}

impl Stage {
    /// Busy time of a stage that ran beside others.
    pub(crate) fn busy(name: &'static str, wall: Duration) -> Stage {
        Stage {
            name,
            wall,
            cpu: None,
            peak_rss: None,
        }
    }
}

/// Times a stage from its start.
pub(crate) struct Clock {
    wall: Instant,
    cpu: Duration,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: process_cpu(),
        }
    }

    pub fn stop(self, name: &'static str) -> Stage {
        Stage {
            name,
            wall: self.wall.elapsed(),
            cpu: Some(process_cpu().saturating_sub(self.cpu)),
            peak_rss: peak_rss(),
        }
    }
}

/// The process's peak resident memory so far (`VmHWM`), where the system
/// reports it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User and system CPU time of every thread of the process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut u = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_stage_shows_its_cpu_time_and_the_peak_memory() {
        let clock = Clock::start();
        // Work until the process's CPU time moves by 30 ms, however busy
        // the machine: a clock that did not count would never get there.
        let mut x = 0u64;
        while process_cpu().saturating_sub(clock.cpu) < Duration::from_millis(30)
            && clock.wall.elapsed() < Duration::from_secs(20)
        {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let stage = clock.stop("spin");
        assert!(stage.cpu.unwrap() >= Duration::from_millis(30), "{stage:?}");
        assert!(stage.wall > Duration::ZERO);
        // This process holds at least its own code in memory.
        assert!(stage.peak_rss.unwrap() > 1 << 20, "{stage:?}");
    }
}
