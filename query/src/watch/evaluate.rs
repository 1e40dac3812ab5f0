//! One block against the watches: which of its transactions pay or spend
//! from a watched subject, and which move coins between a subject and a
//! category within a few hops (found by a breadth-first walk back through
//! the flow graph, which also gives the path).
//!
//! Subjects are matched by address number, or by the cluster holding an
//! address (cluster, label and category subjects), looked up once per
//! address per evaluation (one index state, up to 64 blocks). Exposure
//! searches remember which transactions they found clean, so the many
//! payments of a block that share ancestors walk them once.
//!
//! Pattern rules take the patterns the block completes (`patterns`, one
//! scan for all such watches) and keep those involving their subject.
//!
//! Transactions and outputs are the flow graph's numbers (plain `u64`s, as
//! the walk reads them); addresses and clusters are typed ids.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};
use satflow_indexer::flow::FlowView;
use satflow_indexer::labels::Category;
use satflow_proto::v1 as pb;
use satflow_schema::{AddrId, ClusterKey, Height, OutNum, TxNum};

use super::rules::{Rule, Subject, Watch};
use crate::built;
use crate::error::Result;
use crate::index::Index;
use crate::label_index::{LabelIndex, Wanted};
use crate::labels::{carrier, label_message};
use crate::patterns::{self, list, Carry, Found, Kind, Scanner};

/// Transactions one exposure search may read (each hop back multiplies
/// them); beyond, the search ends without an alert.
pub const SEARCH_BUDGET: usize = 20_000;
/// A subject's addresses listed in one alert.
const MAX_ADDRESSES: usize = 100;

/// Who a watch's subject is, as of the block being evaluated.
#[derive(Clone)]
enum Members {
    /// None: the address has not been used yet.
    Address(Option<AddrId>),
    /// Clusters (or, for an address the clusters do not cover yet, the
    /// cluster named after it: see `LabelIndex`).
    Holders(Arc<FxHashSet<ClusterKey>>),
}

/// Evaluates blocks of one index state.
pub struct Evaluation<'a> {
    index: &'a Index,
    g: FlowView<'a>,
    labels: Arc<LabelIndex>,
    watches: &'a [Watch],
    members: Vec<Members>,
    /// Watches by the address number, or the holder, they name: a block
    /// costs a lookup per address, however many watches there are.
    by_address: FxHashMap<AddrId, Vec<usize>>,
    /// Per holder, the holder sets it is in (indexes into `set_watches`),
    /// and per set the watches naming it. Each distinct set is listed
    /// once: 10,000 watches of one category cost its clusters once, not
    /// 10,000 times.
    by_holder: FxHashMap<ClusterKey, Vec<u32>>,
    set_watches: Vec<Vec<usize>>,
    /// For watches with an exposure rule: the holders of its category.
    exposure: Vec<Option<Members>>,
    holders: FxHashMap<AddrId, ClusterKey>,
    /// Per origin (see `Origin`) and transaction: how many levels back
    /// from it (itself included) a finished search found no origin coin.
    clean: FxHashMap<(Origin, u64), u32>,
    /// The detectors of the watches' pattern rules, if any has one.
    patterns: Option<Scanner<'a>>,
}

/// Whose coins an exposure search looks for: a category's, or a watch's
/// subject's.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Origin {
    Category(Category),
    Subject(usize),
}

/// What one transaction moved for one watch's subject.
#[derive(Default)]
struct Moved {
    received: u64,
    sent: u64,
    addresses: Vec<AddrId>,
    /// An output paying the subject.
    paid: Option<u64>,
}

/// A coin a transaction spends or makes, with its address.
struct Coin {
    n: u64,
    addr: AddrId,
    value: u64,
    made: bool,
}

impl<'a> Evaluation<'a> {
    /// `carry`: what the last evaluation's pattern scan carried, if any.
    pub fn new(
        index: &'a Index,
        g: FlowView<'a>,
        watches: &'a [Watch],
        carry: Option<Carry>,
    ) -> Result<Evaluation<'a>> {
        let labels = index.label_index();
        let mut e = Evaluation {
            index,
            g,
            labels,
            watches,
            members: Vec::with_capacity(watches.len()),
            by_address: FxHashMap::default(),
            by_holder: FxHashMap::default(),
            set_watches: Vec::new(),
            exposure: Vec::with_capacity(watches.len()),
            holders: FxHashMap::default(),
            clean: FxHashMap::default(),
            patterns: None,
        };
        let kinds: Vec<Kind> = watches
            .iter()
            .filter_map(|w| match w.rule {
                Rule::Pattern(k) => Some(k),
                _ => None,
            })
            .collect();
        if !kinds.is_empty() {
            let mut scanner = Scanner::new(index, g, patterns::Params::default(), &kinds)?;
            if let Some(carry) = carry {
                scanner.resume(carry)?;
            }
            e.patterns = Some(scanner);
        }
        let mut categories: FxHashMap<Category, Arc<FxHashSet<ClusterKey>>> = FxHashMap::default();
        let mut category = |labels: &LabelIndex, c: Category| {
            Arc::clone(categories.entry(c).or_insert_with(|| {
                Arc::new(
                    labels
                        .clusters_with(&Wanted::category(c))
                        .into_iter()
                        .collect(),
                )
            }))
        };
        let mut labelled: FxHashMap<&str, Arc<FxHashSet<ClusterKey>>> = FxHashMap::default();
        // Each holder set's number in `set_watches`, by its address.
        let mut sets: FxHashMap<*const FxHashSet<ClusterKey>, u32> = FxHashMap::default();
        for (w, watch) in watches.iter().enumerate() {
            let m = match &watch.subject {
                Subject::Address(key) => Members::Address(index.address_id(key)?),
                Subject::Cluster(id) => {
                    let holder = e.holder(id.named_after())?;
                    Members::Holders(Arc::new(FxHashSet::from_iter([holder])))
                }
                Subject::Label(name) => {
                    let set = labelled.entry(name).or_insert_with(|| {
                        let wanted = Wanted::new(vec![name.clone()], &[]);
                        Arc::new(e.labels.clusters_with(&wanted).into_iter().collect())
                    });
                    Members::Holders(Arc::clone(set))
                }
                Subject::Category(c) => Members::Holders(category(&e.labels, *c)),
            };
            match &m {
                Members::Address(Some(a)) => e.by_address.entry(*a).or_default().push(w),
                Members::Address(None) => {}
                Members::Holders(set) => {
                    let n = *sets.entry(Arc::as_ptr(set)).or_insert_with(|| {
                        let n = e.set_watches.len() as u32;
                        for &h in set.iter() {
                            e.by_holder.entry(h).or_default().push(n);
                        }
                        e.set_watches.push(Vec::new());
                        n
                    });
                    e.set_watches[n as usize].push(w);
                }
            }
            e.exposure.push(match watch.rule {
                Rule::Exposure { category: c, .. } => {
                    Some(Members::Holders(category(&e.labels, c)))
                }
                _ => None,
            });
            e.members.push(m);
        }
        Ok(e)
    }

    /// What the pattern scan carries to the next evaluation, if one ran.
    pub fn into_carry(self) -> Result<Option<Carry>> {
        Ok(match self.patterns {
            Some(scanner) => scanner.into_carry()?,
            None => None,
        })
    }

    /// The cluster holding address `a` (the one named after it beyond the
    /// clusters).
    fn holder(&mut self, a: AddrId) -> Result<ClusterKey> {
        if let Some(&h) = self.holders.get(&a) {
            return Ok(h);
        }
        let h = built::cluster_or_self(self.index.store(), a, self.labels.cover())?;
        self.holders.insert(a, h);
        Ok(h)
    }

    /// No address can be a member: a search for its coins is pointless.
    fn nobody(m: &Members) -> bool {
        match m {
            Members::Address(id) => id.is_none(),
            Members::Holders(set) => set.is_empty(),
        }
    }

    fn is_member(&mut self, m: &Members, a: AddrId) -> Result<bool> {
        Ok(match m {
            Members::Address(id) => *id == Some(a),
            Members::Holders(set) => !set.is_empty() && set.contains(&self.holder(a)?),
        })
    }

    /// The alerts block `height` raises, in transaction then watch order.
    pub fn block(&mut self, height: u32) -> Result<Vec<pb::Alert>> {
        let txs = self.g.block_txs(height).ok_or_else(|| {
            anyhow::anyhow!(
                "block {height} is not in the flow graph, which ends at {}",
                self.g.tip_height()
            )
        })?;
        let block_hash = self.index.block_row(Height(height))?.hash.to_string();
        let mut alerts = Vec::new();
        for tx in txs {
            alerts.extend(self.transaction(tx)?);
        }
        // Then the patterns the block completes, in transaction order.
        if let Some(mut scanner) = self.patterns.take() {
            let found = scanner.block(height);
            self.patterns = Some(scanner);
            for f in found? {
                for w in 0..self.watches.len() {
                    if self.watches[w].rule == Rule::Pattern(f.kind) {
                        alerts.extend(self.pattern_alert(w, &f)?);
                    }
                }
            }
        }
        for a in &mut alerts {
            a.height = height;
            a.block_hash.clone_from(&block_hash);
        }
        Ok(alerts)
    }

    /// The alert of watch `w` for pattern `f`, if one of its transactions
    /// spends from or pays the watch's subject.
    fn pattern_alert(&mut self, w: usize, f: &Found) -> Result<Option<pb::Alert>> {
        let g = self.g;
        let members = self.members[w].clone();
        if Self::nobody(&members) {
            return Ok(None);
        }
        let mut moved = Moved::default();
        for &tx in &f.txs {
            let spent = g
                .inputs(tx)
                .filter(|i| g.has_output(i.output))
                .map(|i| (i.output, false));
            for (n, made) in spent.chain(g.outputs(tx).map(|n| (n, true))) {
                let o = g.output(n);
                let Some(a) = o.addr.map(AddrId) else {
                    continue;
                };
                if self.is_member(&members, a)? {
                    moved.addresses.push(a);
                    match made {
                        true => moved.received += o.value,
                        false => moved.sent += o.value,
                    }
                }
            }
        }
        if moved.addresses.is_empty() {
            return Ok(None);
        }
        let mut alert = self.alert(f.last(), w, moved, Vec::new(), None)?;
        alert.pattern = Some(list::message(self.index, f)?);
        Ok(Some(alert))
    }

    fn transaction(&mut self, tx: u64) -> Result<Vec<pb::Alert>> {
        let g = self.g;
        let spent = g
            .inputs(tx)
            .filter(|i| g.has_output(i.output))
            .map(|i| (i.output, false));
        let made = g.outputs(tx).map(|n| (n, true));
        let coins: Vec<Coin> = spent
            .chain(made)
            .filter_map(|(n, made)| {
                let o = g.output(n);
                o.addr.map(|addr| Coin {
                    n,
                    addr: AddrId(addr),
                    value: o.value,
                    made,
                })
            })
            .collect();

        let mut moved: FxHashMap<usize, Moved> = FxHashMap::default();
        for c in &coins {
            let holder = match self.by_holder.is_empty() {
                true => None,
                false => Some(self.holder(c.addr)?),
            };
            let ws = self.by_address.get(&c.addr).into_iter().flatten();
            let ws = ws.chain(
                holder
                    .and_then(|h| self.by_holder.get(&h))
                    .into_iter()
                    .flatten()
                    .flat_map(|&n| &self.set_watches[n as usize]),
            );
            for &w in ws {
                let t = moved.entry(w).or_default();
                t.addresses.push(c.addr);
                match c.made {
                    true => {
                        t.received += c.value;
                        t.paid.get_or_insert(c.n);
                    }
                    false => t.sent += c.value,
                }
            }
        }

        // The watches the transaction touched, and those whose exposure
        // rule may fire without their subject in it, in watch order.
        let mut ws: Vec<usize> = moved.keys().copied().collect();
        ws.extend((0..self.watches.len()).filter(|&w| self.exposure[w].is_some()));
        ws.sort_unstable();
        ws.dedup();
        let mut alerts = Vec::new();
        for w in ws {
            if let Some(a) = self.check(tx, w, moved.remove(&w), &coins)? {
                alerts.push(a);
            }
        }
        Ok(alerts)
    }

    /// Whether watch `w`'s rule fires on `tx`, which moved its subject as
    /// `moved` says.
    fn check(
        &mut self,
        tx: u64,
        w: usize,
        moved: Option<Moved>,
        coins: &[Coin],
    ) -> Result<Option<pb::Alert>> {
        let (mut path, mut far_end) = (None, None);
        match (self.watches[w].rule, &moved) {
            (Rule::AnyActivity, Some(_)) => {}
            // Change back to the subject is not incoming.
            (Rule::IncomingAbove(min), Some(t)) if t.received.saturating_sub(t.sent) >= min => {}
            (
                Rule::Exposure {
                    category: c,
                    max_hops,
                    from_category,
                    to_category,
                },
                _,
            ) => {
                let category = self.exposure[w].clone().expect("an exposure rule");
                let subject = self.members[w].clone();
                if Self::nobody(&category) || Self::nobody(&subject) {
                    return Ok(None);
                }
                let paid = moved.as_ref().and_then(|t| t.paid);
                if let (true, Some(paid)) = (from_category, paid) {
                    let origin = (Origin::Category(c), &category);
                    path = self.path_back(tx, paid, max_hops, origin)?;
                    far_end = path.as_ref().and_then(|p| p.first().copied());
                }
                if path.is_none() && to_category {
                    if let Some(pays) = self.first_paid(coins, &category)? {
                        path =
                            self.path_back(tx, pays, max_hops, (Origin::Subject(w), &subject))?;
                        far_end = Some(pays);
                    }
                }
                if path.is_none() {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        }
        self.alert(
            tx,
            w,
            moved.unwrap_or_default(),
            path.unwrap_or_default(),
            far_end,
        )
        .map(Some)
    }

    /// The first output among `coins` paying a member of `m`.
    fn first_paid(&mut self, coins: &[Coin], m: &Members) -> Result<Option<u64>> {
        for c in coins.iter().filter(|c| c.made) {
            if self.is_member(m, c.addr)? {
                return Ok(Some(c.n));
            }
        }
        Ok(None)
    }

    /// The shortest chain of coins, at most `max_hops` transactions long and
    /// ending with `tx`'s output `last`, that starts at a coin a member of
    /// `origin` held: output numbers, origin first.
    fn path_back(
        &mut self,
        tx: u64,
        last: u64,
        max_hops: u32,
        (origin, members): (Origin, &Members),
    ) -> Result<Option<Vec<u64>>> {
        let g = self.g;
        // For each transaction reached: the coin it made that leads on to
        // `tx`, and the transaction spending that coin.
        let mut onward: FxHashMap<u64, (u64, u64)> = FxHashMap::default();
        onward.insert(tx, (last, tx));
        let mut queue = VecDeque::from([(tx, 1u32)]);
        let mut walked = Vec::new();
        while let Some((t, hops)) = queue.pop_front() {
            // Levels this search would look at from `t`, itself included.
            let levels = max_hops - hops + 1;
            if self.clean.get(&(origin, t)).is_some_and(|&c| c >= levels) {
                continue;
            }
            walked.push((t, levels));
            for i in g.inputs(t) {
                if !g.has_output(i.output) {
                    continue;
                }
                if let Some(a) = g.output(i.output).addr {
                    if self.is_member(members, AddrId(a))? {
                        let mut path = vec![i.output];
                        let mut at = t;
                        loop {
                            let (coin, next) = onward[&at];
                            path.push(coin);
                            if at == tx {
                                return Ok(Some(path));
                            }
                            at = next;
                        }
                    }
                }
                let maker = g.creator(i.output);
                if hops < max_hops && onward.len() < SEARCH_BUDGET && !onward.contains_key(&maker) {
                    onward.insert(maker, (i.output, t));
                    queue.push_back((maker, hops + 1));
                }
            }
        }
        // Only a search the budget did not cut short proves anything.
        if onward.len() < SEARCH_BUDGET {
            for (t, levels) in walked {
                let c = self.clean.entry((origin, t)).or_default();
                *c = (*c).max(levels);
            }
        }
        Ok(None)
    }

    fn alert(
        &mut self,
        tx: u64,
        w: usize,
        mut moved: Moved,
        path: Vec<u64>,
        far_end: Option<u64>,
    ) -> Result<pb::Alert> {
        let index = self.index;
        moved.addresses.sort_unstable();
        moved.addresses.dedup();
        let addresses = moved
            .addresses
            .iter()
            .take(MAX_ADDRESSES)
            .map(|&a| index.address_string(Some(a)))
            .collect::<Result<Vec<_>>>()?;
        let path = path
            .into_iter()
            .map(|n| self.path_coin(n))
            .collect::<Result<Vec<_>>>()?;
        let watch = &self.watches[w];
        let counterparty_labels = match (far_end, watch.rule) {
            (Some(n), Rule::Exposure { category, .. }) => {
                let holder = match self.g.output(n).addr {
                    Some(a) => Some(self.holder(AddrId(a))?),
                    None => None,
                };
                let carried = holder.map(|h| self.labels.distinct_of(h, None));
                carried
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, l, _)| l.category == category)
                    .map(|(member, l, carriers)| {
                        let from = carrier(index, &self.labels, member)?;
                        Ok(label_message(l, from, carriers))
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            _ => Vec::new(),
        };
        Ok(pb::Alert {
            id: 0,
            kind: pb::AlertKind::AlertRaised.into(),
            retracts: 0,
            watch: Some(watch.message.clone()),
            txid: index.tx_row(TxNum(tx))?.txid.to_string(),
            height: 0,
            block_hash: String::new(),
            received: moved.received,
            sent: moved.sent,
            addresses,
            path,
            counterparty_labels,
            raised_at_ms: 0,
            pattern: None,
        })
    }

    fn path_coin(&self, n: u64) -> Result<pb::PathCoin> {
        let row = self.index.output(OutNum(n))?;
        let tx = self.index.creator(OutNum(n), &row)?;
        Ok(pb::PathCoin {
            txid: tx.txid.to_string(),
            vout: row.vout,
            address: self.index.address_string(row.addr)?,
            value: row.value,
            height: tx.height.0,
        })
    }
}
