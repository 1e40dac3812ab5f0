//! Checks a generated directory with an independent decoder (rust-bitcoin): every record
//! decodes, the chain links and commits correctly, values balance, spends reveal keys that
//! hash to what they spend, the truth files agree with the chain, and the shape of the chain
//! stays within the ranges documented in synth/README.md.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bitcoin::blockdata::script::Instruction;
use bitcoin::consensus::deserialize;
use bitcoin::hashes::{hash160, sha256, Hash};
use bitcoin::{Block, BlockHash, Network, OutPoint, Script, Transaction, Txid};
use common::{args, blk_files, label, read_csv};
use satflow_synth::{run, NetworkChoice, Summary, SynthArgs};

const REGTEST_MAGIC: [u8; 4] = [0xfa, 0xbf, 0xb5, 0xda];

struct Record {
    file: usize,
    block: Block,
}

struct Fixture {
    dir: PathBuf,
    summary: Summary,
    records: Vec<Record>,
    /// Bytes of the record cut short at the end, if any.
    truncated: Option<(usize, u32)>,
    by_hash: HashMap<BlockHash, usize>,
    /// Main chain, genesis first, as indices into `records`.
    main: Vec<usize>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // A fixed place under target/, replaced on every run, so runs do not pile up on disk.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("synth-fixture");
        let _ = std::fs::remove_dir_all(&dir);
        let summary = run(&args(&dir, 60_000_000, 11, false)).unwrap();
        let (records, truncated) = read_dir(&dir, REGTEST_MAGIC);
        let by_hash: HashMap<BlockHash, usize> = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.block.block_hash(), i))
            .collect();
        let main = main_chain(&records, &by_hash);
        Fixture {
            dir,
            summary,
            records,
            truncated,
            by_hash,
            main,
        }
    })
}

/// Decodes every record of every blk file (after un-XOR), checking the padding as it goes.
fn read_dir(dir: &Path, magic: [u8; 4]) -> (Vec<Record>, Option<(usize, u32)>) {
    let key: [u8; 8] = std::fs::read(dir.join("xor.dat")).map_or([0; 8], |k| k.try_into().unwrap());
    let files = blk_files(dir);
    let mut records = Vec::new();
    let mut truncated = None;
    for (file, path) in files.iter().enumerate() {
        let mut bytes = std::fs::read(path).unwrap();
        satflow_synth::xor(&mut bytes, key, 0);
        let mut pos = 0;
        while pos + 8 <= bytes.len() && bytes[pos..pos + 4] == magic {
            let len = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap()) as usize;
            if pos + 8 + len > bytes.len() {
                assert!(
                    truncated.is_none() && file == files.len() - 1,
                    "only the very last record may be cut"
                );
                truncated = Some((file, len as u32));
                pos = bytes.len();
                break;
            }
            let block: Block = deserialize(&bytes[pos + 8..pos + 8 + len]).expect("record decodes");
            records.push(Record { file, block });
            pos += 8 + len;
        }
        assert!(
            bytes[pos..].iter().all(|&b| b == 0),
            "{}: tail after the last record is zero",
            path.display()
        );
        if truncated.is_none() {
            let expected = (pos as u64)
                .next_multiple_of(satflow_synth::PREALLOC_CHUNK)
                .min(satflow_synth::MAX_FILE_SIZE);
            assert_eq!(
                bytes.len() as u64,
                expected,
                "{} padded to the 16 MiB chunk",
                path.display()
            );
        }
        assert!(bytes.len() as u64 <= satflow_synth::MAX_FILE_SIZE);
    }
    (records, truncated)
}

/// Best chain by cumulative work (all blocks share nBits, so: the highest), genesis first.
fn main_chain(records: &[Record], by_hash: &HashMap<BlockHash, usize>) -> Vec<usize> {
    let mut heights: HashMap<usize, u32> = HashMap::new();
    fn height(
        i: usize,
        records: &[Record],
        by_hash: &HashMap<BlockHash, usize>,
        memo: &mut HashMap<usize, u32>,
    ) -> u32 {
        if let Some(&h) = memo.get(&i) {
            return h;
        }
        let prev = records[i].block.header.prev_blockhash;
        let h = match by_hash.get(&prev) {
            Some(&p) => height(p, records, by_hash, memo) + 1,
            None => {
                assert_eq!(
                    prev,
                    BlockHash::all_zeros(),
                    "every block but genesis has its parent in the files"
                );
                0
            }
        };
        memo.insert(i, h);
        h
    }
    for i in 0..records.len() {
        height(i, records, by_hash, &mut heights);
    }
    let tip_height = *heights.values().max().unwrap();
    let tips: Vec<usize> = (0..records.len())
        .filter(|i| heights[i] == tip_height)
        .collect();
    assert_eq!(
        tips.len(),
        1,
        "the best chain has strictly more work than any fork"
    );
    let mut chain = vec![tips[0]];
    while let Some(&p) = by_hash.get(&records[*chain.last().unwrap()].block.header.prev_blockhash) {
        chain.push(p);
    }
    chain.reverse();
    chain
}

fn bip34_height(block: &Block) -> i64 {
    let script_sig = &block.txdata[0].input[0].script_sig;
    match script_sig.instructions().next().unwrap().unwrap() {
        Instruction::PushBytes(bytes) => bytes
            .as_bytes()
            .iter()
            .rev()
            .fold(0i64, |acc, &b| (acc << 8) | i64::from(b)),
        Instruction::Op(op) => i64::from(op.to_u8()) - 0x50,
    }
}

#[test]
fn every_record_decodes_and_the_chain_links() {
    let f = fixture();
    let s = &f.summary;
    assert_eq!(f.main.len() as u64, s.blocks);
    assert_eq!(f.main.len() as u32 - 1, s.tip_height);
    assert_eq!(
        f.records[*f.main.last().unwrap()]
            .block
            .block_hash()
            .to_string(),
        s.tip_hash
    );
    assert_eq!(
        f.records.len(),
        f.main.len() + s.stale_blocks.len(),
        "no record is written twice"
    );
    assert!(f.truncated.is_some() && s.truncated_tail.is_some());
    assert!(blk_files(&f.dir).len() as u32 == s.files && s.files >= 1);
    assert_eq!(
        f.records[f.main[0]].block.block_hash(),
        bitcoin::constants::genesis_block(Network::Regtest).block_hash()
    );
    for (height, &i) in f.main.iter().enumerate().skip(1) {
        let block = &f.records[i].block;
        assert!(block.check_merkle_root(), "merkle root at {height}");
        assert!(
            block.check_witness_commitment(),
            "witness commitment at {height}"
        );
        assert_eq!(bip34_height(block), height as i64);
        assert_eq!(block.header.bits.to_consensus(), 0x207f_ffff);
        block
            .header
            .validate_pow(block.header.target())
            .expect("regtest proof of work");
        assert!(block.weight().to_wu() <= 4_000_000);
        let prev = &f.records[f.main[height - 1]].block;
        assert!(block.header.time > prev.header.time);
    }
}

#[test]
fn records_are_partly_out_of_order() {
    let f = fixture();
    let position: HashMap<BlockHash, usize> = f.by_hash.clone();
    let child_first = f.records.iter().enumerate().filter(|(i, r)| {
        position
            .get(&r.block.header.prev_blockhash)
            .is_some_and(|&p| p > *i)
    });
    assert!(child_first.count() >= 1, "some child precedes its parent");
    let in_order = f.main.windows(2).filter(|w| w[0] < w[1]).count();
    assert!(in_order * 10 > f.main.len() * 8, "mostly in height order");
    assert!(f.records.iter().all(|r| r.file < f.summary.files as usize));
}

#[test]
fn stale_blocks_have_less_work_and_one_fork_is_deep() {
    let f = fixture();
    let s = &f.summary;
    let main: HashSet<BlockHash> = f
        .main
        .iter()
        .map(|&i| f.records[i].block.block_hash())
        .collect();
    assert!(s.stale_blocks.len() >= 5);
    assert!(s.deepest_fork >= 3);
    for stale in &s.stale_blocks {
        let i = f.by_hash[&stale.hash.parse::<BlockHash>().unwrap()];
        let block = &f.records[i].block;
        assert!(!main.contains(&block.block_hash()));
        assert!(
            stale.height < s.tip_height,
            "less cumulative work than the tip"
        );
        assert!(block.check_merkle_root() && block.check_witness_commitment());
        assert_eq!(bip34_height(block), i64::from(stale.height));
    }
    // The deep fork: a stale block whose parent is stale too, whose parent is stale too.
    let stale: HashSet<BlockHash> = s
        .stale_blocks
        .iter()
        .map(|b| b.hash.parse().unwrap())
        .collect();
    let depth = |mut h: BlockHash| {
        let mut d = 0;
        while stale.contains(&h) {
            d += 1;
            h = f.records[f.by_hash[&h]].block.header.prev_blockhash;
        }
        d
    };
    assert_eq!(
        stale.iter().map(|&h| depth(h)).max().unwrap(),
        s.deepest_fork
    );
}

/// What the chain looks like, measured here rather than taken from the summary.
#[derive(Default)]
struct Measured {
    scripts: HashMap<&'static str, u64>,
    one_input: u64,
    two_outputs: u64,
    spends: u64,
    max_inputs: usize,
    max_outputs: usize,
    fee_rates: Vec<f64>,
    full_blocks: u64,
    full_block_txs: u64,
    full_block_weight: u64,
    addresses: HashMap<String, u64>,
}

fn script_kind(script: &Script) -> &'static str {
    if script.is_p2wpkh() {
        "p2wpkh"
    } else if script.is_p2tr() {
        "p2tr"
    } else if script.is_p2pkh() {
        "p2pkh"
    } else if script.is_p2sh() {
        "p2sh"
    } else if script.is_p2wsh() {
        "p2wsh"
    } else if script.is_op_return() {
        "op_return"
    } else if script.is_p2pk() {
        "p2pk"
    } else if script.is_multisig() {
        "bare_multisig"
    } else {
        "nonstandard"
    }
}

fn last_push(script: &Script) -> Vec<u8> {
    script
        .instructions()
        .filter_map(|i| match i.unwrap() {
            Instruction::PushBytes(b) => Some(b.as_bytes().to_vec()),
            Instruction::Op(_) => None,
        })
        .last()
        .unwrap()
}

/// The revealed key or script hashes to what the spent output commits to.
fn check_reveal(prev: &Script, tx: &Transaction, vin: usize) {
    let input = &tx.input[vin];
    let p = prev.as_bytes();
    let witness_last = || input.witness.last().unwrap().to_vec();
    match script_kind(prev) {
        "p2wpkh" => assert_eq!(
            hash160::Hash::hash(&witness_last()).as_byte_array(),
            &p[2..22]
        ),
        "p2wsh" => assert_eq!(
            sha256::Hash::hash(&witness_last()).as_byte_array(),
            &p[2..34]
        ),
        "p2pkh" => assert_eq!(
            hash160::Hash::hash(&last_push(&input.script_sig)).as_byte_array(),
            &p[3..23]
        ),
        "p2sh" => assert_eq!(
            hash160::Hash::hash(&last_push(&input.script_sig)).as_byte_array(),
            &p[2..22]
        ),
        "p2tr" => {
            assert!(matches!(input.witness.len(), 1) && (64..=65).contains(&input.witness[0].len()))
        }
        _ => assert!(!input.script_sig.is_empty()),
    }
}

fn subsidy(height: u32) -> u64 {
    let halvings = height / 150;
    if halvings >= 64 {
        0
    } else {
        50_0000_0000 >> halvings
    }
}

/// Replays the main chain: no unknown or double spend, maturity, value in >= value out,
/// coinbase = subsidy + fees exactly, keys hash to addresses. Returns what it measured.
fn replay(f: &Fixture) -> Measured {
    let mut utxos: HashMap<OutPoint, (u64, bool, u32, bitcoin::ScriptBuf)> = HashMap::new();
    let mut m = Measured::default();
    for (height, &i) in f.main.iter().enumerate().skip(1) {
        let height = height as u32;
        let block = &f.records[i].block;
        let mut fees = 0;
        for tx in &block.txdata[1..] {
            let mut value_in = 0;
            for (vin, input) in tx.input.iter().enumerate() {
                let (value, coinbase, created, script) = utxos
                    .remove(&input.previous_output)
                    .expect("spends a known unspent output");
                assert!(
                    !coinbase || height >= created + 100,
                    "coinbase spent before maturity"
                );
                check_reveal(&script, tx, vin);
                value_in += value;
            }
            let value_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
            let fee = value_in
                .checked_sub(value_out)
                .expect("value in >= value out");
            fees += fee;
            m.spends += 1;
            m.one_input += u64::from(tx.input.len() == 1);
            m.two_outputs += u64::from(tx.output.len() == 2);
            m.max_inputs = m.max_inputs.max(tx.input.len());
            m.max_outputs = m.max_outputs.max(tx.output.len());
            m.fee_rates.push(fee as f64 / tx.vsize() as f64);
        }
        let coinbase = &block.txdata[0];
        let claimed: u64 = coinbase.output.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(
            claimed,
            subsidy(height) + fees,
            "coinbase at {height} claims subsidy + fees"
        );
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            for (vout, out) in tx.output.iter().enumerate() {
                *m.scripts
                    .entry(script_kind(&out.script_pubkey))
                    .or_default() += 1;
                if let Some(label) = label(&out.script_pubkey, Network::Regtest) {
                    *m.addresses.entry(label).or_default() += 1;
                }
                if !out.script_pubkey.is_op_return() {
                    let entry = (
                        out.value.to_sat(),
                        tx.is_coinbase(),
                        height,
                        out.script_pubkey.clone(),
                    );
                    utxos.insert(
                        OutPoint {
                            txid,
                            vout: vout as u32,
                        },
                        entry,
                    );
                }
            }
        }
        if block.weight().to_wu() >= 3_900_000 {
            m.full_blocks += 1;
            m.full_block_txs += block.txdata.len() as u64;
            m.full_block_weight += block.weight().to_wu();
        }
    }
    m
}

fn measured() -> &'static Measured {
    static MEASURED: OnceLock<Measured> = OnceLock::new();
    MEASURED.get_or_init(|| replay(fixture()))
}

#[test]
fn values_balance_and_spends_reveal_the_right_keys() {
    let m = measured();
    assert!(
        m.spends > 50_000,
        "the fixture has a real economy ({} spends)",
        m.spends
    );
}

#[test]
fn distributions_within_documented_ranges() {
    let m = measured();
    let total: u64 = m.scripts.values().sum();
    let share = |k: &str| m.scripts.get(k).copied().unwrap_or(0) as f64 / total as f64;
    let (wpkh, tr, pkh, sh, wsh, op) = (
        share("p2wpkh"),
        share("p2tr"),
        share("p2pkh"),
        share("p2sh"),
        share("p2wsh"),
        share("op_return"),
    );
    let rare = share("p2pk") + share("bare_multisig") + share("nonstandard");
    // README "Script mix": P2WPKH > P2TR > P2PKH ~ P2SH > P2WSH > OP_RETURN > rare kinds.
    assert!((0.35..0.55).contains(&wpkh), "p2wpkh {wpkh}");
    assert!((0.15..0.30).contains(&tr), "p2tr {tr}");
    assert!(
        (0.06..0.15).contains(&pkh) && (0.06..0.15).contains(&sh),
        "p2pkh {pkh} p2sh {sh}"
    );
    assert!((0.5..2.0).contains(&(pkh / sh)));
    assert!((0.015..0.06).contains(&wsh), "p2wsh {wsh}");
    assert!((0.01..0.05).contains(&op), "op_return {op}");
    assert!(wpkh > tr && tr > pkh.max(sh) && pkh.min(sh) > wsh && wsh > op && op > rare);
    assert!(rare > 0.0 && rare < 0.005, "rare kinds {rare}");

    // README "Transaction shape".
    let one_in = m.one_input as f64 / m.spends as f64;
    let two_out = m.two_outputs as f64 / m.spends as f64;
    assert!((0.5..0.8).contains(&one_in), "1-input share {one_in}");
    assert!((0.5..0.8).contains(&two_out), "2-output share {two_out}");
    assert!(
        m.max_inputs >= 100 && m.max_outputs >= 100,
        "long tails: {} in, {} out",
        m.max_inputs,
        m.max_outputs
    );

    // README "Fees": median 3-20 sat/vB, almost nothing under 1 sat/vB.
    let mut rates = m.fee_rates.clone();
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    assert!((3.0..20.0).contains(&median), "median fee rate {median}");
    assert!(
        rates[rates.len() / 100] >= 0.99,
        "1st percentile {}",
        rates[rates.len() / 100]
    );

    // README "Blocks": full blocks near the weight limit with thousands of transactions.
    assert!(m.full_blocks >= 20, "{} full blocks", m.full_blocks);
    let txs_per_block = m.full_block_txs as f64 / m.full_blocks as f64;
    assert!(
        (2_500.0..5_000.0).contains(&txs_per_block),
        "txs per block {txs_per_block}"
    );
    assert!(m.full_block_weight / m.full_blocks > 3_950_000);

    // README "Address reuse": a minority of outputs pay an address seen before.
    let outputs: u64 = m.addresses.values().sum();
    let reused = outputs - m.addresses.len() as u64;
    let rate = reused as f64 / outputs as f64;
    assert!((0.05..0.35).contains(&rate), "reuse rate {rate}");
}

#[test]
fn every_address_has_exactly_one_owner() {
    let f = fixture();
    let m = measured();
    let actors: HashMap<String, String> = read_csv(&f.dir, "actors.csv")
        .1
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    assert!([
        "user",
        "exchange",
        "pool",
        "mixer",
        "peeler",
        "thief",
        "ransomware"
    ]
    .iter()
    .all(|k| actors.values().any(|v| v == k)));
    let mut owner: HashMap<String, String> = HashMap::new();
    for row in read_csv(&f.dir, "addresses.csv").1 {
        assert!(actors.contains_key(&row[1]), "owner {} is an actor", row[1]);
        assert!(
            owner.insert(row[0].clone(), row[1].clone()).is_none(),
            "{} listed twice",
            row[0]
        );
    }
    for address in m.addresses.keys() {
        assert!(owner.contains_key(address), "{address} has an owner");
    }
}

/// Each exchange's share of the addresses all exchanges own, by name.
fn exchange_shares(truth: &Path) -> HashMap<String, f64> {
    let read = |name: &str| -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(truth.join(name)).unwrap();
        text.lines()
            .skip(1)
            .map(|l| l.split(',').map(String::from).collect())
            .collect()
    };
    let exchanges: HashMap<String, String> = read("actors.csv")
        .into_iter()
        .filter(|r| r[1] == "exchange")
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect();
    let mut counts: HashMap<String, f64> = HashMap::new();
    for row in read("addresses.csv") {
        if let Some(name) = exchanges.get(&row[1]) {
            *counts.entry(name.clone()).or_default() += 1.0;
        }
    }
    let total: f64 = counts.values().sum();
    counts.values_mut().for_each(|c| *c /= total);
    counts
}

#[test]
fn a_whale_exchange_owns_most_exchange_addresses_and_none_otherwise() {
    let spread = exchange_shares(&fixture().dir.join("truth"));
    assert_eq!(spread.len(), 8);
    assert!(
        spread.values().all(|&s| s < 0.3),
        "without a whale no exchange dominates: {spread:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    run(&SynthArgs {
        whale_share: 0.9,
        ..args(dir.path(), 20_000_000, 5, false)
    })
    .unwrap();
    let whale = exchange_shares(&dir.path().join("truth"));
    assert!(
        whale["exchange-0"] > 0.75,
        "exchange-0 owns {:.2} of exchange addresses",
        whale["exchange-0"]
    );
}

fn main_txs(f: &Fixture) -> HashMap<Txid, &Transaction> {
    f.main
        .iter()
        .flat_map(|&i| f.records[i].block.txdata.iter())
        .map(|tx| (tx.compute_txid(), tx))
        .collect()
}

#[test]
fn coinjoins_have_equal_outputs() {
    let f = fixture();
    let txs = main_txs(f);
    let rows = read_csv(&f.dir, "coinjoins.csv").1;
    let kinds: HashSet<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert!(
        kinds.contains("whirlpool") && kinds.contains("joinmarket") && kinds.contains("wasabi"),
        "{kinds:?}"
    );
    for row in &rows {
        let tx = txs[&row[0].parse::<Txid>().unwrap()];
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for out in &tx.output {
            *counts.entry(out.value.to_sat()).or_default() += 1;
        }
        let equal = *counts.values().max().unwrap();
        let min = match row[1].as_str() {
            "whirlpool" => {
                assert_eq!((tx.input.len(), tx.output.len()), (5, 5));
                5
            }
            "wasabi" => 5,
            "joinmarket" => 4,
            other => panic!("unknown kind {other}"),
        };
        assert!(equal >= min, "{} has {equal} equal outputs", row[0]);
    }
}

#[test]
fn illicit_flows_chain_from_source_to_deposit() {
    let f = fixture();
    let txs = main_txs(f);
    let text = std::fs::read_to_string(f.dir.join("truth/flows.jsonl")).unwrap();
    let flows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let complete: Vec<&serde_json::Value> =
        flows.iter().filter(|f| f["complete"] == true).collect();
    let kinds: HashSet<&str> = complete
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains("theft") && kinds.contains("ransom"),
        "complete flows: {kinds:?}"
    );
    let owners: HashMap<String, String> = read_csv(&f.dir, "addresses.csv")
        .1
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    for flow in &flows {
        let mut hops = vec![&flow["source"]];
        hops.extend(flow["hops"].as_array().unwrap());
        for pair in hops.windows(2) {
            let spent: HashSet<OutPoint> = pair[1]["txids"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|t| {
                    txs[&t.as_str().unwrap().parse::<Txid>().unwrap()]
                        .input
                        .iter()
                        .map(|i| i.previous_output)
                })
                .collect();
            for o in pair[0]["outpoints"].as_array().unwrap() {
                let outpoint = OutPoint {
                    txid: o["txid"].as_str().unwrap().parse().unwrap(),
                    vout: o["vout"].as_u64().unwrap() as u32,
                };
                assert!(
                    spent.contains(&outpoint),
                    "{outpoint} is spent by the next hop"
                );
                let out = &txs[&outpoint.txid].output[outpoint.vout as usize];
                assert_eq!(out.value.to_sat(), o["value"].as_u64().unwrap());
            }
        }
        if flow["complete"] == true {
            let deposit = &flow["deposit"]["outpoint"];
            let txid: Txid = deposit["txid"].as_str().unwrap().parse().unwrap();
            let out = &txs[&txid].output[deposit["vout"].as_u64().unwrap() as usize];
            let owner = &owners[&label(&out.script_pubkey, Network::Regtest).unwrap()];
            assert_eq!(
                owner,
                &flow["deposit"]["exchange"].to_string(),
                "deposit address belongs to the exchange"
            );
            assert!(
                hops.iter().any(|h| h["kind"] == "mix"),
                "laundering went through a mixer"
            );
        }
    }
}

#[test]
fn peel_chains_are_listed_without_the_flag() {
    let f = fixture();
    let txs = main_txs(f);
    let text = std::fs::read_to_string(f.dir.join("truth/patterns.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("kind,instance,height,txid"));
    let mut runs: HashMap<&str, Vec<Txid>> = HashMap::new();
    for line in lines {
        let row: Vec<&str> = line.split(',').collect();
        assert_eq!(
            row[0], "peel-chain",
            "only peel chains without --plant-patterns"
        );
        runs.entry(row[1])
            .or_default()
            .push(row[3].parse().unwrap());
    }
    assert!(!runs.is_empty());
    assert_eq!(f.summary.patterns["peel-chain"], runs.len() as u64);
    assert!(f
        .summary
        .patterns
        .iter()
        .all(|(k, &n)| *k == "peel-chain" || n == 0));
    for hops in runs.values() {
        assert!(hops.len() >= 2);
        for pair in hops.windows(2) {
            let tx = txs[&pair[1]];
            assert_eq!(tx.input.len(), 1);
            assert_eq!(
                tx.input[0].previous_output.txid, pair[0],
                "a hop spends the previous one"
            );
        }
    }
}

#[test]
fn same_seed_same_bytes() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    run(&args(a.path(), 3_000_000, 5, false)).unwrap();
    run(&args(b.path(), 3_000_000, 5, false)).unwrap();
    run(&args(c.path(), 3_000_000, 6, false)).unwrap();
    let read = |dir: &Path, name: &str| std::fs::read(dir.join(name)).unwrap();
    for name in [
        "blk00000.dat",
        "xor.dat",
        "truth/addresses.csv",
        "truth/actors.csv",
        "truth/coinjoins.csv",
        "truth/flows.jsonl",
        "truth/patterns.csv",
    ] {
        assert!(
            read(a.path(), name) == read(b.path(), name),
            "{name} differs between equal seeds"
        );
    }
    assert!(read(a.path(), "blk00000.dat") != read(c.path(), "blk00000.dat"));
}

#[test]
fn mainnet_flavour_uses_mainnet_magic_genesis_and_bits() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&SynthArgs {
        network: NetworkChoice::Main,
        xor: false,
        truncate_tail: false,
        ..args(dir.path(), 1_000_000, 3, false)
    })
    .unwrap();
    assert!(!dir.path().join("xor.dat").exists());
    let (records, truncated) = read_dir(dir.path(), [0xf9, 0xbe, 0xb4, 0xd9]);
    assert!(truncated.is_none());
    assert_eq!(
        records.len() as u64,
        summary.blocks + summary.stale_blocks.len() as u64
    );
    let genesis = bitcoin::constants::genesis_block(Network::Bitcoin).block_hash();
    assert!(records.iter().any(|r| r.block.block_hash() == genesis));
    assert!(records
        .iter()
        .filter(|r| r.block.block_hash() != genesis)
        .all(|r| r.block.header.bits.to_consensus() == 0x1703_4219));
}
