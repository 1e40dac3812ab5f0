//! `satflow serve` under an open-loop load while `satflow index --follow`
//! appends blocks and labels are reimported, beside the same load on the
//! idle index: p50, p99 and max latency per call at fixed arrival rates.
//!
//!     cargo bench --bench serve_under_load -- [--rates 2000,5000] [--seconds 20]
//!                 [--size 512MB] [--append-mb 128] [--labels 300000]
//!                 [--trace-per-mille 10] [--foreground] [--work DIR] [--runs 3]
//!
//! The generated chain of --size (seed 7, made once under --work) is cut
//! --append-mb short of its end, at a record boundary: the blk files before
//! the cut are hard-linked into a fresh blocks directory, the file holding
//! it copied up to it, and that prefix indexed. --labels of its addresses
//! (evenly spread over all it has seen) are labelled as exchanges, imported
//! once, and a `satflow serve` process starts on it.
//!
//! Load: request i of a window is due at start + i / rate; a scheduler
//! spawns each at its due time without waiting for earlier ones, and its
//! latency runs from the due time to the end of its answer (a trace's end
//! of stream), so queueing and stalls count in full. The mix: one request
//! in a thousand is drawn as a trace per --trace-per-mille (forward,
//! haircut, 3 hops, at most 1,000 transactions, from a sampled txid), the
//! others are summaries and first history pages (25, newest first) in
//! turn, on 10,000 addresses and the txids of 2,000 blocks sampled across
//! the index. Each window has 2 s of the same load before the --seconds
//! measured; every call has a 10 s deadline.
//!
//! First the idle windows: every rate, --runs times. Then the busy ones,
//! the same, while `satflow index --follow --poll-ms 1000` runs and the
//! cut-off bytes are appended to the blocks directory every 100 ms, paced
//! to last until the last window ends; a third of the way into each
//! measured window the follower is stopped (SIGTERM), the labels are
//! imported again and the follower restarted, as imports need the write
//! lock. The follower and the imports run under `satflow --background`
//! (the lowest CPU priority), as the README advises beside a server;
//! --foreground runs them at normal priority. When each of these
//! happened, relative to its window, is printed.
//! Percentiles are medians over the runs; max, counts and errors are over
//! all runs. A trace ended by its budget (summary sent, then
//! RESOURCE_EXHAUSTED) is an answer; RESOURCE_EXHAUSTED before any event is
//! a refusal, and counts as an error, as does a stream that ends without
//! its summary. The logs of the server and the
//! follower are left in --work/serve-under-load.

mod common;
#[path = "../tests/common/mod.rs"]
mod testkit;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{addresses, blk_files, figures, sample, satflow, sha256d, synth_dir, timed};
use common::{history_page_1, index_command, labels_import, Common, Sample};
use satflow_proto::v1 as pb;
use satflow_query::client::Clients;
use testkit::server::Server;
use tonic::Code;

/// Open-loop load on `satflow serve` during indexing, and on an idle index.
#[derive(clap::Parser)]
struct Args {
    /// Arrival rates, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "2000,5000")]
    rates: Vec<u32>,
    /// Measured seconds per window.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Size of the generated chain (seed 7).
    #[arg(long, default_value = "512MB")]
    size: String,
    /// MB of the chain's blk data held back and appended during the busy windows.
    #[arg(long, default_value_t = 128)]
    append_mb: u64,
    /// Addresses of the index labelled (as exchanges), imported again in each busy window.
    #[arg(long, default_value_t = 300_000)]
    labels: u64,
    /// Requests in a thousand that are traces.
    #[arg(long, default_value_t = 10)]
    trace_per_mille: u64,
    /// Run the follower and the imports at normal CPU priority, not with
    /// `satflow --background` as the README advises beside a server.
    #[arg(long)]
    foreground: bool,
    #[command(flatten)]
    common: Common,
}

/// Unmeasured load before each window.
const LEAD: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq)]
enum Call {
    Summary,
    History,
    Trace,
}

impl Call {
    const ALL: [Call; 3] = [Call::Summary, Call::History, Call::Trace];

    fn name(self) -> &'static str {
        match self {
            Call::Summary => "address summary",
            Call::History => "history, page 1",
            Call::Trace => "trace, 3 hops",
        }
    }

    /// The call of request `i`.
    fn of(i: u64, trace_per_mille: u64) -> Call {
        match common::spread(i, 1000) < trace_per_mille {
            true => Call::Trace,
            false if i.is_multiple_of(2) => Call::Summary,
            false => Call::History,
        }
    }

    /// Makes request `i` of this call; its status code.
    async fn make(self, mut c: Clients, sample: &Sample, i: usize) -> Code {
        let address = sample.addresses[i % sample.addresses.len()].clone();
        let done = match self {
            Call::Summary => c
                .addresses
                .get_address_summary(deadline(pb::GetAddressSummaryRequest { address }))
                .await
                .map(drop),
            Call::History => c
                .addresses
                .list_address_history(deadline(history_page_1(address)))
                .await
                .map(drop),
            Call::Trace => {
                let txid = sample.txids[i % sample.txids.len()].clone();
                let request = pb::TraceRequest {
                    sources: vec![pb::TraceSource {
                        source: Some(pb::trace_source::Source::Txid(txid)),
                    }],
                    direction: pb::TraceDirection::Forward.into(),
                    max_hops: 3,
                    max_transactions: 1000,
                    ..Default::default()
                };
                return match c.taint.trace(deadline(request)).await {
                    Err(status) => status.code(),
                    Ok(stream) => drain(stream.into_inner()).await,
                };
            }
        };
        done.err().map_or(Code::Ok, |s| s.code())
    }
}

/// `message` with a 10 s deadline.
fn deadline<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.set_timeout(Duration::from_secs(10));
    r
}

/// Reads a trace to its end: Ok when it ended with its summary, whether
/// complete or stopped by its budget.
async fn drain(mut stream: tonic::Streaming<pb::TraceEvent>) -> Code {
    let mut summary = false;
    loop {
        match stream.message().await {
            Ok(Some(event)) => {
                summary |= matches!(event.event, Some(pb::trace_event::Event::Summary(_)))
            }
            Ok(None) if summary => return Code::Ok,
            // Ended without its summary: the trace failed on the way.
            Ok(None) => return Code::Unknown,
            Err(s) if summary && s.code() == Code::ResourceExhausted => return Code::Ok,
            Err(s) => return s.code(),
        }
    }
}

/// One answered request of a measured window.
struct Done {
    call: Call,
    code: Code,
    /// From its due time to its answer's end.
    latency: Duration,
    /// From its due time to being sent: the scheduler's own lag.
    lag: Duration,
    at: Instant,
}

/// What one window measured.
struct Window {
    start: Instant,
    seconds: Duration,
    done: Vec<Done>,
}

/// Runs `rate` requests a second for LEAD, then `seconds` measured.
async fn window(
    conns: &[Clients],
    sample: &Arc<Sample>,
    rate: u32,
    seconds: u64,
    tpm: u64,
) -> Window {
    let t0 = tokio::time::Instant::now() + Duration::from_millis(10);
    let start = t0 + LEAD;
    let n = rate as u64 * (LEAD.as_secs() + seconds);
    let mut tasks = Vec::with_capacity(n as usize);
    for i in 0..n {
        let due = t0 + Duration::from_nanos(i * 1_000_000_000 / rate as u64);
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let (c, sample) = (conns[i as usize % conns.len()].clone(), sample.clone());
        tasks.push(tokio::spawn(async move {
            let call = Call::of(i, tpm);
            let lag = due.elapsed();
            let code = call.make(c, &sample, i as usize).await;
            let at = tokio::time::Instant::now();
            (due >= start).then(|| Done {
                call,
                code,
                latency: at - due,
                lag,
                at: at.into_std(),
            })
        }));
    }
    let mut done = Vec::with_capacity(tasks.len());
    for t in tasks {
        done.extend(t.await.unwrap());
    }
    Window {
        start: start.into_std(),
        seconds: Duration::from_secs(seconds),
        done,
    }
}

/// A call's figures over the runs at one rate and state: per run p50 and
/// p99 (ms), the max, answers and errors by code over all runs.
#[derive(Default)]
struct Figures {
    p50: Vec<f64>,
    p99: Vec<f64>,
    max: f64,
    answered: usize,
    errors: std::collections::BTreeMap<String, usize>,
}

impl Figures {
    fn add(&mut self, w: &Window, call: Call) {
        let mut lat = Vec::new();
        for d in w.done.iter().filter(|d| d.call == call) {
            match d.code {
                Code::Ok => lat.push(d.latency.as_micros() as u32),
                code => *self.errors.entry(format!("{code:?}")).or_default() += 1,
            }
        }
        self.answered += lat.len();
        if let Some(&max) = lat.iter().max() {
            self.max = self.max.max(max as f64 / 1000.0);
            let [_, p50, p99, _] = figures(lat, w.seconds);
            self.p50.push(p50);
            self.p99.push(p99);
        }
    }

    fn errors(&self) -> usize {
        self.errors.values().sum()
    }

    fn cells(&self) -> String {
        let median = |v: &[f64]| match v.is_empty() {
            true => "-".to_string(),
            false => format!("{:.2}", common::median_f64(v)),
        };
        format!(
            "{:>8} {:>7} {:>7} {:>8.1} {:>6}",
            self.answered,
            median(&self.p50),
            median(&self.p99),
            self.max,
            self.errors()
        )
    }
}

/// Achieved rate (answers and errors per second, from the window's start
/// to its last answer) and the scheduler's p99 and max lag (ms).
fn pace(w: &Window) -> (f64, f64, f64) {
    let end = w.done.iter().map(|d| d.at).max().unwrap_or(w.start);
    let mut lag: Vec<u32> = w.done.iter().map(|d| d.lag.as_micros() as u32).collect();
    lag.sort_unstable();
    let p99 = lag
        .get(lag.len() * 99 / 100)
        .map_or(0.0, |&l| l as f64 / 1000.0);
    let max = lag.last().map_or(0.0, |&l| l as f64 / 1000.0);
    (
        w.done.len() as f64 / (end - w.start).as_secs_f64(),
        p99,
        max,
    )
}

/// A stretch of a source blk file still to be appended to its namesake.
struct Stretch {
    from: PathBuf,
    to: PathBuf,
    range: std::ops::Range<u64>,
}

/// Where the blk records of `bytes` end (the zero tail Core preallocates after).
fn records_end(bytes: &[u8]) -> u64 {
    let recs = testkit::records(bytes);
    let last = recs
        .iter()
        .take_while(|&&(pos, _)| bytes[pos..pos + 4] == bytes[..4])
        .last();
    last.map_or(0, |&(pos, len)| (pos + 8 + len) as u64)
}

/// Fills `live` with the blk data of `chain` up to `hold` bytes before its
/// records' end (at a record boundary); returns what is held back.
fn cut(chain: &Path, live: &Path, hold: u64) -> Vec<Stretch> {
    let files = blk_files(chain);
    let ends: Vec<u64> = files
        .iter()
        .map(|f| records_end(&std::fs::read(f).unwrap()))
        .collect();
    let mut left = ends.iter().sum::<u64>().saturating_sub(hold);
    let mut held = Vec::new();
    for (f, &end) in files.iter().zip(&ends) {
        let to = live.join(f.file_name().unwrap());
        if left >= end {
            std::fs::hard_link(f, &to).unwrap();
            left -= end;
            continue;
        }
        let mut at = 0;
        if left > 0 {
            let bytes = std::fs::read(f).unwrap();
            let recs = testkit::records(&bytes);
            at = recs
                .iter()
                .map(|&(p, _)| p as u64)
                .find(|&p| p >= left)
                .unwrap_or(end)
                .min(end);
            std::fs::write(&to, &bytes[..at as usize]).unwrap();
            left = 0;
        }
        held.push(Stretch {
            from: f.clone(),
            to,
            range: at..end,
        });
    }
    held
}

/// Appends the held-back stretches every 100 ms, paced to end after
/// `over`, until done or `stop`; `written` counts the bytes.
fn append(held: Vec<Stretch>, over: Duration, stop: Arc<AtomicBool>, written: Arc<AtomicU64>) {
    use std::os::unix::fs::FileExt;
    let total: u64 = held.iter().map(|s| s.range.end - s.range.start).sum();
    let t = Instant::now();
    let mut out = 0u64;
    for s in held {
        let src = std::fs::File::open(&s.from).unwrap();
        let mut dst = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&s.to)
            .unwrap();
        let mut at = s.range.start;
        while at < s.range.end {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let due = (total as f64 * t.elapsed().as_secs_f64() / over.as_secs_f64()) as u64;
            let n = due.saturating_sub(out).min(s.range.end - at);
            if n == 0 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let mut buf = vec![0; n as usize];
            src.read_exact_at(&mut buf, at).unwrap();
            dst.write_all(&buf).unwrap();
            dst.flush().unwrap();
            (at, out) = (at + n, out + n);
            written.store(out, Ordering::Relaxed);
        }
    }
}

/// Every `stride`th address the index at `db` has seen, `n` in all, labelled
/// as one of 100 exchanges, in a CSV file at `file`; how many.
fn label_file(db: &Path, n: u64, file: &Path) -> usize {
    let (labelled, _) = addresses(db, |seen| {
        let stride = (seen / n.max(1)).max(1);
        (0..n.min(seen)).map(|i| i * stride).collect()
    });
    let mut out = std::io::BufWriter::new(std::fs::File::create(file).unwrap());
    for (i, a) in labelled.iter().enumerate() {
        writeln!(out, "{a},Exchange {},exchange,bench", i % 100).unwrap();
    }
    out.flush().unwrap();
    labelled.len()
}

/// `satflow index --follow` on the bench's blocks directory, restartable.
struct Follower {
    live: PathBuf,
    db: PathBuf,
    log: PathBuf,
    /// `satflow --background` or nothing.
    priority: Vec<&'static str>,
    child: Option<Child>,
}

impl Follower {
    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = satflow()
            .args(&self.priority)
            .args([
                "index",
                "--quiet",
                "--follow",
                "--poll-ms",
                "1000",
                "--blocks-dir",
            ])
            .arg(&self.live)
            .arg("--db")
            .arg(&self.db)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGTERM, and waits for it to finish the round under way (one just
    /// started may not have set its handler yet, and dies of the signal).
    fn stop(&mut self) {
        use std::os::unix::process::ExitStatusExt;
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().unwrap();
            let ok = status.success() || status.signal() == Some(libc::SIGTERM);
            assert!(ok, "satflow index --follow: {status}");
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Things that happened during the busy windows, and when.
type Events = Arc<Mutex<Vec<(Instant, String)>>>;

fn note(events: &Events, what: String) {
    events.lock().unwrap().push((Instant::now(), what));
}

async fn tip(c: &Clients) -> u32 {
    let mut c = c.chain.clone();
    let status = c.get_status(pb::GetStatusRequest {}).await.unwrap();
    status.into_inner().tip_height
}

fn main() {
    let args = Args::parse();
    let work = &args.common.work;
    std::fs::create_dir_all(work).unwrap();
    let chain = synth_dir(work, &args.size);
    let here = work.join("serve-under-load");
    let _ = std::fs::remove_dir_all(&here);
    let (live, db) = (here.join("blocks"), here.join("db"));
    std::fs::create_dir_all(&live).unwrap();
    let held = cut(&chain, &live, args.append_mb * 1_000_000);
    let held_bytes: u64 = held.iter().map(|s| s.range.end - s.range.start).sum();
    let (took, _) = timed(index_command(&live, &db));
    let file = here.join("labels.csv");
    let labels = label_file(&db, args.labels, &file);
    let (imported, _) = timed(labels_import(&db, &file));
    let sample = Arc::new(sample(&db));
    let first = &blk_files(&chain)[..1];
    let mb_s = |files: &[PathBuf]| {
        let bytes: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
        bytes as f64 / 1e6 / sha256d(files).as_secs_f64()
    };
    let sha_before = mb_s(first);
    println!(
        "chain {} less its last {:.0} MB, indexed in {:.1} s; {labels} exchange labels imported in {:.1} s",
        chain.display(),
        held_bytes as f64 / 1e6,
        took.as_secs_f64(),
        imported.as_secs_f64()
    );

    let server = Server::start(&db, &[]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runs = args.common.runs;
    let rates = &args.rates;
    let tpm = args.trace_per_mille;
    // [busy][rate][call]
    let mut figs: Vec<Vec<Vec<Figures>>> = (0..2)
        .map(|_| {
            rates
                .iter()
                .map(|_| Call::ALL.map(|_| Figures::default()).into())
                .collect()
        })
        .collect();
    let mut paces: Vec<Vec<Vec<(f64, f64, f64)>>> = vec![vec![Vec::new(); rates.len()]; 2];
    let priority = match args.foreground {
        true => vec![],
        false => vec!["--background"],
    };
    let mut follower = Follower {
        live: live.clone(),
        db: db.clone(),
        log: here.join("indexer.log"),
        priority: priority.clone(),
        child: None,
    };
    rt.block_on(async {
        let mut conns = Vec::new();
        for _ in 0..4 {
            conns.push(server.connect().await);
        }
        for _ in 0..runs {
            for (r, &rate) in rates.iter().enumerate() {
                let w = window(&conns, &sample, rate, args.seconds, tpm).await;
                for (k, call) in Call::ALL.into_iter().enumerate() {
                    figs[0][r][k].add(&w, call);
                }
                paces[0][r].push(pace(&w));
            }
        }

        let events: Events = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(AtomicU64::new(0));
        let busy = (LEAD + Duration::from_secs(args.seconds)) * (runs * rates.len()) as u32;
        let appender = {
            let (stop, written) = (stop.clone(), written.clone());
            std::thread::spawn(move || append(held, busy, stop, written))
        };
        follower.start();
        let follower = Arc::new(Mutex::new(follower));
        println!(
            "busy windows: index --follow running{}, {:.0} MB appended at {:.1} MB/s, labels imported again a third into each",
            match args.foreground {
                true => " at normal priority (--foreground)",
                false => " under satflow --background, as are the imports",
            },
            held_bytes as f64 / 1e6,
            held_bytes as f64 / 1e6 / busy.as_secs_f64()
        );
        for run in 0..runs {
            for (r, &rate) in rates.iter().enumerate() {
                let (tip0, bytes0) = (tip(&conns[0]).await, written.load(Ordering::Relaxed));
                let reimport = {
                    let (follower, events, db, file) = (follower.clone(), events.clone(), db.clone(), file.clone());
                    let priority = priority.clone();
                    let at = LEAD + Duration::from_secs(args.seconds) / 3;
                    tokio::task::spawn_blocking(move || {
                        std::thread::sleep(at);
                        note(&events, "follower sent SIGTERM".into());
                        follower.lock().unwrap().stop();
                        note(&events, "follower stopped, labels import started".into());
                        let mut import = labels_import(&db, &file);
                        import.args(&priority);
                        let (took, _) = timed(import);
                        note(&events, format!("labels imported ({:.1} s), follower restarted", took.as_secs_f64()));
                        follower.lock().unwrap().start();
                    })
                };
                let w = window(&conns, &sample, rate, args.seconds, tpm).await;
                reimport.await.unwrap();
                for (k, call) in Call::ALL.into_iter().enumerate() {
                    figs[1][r][k].add(&w, call);
                }
                paces[1][r].push(pace(&w));
                let (tip1, bytes1) = (tip(&conns[0]).await, written.load(Ordering::Relaxed));
                let happened: Vec<String> = std::mem::take(&mut *events.lock().unwrap())
                    .into_iter()
                    .map(|(t, what)| format!("+{:.1} s {what}", t.duration_since(w.start).as_secs_f64()))
                    .collect();
                println!(
                    "  run {} at {rate}/s: server tip {tip0} -> {tip1}, {:.1} MB appended (to {:.1} of {:.0} MB); {}",
                    run + 1,
                    (bytes1 - bytes0) as f64 / 1e6,
                    bytes1 as f64 / 1e6,
                    held_bytes as f64 / 1e6,
                    happened.join(", ")
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        appender.join().unwrap();
        follower.lock().unwrap().stop();
    });
    std::fs::copy(server.log.path(), here.join("server.log")).unwrap();
    drop(server);
    let sha_after = mb_s(first);

    println!(
        "open loop, {} s measured per window (after {} s), {} per mille traces, medians of {runs} runs (max, counts, errors: all runs)",
        args.seconds,
        LEAD.as_secs(),
        tpm
    );
    println!(
        "{:>6} {:<16} | {:>8} {:>7} {:>7} {:>8} {:>6} | {:>8} {:>7} {:>7} {:>8} {:>6} | {:>9}",
        "rate",
        "call",
        "idle n",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "busy n",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "p99 busy/idle"
    );
    for (r, &rate) in rates.iter().enumerate() {
        for (k, call) in Call::ALL.into_iter().enumerate() {
            let (idle, busy) = (&figs[0][r][k], &figs[1][r][k]);
            let ratio = match (idle.p99.is_empty(), busy.p99.is_empty()) {
                (false, false) => format!(
                    "{:.1}x",
                    common::median_f64(&busy.p99) / common::median_f64(&idle.p99)
                ),
                _ => "-".into(),
            };
            println!(
                "{rate:>6} {:<16} | {} | {} | {ratio:>9}",
                call.name(),
                idle.cells(),
                busy.cells()
            );
        }
        let shown = |p: &[(f64, f64, f64)]| {
            let achieved: Vec<f64> = p.iter().map(|x| x.0).collect();
            let lag_max = p.iter().map(|x| x.2).fold(0.0, f64::max);
            format!(
                "achieved {:.0}/s, send lag p99 {:.2} ms, max {:.1} ms",
                common::median_f64(&achieved),
                common::median_f64(&p.iter().map(|x| x.1).collect::<Vec<_>>()),
                lag_max
            )
        };
        println!(
            "{:>6} {:<16} | idle: {} | busy: {}",
            "",
            "",
            shown(&paces[0][r]),
            shown(&paces[1][r])
        );
    }
    for (state, f) in [("idle", &figs[0]), ("busy", &figs[1])] {
        for (r, &rate) in rates.iter().enumerate() {
            for (k, call) in Call::ALL.into_iter().enumerate() {
                if !f[r][k].errors.is_empty() {
                    println!(
                        "errors, {state} at {rate}/s, {}: {:?}",
                        call.name(),
                        f[r][k].errors
                    );
                }
            }
        }
    }
    println!(
        "host: sha256d over {} on all cores, {:.0} MB/s before, {:.0} MB/s after (lower: a busier machine)",
        first[0].file_name().unwrap().to_string_lossy(),
        sha_before,
        sha_after
    );
    println!(
        "logs: {} and indexer.log beside it",
        here.join("server.log").display()
    );
}
