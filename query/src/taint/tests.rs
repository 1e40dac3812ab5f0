//! The engine on hand-built graphs (answers worked out by hand, in the
//! comments) and on random ones (invariants).

use proptest::prelude::*;
use satflow_indexer::flow::{spender_word, FlowView, NONE};

use super::*;

/// A flow graph in memory, one transaction per block.
#[derive(Default, Clone, Debug)]
struct Graph {
    blocks: Vec<u64>,
    txs: Vec<u64>,
    inputs: Vec<u64>,
    outputs: Vec<u64>,
}

impl Graph {
    /// Adds a tx spending `spends` (output numbers) and making `outs`
    /// (values); each output is paid to an address numbered like it.
    fn tx(&mut self, spends: &[u64], outs: &[u64]) -> Vec<u64> {
        let txnum = (self.txs.len() / 2) as u64;
        self.blocks.extend([txnum, 0, 0, 0, 0]);
        self.txs.extend([
            (self.inputs.len() / 2) as u64,
            (self.outputs.len() / 3) as u64,
        ]);
        for (vin, &s) in spends.iter().enumerate() {
            self.inputs.extend([s, self.outputs[s as usize * 3]]);
            self.outputs[s as usize * 3 + 1] = spender_word(txnum, vin as u32);
        }
        let first = (self.outputs.len() / 3) as u64;
        for (i, &v) in outs.iter().enumerate() {
            self.outputs.extend([v, NONE, first + i as u64]);
        }
        (first..first + outs.len() as u64).collect()
    }

    fn view(&self) -> FlowView<'_> {
        FlowView::new(0, &self.blocks, &self.txs, &self.inputs, &self.outputs)
    }
}

/// The README's example: tx 0 (a coinbase) makes o0 = 6 and o1 = 4; tx 1
/// spends both into o2 = 5 and o3 = 3 (fee 2); tx 2 spends o2 into o4 = 2
/// and o5 = 2 (fee 1).
fn example() -> Graph {
    let mut g = Graph::default();
    g.tx(&[], &[6, 4]);
    g.tx(&[0, 1], &[5, 3]);
    g.tx(&[2], &[2, 2]);
    g
}

fn run(
    g: &Graph,
    p: PolicyName,
    d: Direction,
    src: &[u64],
    l: &Limits,
) -> (Totals, End, Vec<(Kind, u64, u64)>) {
    let mut events: Vec<Event> = Vec::new();
    let (totals, end) = trace_with(p, g.view(), d, src, l, &mut events).unwrap();
    let events = events
        .iter()
        .map(|e| (e.kind, e.output, e.amount))
        .collect();
    (totals, end, events)
}

use Kind::*;

#[test]
fn forward_under_each_policy() {
    let g = example();
    let l = Limits::default();
    let fwd = |p| run(&g, p, Direction::Forward, &[0], &l);
    // Haircut: tx 1 carries 6/10: o2 3, o3 1 (1.8), fee 1 (1.2), 1 of
    // rounding; tx 2 carries 3/5 of o2: o4 1 (1.2), o5 1, fee 0 (0.6), 1 of
    // rounding.
    let (t, end, ev) = fwd(PolicyName::Haircut);
    assert_eq!(end, End::Complete);
    assert_eq!(ev, vec![(Unspent, 3, 1), (Unspent, 4, 1), (Unspent, 5, 1)]);
    assert_eq!(
        (t.source, t.unspent, t.to_fees, t.rounding, t.visited),
        (6, 3, 1, 2, 2)
    );
    // FIFO: o0's 6 satoshis fill o2 and 1 of o3; o2's 5 go 2, 2, 1 (fee).
    let (t, _, ev) = fwd(PolicyName::Fifo);
    assert_eq!(ev, vec![(Unspent, 3, 1), (Unspent, 4, 2), (Unspent, 5, 2)]);
    assert_eq!((t.unspent, t.to_fees), (5, 1));
    // LIFO: o1 comes first, so o0's satoshis are the last 6: 1 of o2, all 3
    // of o3, 2 of fee; o2's tainted satoshi is its last: the fee's.
    let (t, _, ev) = fwd(PolicyName::Lifo);
    assert_eq!(ev, vec![(Unspent, 3, 3)]);
    assert_eq!((t.unspent, t.to_fees), (3, 3));
    // TIHO: 6 fill o2 (5) then o3 (1); o2's 5 fill o4, o5, then the fee.
    let (t, _, ev) = fwd(PolicyName::Tiho);
    assert_eq!(ev, vec![(Unspent, 3, 1), (Unspent, 4, 2), (Unspent, 5, 2)]);
    assert_eq!((t.unspent, t.to_fees), (5, 1));
    // Poison: everything downstream, wholly.
    let (t, _, ev) = fwd(PolicyName::Poison);
    assert_eq!(ev, vec![(Unspent, 3, 3), (Unspent, 4, 2), (Unspent, 5, 2)]);
    assert_eq!((t.unspent, t.to_fees), (7, 3));
}

#[test]
fn backward_under_each_policy() {
    let g = example();
    let l = Limits::default();
    let back = |p, o| run(&g, p, Direction::Backward, &[o], &l);
    // Haircut, o4 (2): all from o2 (tx 2 has one input); o2's 2 are 6/10
    // o0 (1.2 → 1) and 4/10 o1 (0.8 → 0): 1 mined, 1 of rounding.
    let (t, _, ev) = back(PolicyName::Haircut, 4);
    assert_eq!(ev, vec![(Mined, 0, 1)]);
    assert_eq!((t.source, t.mined, t.rounding), (2, 1, 1));
    // FIFO, o3 (stream 5..8 of tx 1): o0's satoshis 5..6 and o1's 0..2.
    let (t, _, ev) = back(PolicyName::Fifo, 3);
    assert_eq!(ev, vec![(Mined, 0, 1), (Mined, 1, 2)]);
    assert_eq!(t.mined, 3);
    // LIFO, o3: o1 fills 0..4, o0 4..10, so o3 (5..8) is o0's 1..4.
    let (_, _, ev) = back(PolicyName::Lifo, 3);
    assert_eq!(ev, vec![(Mined, 0, 3)]);
    // Poison: every ancestor wholly.
    let (t, _, _) = back(PolicyName::Poison, 4);
    assert_eq!(t.mined, 10);
    // TIHO has no backward reading.
    assert!(trace_with(
        PolicyName::Tiho,
        g.view(),
        Direction::Backward,
        &[4],
        &l,
        &mut Vec::new()
    )
    .is_none());
}

#[test]
fn bounds_stop_the_trace_and_keep_the_books() {
    let g = example();
    let haircut = |l: &Limits| run(&g, PolicyName::Haircut, Direction::Forward, &[0], l);
    // A stop address: o3's taint stops there instead of resting unspent.
    let (t, _, ev) = haircut(&Limits {
        stop: [3].into_iter().collect(),
        ..Limits::default()
    });
    assert!(ev.contains(&(Stopped, 3, 1)));
    assert_eq!((t.stopped, t.unspent), (1, 2));
    // One hop: o2 would be followed into tx 2.
    let (t, _, ev) = haircut(&Limits {
        max_hops: 1,
        ..Limits::default()
    });
    assert_eq!(ev, vec![(BeyondHops, 2, 3), (Unspent, 3, 1)]);
    assert_eq!(t.visited, 1);
    // Dust: marks under 2 are not followed.
    let (_, _, ev) = haircut(&Limits {
        min_amount: 2,
        ..Limits::default()
    });
    assert_eq!(
        ev,
        vec![(BelowMin, 3, 1), (BelowMin, 4, 1), (BelowMin, 5, 1)]
    );
    // Heights 0..=1: tx 2 (height 2) is outside.
    let (_, _, ev) = haircut(&Limits {
        heights: 0..=1,
        ..Limits::default()
    });
    assert_eq!(ev, vec![(OutsideWindow, 2, 3), (Unspent, 3, 1)]);
    // A budget of one transaction: tx 2's 3 are unfinished.
    let (t, end, _) = haircut(&Limits {
        max_txs: 1,
        ..Limits::default()
    });
    assert_eq!((end, t.unfinished, t.accounted()), (End::Budget, 3, 6));
    // Overlapping sources: o2 is traced whole as a source, so the 3 that
    // reach it from o0 rejoin a source rather than count twice.
    let (t, _, ev) = run(
        &g,
        PolicyName::Haircut,
        Direction::Forward,
        &[0, 2],
        &Limits::default(),
    );
    assert!(ev.contains(&(Rejoined, 2, 3)));
    assert_eq!((t.source, t.rejoined, t.accounted()), (11, 3, 11));
    // Transit: the coins passed through are reported too.
    let (_, _, ev) = haircut(&Limits {
        transit: true,
        ..Limits::default()
    });
    assert_eq!(ev[0], (Transit, 0, 6));
}

#[test]
fn a_stop_rule_is_asked_per_coin_and_one_that_fails_ends_the_trace() {
    /// Stops at `at`; cannot tell for `unknown`; counts the questions.
    struct Rule {
        at: u64,
        unknown: Option<u64>,
        asked: Vec<u64>,
    }
    impl StopAt for Rule {
        fn stops(&mut self, addr: u64) -> Option<bool> {
            self.asked.push(addr);
            match Some(addr) == self.unknown {
                true => None,
                false => Some(addr == self.at),
            }
        }
    }
    let g = example();
    let mut rule = Rule {
        at: 3,
        unknown: None,
        asked: Vec::new(),
    };
    let limits = Limits {
        stop: Stop::at(&mut rule),
        ..Limits::default()
    };
    let by_rule = run(&g, PolicyName::Haircut, Direction::Forward, &[0], &limits);
    drop(limits);
    // The same as stopping at the set {3}; each coin reached (not the
    // source) asked about once.
    let by_set = run(
        &g,
        PolicyName::Haircut,
        Direction::Forward,
        &[0],
        &Limits {
            stop: [3].into_iter().collect(),
            ..Limits::default()
        },
    );
    assert_eq!(by_rule, by_set);
    assert_eq!(rule.asked, vec![2, 3, 4, 5]);
    // A rule that cannot tell about o2 ends the trace there: tx 2 is not
    // visited, and o2's taint is unfinished.
    let mut rule = Rule {
        at: 3,
        unknown: Some(2),
        asked: Vec::new(),
    };
    let (t, end, _) = run(
        &g,
        PolicyName::Haircut,
        Direction::Forward,
        &[0],
        &Limits {
            stop: Stop::at(&mut rule),
            ..Limits::default()
        },
    );
    assert_eq!((end, t.visited, t.unfinished), (End::Stopped, 1, 3));
    assert_eq!(t.accounted(), t.source);
}

#[test]
fn a_sink_that_stops_ends_the_trace() {
    struct First(usize);
    impl Sink for First {
        fn event(&mut self, _: Event) -> bool {
            self.0 += 1;
            false
        }
    }
    let g = example();
    let mut sink = First(0);
    let (_, end) = trace_with(
        PolicyName::Poison,
        g.view(),
        Direction::Forward,
        &[0],
        &Limits::default(),
        &mut sink,
    )
    .unwrap();
    assert_eq!((end, sink.0), (End::Stopped, 1));
}

/// A random chain: each tx spends some unspent coins (or none: a coinbase)
/// and pays out at most their value in 1–4 outputs.
fn random_graph() -> impl Strategy<Value = Graph> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<prop::sample::Index>(), 0..4),
            prop::collection::vec(1u64..1000, 1..5),
            0u64..50,
        ),
        2..40,
    )
    .prop_map(|txs| {
        let mut g = Graph::default();
        let mut unspent: Vec<u64> = Vec::new();
        for (picks, shares, fee) in txs {
            let mut spends: Vec<u64> = Vec::new();
            for p in picks {
                if unspent.is_empty() {
                    break;
                }
                spends.push(unspent.swap_remove(p.index(unspent.len())));
            }
            let outs = if spends.is_empty() {
                shares
            } else {
                // Split the inputs' value less a fee in the drawn proportions.
                let value: u64 = spends.iter().map(|&s| g.outputs[s as usize * 3]).sum();
                let avail = value.saturating_sub(fee);
                let weight: u64 = shares.iter().sum();
                shares.iter().map(|w| avail * w / weight).collect()
            };
            unspent.extend(g.tx(&spends, &outs));
        }
        g
    })
}

proptest! {
    #[test]
    fn conservation_support_and_bounds(
        g in random_graph(),
        src in any::<prop::sample::Index>(),
        other in any::<prop::sample::Index>(),
    ) {
        let outputs = (g.outputs.len() / 3) as u64;
        let source = src.index(outputs as usize) as u64;
        // Two sources, often one the other's ancestor.
        let both = [source, other.index(outputs as usize) as u64];
        let all = Limits { transit: true, ..Limits::default() };
        for p in PolicyName::ALL {
            for d in [Direction::Forward, Direction::Backward] {
                let mut events: Vec<Event> = Vec::new();
                let Some((t, end)) = trace_with(p, g.view(), d, &both, &all, &mut events) else {
                    continue;
                };
                prop_assert_eq!(end, End::Complete);
                if p != PolicyName::Poison {
                    prop_assert_eq!(t.accounted(), t.source, "{} {:?}: {:?}", p, d, t);
                }
            }
        }
        // Per policy, forward: every amount within its coin's value, and
        // the haircut support inside the poison support.
        let events = |p| {
            let mut ev: Vec<Event> = Vec::new();
            trace_with(p, g.view(), Direction::Forward, &[source], &all, &mut ev).unwrap();
            ev
        };
        let coins = |ev: &[Event]| ev.iter().map(|e| e.output).collect::<std::collections::BTreeSet<_>>();
        for p in PolicyName::ALL {
            for e in events(p) {
                prop_assert!(e.amount <= g.outputs[e.output as usize * 3], "{} {:?}", p, e);
            }
        }
        prop_assert!(coins(&events(PolicyName::Haircut)).is_subset(&coins(&events(PolicyName::Poison))));
    }
}
