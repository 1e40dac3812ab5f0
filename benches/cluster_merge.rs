//! Keeping clusters current beside an entity of millions of addresses: the
//! clustering cost of an ordinary block, of a block that merges an older
//! lone address into that entity, and of the one-block reorg that takes
//! such a block away, each p50 and max.
//!
//!     cargo bench --bench cluster_merge -- [--size 5GB] [--whale-share 0.9] [--blocks 20] [--runs 5]
//!
//! The chain is `satflow synth --seed 7 --whale-share S`: one exchange's
//! deposit addresses, swept together, make an entity of millions of
//! addresses. All of its blk files but the last are indexed once (kept
//! under --work); each bench run works on a copy of that index (table
//! files hard-linked). The last file's first --blocks blocks are then
//! indexed one run each (ordinary blocks, clustered one at a time), and
//! the last one's clustering is undone as a reorg does. Each of
//! --runs rounds then pays a coinbase to a lone address older than the
//! entity, appends a block whose one transaction spends that coin beside a
//! coin of the entity, indexes it (the merge), undoes its clustering as a
//! reorg does (`cluster::forget_above`, timed alone), and indexes two
//! blocks that replace it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version as TxVersion;
use bitcoin::{
    Amount, Block, BlockHash, OutPoint, PubkeyHash, ScriptBuf, ScriptHash, Sequence, Transaction,
    TxIn, TxMerkleNode, TxOut, Witness, WitnessProgram, WitnessVersion,
};
use clap::Parser;
use common::{blk_files, satflow, timed, Common};
use satflow_indexer::cluster::{self, view};
use satflow_indexer::store::Direction;
use satflow_indexer::{Access, IndexOptions, Store};
use satflow_schema::cluster::{Rank, RankKey};
use satflow_schema::script::{AddrKey, AddrKind};
use satflow_schema::{cf, AddrId, ClusterId, ClusterKey, Height, OutNum};

#[derive(clap::Parser)]
struct Args {
    /// Size of the generated chain.
    #[arg(long, default_value = "5GB")]
    size: String,
    /// `satflow synth --whale-share`: how much of the traffic is the entity's.
    #[arg(long, default_value = "0.9")]
    whale_share: String,
    /// Ordinary blocks clustered one at a time.
    #[arg(long, default_value_t = 20)]
    blocks: usize,
    #[command(flatten)]
    common: Common,
}

fn main() {
    let args = Args::parse();
    let work = &args.common.work;
    std::fs::create_dir_all(work).unwrap();
    let name = format!("synth-{}-whale{}-seed7", args.size, args.whale_share);
    let chain = work.join(&name);
    if !chain.join("truth").exists() {
        let _ = std::fs::remove_dir_all(&chain);
        let mut cmd = satflow();
        cmd.args(["synth", "--seed", "7", "--quiet", "--size", &args.size])
            .args(["--whale-share", &args.whale_share, "--out"])
            .arg(&chain)
            .stdout(std::process::Stdio::null());
        timed(cmd);
    }
    let mut files = blk_files(&chain);
    let last = files.pop().expect("blk files");
    let base = prepare_base(work, &name, &files);

    let run_dir = tempfile::tempdir_in(work).unwrap();
    let blocks = run_dir.path().join("blocks");
    let db = run_dir.path().join("db");
    link_files(&files, &blocks);
    copy_db(&base, &db);

    let (whale, size, id) = largest_cluster(&db);
    println!(
        "chain {} ({} blk files indexed, then blocks of {}) · entity: key {whale}, id {id}, {size} addresses",
        chain.display(),
        files.len(),
        last.display()
    );

    let mut next_file = files.len();
    let mut add = |blocks_dir: &Path, records: &[Vec<u8>]| -> Duration {
        let path = blocks_dir.join(format!("blk{next_file:05}.dat"));
        next_file += 1;
        std::fs::write(&path, records.concat()).unwrap();
        let mut opts = IndexOptions::new(blocks_dir, &db);
        opts.quiet = true;
        let summary = satflow_indexer::run(&opts).unwrap();
        summary.cluster_elapsed
    };

    let ordinary: Vec<Duration> = main_chain_records(&last, tip_header(&db).1.block_hash())
        .into_iter()
        .take(args.blocks)
        .map(|record| add(&blocks, &[record]))
        .collect();

    // Undoing the last ordinary block's clustering, as a reorg would; the
    // next run clusters it again.
    let undone = {
        let store = Store::open(&db, Access::Write).unwrap();
        let tip = store.tip().unwrap().unwrap().height;
        let started = Instant::now();
        cluster::forget_above(&store, Some(Height(tip.0 - 1))).unwrap();
        store.flush().unwrap();
        vec![started.elapsed()]
    };
    let lone = old_lone_addresses(&db, id.0, args.common.runs);
    let entity = entity_coins(&db, whale, args.common.runs);
    assert!(!lone.is_empty(), "no lone address older than the entity");
    let (mut merges, mut reorgs, mut replaced) = (Vec::new(), Vec::new(), Vec::new());
    for (round, ((old, script), w)) in lone.iter().zip(&entity).enumerate() {
        let tip = tip_header(&db);
        let paid = coinbase(tip.0 + 1, round, 0, script.clone());
        let coin = OutPoint::new(paid.compute_txid(), 0);
        let pay = mine(&tip.1, tip.0 + 1, vec![paid]);
        let spend = payment(&[coin, w.0], COINBASE_SAT + w.1 - 1_000);
        let fresh = fresh_script(round, 0);
        let merge = mine(
            &pay.header,
            tip.0 + 2,
            vec![coinbase(tip.0 + 2, round, 1, fresh), spend],
        );
        add(&blocks, &[record(&pay)]);
        merges.push(add(&blocks, &[record(&merge)]));
        {
            let store = Store::open(&db, Access::Write).unwrap();
            let key = view::cluster_of(&store, *old).unwrap();
            assert_eq!(
                key, whale,
                "round {round}: the old address joined the entity"
            );
            // Flushed, as the clusters stage of a run is.
            let started = Instant::now();
            cluster::forget_above(&store, Some(Height(tip.0 + 1))).unwrap();
            store.flush().unwrap();
            reorgs.push(started.elapsed());
            let key = view::cluster_of(&store, *old).unwrap();
            assert_eq!(
                key,
                ClusterKey::of(*old),
                "round {round}: undone, it is lone again"
            );
        }
        let first = mine(
            &pay.header,
            tip.0 + 2,
            vec![coinbase(tip.0 + 2, round, 2, fresh_script(round, 2))],
        );
        let second = mine(
            &first.header,
            tip.0 + 3,
            vec![coinbase(tip.0 + 3, round, 3, fresh_script(round, 3))],
        );
        replaced.push(add(&blocks, &[record(&first), record(&second)]));
    }

    let (_, size_after, _) = largest_cluster(&db);
    println!(
        "{:<44} {:>10} {:>10} {:>6}",
        "clustering", "p50 ms", "max ms", "n"
    );
    for (what, times) in [
        ("an ordinary block of the chain", &ordinary),
        ("undoing the last one's clustering (reorg)", &undone),
        ("a block merging an older lone address in", &merges),
        ("undoing that block's clustering (reorg)", &reorgs),
        ("the two blocks replacing it", &replaced),
    ] {
        let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        println!(
            "{what:<44} {:>10.1} {:>10.1} {:>6}",
            ms[ms.len() / 2],
            ms[ms.len() - 1],
            ms.len()
        );
    }
    println!("entity after the rounds: {size_after} addresses");
}

/// The index of `files` (all blk files but the last), built once.
fn prepare_base(work: &Path, name: &str, files: &[PathBuf]) -> PathBuf {
    let db = work.join(format!("{name}.base.db"));
    common::cached_index(&db, || {
        let blocks = tempfile::tempdir_in(work).unwrap();
        link_files(files, blocks.path());
        let mut cmd = satflow();
        cmd.args(["index", "--quiet", "--blocks-dir"])
            .arg(blocks.path())
            .arg("--db")
            .arg(&db)
            .stdout(std::process::Stdio::null());
        let (wall, _) = timed(cmd);
        println!("indexed the base chain in {:.0} s", wall.as_secs_f64());
    });
    db
}

/// Hard links of `files` (blk files are never rewritten) in a new `dir`.
fn link_files(files: &[PathBuf], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for f in files {
        std::fs::hard_link(f, dir.join(f.file_name().unwrap())).unwrap();
    }
}

/// A copy of database `from` at `to`: table files (never rewritten) hard
/// linked, everything else copied.
fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_db(&path, &target);
        } else if path.extension().is_some_and(|e| e == "sst") {
            std::fs::hard_link(&path, &target).unwrap();
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The largest cluster: its key, size and id.
fn largest_cluster(db: &Path) -> (ClusterKey, u64, ClusterId) {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let (top, ()) = store
        .scan::<cf::ClusterRank>(&RankKey::end_of(Rank::Size), Direction::Reverse)
        .next()
        .expect("a cluster")
        .unwrap();
    let s = view::stats(&store, top.cluster).unwrap().unwrap();
    (top.cluster, s.size, s.id)
}

/// An unspent coin: where it is, its value, and its address.
type Coin = (OutPoint, u64, AddrId);

/// Up to `n` addresses below `below`, alone in their cluster, of a kind
/// whose script their key gives back, with that script.
fn old_lone_addresses(db: &Path, below: u64, n: usize) -> Vec<(AddrId, ScriptBuf)> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    (1..below)
        .map(AddrId)
        .filter(|&a| {
            view::cluster_of(&store, a).unwrap() == ClusterKey::of(a)
                && view::stats(&store, ClusterKey::of(a)).unwrap().is_none()
        })
        .filter_map(|a| Some((a, script_of(&store.need::<cf::Addrs>(&a).unwrap())?)))
        .take(n)
        .collect()
}

/// The output script an address key stands for, where the key holds all
/// of it (not for scripts known only by their hash).
fn script_of(key: &AddrKey) -> Option<ScriptBuf> {
    let program = |version, hash: &[u8]| {
        WitnessProgram::new(version, hash).map(|p| ScriptBuf::new_witness_program(&p))
    };
    match key.kind() {
        AddrKind::P2pkh => Some(ScriptBuf::new_p2pkh(
            &PubkeyHash::from_slice(key.hash()).ok()?,
        )),
        AddrKind::P2sh => Some(ScriptBuf::new_p2sh(
            &ScriptHash::from_slice(key.hash()).ok()?,
        )),
        AddrKind::P2wpkh | AddrKind::P2wsh => program(WitnessVersion::V0, key.hash()).ok(),
        AddrKind::P2tr => program(WitnessVersion::V1, key.hash()).ok(),
        AddrKind::ScriptHash => None,
    }
}

/// Up to `n` coins of the entity keyed `key`, one per member.
fn entity_coins(db: &Path, key: ClusterKey, n: usize) -> Vec<Coin> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    store
        .pairs::<cf::ClusterMembers, _, _>(key, AddrId(0), Direction::Forward)
        .filter_map(|r| first_coin(&store, r.unwrap().0))
        .take(n)
        .collect()
}

fn first_coin(store: &Store, a: AddrId) -> Option<Coin> {
    let (n, value): (OutNum, u64) = store
        .pairs::<cf::AddrUtxos, _, _>(a, OutNum(0), Direction::Forward)
        .next()?
        .unwrap();
    let out = store.need::<cf::Outputs>(&n).unwrap();
    let tx = store.need::<cf::Txs>(&out.tx?).unwrap();
    Some((OutPoint::new(tx.txid, out.vout), value, a))
}

/// The tip's height and header.
fn tip_header(db: &Path) -> (u32, Header) {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let tip = store.tip().unwrap().unwrap();
    (tip.height.0, store.need_block(tip.height).unwrap().header)
}

/// A transaction spending `coins` into one fresh address.
fn payment(coins: &[OutPoint], value: u64) -> Transaction {
    Transaction {
        version: TxVersion::TWO,
        lock_time: LockTime::ZERO,
        input: coins
            .iter()
            .map(|&previous_output| TxIn {
                previous_output,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::from_slice(&[vec![0x30; 71], vec![0x02; 33]]),
            })
            .collect(),
        output: vec![TxOut {
            value: Amount::from_sat(value),
            script_pubkey: ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::hash(&value.to_le_bytes())),
        }],
    }
}

/// What the bench's coinbases pay.
const COINBASE_SAT: u64 = 1_000;

/// A never-seen script for round `round`'s block `which`.
fn fresh_script(round: usize, which: u8) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::hash(&[which, round as u8, 0x5a]))
}

/// A coinbase at `height` (BIP34) paying `to`, made distinct by `round`
/// and `which`.
fn coinbase(height: u32, round: usize, which: u8, to: ScriptBuf) -> Transaction {
    let script_sig = bitcoin::script::Builder::new()
        .push_int(i64::from(height))
        .push_slice([which, round as u8, 0xbe, 0x4c])
        .into_script();
    Transaction {
        version: TxVersion::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::from_sat(COINBASE_SAT),
            script_pubkey: to,
        }],
    }
}

/// A block on `prev` at `height` holding `txdata`, with valid proof of
/// work at `prev`'s target (regtest's is met every other try).
fn mine(prev: &Header, height: u32, txdata: Vec<Transaction>) -> Block {
    let mut block = Block {
        header: Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: prev.block_hash(),
            merkle_root: TxMerkleNode::all_zeros(),
            time: prev.time + 600 + height % 7,
            bits: prev.bits,
            nonce: 0,
        },
        txdata,
    };
    block.header.merkle_root = block.compute_merkle_root().expect("transactions");
    while block.header.validate_pow(block.header.target()).is_err() {
        block.header.nonce += 1;
    }
    block
}

/// A block as a blk file record, with regtest's magic.
fn record(block: &Block) -> Vec<u8> {
    let raw = bitcoin::consensus::serialize(block);
    let mut bytes = vec![0xfa, 0xbf, 0xb5, 0xda];
    bytes.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&raw);
    bytes
}

/// The records of blk file `path` (not obfuscated) that extend the chain
/// from `tip`, in chain order: records lie partly out of order, and a
/// stale branch is left out (at each fork, the child with the longest run
/// of descendants is the chain's).
fn main_chain_records(path: &Path, tip: BlockHash) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    let mut records: Vec<(Header, Vec<u8>)> = Vec::new();
    let mut at = 0;
    while at + 8 + 80 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        if bytes[at..at + 4] == [0; 4] || at + 8 + len > bytes.len() {
            break;
        }
        let header: Header = bitcoin::consensus::deserialize(&bytes[at + 8..at + 88]).unwrap();
        records.push((header, bytes[at..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    let mut children: HashMap<BlockHash, Vec<usize>> = HashMap::new();
    for (i, (h, _)) in records.iter().enumerate() {
        children.entry(h.prev_blockhash).or_default().push(i);
    }
    // Deepest first: a record's run of descendants, children before parents.
    let mut depth = vec![0usize; records.len()];
    let mut order: Vec<usize> = Vec::new();
    let mut stack: Vec<usize> = children.get(&tip).cloned().unwrap_or_default();
    while let Some(i) = stack.pop() {
        order.push(i);
        stack.extend(
            children
                .get(&records[i].0.block_hash())
                .into_iter()
                .flatten(),
        );
    }
    for &i in order.iter().rev() {
        let below = children.get(&records[i].0.block_hash());
        depth[i] = 1 + below
            .into_iter()
            .flatten()
            .map(|&c| depth[c])
            .max()
            .unwrap_or(0);
    }
    let mut chain = Vec::new();
    let mut at = tip;
    while let Some(&next) = children
        .get(&at)
        .and_then(|c| c.iter().max_by_key(|&&c| depth[c]))
    {
        at = records[next].0.block_hash();
        chain.push(records[next].1.clone());
    }
    chain
}
