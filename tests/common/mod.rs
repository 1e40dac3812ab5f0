//! Shared helpers of the integration tests: test data paths, blocks
//! directories assembled from real files, and whole-database comparison.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use satflow_indexer::{Access, IndexOptions, Store, Summary};
use satflow_schema::cf::{self, Family};
use satflow_schema::cluster::RankKey;
use satflow_schema::{AddrId, ClusterId, ClusterKey, Codec, OutNum};

pub mod query;
pub mod server;

pub fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

/// A blocks directory holding copies of `files`, named blk00000.dat, …
pub fn blocks_dir(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(data(f), dir.path().join(format!("blk{i:05}.dat"))).unwrap();
    }
    dir
}

/// Adds `file` as the next blk file of `dir`.
pub fn add_blk(dir: &Path, file: &str) {
    let n = std::fs::read_dir(dir).unwrap().count();
    std::fs::copy(data(file), dir.join(format!("blk{n:05}.dat"))).unwrap();
}

/// A mainnet blocks directory holding the real raw blocks
/// `tests/data/mainnet/raw/block_<height>.raw`, one record each.
pub fn raw_blocks_dir(heights: &[u32]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for h in heights {
        let raw = std::fs::read(data(&format!("mainnet/raw/block_{h}.raw"))).unwrap();
        bytes.extend_from_slice(&[0xf9, 0xbe, 0xb4, 0xd9]);
        bytes.extend_from_slice(&(raw.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&raw);
    }
    std::fs::write(dir.path().join("blk00000.dat"), bytes).unwrap();
    dir
}

/// The real raw block at `height` as rust-bitcoin decodes it.
pub fn raw_block(height: u32) -> bitcoin::Block {
    let raw = std::fs::read(data(&format!("mainnet/raw/block_{height}.raw"))).unwrap();
    bitcoin::consensus::deserialize(&raw).unwrap()
}

/// Options for an index started at block `start`, with the prevouts files
/// of `tests/data/mainnet/prevouts` when `prevouts`.
pub fn window_options(blocks: &Path, db: &Path, start: &str, prevouts: bool) -> IndexOptions {
    IndexOptions {
        start_at: Some(start.parse().unwrap()),
        prevouts: prevouts.then(|| data("mainnet/prevouts")),
        ..options(blocks, db)
    }
}

/// A fresh index of the raw block at `height`, started at it.
pub fn window(
    height: u32,
    hash: &str,
    prevouts: bool,
) -> (tempfile::TempDir, tempfile::TempDir, Summary) {
    let blocks = raw_blocks_dir(&[height]);
    let db = tempfile::tempdir().unwrap();
    let summary =
        satflow_indexer::run(&window_options(blocks.path(), db.path(), hash, prevouts)).unwrap();
    (blocks, db, summary)
}

pub fn options(blocks: &Path, db: &Path) -> IndexOptions {
    IndexOptions {
        quiet: true,
        cache_mb: 16,
        ..IndexOptions::new(blocks, db)
    }
}

/// A generated regtest chain of about `size` bytes, and its index.
pub fn synth_chain(seed: u64, size: u64) -> (tempfile::TempDir, tempfile::TempDir) {
    let blocks = tempfile::tempdir().unwrap();
    satflow_synth::run(&satflow_synth::SynthArgs {
        out: blocks.path().to_owned(),
        size,
        seed,
        network: satflow_synth::NetworkChoice::Regtest,
        xor: false,
        truncate_tail: false,
        whale_share: 0.0,
        plant_patterns: false,
        plant_services: false,
        quiet: true,
    })
    .unwrap();
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    (blocks, db)
}

/// A small deterministic generator, so a failing kill schedule can be
/// replayed: seeded from `SATFLOW_KILL_SEED`.
pub struct Lcg(u64);

impl Lcg {
    pub fn from_env() -> Lcg {
        Lcg(std::env::var("SATFLOW_KILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(20261125))
    }

    pub fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Imports a label set into the index at `db`.
pub fn import_labels(
    db: &Path,
    file: &Path,
    format: satflow_indexer::labels::Format,
    defaults: satflow_indexer::labels::Defaults,
) -> satflow_indexer::labels::Parsed {
    let store = Store::open(db, Access::Write).unwrap();
    satflow_indexer::labels::import(&store, file, format, &defaults).unwrap()
}

/// Heights 0–4521 of mainnet (the bundled first MiB of blk00000.dat), indexed.
pub fn indexed_blk00000() -> (tempfile::TempDir, tempfile::TempDir, Summary) {
    let blocks = blocks_dir(&["mainnet/blk00000_first1MiB.dat"]);
    let db = tempfile::tempdir().unwrap();
    let summary = index(blocks.path(), db.path());
    (blocks, db, summary)
}

pub fn index(blocks: &Path, db: &Path) -> Summary {
    satflow_indexer::run(&options(blocks, db)).unwrap()
}

/// The flow graph through its public reading: per tx its height, inputs
/// and outputs (value, spender, address), for equality checks.
pub fn flow_graph(db: &Path) -> Vec<String> {
    let flow = satflow_indexer::flow::Flow::open(db)
        .unwrap()
        .expect("a flow graph");
    let g = flow.view();
    (0..g.tx_count())
        .map(|tx| {
            let ins: Vec<_> = g.inputs(tx).collect();
            let outs: Vec<_> = g.outputs(tx).map(|o| g.output(o)).collect();
            format!("{tx} @{}: {ins:?} -> {outs:?}", g.height(tx))
        })
        .collect()
}

/// Every row of every column family, as hex key → hex value (merge
/// operands folded), for whole-database equality checks. The cluster
/// families are shown as callers see them (`clusters_by_id`).
pub fn dump(db: &Path, families: &[&str]) -> BTreeMap<String, BTreeMap<String, String>> {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let mut out = BTreeMap::new();
    let by_id = clusters_by_id(&store);
    for name in families {
        let rows = match by_id.get(*name) {
            Some(rows) => rows.clone(),
            None => store.raw_rows(name).unwrap(),
        };
        let rows = rows
            .into_iter()
            .map(|(k, v)| (hex::encode(k), hex::encode(v)))
            .collect();
        out.insert(name.to_string(), rows);
    }
    out
}

/// A row as key and value bytes.
type RawRow = (Vec<u8>, Vec<u8>);

/// The cluster families' rows under each cluster's id rather than the key
/// they are stored under. Which member's number keys a cluster depends on
/// the order its merges happened in (the larger side keeps its rows), so
/// a database clustered block by block and one clustered whole agree on
/// ids, members, figures and histories, not on keys.
fn clusters_by_id(store: &Store) -> HashMap<&'static str, Vec<RawRow>> {
    let ids: HashMap<ClusterKey, ClusterId> = store
        .scan_all::<cf::ClusterStats>()
        .map(|r| r.map(|(k, s)| (k, s.id)))
        .collect::<anyhow::Result<_>>()
        .unwrap();
    let id = |k: ClusterKey| ids.get(&k).copied().unwrap_or(ClusterId(k.0));
    let as_key = |c: ClusterId| ClusterKey(c.0);
    let mut of: Vec<RawRow> = Vec::new();
    for r in store.scan_all::<cf::ClusterOf>() {
        let (a, k) = r.unwrap();
        if a.0 != id(k).0 {
            of.push((a.encode().to_vec(), as_key(id(k)).encode().to_vec()));
        }
    }
    // A cluster's holder has no row of its own, but the view by id has one
    // for it unless it is the oldest member.
    for (&k, &c) in &ids {
        if k.0 != c.0 {
            of.push((AddrId(k.0).encode().to_vec(), as_key(c).encode().to_vec()));
        }
    }
    let members = store
        .scan_all::<cf::ClusterMembers>()
        .map(|r| {
            let ((k, a), ()) = r.unwrap();
            ((as_key(id(k)), a).encode().to_vec(), Vec::new())
        })
        .collect();
    let stats = store
        .scan_all::<cf::ClusterStats>()
        .map(|r| {
            let (k, s) = r.unwrap();
            (as_key(id(k)).encode().to_vec(), s.encode().to_vec())
        })
        .collect();
    let history = store
        .scan_all::<cf::ClusterHistory>()
        .map(|r| {
            let ((k, tx), h) = r.unwrap();
            ((as_key(id(k)), tx).encode().to_vec(), h.encode().to_vec())
        })
        .collect();
    let rank = store
        .scan_all::<cf::ClusterRank>()
        .map(|r| {
            let (k, ()) = r.unwrap();
            let by_id = RankKey {
                cluster: as_key(id(k.cluster)),
                ..k
            };
            (by_id.encode().to_vec(), Vec::new())
        })
        .collect();
    let sorted = |mut rows: Vec<RawRow>| {
        rows.sort();
        rows
    };
    HashMap::from([
        (cf::ClusterOf::NAME, sorted(of)),
        (cf::ClusterMembers::NAME, sorted(members)),
        (cf::ClusterStats::NAME, sorted(stats)),
        (cf::ClusterHistory::NAME, sorted(history)),
        (cf::ClusterRank::NAME, sorted(rank)),
    ])
}

/// All families but `cluster_undo`: what "answers exactly like" means.
/// Undo records are kept for blocks clustered one at a time, so they
/// depend on how the blocks arrived (in one run or several), and the reorg
/// tests check what undoing with them gives.
pub fn dump_all(db: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let families: Vec<&str> = cf::ALL
        .into_iter()
        .filter(|f| *f != cf::ClusterUndo::NAME)
        .collect();
    dump(db, &families)
}

/// The families whose rows do not depend on where blocks lie on disk.
pub const LOCATION_FREE: [&str; 17] = [
    cf::BlockHeight::NAME,
    cf::Txs::NAME,
    cf::Txids::NAME,
    cf::Outputs::NAME,
    cf::Spends::NAME,
    cf::Inputs::NAME,
    cf::Addrs::NAME,
    cf::AddrIds::NAME,
    cf::History::NAME,
    cf::AddrUtxos::NAME,
    cf::AddrStats::NAME,
    cf::ClusterOf::NAME,
    cf::ClusterMembers::NAME,
    cf::ClusterStats::NAME,
    cf::ClusterHistory::NAME,
    cf::ClusterRank::NAME,
    cf::Outside::NAME,
];

/// Asserts two dumps are equal, naming the first family that differs.
pub fn assert_same(
    a: &BTreeMap<String, BTreeMap<String, String>>,
    b: &BTreeMap<String, BTreeMap<String, String>>,
) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, rows) in a {
        let other = &b[name];
        if rows != other {
            let diff: Vec<_> = rows
                .iter()
                .filter(|(k, v)| other.get(*k) != Some(v))
                .map(|(k, _)| k.clone())
                .chain(other.keys().filter(|k| !rows.contains_key(*k)).cloned())
                .take(5)
                .collect();
            panic!(
                "column family {name} differs ({} vs {} rows), e.g. keys {diff:?}",
                rows.len(),
                other.len()
            );
        }
    }
}

/// Outputs never spent (OP_RETURN included, as the MANIFEST's replays
/// count them) and their value, recomputed from the outputs and spends
/// families alone (independent of addr_stats and addr_utxos).
pub fn utxo_set(db: &Path) -> (u64, u64) {
    let store = Store::open(db, Access::ReadOnly).unwrap();
    let spent: HashSet<OutNum> = store
        .scan_all::<cf::Spends>()
        .map(|r| r.unwrap().0)
        .collect();
    let mut count = 0;
    let mut value = 0;
    for r in store.scan_all::<cf::Outputs>() {
        let (n, row) = r.unwrap();
        if spent.contains(&n) {
            continue;
        }
        count += 1;
        value += row.value;
    }
    (count, value)
}

/// Where each complete record of a blk file starts, and its block's
/// length, read independently of the indexer's scanner.
pub fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
        if pos + 8 + len > bytes.len() {
            break;
        }
        out.push((pos, len));
        pos += 8 + len;
    }
    out
}

/// The records of mainnet's first MiB (`raw`, its file's bytes), each
/// with its 8-byte header, in file (and chain) order: heights 0–4521.
pub fn mainnet_records(raw: &[u8]) -> Vec<&[u8]> {
    let recs: Vec<&[u8]> = records(raw)
        .into_iter()
        .map(|(at, len)| &raw[at..at + 8 + len])
        .collect();
    assert_eq!(recs.len(), 4522);
    recs
}

/// The txids of the transactions of real block `height` (tests/data)
/// that pay mainnet `address`.
pub fn txids_paying(height: u32, address: &str) -> Vec<String> {
    let script = address
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .unwrap()
        .require_network(bitcoin::Network::Bitcoin)
        .unwrap()
        .script_pubkey();
    raw_block(height)
        .txdata
        .iter()
        .filter(|t| t.output.iter().any(|o| o.script_pubkey == script))
        .map(|t| t.compute_txid().to_string())
        .collect()
}

/// Every block of a blocks directory, read with rust-bitcoin, in file order.
pub fn all_blocks(dir: &Path) -> Vec<bitcoin::Block> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("blk"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            let bytes = std::fs::read(f).unwrap();
            records(&bytes)
                .into_iter()
                .filter(|&(at, _)| bytes[at..at + 4] != [0; 4]) // preallocated tail
                .map(|(at, len)| {
                    bitcoin::consensus::deserialize(&bytes[at + 8..at + 8 + len]).unwrap()
                })
                .collect::<Vec<bitcoin::Block>>()
        })
        .collect()
}

/// The best chain of a blocks directory, genesis first, as the index at
/// `db` chose it (stale blocks left out).
pub fn best_chain(dir: &Path, db: &Path) -> Vec<bitcoin::Block> {
    let mut by_hash: HashMap<bitcoin::BlockHash, bitcoin::Block> = all_blocks(dir)
        .into_iter()
        .map(|b| (b.block_hash(), b))
        .collect();
    let q = query::Q::open(db);
    (0..=q.status().tip_height)
        .map(|h| {
            by_hash
                .remove(&q.block(h).hash.parse::<bitcoin::BlockHash>().unwrap())
                .unwrap()
        })
        .collect()
}

/// Hand-built regtest blocks, for cases real data does not have.
pub mod build {
    use bitcoin::absolute::LockTime;
    use bitcoin::block::{Header, Version};
    use bitcoin::hashes::Hash;
    use bitcoin::transaction::Version as TxVersion;
    use bitcoin::{
        Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
        TxMerkleNode, TxOut, Witness,
    };

    pub fn p2pkh(tag: u8) -> ScriptBuf {
        ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([tag; 20]))
    }

    pub fn tx(inputs: &[OutPoint], outputs: &[(u64, ScriptBuf)]) -> Transaction {
        Transaction {
            version: TxVersion::ONE,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|&previous_output| TxIn {
                    previous_output,
                    script_sig: ScriptBuf::from_bytes(vec![0x51]),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: outputs
                .iter()
                .map(|(v, s)| TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: s.clone(),
                })
                .collect(),
        }
    }

    /// A coinbase; `tag` makes it unique (or not, for BIP30 cases).
    pub fn coinbase(tag: &[u8], outputs: &[(u64, ScriptBuf)]) -> Transaction {
        let mut t = tx(&[OutPoint::null()], outputs);
        t.input[0].script_sig = ScriptBuf::from_bytes([&[tag.len() as u8][..], tag].concat());
        t
    }

    pub fn block(prev: BlockHash, time: u32, txdata: Vec<Transaction>) -> Block {
        let header = Header {
            version: Version::ONE,
            prev_blockhash: prev,
            merkle_root: TxMerkleNode::all_zeros(),
            time,
            bits: CompactTarget::from_consensus(0x207fffff),
            nonce: 0,
        };
        let mut b = Block { header, txdata };
        b.header.merkle_root = b.compute_merkle_root().unwrap();
        // Real proof of work: at regtest's target, two tries on average.
        while b.header.validate_pow(b.header.target()).is_err() {
            b.header.nonce += 1;
        }
        b
    }

    pub fn regtest_genesis() -> Block {
        bitcoin::constants::genesis_block(bitcoin::Network::Regtest)
    }

    /// Writes `blocks` as a regtest blk file.
    pub fn write_blk(path: &std::path::Path, blocks: &[Block]) {
        let mut bytes = Vec::new();
        for b in blocks {
            let raw = bitcoin::consensus::serialize(b);
            bytes.extend_from_slice(&[0xfa, 0xbf, 0xb5, 0xda]);
            bytes.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&raw);
        }
        std::fs::write(path, bytes).unwrap();
    }
}
