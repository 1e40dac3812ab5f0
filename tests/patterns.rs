//! Suspicious-pattern detectors on a hand-built regtest chain holding one
//! instance of each pattern, near misses beside them (a peel chain one
//! step short, dust to fresh addresses, payments from one maker): every
//! planted pattern is found once, in the block that completes it, and
//! nothing else is. Scans from any height, page sizes and scan limits
//! agree with one whole scan; filters and bad requests behave.

mod common;

use std::collections::BTreeSet;

use bitcoin::hashes::Hash;
use bitcoin::{Address, Block, OutPoint, ScriptBuf, Transaction, WPubkeyHash};
use common::build::{block, coinbase, regtest_genesis, tx, write_blk};
use common::index as index_blocks;
use common::*;
use satflow_indexer::labels::{Defaults, Format};
use satflow_indexer::Access;
use satflow_proto::v1 as pb;
use satflow_query::patterns::list;
use satflow_query::{Index, QueryError};

const BTC: u64 = 100_000_000;
/// Whirlpool's 0.05 BTC pool.
const POOL: u64 = 5_000_000;

/// A regtest chain built block by block, with a fresh address per call.
struct Chain {
    blocks: Vec<Block>,
    next_key: u32,
}

impl Chain {
    fn new() -> Chain {
        Chain {
            blocks: vec![regtest_genesis()],
            next_key: 1,
        }
    }

    fn fresh(&mut self) -> ScriptBuf {
        let mut hash = [0u8; 20];
        hash[..4].copy_from_slice(&self.next_key.to_be_bytes());
        self.next_key += 1;
        ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array(hash))
    }

    /// Mines `txs` after a coinbase paying `paid` (or 50 BTC to a fresh
    /// address); returns the coinbase.
    fn mine(&mut self, paid: Option<Vec<(u64, ScriptBuf)>>, txs: Vec<Transaction>) -> Transaction {
        let height = self.blocks.len() as u32;
        let paid = paid.unwrap_or_else(|| vec![(50 * BTC, self.fresh())]);
        let cb = coinbase(&height.to_le_bytes(), &paid);
        let prev = self.blocks.last().unwrap().block_hash();
        let txdata = std::iter::once(cb.clone()).chain(txs).collect();
        self.blocks
            .push(block(prev, 1_600_000_000 + height * 600, txdata));
        cb
    }
}

fn op(t: &Transaction, vout: u32) -> OutPoint {
    OutPoint {
        txid: t.compute_txid(),
        vout,
    }
}

fn id(t: &Transaction) -> String {
    t.compute_txid().to_string()
}

fn address(s: &ScriptBuf) -> String {
    Address::from_script(s, bitcoin::Network::Regtest)
        .unwrap()
        .to_string()
}

/// The chain, the patterns planted in it as (height, kind, txids), and
/// the exchange's and the peel payee's addresses.
struct Planted {
    chain: Chain,
    expected: BTreeSet<(u32, String, Vec<String>)>,
    exchange: String,
    peel_payee: String,
}

fn plant() -> Planted {
    let mut c = Chain::new();
    // Height 1: 40 coins of 10 BTC at addresses that are then in use.
    let old: Vec<ScriptBuf> = (0..40).map(|_| c.fresh()).collect();
    let fund = c.mine(
        Some(old.iter().map(|s| (10 * BTC, s.clone())).collect()),
        vec![],
    );
    let coin = |i: u32| op(&fund, i);
    let mut at: Vec<Vec<Transaction>> = vec![Vec::new(); 8];

    // A peel chain of six steps, one a block (heights 2–7), paying 5% to a
    // used address; and one of four steps (heights 2–5), a step short.
    let peel_chain = |c: &mut Chain, from: OutPoint, steps: usize, payee: &ScriptBuf| {
        let (mut coin, mut value) = (from, 10 * BTC);
        (0..steps)
            .map(|_| {
                let pay = value / 20;
                let rest = value - pay - 1_000;
                let step = tx(&[coin], &[(pay, payee.clone()), (rest, c.fresh())]);
                (coin, value) = (op(&step, 1), rest);
                step
            })
            .collect::<Vec<_>>()
    };
    let peel = peel_chain(&mut c, coin(0), 6, &old[20]);
    let short = peel_chain(&mut c, coin(1), 4, &old[21]);
    // Five hops moving 99.9% each (heights 2–6): layering.
    let (mut l_coin, mut l_value) = (coin(2), 10 * BTC);
    let layers: Vec<Transaction> = (0..5)
        .map(|_| {
            let on = l_value - l_value / 1_000;
            let hop = tx(&[l_coin], &[(on, c.fresh())]);
            (l_coin, l_value) = (op(&hop, 0), on);
            hop
        })
        .collect();
    for (first, txs) in [(2, &peel), (2, &short), (2, &layers)] {
        for (i, t) in txs.iter().enumerate() {
            at[first + i].push(t.clone());
        }
    }

    // One coin split over six fresh addresses (height 2), swept at 5.
    let split_outs: Vec<(u64, ScriptBuf)> = (0..6).map(|_| (16 * BTC / 10, c.fresh())).collect();
    let split = tx(&[coin(3)], &split_outs);
    let sweep = tx(
        &(0..6).map(|i| op(&split, i)).collect::<Vec<_>>(),
        &[(96 * BTC / 10 - 2_000, c.fresh())],
    );
    // Thirty users (height 2), 25 of whom pay a collector 0.01 BTC each
    // (height 3), consolidated at height 4.
    let users: Vec<(u64, ScriptBuf)> = (0..30).map(|_| (3 * BTC / 10, c.fresh())).collect();
    let users_tx = tx(&[coin(4)], &users);
    let payments: Vec<Transaction> = (0..25)
        .map(|i| {
            let paid = (BTC / 100, c.fresh());
            tx(
                &[op(&users_tx, i)],
                &[paid, (3 * BTC / 10 - BTC / 100 - 500, c.fresh())],
            )
        })
        .collect();
    let consolidation = tx(
        &payments.iter().map(|p| op(p, 0)).collect::<Vec<_>>(),
        &[(25 * BTC / 100 - 5_000, c.fresh())],
    );
    // A Whirlpool-shaped CoinJoin (height 3): two of its outputs reunited
    // (height 5), one carried a hop (4) and on to an exchange (5).
    let mixed: Vec<(u64, ScriptBuf)> = (0..5).map(|_| (POOL, c.fresh())).collect();
    let cj = tx(&(7..12).map(coin).collect::<Vec<_>>(), &mixed);
    let reunion = tx(&[op(&cj, 0), op(&cj, 1)], &[(2 * POOL - 400, c.fresh())]);
    let exchange = c.fresh();
    let hop = tx(&[op(&cj, 2)], &[(POOL - 300, c.fresh())]);
    let to_exchange = tx(&[op(&hop, 0)], &[(POOL - 600, exchange.clone())]);
    // Dust to twelve used addresses (height 6), and to twelve fresh ones.
    let dust_to = |outs: Vec<ScriptBuf>, c: &mut Chain| {
        let mut paid: Vec<(u64, ScriptBuf)> = outs.into_iter().map(|s| (600, s)).collect();
        paid.push((9 * BTC, c.fresh()));
        paid
    };
    let dust = tx(&[coin(5)], &dust_to(old[22..34].to_vec(), &mut c));
    let fresh: Vec<ScriptBuf> = (0..12).map(|_| c.fresh()).collect();
    let not_dust = tx(&[coin(6)], &dust_to(fresh, &mut c));

    at[2].extend([split.clone(), users_tx.clone()]);
    at[3].push(cj.clone());
    at[3].extend(payments);
    at[4].extend([consolidation.clone(), hop.clone()]);
    at[5].extend([to_exchange.clone(), reunion.clone(), sweep.clone()]);
    at[6].extend([dust.clone(), not_dust]);
    for txs in at.into_iter().skip(2) {
        c.mine(None, txs);
    }

    let mut expected = BTreeSet::new();
    let mut expect = |height: u32, kind: &str, txs: &[&Transaction]| {
        expected.insert((
            height,
            kind.to_string(),
            txs.iter().map(|t| id(t)).collect(),
        ));
    };
    expect(4, "fan-in", &[&consolidation]);
    expect(5, "layering", &layers[..4].iter().collect::<Vec<_>>());
    expect(5, "fan-out-in", &[&split, &sweep]);
    expect(5, "coinjoin-reunion", &[&cj, &reunion]);
    expect(5, "coinjoin-to-exchange", &[&cj, &hop, &to_exchange]);
    // Reported at its fifth step, listed with the sixth that followed.
    expect(6, "peel-chain", &peel.iter().collect::<Vec<_>>());
    expect(6, "dusting", &[&dust]);
    Planted {
        chain: c,
        expected,
        exchange: address(&exchange),
        peel_payee: address(&old[20]),
    }
}

/// The planted chain indexed (clusters and flow graph included), with the
/// exchange's address labelled.
fn indexed() -> (Planted, tempfile::TempDir, tempfile::TempDir) {
    let planted = plant();
    let blocks = tempfile::tempdir().unwrap();
    write_blk(&blocks.path().join("blk00000.dat"), &planted.chain.blocks);
    let db = tempfile::tempdir().unwrap();
    index(blocks.path(), db.path());
    let labels = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        labels.path(),
        format!("{},Exchange X,exchange,test\n", planted.exchange),
    )
    .unwrap();
    import_labels(db.path(), labels.path(), Format::Csv, Defaults::default());
    (planted, blocks, db)
}

fn request(from: u32) -> pb::ListPatternsRequest {
    pb::ListPatternsRequest {
        from_height: from,
        ..Default::default()
    }
}

/// Every page of `r`, each scanning at most `max_scan` transactions.
fn all_pages(
    index: &Index,
    mut r: pb::ListPatternsRequest,
    max_scan: u64,
) -> Result<Vec<pb::Pattern>, QueryError> {
    let mut found = Vec::new();
    loop {
        let page = list::list(index, &r, max_scan, &mut || true)?;
        found.extend(page.patterns);
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        r.page_token = page.next_page_token;
    }
}

fn keyed(patterns: &[pb::Pattern]) -> BTreeSet<(u32, String, Vec<String>)> {
    patterns
        .iter()
        .map(|p| (p.height, p.kind.clone(), p.txids.clone()))
        .collect()
}

#[test]
fn every_planted_pattern_is_found_once_in_its_block_and_nothing_else() {
    let (planted, _blocks, db) = indexed();
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let found = all_pages(&index, request(0), list::DEFAULT_MAX_SCAN).unwrap();
    assert_eq!(keyed(&found), planted.expected);
    assert_eq!(found.len(), planted.expected.len(), "each once: {found:#?}");
    // Oldest first, and what each moved.
    assert!(found.windows(2).all(|w| w[0].height <= w[1].height));
    let by_kind = |k: &str| found.iter().find(|p| p.kind == k).unwrap();
    assert_eq!(
        (by_kind("peel-chain").size, by_kind("peel-chain").value),
        (6, 10 * BTC)
    );
    assert_eq!(
        (by_kind("fan-in").size, by_kind("fan-in").value),
        (25, 25 * BTC / 100)
    );
    assert_eq!(by_kind("fan-out-in").value, 6 * 16 * BTC / 10);
    assert_eq!(
        (
            by_kind("coinjoin-reunion").size,
            by_kind("coinjoin-reunion").value
        ),
        (2, 2 * POOL)
    );
    assert_eq!(by_kind("coinjoin-to-exchange").value, POOL - 600);
    assert_eq!(
        (by_kind("dusting").size, by_kind("dusting").value),
        (12, 12 * 600)
    );

    // The CLI reads the same through the gRPC API, served in-process.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_satflow"))
        .args(["patterns", "--json", "--db"])
        .arg(db.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["patterns"].as_array().unwrap().len(), found.len());
    assert_eq!(report["scanned_to"], 7);
}

#[test]
fn scans_from_any_height_in_any_pages_agree_with_one_whole_scan() {
    let (_planted, _blocks, db) = indexed();
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let whole = all_pages(&index, request(0), list::DEFAULT_MAX_SCAN).unwrap();
    for from in 0..=7 {
        let tail: Vec<_> = whole.iter().filter(|p| p.height >= from).cloned().collect();
        // The CoinJoin of height 3 is found from height 4 or 5 on too:
        // the carried detector rebuilds its window before the first block.
        assert_eq!(
            all_pages(&index, request(from), list::DEFAULT_MAX_SCAN).unwrap(),
            tail,
            "from {from}"
        );
        let one_a_page = pb::ListPatternsRequest {
            page_size: 1,
            ..request(from)
        };
        assert_eq!(
            all_pages(&index, one_a_page, list::DEFAULT_MAX_SCAN).unwrap(),
            tail
        );
        // A page scanning one transaction still scans a whole block.
        assert_eq!(all_pages(&index, request(from), 1).unwrap(), tail);
    }
    let page = list::list(&index, &request(0), 1, &mut || true).unwrap();
    assert_eq!(page.scanned_to, 0);
    assert!(!page.next_page_token.is_empty());
}

#[test]
fn filters_and_bad_requests() {
    let (planted, _blocks, db) = indexed();
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let kinds_of = |r: pb::ListPatternsRequest| -> Vec<String> {
        all_pages(&index, r, list::DEFAULT_MAX_SCAN)
            .unwrap()
            .into_iter()
            .map(|p| p.kind)
            .collect()
    };
    use pb::list_patterns_request::Subject;
    let by_address = |a: &str| pb::ListPatternsRequest {
        subject: Some(Subject::Address(a.into())),
        ..request(0)
    };
    assert_eq!(kinds_of(by_address(&planted.peel_payee)), ["peel-chain"]);
    assert_eq!(
        kinds_of(by_address(&planted.exchange)),
        ["coinjoin-to-exchange"]
    );
    let kinds = pb::ListPatternsRequest {
        kinds: vec!["dusting".into(), "fan-in".into()],
        ..request(0)
    };
    assert_eq!(kinds_of(kinds), ["fan-in", "dusting"]);
    let upto = pb::ListPatternsRequest {
        to_height: Some(4),
        ..request(0)
    };
    assert_eq!(kinds_of(upto), ["fan-in"]);
    // The exchange's cluster, by its id.
    let cluster = satflow_query::clusters::cluster_id_of(
        &index,
        &satflow_indexer::address::parse(&planted.exchange, index.network()).unwrap(),
    )
    .unwrap();
    let by_cluster = pb::ListPatternsRequest {
        subject: Some(Subject::ClusterId(cluster.0)),
        ..request(0)
    };
    assert_eq!(kinds_of(by_cluster), ["coinjoin-to-exchange"]);

    let refused =
        |r: pb::ListPatternsRequest| list::list(&index, &r, 10, &mut || true).unwrap_err();
    let bad_kind = pb::ListPatternsRequest {
        kinds: vec!["layering".into(), "bank-run".into()],
        ..request(0)
    };
    assert!(
        matches!(refused(bad_kind), QueryError::InvalidArgument(m) if m.starts_with("kinds[1]"))
    );
    let past_tip = pb::ListPatternsRequest {
        to_height: Some(8),
        ..request(0)
    };
    assert!(matches!(refused(past_tip), QueryError::NotFound(m) if m.contains("to_height")));
    let backwards = pb::ListPatternsRequest {
        to_height: Some(2),
        ..request(5)
    };
    assert!(
        matches!(refused(backwards), QueryError::InvalidArgument(m) if m.starts_with("from_height"))
    );
    let never_used = ScriptBuf::new_p2wpkh(&WPubkeyHash::from_byte_array([0xff; 20]));
    let unknown = by_address(&address(&never_used));
    assert!(matches!(refused(unknown), QueryError::NotFound(_)));
    // A token of one listing is refused by another.
    let first = list::list(
        &index,
        &pb::ListPatternsRequest {
            page_size: 1,
            ..request(0)
        },
        10,
        &mut || true,
    )
    .unwrap();
    let other = pb::ListPatternsRequest {
        kinds: vec!["dusting".into()],
        page_token: first.next_page_token,
        ..request(0)
    };
    assert!(
        matches!(refused(other), QueryError::InvalidArgument(m) if m.starts_with("page_token"))
    );
    let gone = pb::ListPatternsRequest {
        page_token: "zz".into(),
        ..request(0)
    };
    assert!(matches!(refused(gone), QueryError::InvalidArgument(_)));
    // Thresholds: a peel chain counts from its 4th step, so the chain a
    // step short is found too, after the long one reported at its own 4th
    // step in the same block (and followed on to its 6th); out of range,
    // refused naming the field.
    let four = pb::ListPatternsRequest {
        kinds: vec!["peel-chain".into()],
        params: Some(pb::PatternParams {
            peel_min_steps: Some(4),
            ..Default::default()
        }),
        ..request(0)
    };
    let peels = all_pages(&index, four, list::DEFAULT_MAX_SCAN).unwrap();
    assert_eq!(
        peels.iter().map(|p| (p.height, p.size)).collect::<Vec<_>>(),
        [(5, 6), (5, 4)]
    );
    for (params, field) in [
        (
            pb::PatternParams {
                peel_min_steps: Some(1),
                ..Default::default()
            },
            "params.peel_min_steps",
        ),
        (
            pb::PatternParams {
                dusting_min_used: Some(f64::NAN),
                ..Default::default()
            },
            "params.dusting_min_used",
        ),
        (
            pb::PatternParams {
                coinjoin_to_exchange_max_blocks: Some(100_000),
                ..Default::default()
            },
            "params.coinjoin_to_exchange_max_blocks",
        ),
    ] {
        let r = pb::ListPatternsRequest {
            params: Some(params),
            ..request(0)
        };
        assert!(matches!(refused(r), QueryError::InvalidArgument(m) if m.starts_with(field)));
    }
    // A caller whose deadline has passed gets DEADLINE_EXCEEDED.
    let late = list::list(&index, &request(0), 10, &mut || false).unwrap_err();
    assert!(matches!(late, QueryError::DeadlineExceeded));
}

#[test]
fn pattern_watches_alert_on_the_block_that_completes_a_pattern_of_their_subject() {
    use pb::watch::{Rule, Subject};
    let (planted, blocks, db) = indexed();
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let alerts = tempfile::tempdir().unwrap();
    let m = satflow_query::watch::Monitor::open(alerts.path(), Some(1)).unwrap();
    let pattern = |kind: &str| Rule::Pattern(pb::PatternRule { kind: kind.into() });
    for (name, subject, rule) in [
        (
            "payee",
            Subject::Address(planted.peel_payee.clone()),
            pattern("peel-chain"),
        ),
        (
            "exits",
            Subject::Category("exchange".into()),
            pattern("coinjoin-to-exchange"),
        ),
        (
            "dust",
            Subject::Category("exchange".into()),
            pattern("dusting"),
        ),
    ] {
        let w = pb::Watch {
            name: name.into(),
            subject: Some(subject),
            rule: Some(rule),
        };
        m.put_watch(&index, w).unwrap();
    }
    assert_eq!(m.update(&index).unwrap().height, Some(7));
    let raised = m.store().alerts_after(0, 100).unwrap();
    let whole = all_pages(&index, request(0), list::DEFAULT_MAX_SCAN).unwrap();
    let listed = |kind: &str| whole.iter().find(|p| p.kind == kind).unwrap().clone();
    let got: Vec<(&str, u32, &str, Vec<String>)> = raised
        .iter()
        .map(|a| {
            let p = a.pattern.as_ref().unwrap();
            (
                a.watch.as_ref().unwrap().name.as_str(),
                a.height,
                a.txid.as_str(),
                p.txids.clone(),
            )
        })
        .collect();
    // An alert names the first five steps of the peel chain (the sixth
    // came a block later); a listing follows it on.
    let peel = listed("peel-chain");
    let exit = listed("coinjoin-to-exchange");
    assert_eq!(
        got,
        [
            ("exits", 5, exit.txids[2].as_str(), exit.txids.clone()),
            ("payee", 6, peel.txids[4].as_str(), peel.txids[..5].to_vec()),
        ]
    );
    // The payee received five payments, 5% of what each step spent.
    let payee = &raised[1];
    assert_eq!(payee.addresses, std::slice::from_ref(&planted.peel_payee));
    let mut left = 10 * BTC;
    let mut paid = 0;
    for _ in 0..5 {
        paid += left / 20;
        left -= left / 20 + 1_000;
    }
    assert_eq!((payee.received, payee.sent), (paid, 0));

    // A longer branch from height 4 drops the blocks that completed both
    // patterns: each alert is retracted, newest first, pattern and all.
    drop(index);
    let mut branch = Chain {
        blocks: planted.chain.blocks[..5].to_vec(),
        next_key: 1 << 20,
    };
    for _ in 5..=8 {
        branch.mine(None, vec![]);
    }
    let both: Vec<Block> = planted
        .chain
        .blocks
        .iter()
        .chain(&branch.blocks[5..])
        .cloned()
        .collect();
    write_blk(&blocks.path().join("blk00000.dat"), &both);
    index_blocks(blocks.path(), db.path());
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let done = m.update(&index).unwrap();
    assert_eq!((done.retracted_blocks, done.height), (3, Some(8)));
    let after = m.store().alerts_after(2, 100).unwrap();
    let retracted: Vec<(u64, pb::AlertKind)> =
        after.iter().map(|a| (a.retracts, a.kind())).collect();
    assert_eq!(
        retracted,
        [
            (2, pb::AlertKind::AlertRetracted),
            (1, pb::AlertKind::AlertRetracted)
        ]
    );
    for a in &after {
        assert_eq!(a.pattern, raised[a.retracts as usize - 1].pattern);
    }
}

/// Mainnet block 866342, whose spent coins ship in a prevouts file.
const REAL_HASH: &str = "000000000000000000014ce9ba7c6760053c3c82ce6ab43d60afb101d3c8f1f1";

#[test]
fn fan_in_on_a_real_block_is_what_the_rule_finds_in_the_raw_block() {
    // An index of the block alone, its spent coins' values from the
    // prevouts file: every coin it spends is from before the index's
    // start, so each counts as its own payer.
    let (_blocks, db, _) = window(866342, REAL_HASH, true);
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let r = pb::ListPatternsRequest {
        kinds: vec!["fan-in".into()],
        ..request(0)
    };
    let found: BTreeSet<String> = all_pages(&index, r, list::DEFAULT_MAX_SCAN)
        .unwrap()
        .into_iter()
        .map(|p| p.txids.concat())
        .collect();

    // The rule read independently from the raw block and the prevouts.
    let text =
        std::fs::read_to_string(data(&format!("mainnet/prevouts/{REAL_HASH}.json"))).unwrap();
    let prevouts: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    let mut values = prevouts
        .iter()
        .map(|p| p["txout"]["value"].as_u64().unwrap());
    let block = raw_block(866342);
    let mut expected = BTreeSet::new();
    let mut distinct_payers_short = 0;
    for t in block.txdata.iter().skip(1) {
        let spent: Vec<u64> = values.by_ref().take(t.input.len()).collect();
        if t.input.len() >= 20 && t.output.len() <= 2 && spent.iter().all(|&v| v <= 5_000_000) {
            expected.insert(id(t));
            let payers: BTreeSet<_> = t.input.iter().map(|i| i.previous_output.txid).collect();
            distinct_payers_short +=
                usize::from((payers.len() as f64) < 0.8 * t.input.len() as f64);
        }
    }
    assert_eq!(values.next(), None, "one prevout per input");
    assert!(
        !expected.is_empty(),
        "the block holds consolidations of small coins"
    );
    assert_eq!(found, expected);
    // Had the index known the coins' makers, this many would have had too
    // few distinct payers (the README's caveat for late-started indexes).
    eprintln!(
        "block 866342: {} fan-ins; {distinct_payers_short} of them with under 80% distinct payers by txid",
        found.len()
    );
}

#[test]
fn pattern_alerts_raised_round_by_round_equal_those_raised_at_once() {
    use pb::watch::{Rule, Subject};
    let (planted, blocks, db) = indexed();
    let watch = |kind: &str| pb::Watch {
        name: kind.into(),
        subject: Some(Subject::Category("exchange".into())),
        rule: Some(Rule::Pattern(pb::PatternRule { kind: kind.into() })),
    };
    let alerts_of = |m: &satflow_query::watch::Monitor| -> Vec<(String, u32, String)> {
        let raised = m.store().alerts_after(0, 100).unwrap();
        raised
            .into_iter()
            .map(|a| (a.watch.unwrap().name, a.height, a.txid))
            .collect()
    };

    // Exchanges known from the first round on (an address of height 1
    // labelled too), so the rounds keep the CoinJoin trails and hand them on.
    let labels = tempfile::NamedTempFile::new().unwrap();
    let rows = format!(
        "{},Exchange X,exchange,test\n{},Exchange Y,exchange,test\n",
        planted.exchange, planted.peel_payee
    );
    std::fs::write(labels.path(), rows).unwrap();
    let label = |db: &std::path::Path| {
        import_labels(db, labels.path(), Format::Csv, Defaults::default());
    };

    // At once, on the whole chain.
    label(db.path());
    let index = Index::open(db.path(), Access::ReadOnly).unwrap();
    let at_once_dir = tempfile::tempdir().unwrap();
    let at_once = satflow_query::watch::Monitor::open(at_once_dir.path(), Some(1)).unwrap();
    at_once
        .put_watch(&index, watch("coinjoin-to-exchange"))
        .unwrap();
    at_once.update(&index).unwrap();
    drop(index);

    // Round by round as the chain grows: the CoinJoin of height 3 is carried
    // from the round that saw it to the one that sees its coin reach the
    // exchange (height 5).
    let staged = tempfile::tempdir().unwrap();
    let rounds_dir = tempfile::tempdir().unwrap();
    let rounds = satflow_query::watch::Monitor::open(rounds_dir.path(), Some(1)).unwrap();
    for tip in [3, 4, 7] {
        write_blk(
            &blocks.path().join("blk00000.dat"),
            &planted.chain.blocks[..=tip],
        );
        index_blocks(blocks.path(), staged.path());
        label(staged.path());
        let index = Index::open(staged.path(), Access::ReadOnly).unwrap();
        if tip == 3 {
            rounds
                .put_watch(&index, watch("coinjoin-to-exchange"))
                .unwrap();
        }
        assert_eq!(rounds.update(&index).unwrap().height, Some(tip as u32));
    }
    assert_eq!(alerts_of(&rounds), alerts_of(&at_once));
    assert_eq!(alerts_of(&at_once).len(), 1);
}
