//! Alert latency: from a block landing in the blocks directory to its
//! alert arriving on a `Subscribe` stream, whole processes throughout.
//!
//!     cargo bench --bench alert_latency -- [--size 512MB] [--blocks 10] [--poll-ms 100] [--follow-ms 100]
//!
//! The generated chain of --size (seed 7; at 512MB its blocks are
//! mainnet-sized, ~1.2 MB and ~2,600 transactions) is cut --blocks short of
//! its tip and indexed; the exchanges' addresses (from the generator's
//! truth, --labels-per-exchange of each) are imported as labels. Then a
//! `satflow index --follow` and a `satflow serve` process run, with two
//! watches: any activity of the exchange category, and a thief's coins
//! reaching an exchange within 6 hops (with --pattern-watches, one more per
//! suspicious pattern kind on the exchange category). The missing blocks are appended to a
//! blk file one at a time, each once the previous one's alert arrived; the
//! figure is the time from the append to the first alert of that block on
//! the stream. `raised` is when the server raised the block's alerts, just
//! before storing them (the same machine's clock).

mod common;
#[path = "../tests/common/mod.rs"]
mod testkit;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use common::{exchange_labels, median, satflow, synth_dir, synth_index, timed, Common};
use satflow_indexer::labels::{self, Defaults, Format};
use satflow_indexer::{Access, Store};
use satflow_proto::v1 as pb;
use satflow_query::client::WatchesClient;
use satflow_query::patterns::Kind;
use testkit::server::Server;

#[derive(clap::Parser)]
struct Args {
    /// Size of the generated chain (seed 7).
    #[arg(long, default_value = "512MB")]
    size: String,
    /// Blocks appended, one figure each.
    #[arg(long, default_value_t = 10)]
    blocks: usize,
    /// `satflow index --follow --poll-ms`.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// `satflow serve --follow-ms`.
    #[arg(long, default_value_t = 100)]
    follow_ms: u64,
    /// Addresses labelled per exchange.
    #[arg(long, default_value_t = 2000)]
    labels_per_exchange: usize,
    /// Also watch the exchange category for every suspicious pattern (one
    /// watch per kind), to see what pattern evaluation adds.
    #[arg(long)]
    pattern_watches: bool,
    #[command(flatten)]
    common: Common,
}

/// Kills the child when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let a = Args::parse();
    let blocks = synth_dir(&a.common.work, &a.size);
    let full = synth_index(&a.common.work, &a.size);
    let chain = testkit::best_chain(&blocks, &full);
    let cut = chain.len() - a.blocks;

    let here = a.common.work.join("alert-latency");
    let _ = std::fs::remove_dir_all(&here);
    let (live, db) = (here.join("blocks"), here.join("db"));
    std::fs::create_dir_all(&live).unwrap();
    testkit::build::write_blk(&live.join("blk00000.dat"), &chain[..cut]);
    let mut cmd = satflow();
    cmd.args(["index", "--quiet", "--blocks-dir"])
        .arg(&live)
        .arg("--db")
        .arg(&db)
        .stdout(Stdio::null());
    let (took, _) = timed(cmd);
    println!(
        "indexed blocks 0..{} in {:.1} s",
        cut - 1,
        took.as_secs_f64()
    );
    let labelled = import_exchanges(&blocks.join("truth"), &db, &here, a.labels_per_exchange);
    let thief = first_thief(&blocks.join("truth"), &full);

    // The children's logs time each step: indexing, catch-up, evaluation.
    std::env::set_var("RUST_LOG", "info");
    let _indexer = Running(
        satflow()
            .args(["index", "--quiet", "--follow", "--blocks-dir"])
            .arg(&live)
            .arg("--db")
            .arg(&db)
            .args(["--poll-ms", &a.poll_ms.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(here.join("indexer.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let server = Server::start(&db, &["--follow-ms", &a.follow_ms.to_string()]);
    println!(
        "{labelled} exchange addresses labelled · index --follow --poll-ms {} · serve --follow-ms {}",
        a.poll_ms, a.follow_ms
    );
    println!(
        "{:>6} {:>8} {:>6} {:>7} {:>10} {:>10}",
        "height", "MB", "txs", "alerts", "raised ms", "stream ms"
    );

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut raised, mut streamed) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        let mut c = server.connect().await.watches;
        put_watches(&mut c, &thief, a.pattern_watches).await;
        let newest = newest_id(&mut c).await;
        let mut stream = c
            .subscribe(pb::SubscribeRequest {
                after_id: newest,
                watches: vec![],
            })
            .await
            .unwrap()
            .into_inner();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(live.join("blk00001.dat"))
            .unwrap();
        for (height, block) in chain.iter().enumerate().skip(cut) {
            let raw = bitcoin::consensus::serialize(block);
            let mut record = vec![0xfa, 0xbf, 0xb5, 0xda];
            record.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            record.extend_from_slice(&raw);
            file.write_all(&record).unwrap();
            file.flush().unwrap();
            let (t0, t0_ms) = (Instant::now(), unix_ms());
            let first = loop {
                let alert = tokio::time::timeout(Duration::from_secs(60), stream.message())
                    .await
                    .expect("an alert within a minute")
                    .unwrap()
                    .unwrap();
                if alert.height as usize == height {
                    break alert;
                }
            };
            let got = t0.elapsed();
            let alerts = count_block(&c, height).await;
            raised.push(first.raised_at_ms - t0_ms);
            streamed.push(got.as_millis() as i64);
            println!(
                "{height:>6} {:>8.2} {:>6} {:>7} {:>10} {:>10}",
                raw.len() as f64 / 1e6,
                block.txdata.len(),
                alerts,
                first.raised_at_ms - t0_ms,
                got.as_millis()
            );
        }
    });
    std::fs::copy(server.log.path(), here.join("server.log")).unwrap();
    println!(
        "logs: {} and server.log beside it",
        here.join("indexer.log").display()
    );
    println!(
        "median over {} blocks: raised {} ms, on the stream {} ms (max {} ms)",
        streamed.len(),
        median(raised.clone()),
        median(streamed.clone()),
        streamed.iter().max().unwrap()
    );
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn newest_id(c: &mut WatchesClient) -> u64 {
    c.list_watches(pb::ListWatchesRequest {})
        .await
        .unwrap()
        .into_inner()
        .newest_alert_id
}

/// Alerts block `height` raised, from a replay of the store.
async fn count_block(c: &WatchesClient, height: usize) -> usize {
    let mut c = c.clone();
    let newest = newest_id(&mut c).await;
    if newest == 0 {
        return 0;
    }
    let mut replay = c
        .subscribe(pb::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut n = 0;
    while let Some(a) = replay.message().await.unwrap() {
        n += usize::from(a.height as usize == height);
        if a.id == newest {
            break;
        }
    }
    n
}

/// Labels `per` addresses of each exchange; returns how many.
fn import_exchanges(truth: &Path, db: &Path, here: &Path, per: usize) -> usize {
    let csv = exchange_labels(truth, per);
    let file = here.join("exchanges.csv");
    std::fs::write(&file, csv).unwrap();
    let store = Store::open(db, Access::Write).unwrap();
    labels::import(&store, &file, Format::Csv, &Defaults::default())
        .unwrap()
        .labels
        .len()
}

/// The address holding the first theft's coins.
fn first_thief(truth: &Path, full: &Path) -> String {
    let flow = std::fs::read_to_string(truth.join("flows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|f| f["kind"] == "theft")
        .expect("a theft");
    let o = &flow["source"]["outpoints"][0];
    let q = testkit::query::Q::open(full);
    q.tx(o["txid"].as_str().unwrap()).outputs[o["vout"].as_u64().unwrap() as usize]
        .address
        .clone()
}

async fn put_watches(c: &mut WatchesClient, thief: &str, patterns: bool) {
    use pb::watch::{Rule, Subject};
    let kinds = Kind::ALL.iter().filter(|_| patterns).map(|k| {
        (
            k.name(),
            Subject::Category("exchange".into()),
            Rule::Pattern(pb::PatternRule {
                kind: k.name().into(),
            }),
        )
    });
    let watches = [
        (
            "exchanges",
            Subject::Category("exchange".into()),
            Rule::AnyActivity(pb::AnyActivity {}),
        ),
        (
            "theft",
            Subject::Address(thief.into()),
            Rule::Exposure(pb::ExposureRule {
                category: "exchange".into(),
                max_hops: 6,
                direction: pb::ExposureDirection::ExposureToCategory.into(),
            }),
        ),
    ];
    for (name, subject, rule) in watches.into_iter().chain(kinds) {
        c.put_watch(pb::Watch {
            name: name.into(),
            subject: Some(subject),
            rule: Some(rule),
        })
        .await
        .unwrap();
    }
}
