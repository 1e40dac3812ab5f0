//! Per-address rows: `history` (what each tx did to an address; summed
//! per cluster in `cluster_history`) and `addr_stats` (running totals).
//! `addr_utxos` rows are keyed `(AddrId, OutNum)` with the value in sats,
//! and need no type of their own.

use crate::codec::{Codec, Dec, Inline, RowError};

/// `history`, keyed by (address, tx): what the tx paid to and took from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryRow {
    pub received: u64,
    pub sent: u64,
    /// Of `sent`, the coins created before the index's first block. The
    /// index never saw them arrive, so it books them as received when they
    /// leave: balances then stay the value of the coins it holds.
    pub opened: u64,
}

impl HistoryRow {
    /// Net effect of the tx on the address's coins: what it received less
    /// what it spent. (The booked balance, `received − sent` of
    /// `addr_stats`, does not move for `opened` coins: see above.)
    pub fn net(&self) -> i64 {
        (self.received as i64).wrapping_sub(self.sent as i64)
    }

    /// What the address's running `received` total counts for this tx.
    pub fn credited(&self) -> u64 {
        self.received.wrapping_add(self.opened)
    }

    /// Wrapping, as are `AddrStats`' sums: no chain that consensus allows
    /// comes near the limit, a crafted one must not panic the indexer (a
    /// merge operator's panic aborts the process), and wrapping sums still
    /// undo exactly.
    pub fn add(&mut self, other: &HistoryRow) {
        self.received = self.received.wrapping_add(other.received);
        self.sent = self.sent.wrapping_add(other.sent);
        self.opened = self.opened.wrapping_add(other.opened);
    }
}

/// `addr_stats`, keyed by address: running totals kept by a merge operator
/// that adds deltas, so that undoing a block is merging the negated deltas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddrStats {
    pub tx_count: i64,
    pub received: i64,
    pub sent: i64,
    pub utxo_count: i64,
}

impl AddrStats {
    /// Wrapping: see `HistoryRow::add`.
    pub fn add(&mut self, o: &AddrStats) {
        self.tx_count = self.tx_count.wrapping_add(o.tx_count);
        self.received = self.received.wrapping_add(o.received);
        self.sent = self.sent.wrapping_add(o.sent);
        self.utxo_count = self.utxo_count.wrapping_add(o.utxo_count);
    }

    pub fn negated(&self) -> AddrStats {
        AddrStats {
            tx_count: self.tx_count.wrapping_neg(),
            received: self.received.wrapping_neg(),
            sent: self.sent.wrapping_neg(),
            utxo_count: self.utxo_count.wrapping_neg(),
        }
    }

    pub fn balance(&self) -> i64 {
        self.received.wrapping_sub(self.sent)
    }
}

impl Codec for HistoryRow {
    type Bytes = Inline<24>;

    /// 16 bytes, or 24 when `opened` is not zero.
    fn encode(&self) -> Inline<24> {
        let mut v = Inline::new();
        v.extend(&self.received.to_be_bytes());
        v.extend(&self.sent.to_be_bytes());
        if self.opened != 0 {
            v.extend(&self.opened.to_be_bytes());
        }
        v
    }

    fn decode(b: &[u8]) -> Result<HistoryRow, RowError> {
        Dec::all("history", b, |d| {
            let (received, sent) = (d.u64()?, d.u64()?);
            let opened = if d.is_empty() { 0 } else { d.u64()? };
            Ok(HistoryRow {
                received,
                sent,
                opened,
            })
        })
    }
}

impl Codec for AddrStats {
    type Bytes = [u8; 32];

    fn encode(&self) -> [u8; 32] {
        let mut v = [0u8; 32];
        for (i, n) in [self.tx_count, self.received, self.sent, self.utxo_count]
            .into_iter()
            .enumerate()
        {
            v[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        v
    }

    fn decode(b: &[u8]) -> Result<AddrStats, RowError> {
        Dec::all("addr_stats", b, |d| {
            Ok(AddrStats {
                tx_count: d.i64()?,
                received: d.i64()?,
                sent: d.i64()?,
                utxo_count: d.i64()?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_deltas_cancel() {
        let mut s = AddrStats {
            tx_count: 2,
            received: 100,
            sent: 40,
            utxo_count: 1,
        };
        let d = AddrStats {
            tx_count: 1,
            received: 5,
            sent: 0,
            utxo_count: 1,
        };
        s.add(&d);
        s.add(&d.negated());
        assert_eq!(s.balance(), 60);
        assert_eq!(AddrStats::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn history_rows_grow_only_when_opened() {
        let plain = HistoryRow {
            received: 5,
            sent: 3,
            opened: 0,
        };
        assert_eq!(plain.encode().len(), 16);
        let opened = HistoryRow { opened: 2, ..plain };
        assert_eq!(opened.encode().len(), 24);
        for row in [plain, opened] {
            assert_eq!(HistoryRow::decode(&row.encode()).unwrap(), row);
        }
        assert!(HistoryRow::decode(&[0; 20]).is_err());
    }
}
