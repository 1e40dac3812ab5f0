//! SIGKILL while `satflow index` writes the flow graph: the next run
//! repairs the graph from its journal and goes on from the last
//! checkpoint, never rebuilding it, into the graph an uninterrupted run
//! builds.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use satflow_indexer::flow::{Flow, Tip};
use satflow_indexer::IndexOptions;

/// `satflow index` without clusters, logging what the flow graph does.
fn satflow_index(blocks: &Path, db: &Path, batch_mb: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_satflow"));
    c.args(["index", "--quiet", "--no-cluster", "--batch-mb", batch_mb])
        .arg("--blocks-dir")
        .arg(blocks)
        .arg("--db")
        .arg(db)
        .env("RUST_LOG", "info,satflow_indexer::flow=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Runs `satflow index` and SIGKILLs it once it has checkpointed `inputs`
/// inputs into the flow graph and is not done (the journal is there);
/// false when it finished first.
fn kill_mid_flow_update(blocks: &Path, db: &Path, batch_mb: &str, inputs: u64) -> bool {
    let dirty = db.join("flow/dirty");
    let mut child = satflow_index(blocks, db, batch_mb).spawn().unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return false;
        }
        // Mid-write, the tip reads as the old or the new one (renamed).
        let checkpointed = Flow::open(db).ok().flatten().map(|f| f.tip().inputs);
        if checkpointed >= Some(inputs) && dirty.exists() {
            child.kill().unwrap();
            // It may have ended between the look and the kill.
            return child.wait().unwrap().signal() == Some(libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The flow graph's files up to its tip (entry sizes as in
/// `indexer/src/flow/mod.rs`), and the tip: the bytes a reader sees.
fn flow_files(db: &Path) -> (Tip, Vec<Vec<u8>>) {
    let tip = Flow::open(db).unwrap().expect("a flow graph").tip();
    let files = [
        ("blocks", 5, tip.blocks),
        ("txs", 2, tip.txs),
        ("inputs", 2, tip.inputs),
        ("outputs", 3, tip.outputs),
    ]
    .map(|(name, words, n)| {
        let bytes = std::fs::read(db.join("flow").join(name)).unwrap();
        bytes[..(n * words * 8) as usize].to_vec()
    });
    (tip, files.to_vec())
}

/// An index of `blocks` without a flow graph.
fn indexed_without_flow(blocks: &Path) -> tempfile::TempDir {
    let db = tempfile::tempdir().unwrap();
    satflow_indexer::run(&IndexOptions {
        flow: false,
        cluster: false,
        bulk: false,
        ..options(blocks, db.path())
    })
    .unwrap();
    db
}

/// A run that brings the flow graph up to an index that lacked it is
/// killed mid-way (smaller batches until a kill lands); the next run
/// repairs, goes on from where the killed one checkpointed, and ends with
/// the graph of an uninterrupted run.
#[test]
fn a_kill_during_the_flow_update_costs_a_batch_not_a_rebuild() {
    let (blocks, reference) = synth_chain(31, 4 << 20);
    let (blocks, reference) = (blocks.path(), reference.path());
    let whole = Flow::open(reference).unwrap().expect("a flow graph").tip();
    let tip = whole.height().unwrap();
    // Half the spends in, so that the batches journal marks below the tip.
    let halfway = whole.inputs / 2;
    let killed = ["0.05", "0.02", "0.01", "0.005"]
        .iter()
        .find_map(|batch_mb| {
            let db = indexed_without_flow(blocks);
            kill_mid_flow_update(blocks, db.path(), batch_mb, halfway).then_some(db)
        })
        .expect("a kill mid-way through the flow graph");
    let db = killed.path();
    let at_kill = Flow::open(db).unwrap().expect("a checkpoint").tip();

    let out = satflow_index(blocks, db, "32")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let journalled: u64 = log
        .split("repairing the flow graph from ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no repair: {log}"));
    assert!(journalled > 0, "{log}");
    assert!(!log.contains("rebuilding the flow graph"), "{log}");
    let from = at_kill.height().expect("a checkpoint holds blocks") + 1;
    if from <= tip {
        // The work done: only the blocks after the last checkpoint.
        let appending = format!("appending heights {from}..={tip} to the flow graph");
        assert!(log.contains(&appending), "{appending}\n{log}");
    }
    assert_eq!(flow_files(db), flow_files(reference));
    assert_eq!(flow_graph(db), flow_graph(reference));
}
