//! `--plant-services`: the gambling services and payment processors are in the truth, keep
//! the chain valid, and behave as synth/README.md ("Planted services") says, checked on the
//! blocks as rust-bitcoin decodes them: each gambling service takes bets from many distinct
//! users at a handful of reused addresses and pays about half of them back within 3 blocks;
//! each processor takes invoices at fresh addresses and sweeps many of them at a time into a
//! few fixed merchant addresses plus its change.
//!
//! The checks run on a 48 MB chain generated here, or on an existing directory written with
//! `--plant-services` (any size or network; no truncated tail) named by
//! `SYNTH_SERVICES_DIR`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use bitcoin::{OutPoint, Transaction, Txid};
use common::{args, Decoded};
use satflow_synth::{run, SynthArgs};

/// A generated chain with `--plant-services` (seed 3, `--xor --truncate-tail`).
fn services_args(dir: &Path, size: u64, seed: u64) -> SynthArgs {
    SynthArgs {
        plant_services: true,
        ..args(dir, size, seed, false)
    }
}

/// The decoded chain, and for each actor (by id) the main-chain transactions that pay it or
/// spend its coins, oldest first.
struct Chain {
    main: Decoded,
    touching: HashMap<String, Vec<Txid>>,
}

fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let dir = match std::env::var_os("SYNTH_SERVICES_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => {
                // A fixed place under target/, replaced on every run, so runs do not pile up.
                let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("synth-services-fixture");
                let _ = std::fs::remove_dir_all(&dir);
                run(&services_args(&dir, 48_000_000, 3)).unwrap();
                dir
            }
        };
        let main = Decoded::load(&dir);
        let services: HashSet<&String> = main
            .actors
            .iter()
            .filter(|(_, (kind, _))| ["gambling", "processor", "merchant"].contains(&&**kind))
            .map(|(id, _)| id)
            .collect();
        let mut touching: HashMap<String, Vec<Txid>> = HashMap::new();
        // Coinbases pay pools and miners only (and the genesis output has no owner).
        for txids in &main.blocks {
            for txid in &txids[1..] {
                let tx = main.tx(txid);
                let mut ids = BTreeSet::new();
                for out in &tx.output {
                    if main.label(&out.script_pubkey).is_some() {
                        ids.insert(main.owner(&out.script_pubkey).1.clone());
                    }
                }
                for input in &tx.input {
                    let prev = main.prevout(&input.previous_output);
                    ids.insert(main.owner(&prev.script_pubkey).1.clone());
                }
                for id in ids.into_iter().filter(|id| services.contains(id)) {
                    touching.entry(id).or_default().push(*txid);
                }
            }
        }
        Chain { main, touching }
    })
}

impl Chain {
    /// Ids of the actors of `kind`, by name.
    fn actors(&self, kind: &str) -> BTreeMap<String, String> {
        self.main
            .actors
            .iter()
            .filter(|(_, (k, _))| k == kind)
            .map(|(id, (_, name))| (name.clone(), id.clone()))
            .collect()
    }

    fn touching(&self, id: &str) -> &[Txid] {
        self.touching.get(id).map_or(&[], Vec::as_slice)
    }

    /// The owners (actor ids) of the coins `tx` spends.
    fn payers(&self, tx: &Transaction) -> BTreeSet<&String> {
        tx.input
            .iter()
            .map(|i| {
                &self
                    .main
                    .owner(&self.main.prevout(&i.previous_output).script_pubkey)
                    .1
            })
            .collect()
    }

    /// Outputs of `tx` owned by actor `id`: (vout, value, address).
    fn paid_to(&self, tx: &Transaction, id: &str) -> Vec<(u32, u64, String)> {
        let c = &self.main;
        tx.output
            .iter()
            .enumerate()
            .filter(|(_, o)| c.label(&o.script_pubkey).is_some())
            .filter(|(_, o)| c.owner(&o.script_pubkey).1 == id)
            .map(|(v, o)| {
                let address = c.label(&o.script_pubkey).unwrap();
                (v as u32, o.value.to_sat(), address)
            })
            .collect()
    }
}

#[test]
fn the_chain_with_planted_services_stays_valid() {
    chain().main.assert_valid();
}

#[test]
fn the_truth_lists_the_services() {
    let c = chain();
    assert_eq!(c.main.summary["plant_services"], true);
    let gambling = c.actors("gambling");
    let processors = c.actors("processor");
    let merchants = c.actors("merchant");
    let names = |kind: &str, n: usize| -> BTreeSet<String> {
        (0..n).map(|i| format!("{kind}-{i}")).collect()
    };
    assert_eq!(
        gambling.keys().cloned().collect::<BTreeSet<_>>(),
        names("gambling", 3)
    );
    assert_eq!(
        processors.keys().cloned().collect::<BTreeSet<_>>(),
        names("processor", 3)
    );
    assert!(
        (6..=18).contains(&merchants.len()),
        "{} merchants",
        merchants.len()
    );
    assert_eq!(
        merchants.keys().cloned().collect::<BTreeSet<_>>(),
        names("merchant", merchants.len())
    );
    // Every address of theirs paid on chain is listed, as theirs (assert_valid checks that
    // every address has an owner; here, that the services have many).
    for id in gambling.values().chain(processors.values()) {
        let addresses = c.main.owners.values().filter(|o| &o.1 == id).count();
        assert!(addresses >= 10, "actor {id} has {addresses} addresses");
    }
}

/// A bet: a user's transaction paying a gambling service once, change to the user.
struct Bet {
    height: u32,
    txid: Txid,
    bettor: String,
    value: u64,
    vout: u32,
}

impl Bet {
    fn outpoint(&self) -> OutPoint {
        OutPoint {
            txid: self.txid,
            vout: self.vout,
        }
    }
}

#[test]
fn gambling_services_take_many_bets_and_pay_about_half_back_within_3_blocks() {
    let c = chain();
    let tip = c.main.blocks.len() as u32 - 1;
    let mut consolidations = 0;
    for (name, id) in c.actors("gambling") {
        let mut bets: Vec<Bet> = Vec::new();
        let mut game_addresses: HashMap<String, usize> = HashMap::new();
        let mut changes: Vec<(Txid, String)> = Vec::new();
        let mut payouts = 0;
        let mut own_bet_spent = 0;
        let mut paid: HashSet<Txid> = HashSet::new();
        for txid in c.touching(&id) {
            let tx = c.main.tx(txid);
            let height = c.main.height(txid);
            let payers = c.payers(tx);
            let ours = c.paid_to(tx, &id);
            if !payers.contains(&id) {
                let payer = payers.iter().next().unwrap();
                let kind = &c.main.actors[*payer].0;
                if kind == "exchange" {
                    // The bankroll, or a refill: 10-30 coins from an exchange.
                    assert!((10..=30).contains(&ours.len()), "{txid} funds {name}");
                    continue;
                }
                assert_eq!(kind, "user", "{txid}: users bet");
                assert_eq!(payers.len(), 1, "{txid}: one bettor");
                let [(vout, value, address)] = &ours[..] else {
                    panic!("{txid} pays {name} once")
                };
                assert!((50_000..=5_000_000).contains(value), "bet of {value} sat");
                for out in &tx.output {
                    if out.script_pubkey != tx.output[*vout as usize].script_pubkey {
                        assert_eq!(&c.main.owner(&out.script_pubkey).1, *payer, "change");
                    }
                }
                *game_addresses.entry(address.clone()).or_default() += 1;
                bets.push(Bet {
                    height,
                    txid: *txid,
                    bettor: (*payer).clone(),
                    value: *value,
                    vout: *vout,
                });
                continue;
            }
            assert_eq!(payers.len(), 1, "{txid}: {name} spends only its own coins");
            if tx.output.len() == 1 {
                // A consolidation of small coins.
                assert_eq!(ours.len(), 1, "{txid}");
                assert!((10..=150).contains(&tx.input.len()), "{txid}");
                consolidations += 1;
                continue;
            }
            // A payout: one output to the bettor's fresh address, change to a game address.
            assert_eq!(tx.output.len(), 2, "{txid}");
            assert_eq!(ours.len(), 1, "{txid}: change");
            let winner = &tx.output[1 - ours[0].0 as usize];
            let (kind, bettor) = c.main.owner(&winner.script_pubkey);
            assert_eq!(kind, "user");
            let address = c.main.label(&winner.script_pubkey).unwrap();
            assert_eq!(c.main.first_paid[&address], height, "a fresh address");
            changes.push((*txid, ours[0].2.clone()));
            let payout = winner.value.to_sat();
            // The bet it pays: the one whose output it spends, else the oldest unpaid bet of
            // the bettor in the last 3 blocks that the payout is 1.5-2 times of.
            let spent: HashSet<OutPoint> = tx.input.iter().map(|i| i.previous_output).collect();
            let candidates: Vec<&Bet> = bets
                .iter()
                .filter(|b| !paid.contains(&b.txid) && &b.bettor == bettor)
                .filter(|b| (1..=3).contains(&(height - b.height)))
                .filter(|b| payout >= b.value * 3 / 2 && payout <= 2 * b.value)
                .collect();
            let own = candidates.iter().find(|b| spent.contains(&b.outpoint()));
            let bet = own
                .or(candidates.first())
                .unwrap_or_else(|| panic!("{txid} pays a bet of the last 3 blocks"));
            paid.insert(bet.txid);
            own_bet_spent += usize::from(own.is_some());
            payouts += 1;
        }
        let bettors: HashSet<&String> = bets.iter().map(|b| &b.bettor).collect();
        assert!(bets.len() >= 100, "{name}: {} bets", bets.len());
        assert!(bettors.len() >= 80, "{name}: {} bettors", bettors.len());
        assert!(
            (3..=8).contains(&game_addresses.len()),
            "{name}: {} game addresses",
            game_addresses.len()
        );
        assert!(
            game_addresses.values().all(|&n| n >= 5),
            "{name} reuses its game addresses: {game_addresses:?}"
        );
        for (txid, change) in changes {
            assert!(
                game_addresses.contains_key(&change),
                "{txid}: change to a game address"
            );
        }
        let settled: Vec<&Bet> = bets.iter().filter(|b| b.height + 3 <= tip).collect();
        let won = settled.iter().filter(|b| paid.contains(&b.txid)).count();
        let share = won as f64 / settled.len() as f64;
        assert!(
            (0.4..0.7).contains(&share),
            "{name} paid {share:.2} of bets"
        );
        assert!(
            own_bet_spent * 3 >= payouts,
            "{name}: {own_bet_spent} of {payouts} payouts spend their bet"
        );
    }
    assert!(consolidations >= 1, "no consolidation");
}

#[test]
fn processors_sweep_many_invoices_into_a_few_merchant_addresses() {
    let c = chain();
    let tip = c.main.blocks.len() as u32 - 1;
    let mut settled_to: HashMap<String, String> = HashMap::new();
    for (name, id) in c.actors("processor") {
        // Invoice outputs by outpoint, with their height.
        let mut invoices: HashMap<OutPoint, u32> = HashMap::new();
        let mut swept: HashSet<OutPoint> = HashSet::new();
        let mut sweeps: Vec<(u32, usize)> = Vec::new();
        let mut merchants: Option<BTreeSet<String>> = None;
        for txid in c.touching(&id) {
            let tx = c.main.tx(txid);
            let height = c.main.height(txid);
            let payers = c.payers(tx);
            let ours = c.paid_to(tx, &id);
            if !payers.contains(&id) {
                assert_eq!(payers.len(), 1, "{txid}: one customer");
                let payer = payers.iter().next().unwrap();
                assert_eq!(c.main.actors[*payer].0, "user");
                let [(vout, value, address)] = &ours[..] else {
                    panic!("{txid} pays {name} once")
                };
                assert!((50_000..=20_000_000).contains(value), "invoice of {value}");
                assert_eq!(c.main.first_paid[address], height, "a fresh address");
                invoices.insert(
                    OutPoint {
                        txid: *txid,
                        vout: *vout,
                    },
                    height,
                );
                continue;
            }
            assert_eq!(payers.len(), 1, "{txid}: {name} spends only its own coins");
            let [(_, change, _)] = ours[..] else {
                panic!("{txid}: one change output")
            };
            let mut to = BTreeSet::new();
            for out in &tx.output {
                let (kind, merchant) = c.main.owner(&out.script_pubkey);
                if merchant == &id {
                    continue;
                }
                assert_eq!(kind, "merchant", "{txid} settles to merchants");
                let address = c.main.label(&out.script_pubkey).unwrap();
                assert!(
                    settled_to
                        .insert(merchant.clone(), address.clone())
                        .is_none()
                        || settled_to[merchant] == address,
                    "one settlement address per merchant"
                );
                to.insert(address);
            }
            assert!(
                (2..=6).contains(&to.len()),
                "{txid}: {} merchants",
                to.len()
            );
            assert_eq!(to.len() + 1, tx.output.len());
            assert_eq!(
                merchants.get_or_insert_with(|| to.clone()),
                &to,
                "{name} settles to the same addresses every time"
            );
            let total: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
            assert!(
                change as f64 <= 0.0101 * total as f64 + 1_000.0,
                "{txid}: a cut of {change} of {total}"
            );
            assert!(
                change as f64 >= 0.0049 * total as f64,
                "{txid}: cut {change}"
            );
            swept.extend(tx.input.iter().map(|i| i.previous_output));
            sweeps.push((height, tx.input.len()));
        }
        assert!(invoices.len() >= 30, "{name}: {} invoices", invoices.len());
        assert!(!sweeps.is_empty(), "{name} swept");
        assert!(
            sweeps.iter().any(|&(_, inputs)| inputs >= 10),
            "{name}: a many-input sweep {sweeps:?}"
        );
        for pair in sweeps.windows(2) {
            assert!(
                (6..=15).contains(&(pair[1].0 - pair[0].0)),
                "{name} sweeps every 6-12 blocks: {sweeps:?}"
            );
        }
        // A sweep takes every invoice coin spendable by then (as many as fit in one
        // transaction: the next sweep takes what is left).
        let last = sweeps.last().unwrap().0;
        let before_last = sweeps.iter().rev().nth(1).map_or(0, |s| s.0);
        for (outpoint, height) in &invoices {
            if height + 2 <= before_last {
                assert!(swept.contains(outpoint), "{outpoint} swept");
            }
        }
        assert!(last + 15 >= tip, "{name} sweeps to the end");
    }
}

#[test]
fn the_flag_changes_the_chain_and_stays_deterministic() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    for (dir, plant) in dirs.iter().zip([true, true, false]) {
        let args = SynthArgs {
            plant_services: plant,
            ..args(dir.path(), 12_000_000, 4, false)
        };
        run(&args).unwrap();
    }
    let read = |dir: &tempfile::TempDir, name: &str| std::fs::read(dir.path().join(name)).unwrap();
    for name in ["blk00000.dat", "truth/addresses.csv", "truth/actors.csv"] {
        assert!(
            read(&dirs[0], name) == read(&dirs[1], name),
            "{name} differs"
        );
    }
    assert!(read(&dirs[0], "blk00000.dat") != read(&dirs[2], "blk00000.dat"));
    let actors = String::from_utf8(read(&dirs[2], "truth/actors.csv")).unwrap();
    assert!(!actors.contains(",gambling,") && !actors.contains(",processor,"));
    assert!(read(&dirs[0], "truth/actors.csv").len() > actors.len());
}
