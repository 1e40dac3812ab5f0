//! Planted illicit flows with their ground truth: a theft from an exchange hot wallet or
//! ransom payments by several users, then hops through fresh addresses (split, merge), a
//! Wasabi-like CoinJoin, a post-mix hop and finally a deposit at another exchange.
//!
//! Every output a hop creates for the criminal is spent by the next hop, so the recorded
//! outpoints chain from the source to the deposit.

use bitcoin::{OutPoint, Txid};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use crate::actors::{ActorId, ActorKind};
use crate::coinjoin::{self, Participant};
use crate::dist;
use crate::keys::ScriptKind;
use crate::market::{affordable, split_value, BlockTxs, Market};
use crate::txbuild::{Dest, Tag, TxPlan};
use crate::wallet::Utxo;

/// First flows start once the economy has coins; later ones every FLOW_INTERVAL blocks.
const FIRST_THEFT: u32 = 112;
const FIRST_RANSOM: u32 = 115;
const FLOW_INTERVAL: u32 = 120;
/// Smallest haul worth laundering: enough for several CoinJoin outputs.
const MIN_HAUL_SAT: u64 = 100_000_000;
const RANSOM_MEDIAN_SAT: f64 = 30_000_000.0;
/// Victims are users holding at least 0.3 BTC, so each pays at least 0.15 BTC.
const MIN_RANSOM_VICTIM_SAT: u64 = 30_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowKind {
    Theft,
    Ransom,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HopKind {
    Source,
    Split,
    Merge,
    Mix,
    PostMix,
    Deposit,
}

const STAGES: [HopKind; 6] = [
    HopKind::Source,
    HopKind::Split,
    HopKind::Merge,
    HopKind::Mix,
    HopKind::PostMix,
    HopKind::Deposit,
];

#[derive(Clone, Serialize)]
pub struct Outpt {
    pub txid: String,
    pub vout: u32,
    pub value: u64,
}

#[derive(Clone, Serialize)]
pub struct Hop {
    pub kind: HopKind,
    pub height: u32,
    pub txids: Vec<String>,
    /// Outputs carrying the flow's funds after this hop (the criminal's, or the deposit).
    pub outpoints: Vec<Outpt>,
}

pub struct Flow {
    pub kind: FlowKind,
    pub actor: ActorId,
    pub victims: Vec<ActorId>,
    pub exchange: Option<ActorId>,
    pub hops: Vec<Hop>,
    held: Vec<Utxo>,
    /// Index into STAGES of the next hop.
    stage: usize,
    next_height: u32,
}

/// One line of flows.jsonl.
#[derive(Serialize)]
pub struct FlowRecord {
    pub flow_id: usize,
    pub kind: FlowKind,
    pub actor: ActorId,
    pub victims: Vec<ActorId>,
    pub source: Option<Hop>,
    pub hops: Vec<Hop>,
    pub deposit: Option<Deposit>,
    pub complete: bool,
}

#[derive(Serialize)]
pub struct Deposit {
    pub exchange: ActorId,
    pub outpoint: Outpt,
}

#[derive(Default)]
pub struct Flows {
    list: Vec<Flow>,
    started: u32,
}

impl Flows {
    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn record_tx(&mut self, flow: u16, txid: Txid) {
        let hop = self.list[flow as usize]
            .hops
            .last_mut()
            .expect("a hop is planned first");
        hop.txids.push(txid.to_string());
    }

    pub fn record_output(&mut self, flow: u16, outpoint: OutPoint, value: u64) {
        let hop = self.list[flow as usize]
            .hops
            .last_mut()
            .expect("a hop is planned first");
        hop.outpoints.push(Outpt {
            txid: outpoint.txid.to_string(),
            vout: outpoint.vout,
            value,
        });
    }

    pub fn hold(&mut self, flow: u16, utxo: Utxo) {
        self.list[flow as usize].held.push(utxo);
    }

    fn give_back(&mut self, flow: u16, utxos: Vec<Utxo>) {
        self.list[flow as usize].held.extend(utxos);
    }

    /// Truth records, leaving out hops above `tip` (a truncated last block never happened).
    pub fn records(&self, tip: u32) -> Vec<FlowRecord> {
        self.list
            .iter()
            .enumerate()
            .map(|(flow_id, flow)| {
                let mut hops: Vec<Hop> = flow
                    .hops
                    .iter()
                    .filter(|h| h.height <= tip)
                    .cloned()
                    .collect();
                let source = (!hops.is_empty()).then(|| hops.remove(0));
                let complete = hops.last().is_some_and(|h| h.kind == HopKind::Deposit);
                let deposit = complete.then(|| Deposit {
                    exchange: flow.exchange.expect("a deposit hop has an exchange"),
                    outpoint: hops.last().expect("complete").outpoints[0].clone(),
                });
                FlowRecord {
                    flow_id,
                    kind: flow.kind,
                    actor: flow.actor,
                    victims: flow.victims.clone(),
                    source,
                    hops,
                    deposit,
                    complete,
                }
            })
            .collect()
    }
}

impl Flows {
    /// Starts a flow when one is due and moves every flow whose next hop is due.
    pub fn plan(&mut self, m: &mut Market, block: &mut BlockTxs) {
        let started = self.started;
        let due = match started {
            0 => FIRST_THEFT,
            1 => FIRST_RANSOM,
            n => FIRST_THEFT + (n - 1) * FLOW_INTERVAL,
        };
        if m.height >= due {
            let kind = if started.is_multiple_of(2) {
                FlowKind::Theft
            } else {
                FlowKind::Ransom
            };
            if self.start_flow(m, kind, block) {
                self.started += 1;
            }
        }
        for f in 0..self.list.len() {
            let flow = &self.list[f];
            if flow.stage < STAGES.len() && flow.next_height <= m.height && !flow.held.is_empty() {
                self.flow_hop(m, f, block);
            }
        }
    }

    fn start_flow(&mut self, m: &mut Market, kind: FlowKind, block: &mut BlockTxs) -> bool {
        let id = self.list.len() as u16;
        let actor_kind = if kind == FlowKind::Theft {
            ActorKind::Thief
        } else {
            ActorKind::Ransomware
        };
        let name = format!("{}-{id}", actor_kind.name());
        let txs = match kind {
            FlowKind::Theft => self.theft(m, id),
            FlowKind::Ransom => self.ransoms(m, id),
        };
        let Some((txs, victims)) = txs else {
            return false;
        };
        let actor = m.actors.add(actor_kind, name, ScriptKind::P2wpkh);
        let mut flow = Flow {
            kind,
            actor,
            victims,
            exchange: None,
            hops: Vec::new(),
            held: Vec::new(),
            stage: 0,
            next_height: 0,
        };
        for mut tx in txs {
            for out in tx.outputs.iter_mut().filter(|o| o.taint.is_some()) {
                out.owner = actor;
            }
            block.push(tx);
        }
        flow_after_hop(&mut flow, HopKind::Source, m.height, &mut m.rng);
        self.list.push(flow);
        true
    }

    /// Coins taken from an exchange's hot wallet to two addresses of the thief.
    fn theft(&self, m: &mut Market, id: u16) -> Option<(Vec<TxPlan>, Vec<ActorId>)> {
        let mut exchanges: Vec<ActorId> = m.actors.exchanges.clone().collect();
        exchanges.shuffle(&mut m.rng);
        let victim = exchanges
            .into_iter()
            .find(|&e| m.actors.get(e).wallet.balance() >= 4 * MIN_HAUL_SAT)?;
        let height = m.height;
        let n = m.rng.gen_range(2..=5);
        let inputs = m
            .actors
            .get_mut(victim)
            .wallet
            .take_n(&mut m.rng, n, height);
        let rate = m.fee_rate();
        let total: u64 = inputs.iter().map(|u| u.value).sum();
        if total < 2 * MIN_HAUL_SAT || !affordable(&inputs, 3, rate) {
            m.actors.get_mut(victim).wallet.give_back(inputs);
            return None;
        }
        let mut plan = m.tx(
            inputs,
            Tag {
                coinjoin: None,
                flow: Some(id),
                pattern: None,
            },
        );
        let stolen = (total as f64 * m.rng.gen_range(0.5..0.85)) as u64;
        for _ in 0..2 {
            self.pay_to_flow(m, &mut plan, id, stolen / 2);
        }
        let change = m.actors.address(&mut m.rng, victim);
        plan.pay(0, change, victim, Dest::Wallet(victim)).value =
            plan.available(rate).expect("checked affordable");
        Some((vec![plan], vec![victim]))
    }

    /// Several users each paying a ransom to its own fresh address.
    fn ransoms(&self, m: &mut Market, id: u16) -> Option<(Vec<TxPlan>, Vec<ActorId>)> {
        let wanted = m.rng.gen_range(3..=5);
        let height = m.height;
        let mut txs = Vec::new();
        let mut victims = Vec::new();
        for _ in 0..100 * wanted {
            if victims.len() == wanted {
                break;
            }
            let user = m.actors.random_user(&mut m.rng);
            let wallet = &mut m.actors.get_mut(user).wallet;
            if victims.contains(&user) || wallet.balance() < MIN_RANSOM_VICTIM_SAT {
                continue;
            }
            // Ransoms are set to what the victim can pay.
            let ransom = (dist::lognormal(&mut m.rng, RANSOM_MEDIAN_SAT, 0.4) as u64)
                .min(wallet.balance() / 2);
            let rate = m.fee_rate();
            let fee_bound = dist::fee(rate, 50 + 5 * ScriptKind::P2pkh.input_weight() + 2 * 4 * 44);
            let wallet = &mut m.actors.get_mut(user).wallet;
            let Some(inputs) =
                wallet.take_value(&mut m.rng, ransom + fee_bound + dist::DUST, 5, height)
            else {
                continue;
            };
            let mut plan = m.tx(
                inputs,
                Tag {
                    coinjoin: None,
                    flow: Some(id),
                    pattern: None,
                },
            );
            self.pay_to_flow(m, &mut plan, id, ransom);
            let change = m.actors.address(&mut m.rng, user);
            plan.pay(0, change, user, Dest::Wallet(user)).value =
                plan.available(rate).expect("fee bounded above");
            txs.push(plan);
            victims.push(user);
        }
        if victims.len() >= 2 {
            return Some((txs, victims));
        }
        for (tx, user) in txs.into_iter().zip(&victims) {
            m.actors.get_mut(*user).wallet.give_back(tx.inputs);
        }
        None
    }

    /// An output to a fresh address of the flow's criminal (owner set once the actor exists).
    fn pay_to_flow(&self, m: &mut Market, plan: &mut TxPlan, id: u16, value: u64) {
        let payee = m.actors.fresh(ScriptKind::P2wpkh);
        let owner = self.list.get(id as usize).map_or(ActorId::MAX, |f| f.actor);
        plan.pay(value, payee, owner, Dest::Flow(id)).taint = Some(id);
    }

    fn flow_hop(&mut self, m: &mut Market, f: usize, block: &mut BlockTxs) {
        let id = f as u16;
        let kind = STAGES[self.list[f].stage];
        let held = std::mem::take(&mut self.list[f].held);
        let tag = Tag {
            coinjoin: None,
            flow: Some(id),
            pattern: None,
        };
        let rate = m.fee_rate();
        let txs: Vec<TxPlan> = match kind {
            HopKind::Split | HopKind::PostMix => {
                let outputs = if kind == HopKind::Split { 3 } else { 1 };
                held.into_iter()
                    .map(|coin| self.flow_tx(m, id, vec![coin], outputs, rate, tag))
                    .collect()
            }
            HopKind::Merge => vec![self.flow_tx(m, id, held, 1, rate, tag)],
            HopKind::Mix => {
                let actor = self.list[f].actor;
                let p = Participant {
                    owner: actor,
                    inputs: held,
                    dest: Dest::Flow(id),
                    taint: Some(id),
                    max_equal: 8,
                };
                if !p.can_afford_wasabi(rate) {
                    // Too little to mix: skip the mixer, keep the coins for the next hop.
                    self.give_back(id, p.inputs);
                    self.list[f].stage += 1;
                    return;
                }
                match coinjoin::wasabi_round(m, rate, vec![p]) {
                    Ok(tx) => vec![tx],
                    Err(ours) => {
                        // Not enough participants: try again next block.
                        ours.into_iter().for_each(|p| self.give_back(id, p.inputs));
                        return;
                    }
                }
            }
            HopKind::Deposit => vec![self.deposit_tx(m, f, held, rate, tag)],
            HopKind::Source => unreachable!("the source is planted by start_flow"),
        };
        txs.into_iter().for_each(|tx| block.push(tx));
        flow_after_hop(&mut self.list[f], kind, m.height, &mut m.rng);
    }

    /// Criminal's coins into `outputs` fresh addresses of the criminal.
    fn flow_tx(
        &self,
        m: &mut Market,
        id: u16,
        inputs: Vec<Utxo>,
        outputs: usize,
        rate: f64,
        tag: Tag,
    ) -> TxPlan {
        let mut plan = m.tx(inputs, tag);
        for _ in 0..outputs {
            self.pay_to_flow(m, &mut plan, id, 0);
        }
        split_value(
            &mut m.rng,
            affordable_value(&plan, rate, outputs),
            &mut plan.outputs,
        );
        plan
    }

    /// Everything into one deposit address at an exchange other than the victim.
    fn deposit_tx(
        &mut self,
        m: &mut Market,
        f: usize,
        inputs: Vec<Utxo>,
        rate: f64,
        tag: Tag,
    ) -> TxPlan {
        let exchange = loop {
            let e = m.actors.random_exchange(&mut m.rng);
            if !self.list[f].victims.contains(&e) {
                break e;
            }
        };
        self.list[f].exchange = Some(exchange);
        let mut plan = m.tx(inputs, tag);
        let payee = m.actors.fresh_deposit(exchange);
        plan.pay(0, payee, exchange, Dest::Deposits(exchange)).taint = tag.flow;
        plan.outputs[0].value = affordable_value(&plan, rate, 1);
        plan
    }
}

/// What the inputs leave for `outputs` outputs after the fee; a criminal whose coin is too
/// small for the going rate pays the minimum relay rate instead (coins are at least
/// `coinjoin::MIN_CHANGE`, far above the minimum fee).
fn affordable_value(plan: &TxPlan, rate: f64, outputs: usize) -> u64 {
    plan.available(rate)
        .filter(|&v| v >= dist::DUST * outputs as u64)
        .or_else(|| plan.available(1.0))
        .expect("criminals' coins cover the minimum fee")
}

/// Records a planned hop (txids and outpoints arrive at commit) and schedules the next one.
fn flow_after_hop(flow: &mut Flow, kind: HopKind, height: u32, rng: &mut impl Rng) {
    flow.hops.push(Hop {
        kind,
        height,
        txids: Vec::new(),
        outpoints: Vec::new(),
    });
    flow.stage += 1;
    flow.next_height = height + rng.gen_range(1..=2);
}
