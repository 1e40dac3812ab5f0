//! What a cluster's transactions say about who runs it: counts and sums
//! gathered from its `cluster_history` rows (a lone address's `history`),
//! each row's transaction read in the flow graph (its inputs, outputs and
//! values).

use satflow_schema::address::HistoryRow;
use satflow_schema::ClusterId;

use crate::cluster::Heuristics;
use crate::flow::FlowView;

/// A cluster's behaviour, summed over its transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Addresses (from `cluster_stats`).
    pub size: u64,
    pub txs: u64,
    pub received: u64,
    pub sent: u64,
    /// Coinbase transactions paying the cluster, and what they paid it.
    pub coinbase_txs: u64,
    pub coinbase_value: u64,
    /// Transactions paying the cluster without spending any of its coins:
    /// payments from others (deposits, invoices, bets), and what they paid.
    pub deposits: u64,
    pub deposit_value: u64,
    /// Transactions spending its coins into one output of someone else's:
    /// deposit addresses swept into a hot wallet, or plain payments.
    pub forwards: u64,
    /// The service cluster this one's deposits were swept to, or that fed
    /// it: it holds that service's deposit addresses, or its wallet
    /// (`categorise` fills it in once every cluster has its category).
    pub linked_to: Option<ClusterId>,
    /// The cluster (key) most forwards went to, and the one that swept most
    /// of its one-output deposits into it; internal to a run, not stored.
    pub(super) forward_to: Vote,
    pub(super) fed_by: Vote,
    /// Transactions spending three or more of its coins and paying at most
    /// 1% of their outputs' value away: consolidations, sweeps of deposit
    /// addresses into a hot wallet.
    pub sweeps: u64,
    /// Transactions spending its coins into five or more outputs, at least
    /// half the value to others: batched withdrawals, payouts.
    pub batch_payouts: u64,
    /// Transactions spending its coins into at most two outputs, part of the
    /// value to others: one payment each.
    pub single_payouts: u64,
    /// Transactions spending five or more of its coins into two to eight
    /// outputs, at least half the value to others: settlements of collected
    /// payments to a few payees.
    pub settlements: u64,
    /// CoinJoins it took part in (by the clustering heuristics' detectors).
    pub coinjoins: u64,
    pub first_height: u32,
    pub last_height: u32,
}

/// Whom a transaction of the cluster's dealt with, where `categorise`
/// wants to know that one's cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counterpart {
    None,
    /// The address all of a forward went to.
    Payee(u64),
    /// The address of a deposit's first input.
    Payer(u64),
}

/// A majority vote in one pass (Boyer and Moore's): `winner` is the value
/// cast more than half the votes whenever there is one (otherwise some
/// value cast late).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vote {
    pub winner: Option<u64>,
    lead: u64,
}

impl Vote {
    pub fn cast(&mut self, value: u64) {
        match self.winner {
            Some(w) if w == value => self.lead += 1,
            _ if self.lead == 0 => {
                self.winner = Some(value);
                self.lead = 1;
            }
            _ => self.lead -= 1,
        }
    }
}

/// Share of value a sweep may pay away (fee and dust aside).
const SWEEP_AWAY: f64 = 0.01;

impl Features {
    /// Adds tx `tx` (at `height`) as the cluster's history row `row` saw it.
    /// Returns the address a forward went to, or that swept a deposit into
    /// it (the first input's of a one-output deposit), for the caller to vote for its cluster in
    /// `forward_to` or `fed_by`.
    pub fn add(&mut self, g: &FlowView<'_>, tx: u64, height: u32, row: &HistoryRow) -> Counterpart {
        if self.txs == 0 {
            self.first_height = height;
        }
        self.last_height = height;
        self.txs += 1;
        self.received += row.credited();
        self.sent += row.sent;
        let inputs = g.inputs(tx).len();
        let outputs = g.outputs(tx);
        let n_outputs = outputs.end - outputs.start;
        if inputs == 0 {
            self.coinbase_txs += 1;
            self.coinbase_value += row.received;
            return Counterpart::None;
        }
        let out_value: u64 = outputs.clone().map(|n| g.output(n).value).sum();
        if inputs >= 3 && n_outputs >= 3 {
            let values = outputs.clone().map(|n| g.output(n).value);
            if Heuristics::DEFAULT.coinjoin_of(inputs, values).is_some() {
                self.coinjoins += 1;
                return Counterpart::None;
            }
        }
        if row.sent == 0 {
            if row.received == 0 {
                return Counterpart::None;
            }
            self.deposits += 1;
            self.deposit_value += row.received;
            // Only a sweep into it tells whose wallet it is: a payment with
            // change (a withdrawal, a win) says nothing of that.
            if n_outputs != 1 {
                return Counterpart::None;
            }
            let payer = g.inputs(tx).next().map(|i| i.output);
            return match payer
                .filter(|&n| g.has_output(n))
                .and_then(|n| g.output(n).addr)
            {
                Some(a) => Counterpart::Payer(a),
                None => Counterpart::None,
            };
        }
        let mut counterpart = Counterpart::None;
        if n_outputs == 1 && row.received == 0 {
            self.forwards += 1;
            if let Some(a) = g.output(outputs.start).addr {
                counterpart = Counterpart::Payee(a);
            }
        }
        let away = out_value.saturating_sub(row.received);
        let away_share = away as f64 / out_value.max(1) as f64;
        if inputs >= 3 && away_share <= SWEEP_AWAY {
            self.sweeps += 1;
        } else if away_share >= 0.5 && n_outputs >= 5 {
            self.batch_payouts += 1;
        } else if away > 0 && n_outputs <= 2 {
            self.single_payouts += 1;
        }
        if inputs >= 5 && (2..=8).contains(&n_outputs) && away_share >= 0.5 {
            self.settlements += 1;
        }
        counterpart
    }

    /// Transactions spending its coins.
    pub fn spends(&self) -> u64 {
        // Saturating: a damaged store must not make a reader panic.
        self.txs
            .saturating_sub(self.deposits + self.coinbase_txs + self.coinjoins)
    }

    /// Coinbase value as a share of what others paid it (its change left out).
    pub fn coinbase_share(&self) -> f64 {
        self.coinbase_value as f64 / (self.coinbase_value + self.deposit_value).max(1) as f64
    }

    /// Blocks from its first transaction to its last, both counted.
    pub fn span(&self) -> u64 {
        // Saturating, as `spends`.
        u64::from(self.last_height.saturating_sub(self.first_height)) + 1
    }

    /// `part` as a share of its transactions.
    pub fn share(&self, part: u64) -> f64 {
        part as f64 / self.txs.max(1) as f64
    }
}
