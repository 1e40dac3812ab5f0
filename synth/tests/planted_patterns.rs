//! `--plant-patterns`: truth/patterns.csv lists instances of every kind, every transaction it
//! names is in the main chain at the height it gives, and the planted shapes hold, checked on
//! the blocks as rust-bitcoin decodes them (synth/README.md, "patterns.csv").
//!
//! The checks run on an 80 MB chain generated here, or on an existing directory written with
//! `--plant-patterns` (any size or network; no truncated tail) named by
//! `SYNTH_PATTERNS_DIR`, e.g. the 512 MB bench chain:
//! `SYNTH_PATTERNS_DIR=target/bench-data/synth-512MB-seed7-patterns cargo test --release
//! --manifest-path synth/Cargo.toml --test planted_patterns`.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bitcoin::{OutPoint, TxOut, Txid};
use common::{args, read_csv, Decoded};
use satflow_synth::run;

const KINDS: [&str; 7] = [
    "peel-chain",
    "layering",
    "fan-out-in",
    "fan-in",
    "dusting",
    "coinjoin-reunion",
    "coinjoin-to-exchange",
];

struct Instance {
    kind: String,
    /// (height, txid) in file order.
    rows: Vec<(u32, Txid)>,
}

/// The decoded main chain (`Decoded`: transactions, owners, summary) plus the CoinJoins and
/// pattern instances the truth lists.
struct Chain {
    main: Decoded,
    coinjoins: HashSet<Txid>,
    instances: BTreeMap<u32, Instance>,
}

impl Deref for Chain {
    type Target = Decoded;

    fn deref(&self) -> &Decoded {
        &self.main
    }
}

impl Chain {
    fn of_kind(&self, kind: &str) -> Vec<&Instance> {
        self.instances.values().filter(|i| i.kind == kind).collect()
    }
}

fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let dir = match std::env::var_os("SYNTH_PATTERNS_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                // A fixed place under target/, replaced on every run, so runs do not pile up.
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("synth-patterns-fixture");
                let _ = std::fs::remove_dir_all(&dir);
                run(&args(&dir, 80_000_000, 3, true)).unwrap();
                dir
            }
        };
        let main = Decoded::load(&dir);
        let (_, coinjoins) = read_csv(&dir, "coinjoins.csv");
        let coinjoins = coinjoins.iter().map(|r| r[0].parse().unwrap()).collect();
        let (header, rows) = read_csv(&dir, "patterns.csv");
        assert_eq!(header, "kind,instance,height,txid");
        let mut instances: BTreeMap<u32, Instance> = BTreeMap::new();
        for row in rows {
            assert_eq!(row.len(), 4, "{row:?}");
            let instance = instances
                .entry(row[1].parse().unwrap())
                .or_insert(Instance {
                    kind: row[0].clone(),
                    rows: Vec::new(),
                });
            assert_eq!(instance.kind, row[0], "one kind per instance");
            instance
                .rows
                .push((row[2].parse().unwrap(), row[3].parse().unwrap()));
        }
        Chain {
            main,
            coinjoins,
            instances,
        }
    })
}

/// The planted transactions keep the chain valid: every spend is of an existing unspent
/// output (coinbase ones mature), value in >= value out, coinbases claim subsidy + fees, and
/// every address has exactly one owner in addresses.csv.
#[test]
fn the_chain_with_planted_patterns_stays_valid() {
    chain().assert_valid();
}

#[test]
fn every_kind_is_planted_and_every_listed_tx_is_in_the_main_chain() {
    let c = chain();
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    for (id, instance) in &c.instances {
        assert!(KINDS.contains(&instance.kind.as_str()), "{}", instance.kind);
        *counts
            .entry(KINDS.iter().find(|&&k| k == instance.kind).unwrap())
            .or_default() += 1;
        let mut seen = HashSet::new();
        let mut previous = 0;
        for (height, txid) in &instance.rows {
            assert!(seen.insert(txid), "{txid} listed twice in instance {id}");
            assert!(
                c.txs.contains_key(txid),
                "{txid} of instance {id} is in the main chain"
            );
            assert_eq!(c.height(txid), *height, "height of {txid}");
            assert!(*height >= previous, "instance {id} oldest first");
            previous = *height;
        }
    }
    for kind in KINDS {
        assert!(
            counts.get(kind).copied().unwrap_or(0) >= 1,
            "no {kind}: {counts:?}"
        );
        assert_eq!(
            c.summary["patterns"][kind], counts[kind],
            "summary counts {kind}"
        );
    }
    assert_eq!(c.summary["plant_patterns"], true);
}

/// Each transaction after the first has one input, spending an output of the one before.
fn assert_hops(c: &Chain, rows: &[(u32, Txid)]) {
    for pair in rows.windows(2) {
        let tx = c.tx(&pair[1].1);
        assert_eq!(tx.input.len(), 1, "{} has one input", pair[1].1);
        assert_eq!(
            tx.input[0].previous_output.txid, pair[0].1,
            "{} spends {}",
            pair[1].1, pair[0].1
        );
    }
}

#[test]
fn peel_chain_hops_spend_each_other() {
    let c = chain();
    for instance in c.of_kind("peel-chain") {
        assert!(instance.rows.len() >= 2);
        assert_hops(c, &instance.rows);
        // The run starts from the withdrawal that paid a peeler.
        let first = c.tx(&instance.rows[0].1);
        let funding = c.prevout(&first.input[0].previous_output);
        assert_eq!(c.owner(&funding.script_pubkey).0, "peeler");
        for (_, txid) in &instance.rows {
            assert!(c.tx(txid).output.len() <= 2);
        }
    }
}

#[test]
fn layering_hops_through_one_actor_to_an_exchange() {
    let c = chain();
    for instance in c.of_kind("layering") {
        let rows = &instance.rows;
        assert!((3..=12).contains(&rows.len()), "{} hops", rows.len());
        assert_hops(c, rows);
        let first = c.tx(&rows[0].1);
        let source = c.prevout(&first.input[0].previous_output);
        let layerer = c.owner(&source.script_pubkey).clone();
        assert_eq!(layerer.0, "layerer");
        for pair in rows.windows(2) {
            assert!(
                (2..=5).contains(&(pair[1].0 - pair[0].0)),
                "hops 0-3 blocks apart"
            );
        }
        for (i, (_, txid)) in rows.iter().enumerate() {
            let tx = c.tx(txid);
            let value_in = c.prevout(&tx.input[0].previous_output).value.to_sat();
            assert!((1..=2).contains(&tx.output.len()));
            let main = &tx.output[0];
            for change in &tx.output[1..] {
                assert!(change.value.to_sat() * 50 <= value_in, "change <= 2%");
                assert_eq!(c.owner(&change.script_pubkey), &layerer);
            }
            if i + 1 == rows.len() {
                assert_eq!(
                    c.owner(&main.script_pubkey).0,
                    "exchange",
                    "ends in a deposit"
                );
            } else {
                assert_eq!(c.owner(&main.script_pubkey), &layerer);
                assert_eq!(
                    c.first_paid[&c.label(&main.script_pubkey).unwrap()],
                    rows[i].0
                );
            }
        }
    }
}

#[test]
fn fan_out_in_splits_into_similar_outputs_then_sweeps_them() {
    let c = chain();
    for instance in c.of_kind("fan-out-in") {
        let [(split_height, split), (sweep_height, sweep)] = instance.rows[..] else {
            panic!("a split and a sweep: {:?}", instance.rows)
        };
        let split_tx = c.tx(&split);
        assert_eq!(split_tx.input.len(), 1);
        let n = split_tx.output.len();
        assert!((4..=40).contains(&n), "{n} outputs");
        let values: Vec<u64> = split_tx.output.iter().map(|o| o.value.to_sat()).collect();
        let mean = values.iter().sum::<u64>() as f64 / n as f64;
        assert!(
            values
                .iter()
                .all(|&v| (v as f64 - mean).abs() <= 0.25 * mean),
            "similar values {values:?}"
        );
        let owners: HashSet<_> = split_tx
            .output
            .iter()
            .map(|o| c.owner(&o.script_pubkey))
            .collect();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners.iter().next().unwrap().0, "structurer");
        let sweep_tx = c.tx(&sweep);
        assert!(sweep_tx
            .input
            .iter()
            .all(|i| i.previous_output.txid == split));
        let spent = sweep_tx.input.len();
        assert!(spent >= 3 && spent + 2 >= n, "sweeps {spent} of {n}");
        assert!((1..=2).contains(&sweep_tx.output.len()));
        assert!((2..=50).contains(&(sweep_height - split_height)));
    }
}

#[test]
fn fan_in_collects_from_distinct_users_then_consolidates() {
    let c = chain();
    for instance in c.of_kind("fan-in") {
        let (payments, consolidation) = instance.rows.split_at(instance.rows.len() - 1);
        assert!(
            (15..=80).contains(&payments.len()),
            "{} payments",
            payments.len()
        );
        let consolidation = c.tx(&consolidation[0].1);
        assert_eq!(consolidation.output.len(), 1);
        let spent: HashSet<OutPoint> = consolidation
            .input
            .iter()
            .map(|i| i.previous_output)
            .collect();
        let mut received = HashSet::new();
        let mut payers = HashSet::new();
        let mut collectors = HashSet::new();
        let mut addresses = HashSet::new();
        for (_, txid) in payments {
            let tx = c.tx(txid);
            let to_collector: Vec<usize> = (0..tx.output.len())
                .filter(|&v| c.owner(&tx.output[v].script_pubkey).0 == "collector")
                .collect();
            let [vout] = to_collector[..] else {
                panic!("{txid} pays the collector once")
            };
            let out = &tx.output[vout];
            assert!((50_000..=2_000_000).contains(&out.value.to_sat()));
            collectors.insert(c.owner(&out.script_pubkey).1.clone());
            addresses.insert(c.label(&out.script_pubkey).unwrap());
            received.insert(OutPoint {
                txid: *txid,
                vout: vout as u32,
            });
            let payer: HashSet<_> = tx
                .input
                .iter()
                .map(|i| c.owner(&c.prevout(&i.previous_output).script_pubkey))
                .collect();
            assert_eq!(payer.len(), 1, "one payer per payment");
            let payer = payer.into_iter().next().unwrap();
            assert_eq!(payer.0, "user");
            assert!(payers.insert(payer.1.clone()), "payers are distinct");
        }
        assert_eq!(collectors.len(), 1, "one collector");
        assert!((1..=4).contains(&addresses.len()));
        assert_eq!(
            spent, received,
            "the consolidation spends exactly the payments"
        );
        let span = payments.last().unwrap().0 - payments[0].0;
        assert!(span < 100, "payments over {span} blocks");
    }
}

#[test]
fn dusting_pays_dust_to_used_addresses_of_distinct_users() {
    let c = chain();
    for instance in c.of_kind("dusting") {
        let [(height, txid)] = instance.rows[..] else {
            panic!("one transaction")
        };
        let tx = c.tx(&txid);
        let dust: Vec<&TxOut> = tx
            .output
            .iter()
            .filter(|o| o.value.to_sat() <= 1_000)
            .collect();
        assert!(
            (10..=300).contains(&dust.len()),
            "{} dust outputs",
            dust.len()
        );
        assert!(tx.output.len() <= dust.len() + 1, "dust plus change");
        let mut owners = HashSet::new();
        for out in dust {
            assert!(out.value.to_sat() >= 294);
            let address = c.label(&out.script_pubkey).unwrap();
            assert!(c.first_paid[&address] < height, "{address} was used before");
            let owner = c.owner(&out.script_pubkey);
            assert_eq!(owner.0, "user");
            assert!(owners.insert(owner.1.clone()), "owners are distinct");
        }
    }
}

/// Equal outputs of the CoinJoins satflow-synth makes.
const DENOMINATIONS: [u64; 5] = [100_000, 1_000_000, 5_000_000, 50_000_000, 10_000_000];

#[test]
fn reunions_spend_equal_outputs_of_their_coinjoins_together() {
    let c = chain();
    for instance in c.of_kind("coinjoin-reunion") {
        let (sources, reunion) = instance.rows.split_at(instance.rows.len() - 1);
        let (height, reunion) = reunion[0];
        assert!(!sources.is_empty());
        let sources: HashSet<Txid> = sources.iter().map(|r| r.1).collect();
        for cj in &sources {
            assert!(c.coinjoins.contains(cj), "{cj} is a CoinJoin");
            assert!((1..=200).contains(&(height - c.height(cj))));
        }
        let tx = c.tx(&reunion);
        assert!(
            (2..=5).contains(&tx.input.len()),
            "{} inputs",
            tx.input.len()
        );
        assert!((1..=2).contains(&tx.output.len()));
        let spent: HashSet<Txid> = tx.input.iter().map(|i| i.previous_output.txid).collect();
        assert_eq!(
            spent, sources,
            "spends outputs of exactly the listed CoinJoins"
        );
        let values: HashSet<u64> = tx
            .input
            .iter()
            .map(|i| c.prevout(&i.previous_output).value.to_sat())
            .collect();
        assert_eq!(values.len(), 1, "equal outputs");
        assert!(DENOMINATIONS.contains(values.iter().next().unwrap()));
    }
}

#[test]
fn coinjoin_outputs_reach_an_exchange_in_a_few_hops() {
    let c = chain();
    for instance in c.of_kind("coinjoin-to-exchange") {
        let rows = &instance.rows;
        assert!((2..=4).contains(&rows.len()), "{} txs", rows.len());
        assert_hops(c, rows);
        let first = c.tx(&rows[0].1);
        assert_eq!(first.input.len(), 1);
        let cj = first.input[0].previous_output.txid;
        assert!(c.coinjoins.contains(&cj), "starts from a CoinJoin output");
        assert!(rows.iter().all(|r| r.1 != cj), "the CoinJoin is not listed");
        for (_, txid) in rows {
            assert!((1..=2).contains(&c.tx(txid).output.len()));
        }
        let last = c.tx(&rows.last().unwrap().1);
        assert_eq!(c.owner(&last.output[0].script_pubkey).0, "exchange");
        assert!(rows.last().unwrap().0 - c.height(&cj) <= 30);
    }
}

#[test]
fn the_flag_changes_the_chain_and_stays_deterministic() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (dir, plant) in dirs.iter().zip([true, true, false]) {
        run(&args(dir.path(), 12_000_000, 4, plant)).unwrap();
    }
    let read = |dir: &tempfile::TempDir, name: &str| std::fs::read(dir.path().join(name)).unwrap();
    for name in ["blk00000.dat", "truth/patterns.csv", "truth/actors.csv"] {
        assert!(
            read(&dirs[0], name) == read(&dirs[1], name),
            "{name} differs"
        );
    }
    assert!(read(&dirs[0], "blk00000.dat") != read(&dirs[2], "blk00000.dat"));
    assert!(read(&dirs[0], "truth/actors.csv").len() > read(&dirs[2], "truth/actors.csv").len());
}
