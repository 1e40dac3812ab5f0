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
    /// What one tx's `history` row adds to its address's totals (the
    /// unspent count aside).
    pub fn of_tx(row: &HistoryRow) -> AddrStats {
        AddrStats {
            tx_count: 1,
            received: row.credited() as i64,
            sent: row.sent as i64,
            utxo_count: 0,
        }
    }

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
    type Bytes = Inline<30>;

    /// Varints, `opened` only when it is not zero: most rows are 4–6
    /// bytes (one amount, and a zero).
    fn encode(&self) -> Inline<30> {
        let mut v = Inline::new();
        v.varint(self.received);
        v.varint(self.sent);
        if self.opened != 0 {
            v.varint(self.opened);
        }
        v
    }

    fn decode(b: &[u8]) -> Result<HistoryRow, RowError> {
        Dec::all("history", b, |d| {
            let (received, sent) = (d.varint()?, d.varint()?);
            let opened = if d.is_empty() { 0 } else { d.varint()? };
            Ok(HistoryRow {
                received,
                sent,
                opened,
            })
        })
    }
}

impl Codec for AddrStats {
    type Bytes = Inline<40>;

    /// Zigzag varints: merge operands are deltas, and an undone block's
    /// are negative.
    fn encode(&self) -> Inline<40> {
        let mut v = Inline::new();
        for n in [self.tx_count, self.received, self.sent, self.utxo_count] {
            v.zigzag(n);
        }
        v
    }

    fn decode(b: &[u8]) -> Result<AddrStats, RowError> {
        Dec::all("addr_stats", b, |d| {
            Ok(AddrStats {
                tx_count: d.zigzag()?,
                received: d.zigzag()?,
                sent: d.zigzag()?,
                utxo_count: d.zigzag()?,
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
        // An undo's negative deltas take as few bytes as the deltas.
        assert_eq!(d.negated().encode().len(), d.encode().len());
        assert_eq!(
            AddrStats::decode(&d.negated().encode()).unwrap(),
            d.negated()
        );
        assert!(AddrStats::decode(&s.encode()[..3]).is_err());
    }

    #[test]
    fn history_rows_grow_only_when_opened() {
        let plain = HistoryRow {
            received: 5,
            sent: 3,
            opened: 0,
        };
        assert_eq!(plain.encode().len(), 2);
        let opened = HistoryRow { opened: 2, ..plain };
        assert_eq!(opened.encode().len(), 3);
        let fifty_btc = HistoryRow {
            received: 5_000_000_000,
            ..HistoryRow::default()
        };
        assert_eq!(fifty_btc.encode().len(), 6);
        for row in [plain, opened, fifty_btc] {
            assert_eq!(HistoryRow::decode(&row.encode()).unwrap(), row);
        }
        assert!(HistoryRow::decode(&[0; 20]).is_err());
    }
}
