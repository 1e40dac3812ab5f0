//! Indexing throughput next to the machine's own ceilings on the same files.
//!
//!     cargo bench --bench index_throughput -- [--sizes 512MB,4GB] [--runs 3]
//!                 [--modes default,cold,block-by-block,no-cluster-no-flow]
//!                 [--blocks-dir DIR] [--work DIR] [--threads N]
//!
//! For each size a blocks directory is generated once with `satflow synth`
//! (seed 7, cached under --work), or --blocks-dir is used as is. Printed per
//! directory: reading all blk bytes (page cache warm), double SHA-256 over
//! all of them on every core, and `satflow index` as a separate process in
//! each mode (median wall and CPU time of --runs fresh builds, peak RSS, DB
//! size), then the per-stage times of the last default run. Mode `cold`
//! is the default run with the blk files dropped from the page cache first,
//! and its read column is a cold sequential read: the disk's own ceiling.
//! Modes `bitcoin-block-parser` (every block parsed on all cores, every
//! txid hashed) and `blocks-iterator` (blocks in height order with every
//! prevout) run those crates on the same files, for a ratio in one run:
//! `benches/tools/readers`, built by the benchmark with cargo (registry
//! access the first time).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{blk_files, median, satflow, sha256d, synth_dir, timed_cpu, Common};

/// Indexing throughput next to the machine's own ceilings.
#[derive(clap::Parser)]
struct Args {
    /// Generated chain sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "512MB,4GB")]
    sizes: Vec<String>,
    /// Measure this blocks directory instead of generated chains.
    #[arg(long)]
    blocks_dir: Option<PathBuf>,
    /// Passed to `satflow index --threads`.
    #[arg(long)]
    threads: Option<String>,
    /// How to index: `default` (what `satflow index` does: the bulk path,
    /// clusters and flow graph), `cold` (the same, from a cold page cache),
    /// `block-by-block` (`--no-bulk`), `no-cluster-no-flow` (the bulk path
    /// alone); or another reader of the same files, `bitcoin-block-parser`
    /// or `blocks-iterator`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "default,bitcoin-block-parser,blocks-iterator"
    )]
    modes: Vec<String>,
    #[command(flatten)]
    common: Common,
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn dir_bytes(p: &Path) -> u64 {
    std::fs::read_dir(p).map_or(0, |rd| {
        rd.flatten()
            .map(|e| e.metadata().map_or(0, |m| m.len()))
            .sum()
    })
}

/// Drops the files' pages from the page cache: they are clean, so the
/// kernel lets them go, and the next read comes from the disk. Only these
/// files, so the rest of a shared machine keeps its cache.
fn evict(files: &[PathBuf]) {
    use std::os::fd::AsRawFd;
    for f in files {
        let file = std::fs::File::open(f).unwrap();
        // SAFETY: advice on a descriptor we own; it reads no memory.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise on {}", f.display());
    }
}

/// Reads every file once, in order, a MiB at a time; returns the bytes.
fn read_all(files: &[PathBuf]) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0;
    for f in files {
        let mut file = std::fs::File::open(f).unwrap();
        loop {
            match std::io::Read::read(&mut file, &mut buf).unwrap() {
                0 => break,
                n => bytes += n as u64,
            }
        }
    }
    bytes
}

fn bench_dir(name: &str, dir: &Path, args: &Args) -> f64 {
    let files = blk_files(dir);
    let t = Instant::now();
    let bytes = read_all(&files);
    let warm_read = t.elapsed();
    let sha = sha256d(&files);

    let mut per_mb = f64::NAN;
    for mode in &args.modes {
        let flags: &[&str] = match mode.as_str() {
            "default" | "cold" => &[],
            "block-by-block" => &["--no-bulk"],
            "no-cluster-no-flow" => &["--no-cluster", "--no-flow"],
            "bitcoin-block-parser" | "blocks-iterator" => {
                other_reader(name, mode, dir, bytes, args);
                continue;
            }
            other => panic!("unknown mode {other}"),
        };
        let db = args.common.work.join("bench-db");
        let summary = args.common.work.join("bench-index-summary.txt");
        let cold = mode == "cold";
        let read = match cold {
            true => {
                evict(&files);
                let t = Instant::now();
                read_all(&files);
                t.elapsed()
            }
            false => warm_read,
        };
        let (mut walls, mut cpus, mut peak) = (Vec::new(), Vec::new(), 0);
        for _ in 0..args.common.runs {
            let _ = std::fs::remove_dir_all(&db);
            if cold {
                evict(&files);
            }
            let mut cmd = satflow();
            cmd.args(["index", "--quiet"])
                .args(flags)
                .arg("--blocks-dir")
                .arg(dir)
                .arg("--db")
                .arg(&db);
            if let Some(t) = &args.threads {
                cmd.args(["--threads", t]);
            }
            cmd.stdout(std::fs::File::create(&summary).unwrap());
            let (wall, rss, cpu) = timed_cpu(cmd);
            walls.push(wall);
            cpus.push(cpu);
            peak = peak.max(rss);
        }
        let db_size = dir_bytes(&db);
        let index = median(walls.clone());
        println!(
            "{name:<10} {mode:<19} {:>9.1} {:>10.0} {:>12.0} {:>11.1} {:>9.2} {:>8.1} {:>9.0} {:>9.0}   runs: {:?}",
            bytes as f64 / 1e6,
            mb_per_s(bytes, read),
            mb_per_s(bytes, sha),
            mb_per_s(bytes, index),
            index.as_secs_f64(),
            median(cpus).as_secs_f64(),
            peak as f64 / 1024.0,
            db_size as f64 / 1e6,
            walls
                .iter()
                .map(|w| format!("{:.2}s", w.as_secs_f64()))
                .collect::<Vec<_>>()
        );
        if mode == "default" {
            per_mb = index.as_secs_f64() / (bytes as f64 / 1e6);
            let text = std::fs::read_to_string(&summary).unwrap();
            let stages = text.lines().skip_while(|l| !l.starts_with("stage"));
            for line in stages {
                println!("    {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&db);
    }
    per_mb
}

/// The `readers` tool's binary, built once under --work.
fn readers(work: &Path) -> PathBuf {
    let target = work.join("readers-target");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/tools/readers/Cargo.toml");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("running cargo");
    assert!(status.success(), "building {}", manifest.display());
    target.join("release/satflow-bench-readers")
}

/// The network a blocks directory's first record's magic names (what
/// blocks_iterator must be told).
fn network_of(dir: &Path) -> &'static str {
    let first = blk_files(dir).into_iter().next().expect("a blk file");
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(&mut std::fs::File::open(first).unwrap(), &mut magic).unwrap();
    match magic {
        [0xf9, 0xbe, 0xb4, 0xd9] => "bitcoin",
        [0x0b, 0x11, 0x09, 0x07] => "testnet",
        [0x0a, 0x03, 0xcf, 0x40] => "signet",
        [0xfa, 0xbf, 0xb5, 0xda] => "regtest",
        other => panic!(
            "{}: unknown magic {other:02x?} (an obfuscated directory?)",
            dir.display()
        ),
    }
}

/// One row for another reader of `dir`: median wall and CPU time of --runs.
fn other_reader(name: &str, mode: &str, dir: &Path, bytes: u64, args: &Args) {
    let tool = readers(&args.common.work);
    let (mut walls, mut cpus, mut peak) = (Vec::new(), Vec::new(), 0);
    for _ in 0..args.common.runs {
        let mut cmd = std::process::Command::new(&tool);
        match mode {
            "bitcoin-block-parser" => cmd.arg("bbp").arg(dir),
            _ => cmd.arg("bi").arg(dir).arg(network_of(dir)),
        };
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let (wall, rss, cpu) = timed_cpu(cmd);
        walls.push(wall);
        cpus.push(cpu);
        peak = peak.max(rss);
    }
    let wall = median(walls.clone());
    println!(
        "{name:<10} {mode:<19} {:>9.1} {:>10} {:>12} {:>11.1} {:>9.2} {:>8.1} {:>9.0} {:>9}   runs: {:?}",
        bytes as f64 / 1e6,
        "",
        "",
        mb_per_s(bytes, wall),
        wall.as_secs_f64(),
        median(cpus).as_secs_f64(),
        peak as f64 / 1024.0,
        "",
        walls
            .iter()
            .map(|w| format!("{:.2}s", w.as_secs_f64()))
            .collect::<Vec<_>>()
    );
}

fn main() {
    let args = Args::parse();
    std::fs::create_dir_all(&args.common.work).unwrap();
    println!(
        "{:<10} {:<19} {:>9} {:>10} {:>12} {:>11} {:>9} {:>8} {:>9} {:>9}",
        "data",
        "mode",
        "blk MB",
        "read MB/s",
        "sha256d MB/s",
        "index MB/s",
        "index s",
        "cpu s",
        "peak MiB",
        "db MB"
    );
    let mut per_mb = Vec::new();
    if let Some(dir) = &args.blocks_dir {
        per_mb.push(bench_dir("given", dir, &args));
    } else {
        for size in &args.sizes {
            let dir = synth_dir(&args.common.work, size);
            per_mb.push(bench_dir(size, &dir, &args));
        }
    }
    if per_mb.len() > 1 {
        let (first, last) = (per_mb[0], per_mb[per_mb.len() - 1]);
        println!(
            "default index cost per MB, largest vs smallest: {:.2}x",
            last / first
        );
    }
}
