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

/// The median of figures that are not NaN.
pub fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
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
    cached_index(&db, || {
        timed(index_command(&blocks, &db));
    });
    db
}

/// Builds the cached index `db` with `build`, unless a whole build by
/// this schema version is there already. One left by another version
/// (which satflow would refuse to open) or by an interrupted build is
/// removed first.
pub fn cached_index(db: &Path, build: impl FnOnce()) {
    let marker = db.join("satflow-bench-complete");
    let version = satflow_schema::SCHEMA_VERSION.to_string();
    if std::fs::read_to_string(&marker).is_ok_and(|v| v == version) {
        return;
    }
    let _ = std::fs::remove_dir_all(db);
    build();
    std::fs::write(&marker, version).unwrap();
}

/// `satflow index --quiet` of `blocks` into `db`, its summary discarded.
pub fn index_command(blocks: &Path, db: &Path) -> Command {
    let mut cmd = satflow();
    cmd.args(["index", "--quiet", "--blocks-dir"])
        .arg(blocks)
        .arg("--db")
        .arg(db)
        .stdout(std::process::Stdio::null());
    cmd
}

/// `satflow labels import` of CSV `file` into `db` as set `bench`.
pub fn labels_import(db: &Path, file: &Path) -> Command {
    let mut cmd = satflow();
    cmd.arg("labels")
        .arg("--db")
        .arg(db)
        .args(["import", "--format", "csv", "--set", "bench"])
        .arg(file)
        .stdout(std::process::Stdio::null());
    cmd
}

/// The blk files of a blocks directory, in order.
pub fn blk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("blk"))
        })
        .collect();
    files.sort();
    files
}

/// Double SHA-256 over every MiB of `files`, a file per core at a time:
/// the machine's hashing ceiling on them, which a busy host lowers.
pub fn sha256d(files: &[PathBuf]) -> Duration {
    use rayon::prelude::*;
    use sha2::{Digest, Sha256};
    let t = Instant::now();
    let hashed: usize = files
        .par_iter()
        .map(|f| {
            let data = std::fs::read(f).unwrap();
            data.chunks(1 << 20)
                .map(|c| Sha256::digest(Sha256::digest(c))[0] as usize)
                .sum::<usize>()
        })
        .sum();
    std::hint::black_box(hashed);
    t.elapsed()
}

/// What a load is made of, sampled across an index's chain: 10,000
/// addresses, and the first txids of 2,000 blocks.
pub struct Sample {
    pub addresses: Vec<String>,
    pub txids: Vec<String>,
}

/// The addresses numbered `pick(n)` of the index at `db`, which has seen
/// `n` (opened read-only, so no writer may hold it), and its tip height.
pub fn addresses(db: &Path, pick: impl FnOnce(u64) -> Vec<u64>) -> (Vec<String>, u32) {
    use satflow_indexer::{address, Access, Store};
    use satflow_schema::{cf, AddrId};
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let network = store.network().unwrap().unwrap();
    let seen = store.tip_block().unwrap().unwrap().next_ids().addr.0;
    let addresses = pick(seen)
        .into_iter()
        .map(|id| address::encode(&store.need::<cf::Addrs>(&AddrId(id)).unwrap(), network))
        .collect();
    (addresses, store.tip().unwrap().unwrap().height.0)
}

/// The sample of the index at `db` (opened read-only, so no writer may hold it).
pub fn sample(db: &Path) -> Sample {
    use satflow_indexer::Access;
    use satflow_query::{chain, BlockId, Index};
    let (addresses, tip) = addresses(db, |n| (0..10_000).map(|i| spread(i, n)).collect());
    let index = Index::open(db, Access::ReadOnly).unwrap();
    let txids = (0..2_000)
        .flat_map(|i| {
            let height = spread(i, tip as u64 + 1) as u32;
            let block = chain::block(&index, &BlockId::Height(height), 5, "").unwrap();
            block.txids
        })
        .collect();
    Sample { addresses, txids }
}

/// The first page of an address's history as the load benchmarks ask it:
/// 25 entries, newest first.
pub fn history_page_1(address: String) -> satflow_proto::v1::ListAddressHistoryRequest {
    satflow_proto::v1::ListAddressHistoryRequest {
        address,
        page_size: 25,
        order: satflow_proto::v1::Order::NewestFirst.into(),
        ..Default::default()
    }
}

/// Deterministic spread over a range (splitmix64): sample `i` of `0..n`.
pub fn spread(i: u64, n: u64) -> u64 {
    let mut z = i
        .wrapping_add(0x9e37_79b9_7f4a_7c15)
        .wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 31)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 29)) % n
}

/// Peak RSS (KiB) so far of the running child of this process whose
/// command line holds `arg` (a server started by a helper that keeps its
/// process id to itself), from /proc.
pub fn child_peak_rss(arg: &str) -> Option<i64> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let dir = e.path();
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
        };
        let cmdline = std::fs::read(dir.join("cmdline")).ok()?;
        let named = cmdline.split(|&b| b == 0).any(|a| a == arg.as_bytes());
        if field("PPid:")? != me || !named {
            return None;
        }
        field("VmHWM:")?.trim_end_matches(" kB").parse().ok()
    })
}

/// Calls before a measured window starts: the server's caches fill up.
pub const WARM_UP: Duration = Duration::from_secs(5);

/// CPU time (user and system) process `pid` has used so far, from
/// `/proc/<pid>/stat` (in clock ticks: 10 ms each, where Linux counts 100
/// a second).
pub fn process_cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is the first, utime the 12th, stime the 13th.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_micros(ticks * 1_000_000 / per_second)
}

/// What one measured window of `drive` gave.
pub struct Driven {
    /// Latencies (µs) of the calls finished in the window.
    pub lat: Vec<u32>,
    pub window: Duration,
    /// CPU time the server process used in the window.
    pub server_cpu: Duration,
}

/// The calls `clients` concurrent callers of `call` finish in `seconds`
/// after `WARM_UP`, over `conns` in turn, on the server whose process is
/// `server`. `call` gets a connection and the call's number.
pub async fn drive<F, Fut>(
    conns: &[satflow_query::client::Clients],
    server: u32,
    clients: usize,
    seconds: u64,
    call: F,
) -> Driven
where
    F: Fn(satflow_query::client::Clients, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let call = Arc::new(call);
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (call, measuring, stop, counter) = (
            call.clone(),
            measuring.clone(),
            stop.clone(),
            counter.clone(),
        );
        let conn = conns[i % conns.len()].clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                call(conn.clone(), n).await;
                if measuring.load(Ordering::Relaxed) {
                    lat.push(t.elapsed().as_micros() as u32);
                }
            }
            lat
        }));
    }
    tokio::time::sleep(WARM_UP).await;
    measuring.store(true, Ordering::Relaxed);
    let (start, cpu) = (Instant::now(), process_cpu(server));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let (window, server_cpu) = (start.elapsed(), process_cpu(server) - cpu);
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    Driven {
        lat,
        window,
        server_cpu,
    }
}

/// req/s, p50, p99 and p99.9 (ms) of one measured window.
pub fn figures(mut lat: Vec<u32>, window: Duration) -> [f64; 4] {
    assert!(
        !lat.is_empty(),
        "no call finished within the measured window"
    );
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1000.0;
    [
        lat.len() as f64 / window.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
    ]
}

impl Driven {
    /// `figures` of the window, then the server's CPU time per call (µs).
    pub fn figures(self) -> [f64; 5] {
        let per_call = self.server_cpu.as_secs_f64() * 1e6 / self.lat.len().max(1) as f64;
        let [rate, p50, p99, p999] = figures(self.lat, self.window);
        [rate, p50, p99, p999, per_call]
    }
}

/// The rows of a generated chain's truth CSV file, its header skipped,
/// read as they come.
pub fn truth_rows(path: &Path) -> impl Iterator<Item = Vec<String>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::io::BufReader::new(file)
        .lines()
        .skip(1)
        .map(|l| l.unwrap().split(',').map(str::to_string).collect())
}

/// The exchanges' addresses in a generated chain's truth (`truth` is its
/// directory), at most `per` of each, as rows of a label CSV file
/// (`address,Exchange <actor>,exchange,synth truth`).
pub fn exchange_labels(truth: &Path, per: usize) -> String {
    let exchanges: std::collections::HashSet<String> = truth_rows(&truth.join("actors.csv"))
        .filter(|r| r[1] == "exchange")
        .map(|r| r[0].clone())
        .collect();
    let mut taken: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut csv = String::new();
    for r in truth_rows(&truth.join("addresses.csv")) {
        if !exchanges.contains(&r[1]) {
            continue;
        }
        let n = taken.entry(r[1].clone()).or_default();
        if *n < per {
            *n += 1;
            csv += &format!("{},Exchange {},exchange,synth truth\n", r[0], r[1]);
        }
    }
    csv
}
