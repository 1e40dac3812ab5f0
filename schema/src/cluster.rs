//! Cluster rows: `cluster_of` (address → cluster key), `cluster_members`
//! (key, address), `cluster_stats`, `cluster_history` (key, tx → summed
//! `HistoryRow`) and `cluster_rank`, all for clusters of two or more
//! addresses: a lone address has no cluster rows. And `cluster_undo`: per
//! block, the rows its clustering changed as they were before.

use crate::codec::{Codec, Dec, RowError};
use crate::ids::{ClusterId, ClusterKey};

/// `cluster_stats`, keyed by cluster key (a lone address's figures are its
/// own `addr_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
    /// The id callers know the cluster by: its oldest address's number.
    pub id: ClusterId,
    /// Addresses.
    pub size: u64,
    /// Distinct transactions touching any member.
    pub tx_count: u64,
    pub received: u64,
    pub sent: u64,
    pub first_seen: u32,
    pub last_seen: u32,
}

impl ClusterStats {
    pub fn balance(&self) -> u64 {
        self.received - self.sent
    }

    /// Adds one transaction of the cluster at `height`.
    pub fn add_tx(&mut self, height: u32, received: u64, sent: u64) {
        self.first_seen = if self.tx_count == 0 {
            height
        } else {
            self.first_seen.min(height)
        };
        self.last_seen = self.last_seen.max(height);
        self.tx_count += 1;
        self.received += received;
        self.sent += sent;
    }
}

impl Codec for ClusterStats {
    type Bytes = [u8; 48];

    fn encode(&self) -> [u8; 48] {
        let mut v = [0u8; 48];
        for (i, n) in [
            self.id.0,
            self.size,
            self.tx_count,
            self.received,
            self.sent,
        ]
        .into_iter()
        .enumerate()
        {
            v[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        v[40..44].copy_from_slice(&self.first_seen.to_be_bytes());
        v[44..48].copy_from_slice(&self.last_seen.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<ClusterStats, RowError> {
        Dec::all("cluster_stats", b, |d| {
            Ok(ClusterStats {
                id: ClusterId(d.u64()?),
                size: d.u64()?,
                tx_count: d.u64()?,
                received: d.u64()?,
                sent: d.u64()?,
                first_seen: d.u32()?,
                last_seen: d.u32()?,
            })
        })
    }
}

/// What `cluster_rank` orders clusters by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    Size = 1,
    Balance = 2,
}

impl Rank {
    fn from_u8(b: u8) -> Option<Rank> {
        [Rank::Size, Rank::Balance]
            .into_iter()
            .find(|r| *r as u8 == b)
    }
}

/// `cluster_rank` key: ranking · value · cluster key, with an empty value.
/// Read backwards from the end of a ranking for the largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankKey {
    pub rank: Rank,
    pub value: u64,
    pub cluster: ClusterKey,
}

impl RankKey {
    /// Where `stats` places `cluster` in `rank`.
    pub fn new(rank: Rank, stats: &ClusterStats, cluster: ClusterKey) -> RankKey {
        let value = match rank {
            Rank::Size => stats.size,
            Rank::Balance => stats.balance(),
        };
        RankKey {
            rank,
            value,
            cluster,
        }
    }

    /// The key past every key of `rank`: a backward scan starts here.
    pub fn end_of(rank: Rank) -> RankKey {
        RankKey {
            rank,
            value: u64::MAX,
            cluster: ClusterKey(u64::MAX),
        }
    }
}

impl Codec for RankKey {
    type Bytes = [u8; 17];

    fn encode(&self) -> [u8; 17] {
        let mut k = [0u8; 17];
        k[0] = self.rank as u8;
        k[1..9].copy_from_slice(&self.value.to_be_bytes());
        k[9..].copy_from_slice(&self.cluster.0.to_be_bytes());
        k
    }

    fn decode(b: &[u8]) -> Result<RankKey, RowError> {
        Dec::all("cluster_rank key", b, |d| {
            Ok(RankKey {
                rank: Rank::from_u8(d.u8()?).ok_or_else(|| d.err())?,
                value: d.u64()?,
                cluster: ClusterKey(d.u64()?),
            })
        })
    }
}

/// A cluster family, as an undo record names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClusterFamily {
    Of = 1,
    Members = 2,
    Stats = 3,
    History = 4,
    Rank = 5,
}

impl ClusterFamily {
    const ALL: [ClusterFamily; 5] = [
        ClusterFamily::Of,
        ClusterFamily::Members,
        ClusterFamily::Stats,
        ClusterFamily::History,
        ClusterFamily::Rank,
    ];

    fn from_u8(b: u8) -> Option<ClusterFamily> {
        ClusterFamily::ALL.into_iter().find(|f| *f as u8 == b)
    }
}

/// A cluster row as it was before a block's clustering wrote it: its
/// family, its key's bytes, and its value's (None: there was no row).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Before {
    pub family: ClusterFamily,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// `cluster_undo`: every cluster row one block's clustering wrote, as it
/// was before. Putting each back (deleting those that were absent) undoes
/// the block's merges and additions exactly, whatever their size.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UndoRecord {
    pub rows: Vec<Before>,
}

/// Marks a row that was absent: longer than any cluster value.
const ABSENT: u16 = u16::MAX;

impl Codec for UndoRecord {
    type Bytes = Vec<u8>;

    /// Per row: family (1 byte), key length (1), key, value length (2,
    /// `ABSENT` when there was no row), value.
    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for row in &self.rows {
            v.push(row.family as u8);
            v.push(u8::try_from(row.key.len()).expect("cluster keys are short"));
            v.extend_from_slice(&row.key);
            match &row.value {
                Some(value) => {
                    let len = u16::try_from(value.len()).expect("cluster values are short");
                    v.extend_from_slice(&len.to_be_bytes());
                    v.extend_from_slice(value);
                }
                None => v.extend_from_slice(&ABSENT.to_be_bytes()),
            }
        }
        v
    }

    fn decode(b: &[u8]) -> Result<UndoRecord, RowError> {
        Dec::all("cluster_undo", b, |d| {
            let mut rows = Vec::new();
            while !d.is_empty() {
                let family = ClusterFamily::from_u8(d.u8()?).ok_or_else(|| d.err())?;
                let key_len = d.u8()?;
                let key = d.bytes(usize::from(key_len))?.to_vec();
                let value = match u16::from_be_bytes(d.take()?) {
                    ABSENT => None,
                    len => Some(d.bytes(usize::from(len))?.to_vec()),
                };
                rows.push(Before { family, key, value });
            }
            Ok(UndoRecord { rows })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip_and_rank_keys_sort_by_value() {
        let mut s = ClusterStats {
            size: 3,
            ..Default::default()
        };
        s.add_tx(10, 500, 0);
        s.add_tx(7, 0, 200);
        assert_eq!(
            (s.first_seen, s.last_seen, s.tx_count, s.balance()),
            (7, 10, 2, 300)
        );
        assert_eq!(ClusterStats::decode(&s.encode()).unwrap(), s);
        fn key(rank: Rank, stats: &ClusterStats, c: u64) -> [u8; 17] {
            RankKey::new(rank, stats, ClusterKey(c)).encode()
        }
        let small = key(Rank::Size, &s, 99);
        let big = key(Rank::Size, &ClusterStats { size: 300, ..s }, 1);
        assert!(small < big);
        assert!(key(Rank::Size, &s, 1) < key(Rank::Balance, &s, 1));
        assert!(big < RankKey::end_of(Rank::Size).encode());
        let k = RankKey::new(Rank::Balance, &s, ClusterKey(5));
        assert_eq!(RankKey::decode(&k.encode()).unwrap(), k);
        assert!(RankKey::decode(&[9; 17]).is_err());
    }

    #[test]
    fn undo_records_round_trip_and_refuse_a_cut_row() {
        let record = UndoRecord {
            rows: vec![
                Before {
                    family: ClusterFamily::Of,
                    key: vec![0, 0, 0, 0, 0, 0, 0, 7],
                    value: None,
                },
                Before {
                    family: ClusterFamily::Members,
                    key: vec![1; 16],
                    value: Some(Vec::new()),
                },
                Before {
                    family: ClusterFamily::Stats,
                    key: vec![2; 8],
                    value: Some(ClusterStats::default().encode().to_vec()),
                },
            ],
        };
        let bytes = record.encode();
        assert_eq!(UndoRecord::decode(&bytes).unwrap(), record);
        assert!(UndoRecord::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(UndoRecord::decode(&[9, 0, 0xff, 0xff]).is_err());
    }
}
