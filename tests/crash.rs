//! SIGKILL at random moments, then a normal run: the database must answer
//! exactly like one built without interruption. Also: one writer per DB.

mod common;

use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;

fn satflow_index(blocks: &std::path::Path, db: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_satflow"));
    c.args(["index", "--quiet", "--batch-mb", "0.01", "--blocks-dir"])
        .arg(blocks)
        .arg("--db")
        .arg(db)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Runs `index` to the end.
fn assert_indexes(blocks: &std::path::Path, db: &std::path::Path) {
    assert_succeeded(
        satflow_index(blocks, db)
            .stderr(Stdio::piped())
            .output()
            .unwrap(),
    );
}

/// A failed run shows what it printed.
fn assert_succeeded(out: std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn killed_at_random_points_then_resumed_equals_an_uninterrupted_run() {
    let blocks = blocks_dir(&[
        "mainnet/stale_fork/btcd_reorgtest_blk_0_to_4.dat",
        "mainnet/blk00000_first1MiB.dat",
    ]);
    let reference = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    assert_indexes(blocks.path(), reference.path());
    let full = t0.elapsed();

    let db = tempfile::tempdir().unwrap();
    let mut rng = Lcg::from_env();
    // Kill runs at random moments until 8 kills have landed; a run that
    // finishes first must equal the reference, and then we start over from
    // an empty database with shorter delays, so later kills land mid-way
    // however fast this machine is today.
    let (mut killed, mut completed) = (0, 0);
    let mut scale = full;
    for _ in 0..80 {
        if killed == 8 {
            break;
        }
        let mut child = satflow_index(blocks.path(), db.path())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(scale.mul_f64(rng.next_f64()));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed += 1;
        } else {
            assert_succeeded(child.wait_with_output().unwrap());
            assert_same(&dump_all(db.path()), &dump_all(reference.path()));
            assert_eq!(flow_graph(db.path()), flow_graph(reference.path()));
            completed += 1;
            std::fs::remove_dir_all(db.path()).unwrap();
            scale = scale.mul_f64(0.7);
        }
    }
    assert_eq!(
        killed, 8,
        "kills that landed mid-way ({completed} runs finished first)"
    );
    assert_indexes(blocks.path(), db.path());
    assert_same(&dump_all(db.path()), &dump_all(reference.path()));
    assert_eq!(flow_graph(db.path()), flow_graph(reference.path()));
}

#[test]
fn a_second_writer_gets_a_clear_error() {
    let blocks = blocks_dir(&["mainnet/btcd_blocks_h1-255.dat"]);
    let db = tempfile::tempdir().unwrap();
    let _first = satflow_indexer::Store::open(db.path(), satflow_indexer::Access::Write).unwrap();
    let out = satflow_index(blocks.path(), db.path())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already open for writing by another process"),
        "{err}"
    );
}

/// A batch ingests its appended rows (txs, outputs, inputs, addrs) before
/// it writes the rest and the tip: a crash in between leaves rows above the
/// tip's ids, which the next run must remove before anything else.
#[test]
fn appended_rows_above_the_tip_are_removed_by_the_next_run() {
    use satflow_indexer::store::SortedBatch;
    use satflow_indexer::{Access, Store};
    use satflow_schema::cf::{self, Appended, Family};

    /// Appends copies of the family's last row under `keys`: rows of the
    /// right shape, which only their keys place above the tip.
    fn strand<F: Appended>(store: &Store, batch: &mut SortedBatch, keys: &[F::Key]) {
        let (_, value) = store.last::<F>().unwrap().expect("an indexed row");
        for k in keys {
            batch.append::<F>(k, &value);
        }
    }

    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let reference = tempfile::tempdir().unwrap();
    let db = tempfile::tempdir().unwrap();
    for d in [&reference, &db] {
        assert_indexes(blocks.path(), d.path());
    }
    {
        let store = Store::open(db.path(), Access::Write).unwrap();
        let ids = store.tip_block().unwrap().unwrap().next_ids();
        let txs: Vec<_> = (0..3).map(|i| ids.tx + i).collect();
        let outputs: Vec<_> = (0..3).map(|i| ids.output + i).collect();
        let addrs: Vec<_> = (0..3).map(|i| ids.addr + i).collect();
        // Appended rows are ingested as table files at once, as a batch
        // does before it writes the rest; nothing else is in the batch.
        let mut batch = SortedBatch::default();
        strand::<cf::Txs>(&store, &mut batch, &txs);
        strand::<cf::Inputs>(&store, &mut batch, &txs);
        strand::<cf::Outputs>(&store, &mut batch, &outputs);
        strand::<cf::Addrs>(&store, &mut batch, &addrs);
        batch.commit(&store).unwrap();
    }
    let left = dump_all(db.path());
    assert_eq!(
        left[cf::Outputs::NAME].len(),
        dump_all(reference.path())[cf::Outputs::NAME].len() + 3
    );
    assert_indexes(blocks.path(), db.path());
    assert_same(&dump_all(db.path()), &dump_all(reference.path()));
}
