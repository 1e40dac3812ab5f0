//! A follower beside Bitcoin Core: files written, truncated and extended
//! under it, headers without valid proof of work, a corrupt first copy of
//! a block, SIGTERM mid catch-up, idle rounds, the open-file limit.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use bitcoin::{Block, CompactTarget};
use common::build::{block, coinbase, p2pkh, regtest_genesis, write_blk};
use common::*;
use satflow_indexer::{Indexer, Store};

/// A blk record of `b` as Core writes it (regtest magic, no XOR key).
fn record(b: &Block) -> Vec<u8> {
    let raw = bitcoin::consensus::serialize(b);
    let mut r = vec![0xfa, 0xbf, 0xb5, 0xda];
    r.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    r.extend(raw);
    r
}

/// A chain of `n` blocks after genesis, each paying its coinbase to a
/// script of its own.
fn chain_from(prev: &Block, n: usize, tag: u8) -> Vec<Block> {
    let mut out: Vec<Block> = Vec::new();
    for i in 0..n {
        let parent = out.last().unwrap_or(prev).block_hash();
        let cb = coinbase(&[tag, i as u8], &[(50_0000_0000, p2pkh(tag ^ i as u8))]);
        out.push(block(parent, 1_700_000_000 + i as u32, vec![cb]));
    }
    out
}

fn tip_height(s: &satflow_indexer::Summary) -> u32 {
    s.tip_height.expect("a tip")
}

/// Core preallocates blk files in chunks of zeros, writes each record into
/// them, and cuts the zero tail off when it moves to the next file. Here
/// one file goes through that many times under one `Indexer`, with records
/// sometimes visible by their length before their body: every round must
/// index exactly the whole records, and the end equals a one-shot index.
#[test]
fn a_blk_file_written_truncated_and_extended_under_a_follower() {
    let (synth, reference) = synth_chain(31, 600_000);
    let chain = best_chain(synth.path(), reference.path());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blk00000.dat");
    const CHUNK: u64 = 1 << 20;
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(CHUNK).unwrap();
    let mut end = 0u64;
    let put = |bytes: &[u8], at: u64| {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let need = at + bytes.len() as u64;
        let len = f.metadata().unwrap().len();
        if need > len {
            f.set_len(need.div_ceil(CHUNK) * CHUNK).unwrap();
        }
        f.write_all_at(bytes, at).unwrap();
    };
    // Genesis first: the first run needs it.
    let first = record(&chain[0]);
    put(&first, 0);
    end += first.len() as u64;
    let mut indexer = Indexer::open(options(dir.path(), &dir.path().join("db"))).unwrap();
    assert_eq!(tip_height(&indexer.run().unwrap()), 0);

    let mut rng = Lcg::from_env();
    let mut height = 0;
    let mut rounds = 0;
    while height + 1 < chain.len() {
        rounds += 1;
        let n = 1 + (rng.next_f64() * 4.0) as usize;
        let upto = (height + n).min(chain.len() - 1);
        for b in &chain[height + 1..=upto] {
            let r = record(b);
            put(&r, end);
            end += r.len() as u64;
        }
        // Half the time the next record shows its length and half its body.
        let half = upto + 1 < chain.len() && rng.next_f64() < 0.5;
        let mut pending = None;
        if half {
            let r = record(&chain[upto + 1]);
            let cut = r.len() / 2;
            put(&r[..cut], end);
            pending = Some((r, cut));
        }
        let s = indexer.run().unwrap();
        assert_eq!(tip_height(&s), upto as u32, "round {rounds}");
        if half {
            assert!(
                s.notes
                    .iter()
                    .any(|n| n.contains("not a valid block") || n.contains("declares")),
                "round {rounds}: no note of the unfinished record: {:?}",
                s.notes
            );
        }
        if let Some((r, cut)) = pending {
            put(&r[cut..], end + cut as u64);
            end += r.len() as u64;
            height = upto + 1;
        } else {
            height = upto;
        }
        // Now and then Core finalizes the file (the zero tail cut off) and
        // later preallocates again.
        if rng.next_f64() < 0.3 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(end)
                .unwrap();
            assert_eq!(tip_height(&indexer.run().unwrap()), height as u32);
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(end.div_ceil(CHUNK) * CHUNK + CHUNK)
                .unwrap();
        }
    }
    assert_eq!(tip_height(&indexer.run().unwrap()), height as u32);
    drop(indexer);
    assert!(rounds > 20, "only {rounds} rounds");
    assert_same(
        &dump(&dir.path().join("db"), &LOCATION_FREE),
        &dump(reference.path(), &LOCATION_FREE),
    );
    assert_eq!(
        flow_graph(&dir.path().join("db")),
        flow_graph(reference.path())
    );
}

/// A block mined to fail: its hash above its own target.
fn unmined(mut b: Block) -> Block {
    while b.header.validate_pow(b.header.target()).is_ok() {
        b.header.nonce += 1;
    }
    b
}

/// A longer branch whose first header has a bad nonce, and one whose first
/// header claims a harder nBits (more work) than its hash meets, are
/// stored after the honest chain: neither may become the best chain, and
/// each is named by file and offset.
#[test]
fn headers_without_valid_proof_of_work_never_join_the_chain() {
    let genesis = regtest_genesis();
    let honest = chain_from(&genesis, 3, 1);
    let mut bad_nonce = chain_from(&honest[0], 5, 2);
    bad_nonce[0] = unmined(bad_nonce[0].clone());
    let mut flipped = chain_from(&honest[0], 5, 3);
    // A target 2^30 times harder would be worth a long chain of work.
    flipped[0].header.bits = CompactTarget::from_consensus(0x1b7fffff);
    flipped[0] = unmined(flipped[0].clone());
    // Their children are well mined but hang from a header that is not.
    for branch in [&mut bad_nonce, &mut flipped] {
        for i in 1..branch.len() {
            let parent = branch[i - 1].block_hash();
            branch[i].header.prev_blockhash = parent;
            while branch[i]
                .header
                .validate_pow(branch[i].header.target())
                .is_err()
            {
                branch[i].header.nonce += 1;
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut blocks = vec![genesis];
    blocks.extend(honest.iter().cloned());
    blocks.extend(bad_nonce.iter().cloned());
    blocks.extend(flipped.iter().cloned());
    write_blk(&dir.path().join("blk00000.dat"), &blocks);
    let bytes = std::fs::read(dir.path().join("blk00000.dat")).unwrap();
    let offsets = records(&bytes);
    let db = tempfile::tempdir().unwrap();
    let s = satflow_indexer::run(&options(dir.path(), db.path())).unwrap();
    assert_eq!(s.tip_hash, Some(honest[2].block_hash()));
    for at in [offsets[4].0, offsets[9].0] {
        assert!(
            s.notes
                .iter()
                .any(|n| n.contains("blk00000.dat") && n.contains(&format!("offset {at}:"))),
            "no note naming offset {at}: {:?}",
            s.notes
        );
    }
    assert!(s
        .notes
        .iter()
        .any(|n| n.contains("does not meet its nBits")));
    // The good children of the bad headers are there but detached.
    assert_eq!(s.detached.len(), 2, "{:?}", s.detached);

    // Generated chains without real proof of work index with the check off.
    let db = tempfile::tempdir().unwrap();
    let s = satflow_indexer::run(&satflow_indexer::IndexOptions {
        check_pow: false,
        ..options(dir.path(), db.path())
    })
    .unwrap();
    assert_eq!(s.tip_height, Some(6));
}

/// A crash mid-write can leave a corrupt copy of a block before Core
/// writes it again: the good copy found later is the one indexed.
#[test]
fn a_corrupt_first_copy_of_a_block_gives_way_to_a_good_one() {
    let genesis = regtest_genesis();
    let mut spend_from = chain_from(&genesis, 1, 4);
    let cb = spend_from[0].txdata[0].compute_txid();
    let spend = common::build::tx(
        &[bitcoin::OutPoint::new(cb, 0)],
        &[(49_0000_0000, p2pkh(40))],
    );
    let mut b2 = chain_from(&spend_from[0], 1, 5).remove(0);
    b2.txdata.push(spend);
    b2.header.merkle_root = b2.compute_merkle_root().unwrap();
    while b2.header.validate_pow(b2.header.target()).is_err() {
        b2.header.nonce += 1;
    }
    let b3 = chain_from(&b2, 1, 6).remove(0);
    let clean = vec![
        genesis.clone(),
        spend_from.remove(0),
        b2.clone(),
        b3.clone(),
    ];

    // Same header (so the same hash), a body that fails its merkle root.
    let mut corrupt = record(&b2);
    let last = corrupt.len() - 10;
    corrupt[last] ^= 0xff;
    let dir = tempfile::tempdir().unwrap();
    let mut first = Vec::new();
    for b in &clean[..2] {
        first.extend(record(b));
    }
    first.extend(&corrupt);
    first.extend(record(&b3));
    std::fs::write(dir.path().join("blk00000.dat"), first).unwrap();
    write_blk(&dir.path().join("blk00001.dat"), &[b2.clone()]);

    let db = tempfile::tempdir().unwrap();
    let s = satflow_indexer::run(&options(dir.path(), db.path())).unwrap();
    assert_eq!(s.tip_hash, Some(b3.block_hash()));
    let store = Store::open(db.path(), satflow_indexer::Access::ReadOnly).unwrap();
    let row = store.need_block(satflow_schema::Height(2)).unwrap();
    assert_eq!(row.loc.file, 1, "block 2 is read from its good copy");
    drop(store);

    let reference_dir = tempfile::tempdir().unwrap();
    write_blk(&reference_dir.path().join("blk00000.dat"), &clean);
    let reference = tempfile::tempdir().unwrap();
    index(reference_dir.path(), reference.path());
    assert_same(
        &dump(db.path(), &LOCATION_FREE),
        &dump(reference.path(), &LOCATION_FREE),
    );

    // With no good copy, the error names the corrupt one's file and offset.
    std::fs::remove_file(dir.path().join("blk00001.dat")).unwrap();
    let db = tempfile::tempdir().unwrap();
    let err = satflow_indexer::run(&options(dir.path(), db.path()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blk00000.dat") && err.contains("merkle root"),
        "{err}"
    );
}

fn satflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_satflow"))
}

/// SIGTERM while catching up ends the run at a batch boundary with exit
/// status 0, on the bulk path and block by block; runs after it go on
/// from there and end equal to an uninterrupted run.
#[test]
fn sigterm_during_a_catch_up_then_resume_equals_an_uninterrupted_run() {
    let (synth, reference) = synth_chain(32, 6_000_000);
    let index_run = |db: &Path| {
        satflow()
            .args(["index", "--quiet", "--batch-mb", "0.1", "--blocks-dir"])
            .arg(synth.path())
            .arg("--db")
            .arg(db)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let started = std::time::Instant::now();
    let scratch = tempfile::tempdir().unwrap();
    assert!(index_run(scratch.path()).wait().unwrap().success());
    let full = started.elapsed().as_secs_f64();

    let mut db = tempfile::tempdir().unwrap();
    let mut rng = Lcg::from_env();
    // (into an empty index, into a non-empty one)
    let mut stops = [0, 0];
    let mut fresh = true;
    for _ in 0..60 {
        if stops[0] >= 2 && stops[1] >= 2 {
            break;
        }
        let child = index_run(db.path());
        // A resumed run has less left to do.
        let share = if fresh { 0.9 } else { 0.3 };
        let wait = full * (0.05 + share * rng.next_f64());
        std::thread::sleep(std::time::Duration::from_secs_f64(wait));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a stopped run exits 0: {:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if String::from_utf8_lossy(&out.stdout).contains("stopped early") {
            stops[usize::from(!fresh)] += 1;
            fresh = false;
        } else {
            // It finished first: check it, then start over.
            assert_same(
                &dump(db.path(), &LOCATION_FREE),
                &dump(reference.path(), &LOCATION_FREE),
            );
            (db, fresh) = (tempfile::tempdir().unwrap(), true);
        }
    }
    assert!(
        stops[0] >= 2 && stops[1] >= 2,
        "stops that landed mid-way: {stops:?}"
    );
    index(synth.path(), db.path());
    assert_same(
        &dump(db.path(), &LOCATION_FREE),
        &dump(reference.path(), &LOCATION_FREE),
    );
    assert_eq!(flow_graph(db.path()), flow_graph(reference.path()));
}

/// Every file under `dir` with its size and modification time.
fn listing(dir: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            out.extend(listing(&e.path()));
        } else if !e.file_name().to_string_lossy().starts_with("LOG") {
            // RocksDB's own info log aside.
            out.push((
                e.path().display().to_string(),
                meta.len(),
                meta.modified().unwrap(),
            ));
        }
    }
    out.sort();
    out
}

/// An hour of one-second polls with nothing new: no write reaches the
/// database (its sequence number stays) and no file under it changes.
#[test]
fn an_hour_of_idle_polls_writes_nothing() {
    let (synth, _) = synth_chain(33, 300_000);
    let db = tempfile::tempdir().unwrap();
    let mut indexer = Indexer::open(options(synth.path(), db.path())).unwrap();
    let tip = indexer.run().unwrap().tip_hash;
    // The round after a catch-up may still settle what it left.
    indexer.run().unwrap();
    let (sequence, files) = (indexer.store().sequence(), listing(db.path()));
    for _ in 0..3600 {
        assert_eq!(indexer.run().unwrap().tip_hash, tip);
    }
    assert_eq!(
        indexer.store().sequence(),
        sequence,
        "writes in idle rounds"
    );
    assert_eq!(listing(db.path()), files);
}

/// A reader keeps every table file open: under a low soft limit it raises
/// its own, and under a low hard limit it says which limit is in the way.
#[test]
fn readers_raise_the_open_file_limit_or_name_it() {
    let (_blocks, db) = synth_chain(34, 300_000);
    let status = |ulimit: &str| {
        let cmd = format!(
            "ulimit {ulimit} && exec {} query --db {} status",
            env!("CARGO_BIN_EXE_satflow"),
            db.path().display()
        );
        Command::new("bash").args(["-c", &cmd]).output().unwrap()
    };
    let out = status("-Sn 40");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = status("-n 40");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("RLIMIT_NOFILE") && err.contains("only 40 files"),
        "{err}"
    );
}

/// `--follow` between rounds: SIGTERM ends it promptly with status 0.
#[test]
fn sigterm_ends_a_follower_between_rounds() {
    let (synth, _) = synth_chain(35, 300_000);
    let db = tempfile::tempdir().unwrap();
    let mut child = satflow()
        .args([
            "index",
            "--quiet",
            "--follow",
            "--poll-ms",
            "60000",
            "--blocks-dir",
        ])
        .arg(synth.path())
        .arg("--db")
        .arg(db.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The summary of the first run is printed before following begins.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("db size") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
    }
    let asked = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // Not kept waiting for the minute-long poll.
    assert!(asked.elapsed() < std::time::Duration::from_secs(30));
}
