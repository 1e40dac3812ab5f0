//! `satflow serve --metrics-listen` and `--log-format json`: the real
//! server over mainnet heights 0–4521, called, then scraped over HTTP.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::Server;
use common::*;
use satflow_proto::v1 as pb;
use satflow_query::client::{self, ConnectOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

const STATUS: &str = "/satflow.v1.Chain/GetStatus";
const BLOCK: &str = "/satflow.v1.Chain/GetBlock";
const SUMMARY: &str = "/satflow.v1.Addresses/GetAddressSummary";
const WATCH: &str = "/grpc.health.v1.Health/Watch";

/// A loopback port nobody listens on (for the moment).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET /metrics` over HTTP/1.1: the content type and the body.
async fn scrape(port: u16) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap();
    (content_type, body.to_string())
}

/// The value of the sample `series` (name and labels, as written).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn calls(text: &str, method: &str, code: &str) -> Option<f64> {
    sample(
        text,
        &format!("satflow_grpc_requests_total{{method=\"{method}\",code=\"{code}\"}}"),
    )
}

fn timed(text: &str, method: &str) -> Option<f64> {
    sample(
        text,
        &format!("satflow_grpc_request_duration_seconds_count{{method=\"{method}\"}}"),
    )
}

/// Scrapes until `ok` holds of the exposition (up to 10 s).
async fn scrape_until(port: u16, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, text) = scrape(port).await;
        if ok(&text) {
            return text;
        }
        assert!(Instant::now() < until, "{what}:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn calls_are_counted_by_method_and_code_and_the_tip_is_exported() {
    let (_blocks, db, _) = indexed_blk00000();
    let token_file = db.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let port = free_port();
    let metrics_listen = format!("127.0.0.1:{port}");
    let server = Server::start(
        db.path(),
        &[
            "--metrics-listen",
            &metrics_listen,
            "--token-file",
            token_file.to_str().unwrap(),
            "--log-format",
            "json",
        ],
    );
    let mut c = client::connect(
        &server.url(),
        ConnectOptions {
            token: Some("s3cret".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let mut status = None;
    for _ in 0..2 {
        status = Some(
            c.chain
                .get_status(pb::GetStatusRequest {})
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let status = status.unwrap();
    assert_eq!(status.tip_height, 4521);
    let e = c
        .chain
        .get_block(pb::GetBlockRequest {
            id: Some(pb::get_block_request::Id::Height(1_000_000)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = c
        .addresses
        .get_address_summary(pb::GetAddressSummaryRequest {
            address: "1notanaddress".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // Refused by the admission interceptor, before any handler.
    let mut stranger = server.connect().await;
    let e = stranger
        .chain
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let (content_type, text) = scrape(port).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(calls(&text, STATUS, "OK"), Some(2.0), "{text}");
    assert_eq!(calls(&text, STATUS, "UNAUTHENTICATED"), Some(1.0), "{text}");
    assert_eq!(calls(&text, BLOCK, "NOT_FOUND"), Some(1.0), "{text}");
    assert_eq!(calls(&text, BLOCK, "OK"), None, "{text}");
    assert_eq!(
        calls(&text, SUMMARY, "INVALID_ARGUMENT"),
        Some(1.0),
        "{text}"
    );
    // Timed whatever their outcome: refusals too.
    assert_eq!(timed(&text, STATUS), Some(3.0), "{text}");
    assert_eq!(timed(&text, BLOCK), Some(1.0), "{text}");
    let bucket = |le: &str| {
        sample(
            &text,
            &format!("satflow_grpc_request_duration_seconds_bucket{{le=\"{le}\",method=\"{STATUS}\"}}"),
        )
        .or_else(|| {
            sample(
                &text,
                &format!("satflow_grpc_request_duration_seconds_bucket{{method=\"{STATUS}\",le=\"{le}\"}}"),
            )
        })
    };
    assert_eq!(bucket("+Inf"), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, "satflow_index_tip_height"),
        Some(f64::from(status.tip_height)),
        "{text}"
    );
    assert_eq!(
        sample(&text, "satflow_index_tip_timestamp_seconds"),
        Some(f64::from(status.tip_time)),
        "{text}"
    );
    // Indexed to the end of its blocks directory: no blocks behind.
    assert_eq!(status.best_header_height, status.tip_height);
    assert_eq!(status.lag_blocks, 0);
    assert_eq!(
        sample(&text, "satflow_index_lag_blocks"),
        Some(0.0),
        "{text}"
    );
    let age = sample(&text, "satflow_index_tip_age_seconds").unwrap();
    assert!(
        (age - status.lag_seconds as f64).abs() <= 5.0,
        "{age} vs {}",
        status.lag_seconds
    );
    // The calls read the index, through the block cache or not.
    let hits = sample(&text, "satflow_rocksdb_block_cache_hits_total").unwrap();
    let misses = sample(&text, "satflow_rocksdb_block_cache_misses_total").unwrap();
    assert!(hits + misses > 0.0, "{text}");
    // What RocksDB holds: the blocks those calls read are in the cache,
    // with each open table file's top-level index pinned there; the table
    // files themselves hold little beside.
    let cached = sample(&text, "satflow_rocksdb_block_cache_bytes").unwrap();
    let pinned = sample(&text, "satflow_rocksdb_block_cache_pinned_bytes").unwrap();
    assert!(cached > 0.0 && pinned > 0.0 && pinned <= cached, "{text}");
    assert!(
        sample(&text, "satflow_rocksdb_table_readers_bytes").is_some(),
        "{text}"
    );
    // Catch-up runs on its own schedule, once at start.
    scrape_until(port, "a catch-up round recorded", |t| {
        sample(t, "satflow_catch_up_duration_seconds_count").is_some_and(|n| n >= 1.0)
    })
    .await;

    // A stream is timed to its response headers, and counted when it
    // ends: here when the client goes away.
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: "satflow.v1.Chain".into(),
        })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap().unwrap();
    let (_, text) = scrape(port).await;
    assert_eq!(timed(&text, WATCH), Some(1.0), "{text}");
    assert!(
        !text.contains(&format!("method=\"{WATCH}\",code=")),
        "{text}"
    );
    drop(watch);
    scrape_until(port, "the watch counted as CANCELLED", |t| {
        calls(t, WATCH, "CANCELLED") == Some(1.0)
    })
    .await;

    // --log-format json reached the server: every log line is JSON.
    json_lines(
        &std::fs::read_to_string(server.log.path()).unwrap(),
        "serve",
    );
}

/// Every line of `log` is a JSON object with a level and a message, and
/// there is at least one.
fn json_lines(log: &str, what: &str) -> Vec<serde_json::Value> {
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l:?}"))
        })
        .collect();
    assert!(!lines.is_empty(), "{what}: no log lines");
    for l in &lines {
        assert!(l["level"].is_string(), "{what}: {l}");
        assert!(l["fields"]["message"].is_string(), "{what}: {l}");
    }
    lines
}

fn satflow_index(blocks: &Path, db: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_satflow"))
        .arg("index")
        .arg("--blocks-dir")
        .arg(blocks)
        .arg("--db")
        .arg(db)
        .args(extra)
        .env("RUST_LOG", "info")
        .output()
        .unwrap()
}

#[test]
fn log_format_json_makes_every_log_line_json() {
    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let db = tempfile::tempdir().unwrap();
    let out = satflow_index(blocks.path(), db.path(), &["--log-format", "json"]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    json_lines(&stderr, "index");
    // Text by default: the same run's lines are not JSON.
    let out = satflow_index(blocks.path(), db.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let first = stderr.lines().next().expect("log lines");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_err(),
        "{first}"
    );
}
