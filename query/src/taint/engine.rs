//! The trace: taint moved transaction by transaction through the flow
//! graph, in chain order (forward) or reverse chain order (backward). A
//! spending transaction always comes after the ones whose coins it spends,
//! so by the time a transaction is taken up every mark that will ever reach
//! it has arrived, and the result does not depend on the order paths were
//! found in.

use std::cell::RefCell;
use std::fmt;
use std::ops::RangeInclusive;

use rustc_hash::FxHashSet;
use satflow_indexer::flow::FlowView;

use super::policy::{Policy, Split};
use super::queue::RadixHeap;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Where the coins went.
    Forward,
    /// Where the coins came from.
    Backward,
}

/// The bounds of a trace.
#[derive(Debug)]
pub struct Limits<'s> {
    /// Transactions followed from a source, at most.
    pub max_hops: u32,
    /// Transactions visited in all, at most; beyond it the trace ends
    /// unfinished.
    pub max_txs: u64,
    /// Marks smaller than this (in satoshis) are not followed.
    pub min_amount: u64,
    /// Only transactions of these heights are followed.
    pub heights: RangeInclusive<u32>,
    /// Where taint stops (e.g. at an exchange's cluster): asked per coin
    /// reached, by its address.
    pub stop: Stop<'s>,
    /// Whether a source coin at a stop address stops at once (exposure of
    /// a transaction's outputs); by default sources are always followed.
    pub stop_sources: bool,
    /// Report every tainted coin passed through, not only where taint ends.
    pub transit: bool,
}

impl Default for Limits<'_> {
    fn default() -> Self {
        Limits {
            max_hops: u32::MAX,
            max_txs: u64::MAX,
            min_amount: 0,
            heights: 0..=u32::MAX,
            stop: Stop::default(),
            stop_sources: false,
            transit: false,
        }
    }
}

impl Limits<'_> {
    /// These limits, stopping where `stop` says instead.
    pub fn with_stop(self, stop: Stop<'_>) -> Limits<'_> {
        let Limits {
            max_hops,
            max_txs,
            min_amount,
            heights,
            stop: _,
            stop_sources,
            transit,
        } = self;
        Limits {
            max_hops,
            max_txs,
            min_amount,
            heights,
            stop,
            stop_sources,
            transit,
        }
    }
}

/// Where taint stops, decided per coin by its address. A rule may look
/// things up (which cluster an address is in) and remember the answers: it
/// is asked once per coin reached, and an address may receive many.
pub trait StopAt {
    /// Whether taint reaching a coin paid to address `addr` stops there;
    /// None when the rule cannot tell (a lookup failed): the trace then
    /// ends as if its sink had stopped it, and the rule keeps the reason.
    fn stops(&mut self, addr: u64) -> Option<bool>;
}

/// Stops at the addresses in the set.
impl StopAt for FxHashSet<u64> {
    fn stops(&mut self, addr: u64) -> Option<bool> {
        Some(self.contains(&addr))
    }
}

/// A rule lent to a trace, kept by its owner (to read its failure, or to
/// lend it to the next trace with what it remembers).
impl<T: StopAt + ?Sized> StopAt for &mut T {
    fn stops(&mut self, addr: u64) -> Option<bool> {
        (**self).stops(addr)
    }
}

/// Where a trace stops: nowhere (the default), or where a rule says.
#[derive(Default)]
pub struct Stop<'s>(Option<RefCell<Box<dyn StopAt + Send + 's>>>);

impl<'s> Stop<'s> {
    pub fn at(rule: impl StopAt + Send + 's) -> Stop<'s> {
        Stop(Some(RefCell::new(Box::new(rule))))
    }

    fn stops(&self, addr: u64) -> Option<bool> {
        match &self.0 {
            None => Some(false),
            Some(rule) => rule.borrow_mut().stops(addr),
        }
    }
}

/// Stops at these addresses.
impl FromIterator<u64> for Stop<'_> {
    fn from_iter<I: IntoIterator<Item = u64>>(addresses: I) -> Self {
        Stop::at(addresses.into_iter().collect::<FxHashSet<u64>>())
    }
}

impl fmt::Debug for Stop<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            None => "Stop(nowhere)",
            Some(_) => "Stop(rule)",
        })
    }
}

/// Why a tainted coin is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Forward: the taint rests in an unspent coin.
    Unspent,
    /// It reached a stop address.
    Stopped,
    /// Passed through (only with `Limits::transit`).
    Transit,
    /// The next transaction would exceed `max_hops`.
    BeyondHops,
    /// The next transaction lies outside `heights`.
    OutsideWindow,
    /// Less than `min_amount`.
    BelowMin,
    /// Backward: the value was mined (a coinbase output).
    Mined,
    /// Backward: the coin was made before the index's first block.
    BeforeStart,
    /// The next transaction spends a coin of unknown value (an index that
    /// starts later than genesis, without prevouts).
    UnknownValue,
    /// The coin is itself a source, already traced whole: value reaching it
    /// from another source is not counted twice.
    Rejoined,
}

/// One tainted coin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: Kind,
    /// Output number (≥ 2^63 for `BeforeStart`).
    pub output: u64,
    /// Transactions followed from the source to reach it (sources: 0).
    pub hop: u32,
    pub amount: u64,
}

/// Totals of a trace, in satoshis. Except under poison (which spreads
/// taint), `source` = `unspent + stopped + beyond_hops + outside_window +
/// below_min + mined + before_start + unknown_value + rejoined + to_fees +
/// rounding + unfinished`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub source: u64,
    pub visited: u64,
    pub unspent: u64,
    pub stopped: u64,
    pub beyond_hops: u64,
    pub outside_window: u64,
    pub below_min: u64,
    pub mined: u64,
    pub before_start: u64,
    pub unknown_value: u64,
    pub rejoined: u64,
    pub to_fees: u64,
    pub rounding: u64,
    /// Taint still on its way when the trace ended early.
    pub unfinished: u64,
}

impl Totals {
    fn add(&mut self, kind: Kind, amount: u64) {
        let slot = match kind {
            Kind::Unspent => &mut self.unspent,
            Kind::Stopped => &mut self.stopped,
            Kind::Transit => return,
            Kind::BeyondHops => &mut self.beyond_hops,
            Kind::OutsideWindow => &mut self.outside_window,
            Kind::BelowMin => &mut self.below_min,
            Kind::Mined => &mut self.mined,
            Kind::BeforeStart => &mut self.before_start,
            Kind::UnknownValue => &mut self.unknown_value,
            Kind::Rejoined => &mut self.rejoined,
        };
        *slot += amount;
    }

    /// Everything accounted for, to check against `source`.
    pub fn accounted(&self) -> u64 {
        self.unspent
            + self.stopped
            + self.beyond_hops
            + self.outside_window
            + self.below_min
            + self.mined
            + self.before_start
            + self.unknown_value
            + self.rejoined
            + self.to_fees
            + self.rounding
            + self.unfinished
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Complete,
    /// `max_txs` was reached.
    Budget,
    /// The sink asked to stop (a cancelled call, a deadline).
    Stopped,
}

/// Where a trace's events go.
pub trait Sink {
    /// Takes one event; false stops the trace.
    fn event(&mut self, e: Event) -> bool;
    /// Asked every few thousand transactions; false stops the trace.
    fn alive(&mut self) -> bool {
        true
    }
}

/// Collects every event, for callers that want them all at the end.
impl Sink for Vec<Event> {
    fn event(&mut self, e: Event) -> bool {
        self.push(e);
        true
    }
}

/// How often a trace asks its sink whether to go on.
const CHECK_EVERY: u64 = 4096;

/// A mark waiting on a transaction: the input (forward) or output
/// (backward) it sits on, and the hop it arrived at.
struct Waiting<M> {
    index: u32,
    hop: u32,
    mark: M,
}

struct Trace<'a, 'e, 's, P: Policy> {
    g: FlowView<'a>,
    policy: &'a P,
    limits: &'a Limits<'s>,
    direction: Direction,
    /// Forward: smallest tx first (keyed by tx number); backward: largest
    /// first (keyed by its complement).
    queue: RadixHeap<Waiting<P::Mark>>,
    /// The sources: traced whole from the start, so never queued again.
    sources: FxHashSet<u64>,
    /// Whether `limits.heights` excludes any height (else heights are not looked up).
    windowed: bool,
    /// Scratch: the values of the inputs and outputs of the tx visited.
    ins: Vec<u64>,
    outs: Vec<u64>,
    totals: Totals,
    sink: &'e mut dyn Sink,
    stopped: bool,
}

/// Traces `sources` (output numbers, each wholly tainted) under `policy`
/// (which must have a reading in `direction`), reporting to `sink`.
pub fn trace<P: Policy>(
    g: FlowView<'_>,
    policy: &P,
    direction: Direction,
    sources: &[u64],
    limits: &Limits<'_>,
    sink: &mut dyn Sink,
) -> (Totals, End) {
    let mut t = Trace {
        g,
        policy,
        limits,
        direction,
        queue: RadixHeap::default(),
        sources: FxHashSet::default(),
        windowed: limits.heights != (0..=u32::MAX),
        ins: Vec::new(),
        outs: Vec::new(),
        totals: Totals::default(),
        sink,
        stopped: false,
    };
    t.sources = sources
        .iter()
        .copied()
        .filter(|&o| g.has_output(o))
        .collect();
    let mut seen = FxHashSet::default();
    for (i, &o) in sources.iter().enumerate() {
        // Millions of sources take a while to settle too.
        if (i as u64 + 1).is_multiple_of(CHECK_EVERY) && !t.sink.alive() {
            t.stopped = true;
        }
        if t.stopped {
            break;
        }
        if !seen.insert(o) || !g.has_output(o) {
            continue;
        }
        let value = g.output(o).value;
        t.totals.source += value;
        t.settle(o, P::full(value), 0);
    }
    let end = t.run();
    (t.totals, end)
}

impl<P: Policy> Trace<'_, '_, '_, P> {
    fn push(&mut self, tx: u64, index: u32, mark: P::Mark, hop: u32) {
        self.queue.push(self.key(tx), Waiting { index, hop, mark });
    }

    fn key(&self, tx: u64) -> u64 {
        match self.direction {
            Direction::Forward => tx,
            Direction::Backward => !tx,
        }
    }

    fn report(&mut self, kind: Kind, output: u64, hop: u32, amount: u64) {
        self.totals.add(kind, amount);
        if !self.stopped
            && !self.sink.event(Event {
                kind,
                output,
                hop,
                amount,
            })
        {
            self.stopped = true;
        }
    }

    /// Output `o`, reached at `hop` with `mark`: reported where the taint
    /// ends, queued on the next transaction otherwise.
    fn settle(&mut self, o: u64, mark: P::Mark, hop: u32) {
        let amount = P::amount(&mark);
        if amount == 0 {
            return;
        }
        if !self.g.has_output(o) {
            return self.report(Kind::BeforeStart, o, hop, amount);
        }
        if hop > 0 && self.sources.contains(&o) {
            return self.report(Kind::Rejoined, o, hop, amount);
        }
        if amount < self.limits.min_amount {
            return self.report(Kind::BelowMin, o, hop, amount);
        }
        let out = self.g.output(o);
        let stoppable = hop > 0 || self.limits.stop_sources;
        if let Some(a) = out.addr.filter(|_| stoppable) {
            match self.limits.stop.stops(a) {
                Some(true) => return self.report(Kind::Stopped, o, hop, amount),
                Some(false) => {}
                // The trace ends at the next transaction; the coin is left
                // unfinished.
                None => self.stopped = true,
            }
        }
        let (next, index) = match self.direction {
            Direction::Forward => match out.spender {
                Some((tx, vin)) => (tx, vin),
                None => return self.report(Kind::Unspent, o, hop, amount),
            },
            Direction::Backward => {
                let c = self.g.creator(o);
                if self.g.inputs(c).len() == 0 {
                    return self.report(Kind::Mined, o, hop, amount);
                }
                (c, (o - self.g.outputs(c).start) as u32)
            }
        };
        if hop >= self.limits.max_hops {
            return self.report(Kind::BeyondHops, o, hop, amount);
        }
        if self.windowed && !self.limits.heights.contains(&self.g.height(next)) {
            return self.report(Kind::OutsideWindow, o, hop, amount);
        }
        if self.limits.transit {
            self.report(Kind::Transit, o, hop, amount);
        }
        self.push(next, index, mark, hop + 1);
    }

    fn run(&mut self) -> End {
        let (mut waiting, mut marks) = (Vec::new(), Vec::new());
        while let Some(key) = self.queue.pop_all(&mut waiting) {
            if self.totals.visited.is_multiple_of(CHECK_EVERY) && !self.sink.alive() {
                self.stopped = true;
            }
            let end = match () {
                _ if self.stopped => End::Stopped,
                _ if self.totals.visited == self.limits.max_txs => End::Budget,
                _ => End::Complete,
            };
            if end != End::Complete {
                let queued = self.queue.values().chain(&waiting);
                self.totals.unfinished += queued.map(|w| P::amount(&w.mark)).sum::<u64>();
                return end;
            }
            self.totals.visited += 1;
            let hop = waiting.iter().map(|w| w.hop).min().expect("popped entries");
            marks.clear();
            marks.extend(waiting.drain(..).map(|w| (w.index, w.mark)));
            self.visit(self.key(key), hop, &marks);
        }
        match self.stopped {
            true => End::Stopped,
            false => End::Complete,
        }
    }

    fn visit(&mut self, tx: u64, hop: u32, marks: &[(u32, P::Mark)]) {
        let mut ins = std::mem::take(&mut self.ins);
        let mut outs = std::mem::take(&mut self.outs);
        ins.clear();
        outs.clear();
        let mut known = true;
        for i in self.g.inputs(tx) {
            known &= i.value.is_some();
            ins.push(i.value.unwrap_or(0));
        }
        let outputs = self.g.outputs(tx);
        if !known {
            // Reported on the coins that led here, which are the spent
            // inputs forward and the outputs backward.
            for (index, mark) in marks {
                let coin = self.coin(tx, *index, self.direction == Direction::Backward);
                self.report(Kind::UnknownValue, coin, hop - 1, P::amount(mark));
            }
        } else {
            outs.extend(outputs.clone().map(|o| self.g.output(o).value));
            self.carry(tx, hop, marks, &ins, &outs);
        }
        self.ins = ins;
        self.outs = outs;
    }

    /// Output `index` of `tx` (`output: true`), or the coin its input
    /// `index` spends.
    fn coin(&self, tx: u64, index: u32, output: bool) -> u64 {
        match output {
            true => self.g.outputs(tx).start + u64::from(index),
            false => {
                self.g
                    .inputs(tx)
                    .nth(index as usize)
                    .expect("an input of the tx")
                    .output
            }
        }
    }

    /// Moves `marks` over tx `tx` and settles the coins they land on.
    fn carry(&mut self, tx: u64, hop: u32, marks: &[(u32, P::Mark)], ins: &[u64], outs: &[u64]) {
        let split = match self.direction {
            Direction::Forward => self.policy.forward(ins, outs, marks),
            Direction::Backward => self
                .policy
                .backward(ins, outs, marks)
                .expect("checked before the trace"),
        };
        let Split {
            marks: carried,
            fee,
            rounding,
        } = split;
        self.totals.to_fees += fee;
        self.totals.rounding += rounding;
        for (index, mark) in carried {
            let coin = self.coin(tx, index, self.direction == Direction::Forward);
            self.settle(coin, mark, hop);
        }
    }
}
