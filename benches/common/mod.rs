//! What the benchmarks share: the satflow binary, timing a child process,
//! and the generated chains they run on.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Flags every benchmark takes.
#[derive(clap::Args)]
pub struct Common {
    /// Where generated chains and their indexes are kept between runs.
    #[arg(long, default_value = "target/bench-data")]
    pub work: PathBuf,
    /// Runs per figure; the median is shown.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

pub fn satflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_satflow"))
}

/// Runs a command to completion, returning wall time and peak RSS (KiB).
pub fn timed(cmd: Command) -> (Duration, i64) {
    let (wall, rss, _) = timed_cpu(cmd);
    (wall, rss)
}

/// Runs a command to completion, returning wall time, peak RSS (KiB) and
/// CPU time (user and system, all threads).
// The child is reaped by `wait4`, which also reports its own rusage.
#[allow(clippy::zombie_processes)]
pub fn timed_cpu(mut cmd: Command) -> (Duration, i64, Duration) {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let mut status = 0;
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting on our own child with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{cmd:?} failed"
    );
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    (start.elapsed(), usage.ru_maxrss, cpu)
}

pub fn median<T: Ord + Copy>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

/// Which index a benchmark reads: a generated chain's, or one given.
#[derive(clap::Args)]
pub struct IndexChoice {
    /// Size of the generated chain (seed 7) whose index is used.
    #[arg(long, default_value = "4GB")]
    pub size: String,
    /// Use this index instead of a generated one.
    #[arg(long)]
    pub db: Option<PathBuf>,
}

impl IndexChoice {
    /// The index directory, generating and indexing the chain under `work` once.
    pub fn path(&self, work: &Path) -> PathBuf {
        std::fs::create_dir_all(work).unwrap();
        self.db
            .clone()
            .unwrap_or_else(|| synth_index(work, &self.size))
    }
}

/// A generated blocks directory of `size` (seed 7) under `work`, made once.
pub fn synth_dir(work: &Path, size: &str) -> PathBuf {
    let dir = work.join(format!("synth-{size}-seed7"));
    if !dir.join("truth").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        let mut cmd = satflow();
        cmd.args(["synth", "--seed", "7", "--size", size, "--out"])
            .arg(&dir)
            .stdout(std::process::Stdio::null());
        timed(cmd);
    }
    dir
}

/// The index of `synth_dir(work, size)`, built once.
pub fn synth_index(work: &Path, size: &str) -> PathBuf {
    let blocks = synth_dir(work, size);
    let db = work.join(format!("synth-{size}-seed7.db"));
    let done = db.join("satflow-bench-complete");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&db);
        let mut cmd = satflow();
        cmd.args(["index", "--quiet", "--blocks-dir"])
            .arg(&blocks)
            .arg("--db")
            .arg(&db)
            .stdout(std::process::Stdio::null());
        timed(cmd);
        std::fs::write(&done, "").unwrap();
    }
    db
}
