//! Cluster rows: `cluster_of` (address → cluster), `cluster_members`
//! (cluster, address), `cluster_stats`, `cluster_history` (cluster, tx →
//! summed `HistoryRow`) and `cluster_rank`, all for clusters of two or
//! more addresses: a lone address has no cluster rows.

use crate::codec::{Codec, Dec, RowError};
use crate::ids::ClusterId;

/// `cluster_stats`, keyed by cluster id (a lone address's figures are its
/// own `addr_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClusterStats {
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
    type Bytes = [u8; 40];

    fn encode(&self) -> [u8; 40] {
        let mut v = [0u8; 40];
        for (i, n) in [self.size, self.tx_count, self.received, self.sent]
            .into_iter()
            .enumerate()
        {
            v[i * 8..i * 8 + 8].copy_from_slice(&n.to_be_bytes());
        }
        v[32..36].copy_from_slice(&self.first_seen.to_be_bytes());
        v[36..40].copy_from_slice(&self.last_seen.to_be_bytes());
        v
    }

    fn decode(b: &[u8]) -> Result<ClusterStats, RowError> {
        Dec::all("cluster_stats", b, |d| {
            Ok(ClusterStats {
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

/// `cluster_rank` key: ranking · value · cluster id, with an empty value.
/// Read backwards from the end of a ranking for the largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RankKey {
    pub rank: Rank,
    pub value: u64,
    pub cluster: ClusterId,
}

impl RankKey {
    /// Where `stats` places `cluster` in `rank`.
    pub fn new(rank: Rank, stats: &ClusterStats, cluster: ClusterId) -> RankKey {
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
            cluster: ClusterId(u64::MAX),
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
                cluster: ClusterId(d.u64()?),
            })
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
            RankKey::new(rank, stats, ClusterId(c)).encode()
        }
        let small = key(Rank::Size, &s, 99);
        let big = key(Rank::Size, &ClusterStats { size: 300, ..s }, 1);
        assert!(small < big);
        assert!(key(Rank::Size, &s, 1) < key(Rank::Balance, &s, 1));
        assert!(big < RankKey::end_of(Rank::Size).encode());
        let k = RankKey::new(Rank::Balance, &s, ClusterId(5));
        assert_eq!(RankKey::decode(&k.encode()).unwrap(), k);
        assert!(RankKey::decode(&[9; 17]).is_err());
    }
}
