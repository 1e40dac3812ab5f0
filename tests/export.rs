//! Parquet exports read back by a real engine (DuckDB, through its Python
//! package, `tests/tools/duckdb_query.py`): row counts, value and fee
//! totals, balances and clusters equal what satflow's own API answers;
//! exporting again adds only new partitions, and a reorg rewrites the
//! partitions it touched.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::query::Q;
use common::*;
use satflow_export::{export, ExportOptions, Summary, Table};
use satflow_indexer::labels::{Defaults, Format};
use satflow_indexer::{Access, Store};
use satflow_query::clusters;
use satflow_schema::cf::{self, Family};
use satflow_schema::ClusterId;
use serde_json::{json, Value};

const GENESIS: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

fn options(db: &Path, out: &Path, partition_mb: f64) -> ExportOptions {
    ExportOptions {
        db: db.to_owned(),
        out: out.to_owned(),
        from: None,
        to: None,
        tables: None,
        partition_mb: Some(partition_mb),
        quiet: true,
    }
}

/// Each query's rows, as DuckDB answers them over the export at `out`.
fn duckdb(out: &Path, queries: &[&str]) -> Vec<Vec<Vec<Value>>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/duckdb_query.py");
    // The project's virtual environment, where scripts/setup.sh installs
    // DuckDB (a stock Debian or Ubuntu Python refuses it system-wide).
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    let mut child = Command::new(&python)
        .arg(script)
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/setup.sh)", python.display()));
    serde_json::to_writer(child.stdin.take().unwrap(), queries).unwrap();
    let done = child.wait_with_output().unwrap();
    assert!(
        done.status.success(),
        "DuckDB failed (scripts/setup.sh installs it): {}",
        String::from_utf8_lossy(&done.stderr)
    );
    serde_json::from_slice(&done.stdout).unwrap()
}

/// The single value a query answers.
fn one(out: &Path, query: &str) -> Value {
    let rows = duckdb(out, &[query]).remove(0);
    assert_eq!(rows.len(), 1, "{query}: {rows:?}");
    rows[0][0].clone()
}

fn int(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Rows of a column family of the index at `db`.
fn rows<F: Family + 'static>(db: &Path) -> u64 {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let count = store.scan_all::<F>().try_fold(0, |n, r| r.map(|_| n + 1));
    count.unwrap()
}

/// The OFAC list, as `satflow labels import --format list --category sanctioned`.
fn import_ofac(db: &Path) {
    import_labels(
        db,
        &data("labels/ofac_sanctioned_addresses_XBT.txt"),
        Format::List,
        Defaults {
            label: Some("OFAC SDN".into()),
            category: Some(satflow_indexer::labels::Category::Sanctioned),
            ..Defaults::default()
        },
    );
}

#[test]
fn duckdb_reads_back_what_the_index_answers_on_real_blocks() {
    let (_blocks, db, indexed) = indexed_blk00000();
    import_ofac(db.path());
    let out = tempfile::tempdir().unwrap();
    // About 0.2 MB of blk data per partition: several partitions.
    let s = export(&options(db.path(), out.path(), 0.2)).unwrap();
    assert!(s.partitions_written >= 4, "{s:?}");
    let q = Q::open(db.path());
    let status = q.status();
    assert_eq!(status.tip_height, 4521);

    // Row counts: every block, tx and output; every input but the coinbases'.
    let blocks = 4522;
    let counts = duckdb(
        out.path(),
        &[
            "SELECT count(*), min(height), max(height), count(DISTINCT height_from) FROM blocks",
            "SELECT count(*) FROM transactions",
            "SELECT count(*) FROM outputs",
            "SELECT count(*) FROM inputs",
            "SELECT hash FROM blocks WHERE height = 0",
            "SELECT sum(input_count) - count(*) FROM blocks",
        ],
    );
    assert_eq!(
        json!(counts[0][0]),
        json!([blocks, 0, 4521, s.partitions_written])
    );
    assert_eq!(int(&counts[1][0][0]), indexed.txs);
    assert_eq!(int(&counts[1][0][0]), status.tx_count);
    assert_eq!(int(&counts[2][0][0]), status.output_count);
    assert_eq!(int(&counts[3][0][0]), indexed.inputs);
    assert_eq!(
        int(&counts[5][0][0]),
        indexed.inputs,
        "input counts include the coinbase's"
    );
    assert_eq!(counts[4][0][0], GENESIS);
    assert_eq!(s.exported[&Table::Blocks].rows, blocks);

    // Values: what was created less what was spent is the UTXO set.
    let (utxos, utxo_value) = utxo_set(db.path());
    let sums = duckdb(
        out.path(),
        &[
            "SELECT (SELECT sum(value) FROM outputs) - (SELECT sum(value) FROM inputs)",
            "SELECT count(*), sum(o.value) FROM outputs o ANTI JOIN inputs i \
             ON o.txid = i.prev_txid AND o.vout = i.prev_vout",
            "SELECT sum(fee), count(fee) FROM transactions",
            "SELECT sum(fees) FROM blocks",
            "SELECT count(*) FROM transactions t JOIN \
             (SELECT txid, sum(value) AS v FROM inputs GROUP BY txid) i USING (txid) \
             WHERE i.v - t.output_value <> t.fee",
        ],
    );
    assert_eq!(int(&sums[0][0][0]), utxo_value);
    assert_eq!(
        [int(&sums[1][0][0]), int(&sums[1][0][1])],
        [utxos, utxo_value]
    );
    let fees: u64 = (0..=4521).map(|h| q.block(h).fees.unwrap()).sum();
    assert!(fees > 0);
    assert_eq!(int(&sums[2][0][0]), fees);
    assert_eq!(int(&sums[2][0][1]), indexed.txs, "every fee is known");
    assert_eq!(int(&sums[3][0][0]), fees);
    assert_eq!(int(&sums[4][0][0]), 0, "fee = inputs - outputs");

    // The first payment, block 170: Satoshi to Hal Finney.
    let first = duckdb(
        out.path(),
        &[
            "SELECT height, position, fee, is_coinbase FROM transactions \
             WHERE txid = 'f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16'",
            "SELECT prev_txid, prev_vout, prev_height, value, address FROM inputs \
             WHERE txid = 'f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16'",
            "SELECT vout, value, script_type, address FROM outputs \
             WHERE txid = 'f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16' ORDER BY vout",
        ],
    );
    assert_eq!(json!(first[0]), json!([[170, 1, 0, false]]));
    assert_eq!(
        json!(first[1]),
        json!([[
            "0437cd7f8525ceed2324359c2d0ba26006d92d856a9c20fa0241106ee5a597c9",
            0,
            9,
            5_000_000_000u64,
            "12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S",
        ]])
    );
    assert_eq!(first[2][0][1], 1_000_000_000u64);
    assert_eq!(first[2][0][2], "p2pk");
    assert_eq!(first[2][0][3], "1Q2TWHE3GMdB6BZKafqwxXtWAWgFt5Jvm3");

    // Balances, received and tx counts of the busiest addresses, and of
    // Satoshi's block-9 address, equal the API's address summaries.
    let busiest = duckdb(
        out.path(),
        &[
            "SELECT address FROM (SELECT address, txid FROM outputs UNION ALL \
           SELECT address, txid FROM inputs) WHERE address IS NOT NULL \
           GROUP BY address ORDER BY count(DISTINCT txid) DESC, address LIMIT 8",
        ],
    )
    .remove(0);
    let mut addresses: Vec<String> = busiest
        .iter()
        .map(|r| r[0].as_str().unwrap().to_owned())
        .collect();
    addresses.push("12cbQLTFMXRnSzktFkuoG3eHoMeFtpTu3S".into());
    for a in &addresses {
        let sql = format!(
            "SELECT (SELECT coalesce(sum(value), 0) FROM outputs WHERE address = '{a}'), \
                    (SELECT coalesce(sum(value), 0) FROM inputs WHERE address = '{a}'), \
                    (SELECT count(DISTINCT txid) FROM (SELECT txid FROM outputs WHERE address = '{a}' \
                     UNION ALL SELECT txid FROM inputs WHERE address = '{a}'))"
        );
        let row = duckdb(out.path(), &[&sql]).remove(0).remove(0);
        let summary = q.summary(a).unwrap().unwrap();
        let (received, sent, txs) = (int(&row[0]), int(&row[1]), int(&row[2]));
        assert_eq!(
            (received, received - sent, txs),
            (summary.received, summary.balance, summary.tx_count),
            "{a}"
        );
    }

    // Labels as imported; clusters as the API gives them.
    let labels = duckdb(
        out.path(),
        &[
            "SELECT count(*), count(DISTINCT category), min(category), min(label) FROM labels",
            "SELECT cluster_id, count(*), min(cluster_size), max(cluster_size) FROM address_clusters \
             GROUP BY cluster_id ORDER BY count(*) DESC, cluster_id LIMIT 5",
            "SELECT count(*) FROM address_clusters",
        ],
    );
    let all_labels =
        satflow_indexer::labels::all(&Store::open(db.path(), Access::ReadOnly).unwrap()).unwrap();
    assert!(all_labels.len() > 100);
    assert_eq!(
        json!(labels[0][0]),
        json!([all_labels.len(), 1, "sanctioned", "OFAC SDN"])
    );
    assert!(
        !labels[1].is_empty(),
        "block 0–4521 has multi-input clusters"
    );
    for row in &labels[1] {
        let cluster = clusters::cluster(&q.0, ClusterId(int(&row[0]))).unwrap();
        assert_eq!(
            [int(&row[1]), int(&row[2]), int(&row[3])],
            [cluster.size; 3]
        );
    }
    assert_eq!(int(&labels[2][0][0]), rows::<cf::ClusterMembers>(db.path()));
}

#[test]
fn columns_have_engine_types_zstd_pages_and_bloom_filters() {
    let (_blocks, db, _) = indexed_blk00000();
    let out = tempfile::tempdir().unwrap();
    export(&options(db.path(), out.path(), 0.5)).unwrap();
    let types: BTreeMap<String, String> = duckdb(
        out.path(),
        &["SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM transactions)"],
    )
    .remove(0)
    .into_iter()
    .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into()))
    .collect();
    for (column, ty) in [
        ("height", "INTEGER"),
        ("block_time", "TIMESTAMP WITH TIME ZONE"),
        ("txid", "VARCHAR"),
        ("fee", "BIGINT"),
        ("output_value", "BIGINT"),
        ("is_coinbase", "BOOLEAN"),
        ("height_from", "BIGINT"),
    ] {
        assert_eq!(types[column], ty, "{column}: {types:?}");
    }
    let glob = out.path().join("transactions/*/*.parquet");
    let meta = duckdb(
        out.path(),
        &[
            &format!(
                "SELECT DISTINCT compression FROM parquet_metadata('{}')",
                glob.display()
            ),
            &format!(
                "SELECT count(*), count(bloom_filter_offset) FROM parquet_metadata('{}') \
                 WHERE path_in_schema = 'txid'",
                glob.display()
            ),
            &format!(
                "SELECT count(*), count(bloom_filter_offset) FROM parquet_metadata('{}') \
                 WHERE path_in_schema = 'address'",
                out.path().join("outputs/*/*.parquet").display()
            ),
            "SELECT time FROM blocks WHERE height = 0",
        ],
    );
    assert_eq!(meta[0], [vec![Value::from("ZSTD")]]);
    for (column, row) in [("txid", &meta[1][0]), ("address", &meta[2][0])] {
        assert!(int(&row[0]) >= 2, "{column}: {row:?}");
        assert_eq!(
            row[0], row[1],
            "every {column} column chunk has a bloom filter"
        );
    }
    assert!(
        meta[3][0][0]
            .as_str()
            .unwrap()
            .starts_with("2009-01-03 18:15:05"),
        "{meta:?}"
    );
}

#[test]
fn every_input_of_a_generated_chain_joins_the_output_it_spends() {
    // About 90,000 transactions: chunks of 50,000 read across each other's
    // coins, from memory and from the index.
    let (_blocks, db) = synth_chain(11, 40_000_000);
    let out = tempfile::tempdir().unwrap();
    // The first partition holds two chunks.
    let s = export(&options(db.path(), out.path(), 30.0)).unwrap();
    assert!(s.partitions_written >= 2, "{s:?}");
    assert!(s.exported[&Table::Transactions].rows > 80_000, "{s:?}");
    let (utxos, utxo_value) = utxo_set(db.path());
    let checks = duckdb(
        out.path(),
        &[
            "SELECT count(*), count(o.txid) FROM inputs i LEFT JOIN outputs o \
             ON o.txid = i.prev_txid AND o.vout = i.prev_vout AND o.value = i.value \
             AND o.address IS NOT DISTINCT FROM i.address AND o.height = i.prev_height \
             AND o.script_type = i.script_type",
            "SELECT max(n) FROM (SELECT count(*) AS n FROM inputs GROUP BY prev_txid, prev_vout)",
            "SELECT count(*), sum(o.value) FROM outputs o ANTI JOIN inputs i \
             ON o.txid = i.prev_txid AND o.vout = i.prev_vout",
            "SELECT count(*) FROM transactions t JOIN \
             (SELECT txid, sum(value) AS v FROM inputs GROUP BY txid) i USING (txid) \
             WHERE i.v - t.output_value <> t.fee",
            "SELECT sum(fee) FROM transactions",
            "SELECT count(DISTINCT cluster_id), count(*) FROM address_clusters",
        ],
    );
    let biggest = one(
        out.path(),
        "SELECT max(n) FROM (SELECT count(*) AS n FROM transactions GROUP BY height_from)",
    );
    assert!(
        int(&biggest) > 50_000,
        "a partition of more than one chunk: {biggest}"
    );
    let (inputs, joined) = (int(&checks[0][0][0]), int(&checks[0][0][1]));
    assert!(inputs > 100_000);
    assert_eq!(
        joined, inputs,
        "every input finds its coin, value, address and height"
    );
    assert_eq!(int(&checks[1][0][0]), 1, "each coin is spent once");
    assert_eq!(
        [int(&checks[2][0][0]), int(&checks[2][0][1])],
        [utxos, utxo_value]
    );
    assert_eq!(int(&checks[3][0][0]), 0);
    let q = Q::open(db.path());
    let fees: u64 = (0..=q.status().tip_height)
        .map(|h| q.block(h).fees.unwrap())
        .sum();
    assert_eq!(int(&checks[4][0][0]), fees);
    assert_eq!(
        [int(&checks[5][0][0]), int(&checks[5][0][1])],
        [
            rows::<cf::ClusterStats>(db.path()),
            rows::<cf::ClusterMembers>(db.path())
        ]
    );
}

/// The files of every partition of the export at `out`, with their inode
/// and modification time: what a later export left untouched.
fn partition_files(out: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let mut files = BTreeMap::new();
    for table in ["blocks", "transactions", "inputs", "outputs"] {
        for part in std::fs::read_dir(out.join(table)).unwrap() {
            for f in std::fs::read_dir(part.unwrap().path()).unwrap() {
                let f = f.unwrap();
                let meta = f.metadata().unwrap();
                files.insert(f.path(), (meta.ino(), meta.modified().unwrap()));
            }
        }
    }
    files
}

/// Every row of every chain table, in a fixed order.
fn chain_rows(out: &Path) -> Vec<Vec<Vec<Value>>> {
    duckdb(
        out,
        &[
            "SELECT * FROM blocks ORDER BY height",
            "SELECT * FROM transactions ORDER BY height, position",
            "SELECT * FROM inputs ORDER BY height, txid, input_index",
            "SELECT * FROM outputs ORDER BY height, txid, vout",
        ],
    )
}

#[test]
fn a_second_export_adds_new_partitions_and_a_reorg_rewrites_what_it_replaced() {
    let blocks = blocks_dir(&[
        "mainnet/stale_fork/btcd_reorgtest_blk_0_to_4.dat",
        "mainnet/stale_fork/btcd_blk_3A.dat",
        "mainnet/stale_fork/btcd_blk_4A.dat",
        "mainnet/stale_fork/btcd_blk_5A.dat",
    ]);
    let db = tempfile::tempdir().unwrap();
    assert_eq!(index(blocks.path(), db.path()).tip_height, Some(5));
    let out = tempfile::tempdir().unwrap();
    // Partitions of 400 bytes of blk data: two of mainnet's early blocks
    // (215 bytes, genesis 285), one or two of btcd's (220–662).
    let small = 0.0004;
    let tables = Some(vec![
        Table::Blocks,
        Table::Transactions,
        Table::Inputs,
        Table::Outputs,
    ]);
    let first = export(&ExportOptions {
        tables: tables.clone(),
        ..options(db.path(), out.path(), small)
    })
    .unwrap();
    assert_eq!(first.partitions_written, 4);

    // The real chain: heights 1–5 of the btcd branch leave the best chain.
    add_blk(blocks.path(), "mainnet/blk00000_first1MiB.dat");
    assert_eq!(index(blocks.path(), db.path()).blocks_undone, 5);
    let to = |h: u32| ExportOptions {
        to: Some(h),
        tables: tables.clone(),
        ..options(db.path(), out.path(), small)
    };
    let second: Summary = export(&to(11)).unwrap();
    // No partition survives: the first holds blocks 0 and 1.
    assert_eq!(second.partitions_dropped, 4, "{second:?}");
    assert_eq!(
        second.partitions_written, 6,
        "heights 0–11 in pairs: {second:?}"
    );

    let fresh = tempfile::tempdir().unwrap();
    export(&ExportOptions {
        to: Some(11),
        tables: tables.clone(),
        ..options(db.path(), fresh.path(), small)
    })
    .unwrap();
    let rows = chain_rows(out.path());
    assert_eq!(rows, chain_rows(fresh.path()));
    assert_eq!(rows[0].len(), 12);
    assert_eq!(rows[0].last().unwrap()[0], 11);

    // Nothing new: nothing written. Then more blocks: earlier files stay.
    let again = export(&to(11)).unwrap();
    assert_eq!((again.partitions_written, again.partitions_dropped), (0, 0));
    let kept = partition_files(out.path());
    let third = export(&to(40)).unwrap();
    assert_eq!(third.partitions_written, 15, "{third:?}");
    let after = partition_files(out.path());
    for (path, modified) in &kept {
        assert_eq!(
            after.get(path),
            Some(modified),
            "{} was rewritten",
            path.display()
        );
    }
    assert_eq!(third.tables[&Table::Blocks].rows, 29, "heights 12–40 only");
    assert_eq!(one(out.path(), "SELECT count(*) FROM blocks"), 41);
}

#[test]
fn a_lone_partition_left_unfinished_is_rewritten_with_the_blocks_that_follow() {
    let (_blocks, db, _) = indexed_blk00000();
    import_ofac(db.path());
    let out = tempfile::tempdir().unwrap();
    // One partition for everything: with --to 100 it ends unfinished.
    let opts = |to| ExportOptions {
        to,
        ..options(db.path(), out.path(), 1000.0)
    };
    let first = export(&opts(Some(100))).unwrap();
    assert_eq!(first.partitions_written, 1);
    assert_eq!(first.tables[&Table::Labels].files, 1);
    assert_eq!(first.tables[&Table::AddressClusters].files, 1);
    assert_eq!(one(out.path(), "SELECT max(height) FROM blocks"), 100);
    let second = export(&opts(None)).unwrap();
    assert_eq!(second.partitions_written, 1);
    assert_eq!(
        json!(duckdb(
            out.path(),
            &["SELECT count(*), max(height), count(DISTINCT height_from) FROM blocks"]
        )),
        json!([[[4522, 4521, 1]]])
    );
    // The labels and clusters were unchanged: not rewritten.
    for table in [Table::Labels, Table::AddressClusters] {
        assert_eq!(second.tables[&table].files, 0, "{table}");
        assert!(second.exported[&table].rows > 0, "{table}");
    }
}

#[test]
fn the_command_line_reports_bad_requests_and_a_concurrent_export() {
    let (_blocks, db, _) = indexed_blk00000();
    let out = tempfile::tempdir().unwrap();
    let satflow = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_satflow"))
            .arg("export")
            .args([
                "--db",
                db.path().to_str().unwrap(),
                "--out",
                out.path().to_str().unwrap(),
                "--quiet",
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let fails = |args: &[&str], needle: &str| {
        let o = satflow(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    };
    fails(&["--tables", "blocks,utxos"], "unknown table \"utxos\"");
    fails(
        &["--partition-mb", "0"],
        "--partition-mb 0: a positive number of MB",
    );
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), "mine").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_satflow"))
        .args([
            "export",
            "--quiet",
            "--db",
            db.path().to_str().unwrap(),
            "--out",
        ])
        .arg(foreign.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("holds files but no export manifest"),
        "{err}"
    );
    assert!(foreign.path().join("notes.txt").exists());
    fails(&["--from", "5000"], "the index holds heights 0 to 4521");

    let o = satflow(&["--partition-mb", "0.5", "--to", "3000"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(printed.contains("index tip       4521"), "{printed}");
    assert!(printed.contains("MB/s of blk data"), "{printed}");
    fails(&["--partition-mb", "2"], "has partitions of 0.5 MB");
    fails(&["--from", "7"], "is an export from height 0");

    let lock = std::fs::File::open(out.path().join("_satflow_export.lock")).unwrap();
    lock.lock().unwrap();
    fails(&[], "another satflow export is writing");
    drop(lock);
    // A table named twice is exported once.
    assert!(satflow(&["--tables", "blocks,outputs,blocks"])
        .status
        .success());
    assert_eq!(one(out.path(), "SELECT max(height) FROM blocks"), 4521);
    assert_eq!(one(out.path(), "SELECT count(*) FROM blocks"), 4522);
}

#[test]
fn an_export_killed_at_random_points_then_rerun_equals_an_uninterrupted_one() {
    let (_blocks, db, _) = indexed_blk00000();
    import_ofac(db.path());
    let export_cli = |out: &Path, to: Option<u32>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_satflow"));
        c.args(["export", "--quiet", "--partition-mb", "0.02", "--db"])
            .arg(db.path())
            .arg("--out")
            .arg(out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(to) = to {
            c.args(["--to", &to.to_string()]);
        }
        c
    };
    let all_rows = |out: &Path| {
        let mut rows = chain_rows(out);
        rows.extend(duckdb(
            out,
            &[
                "SELECT * FROM address_clusters ORDER BY cluster_id, address",
                "SELECT * FROM labels ORDER BY address, label",
            ],
        ));
        rows
    };
    let reference = tempfile::tempdir().unwrap();
    let t0 = std::time::Instant::now();
    assert!(export_cli(reference.path(), None)
        .status()
        .unwrap()
        .success());
    let full = t0.elapsed();
    let expected = all_rows(reference.path());

    // As in tests/crash.rs: kill at random moments until 6 kills landed
    // mid-way, shortening the delays whenever a run finishes first. Runs
    // stop at random heights, so later ones also replace an unfinished
    // last partition.
    let out = tempfile::tempdir().unwrap();
    let mut rng = Lcg::from_env();
    let (mut killed, mut scale) = (0, full);
    for _ in 0..60 {
        if killed == 6 {
            break;
        }
        let to = 1500 + (rng.next_f64() * 3021.0) as u32;
        let mut child = export_cli(out.path(), Some(to)).spawn().unwrap();
        std::thread::sleep(scale.mul_f64(rng.next_f64()));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed += 1;
            // What the manifest names is whole, and engines can read what
            // is there while no export runs.
            assert_manifest_intact(out.path());
            duckdb(out.path(), &["SELECT 1"]);
        } else {
            assert!(child.wait().unwrap().success());
            scale = scale.mul_f64(0.7);
        }
    }
    assert_eq!(killed, 6, "kills that landed mid-way");
    assert!(export_cli(out.path(), None).status().unwrap().success());
    assert_manifest_intact(out.path());
    assert_eq!(all_rows(out.path()), expected);
}

/// Every file the manifest at `out` names exists with its recorded size.
fn assert_manifest_intact(out: &Path) {
    let Ok(text) = std::fs::read_to_string(out.join("_satflow_export.json")) else {
        return;
    };
    let m: Value = serde_json::from_str(&text).unwrap();
    let mut named = Vec::new();
    for (table, parts) in m["partitions"].as_object().unwrap() {
        for p in parts.as_array().unwrap() {
            let dir = out
                .join(table)
                .join(format!("height_from={}", p["height_from"]));
            named.extend(p["files"].as_array().unwrap().iter().map(|f| {
                (
                    dir.join(f["name"].as_str().unwrap()),
                    f["bytes"].as_u64().unwrap(),
                )
            }));
        }
    }
    for (table, snap) in m["snapshots"].as_object().unwrap() {
        let dir = out.join(table);
        named.extend(snap["files"].as_array().unwrap().iter().map(|f| {
            (
                dir.join(f["name"].as_str().unwrap()),
                f["bytes"].as_u64().unwrap(),
            )
        }));
    }
    for (path, bytes) in named {
        let len = std::fs::metadata(&path).map(|m| m.len());
        assert_eq!(len.ok(), Some(bytes), "{}", path.display());
    }
}
