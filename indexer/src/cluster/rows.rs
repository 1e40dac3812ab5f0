//! Rows of the cluster column families (layouts in `indexer/SCHEMA.md`).

use crate::schema::{key_pair, key_u64, Dec, RowError};

/// `cluster_stats`, keyed by cluster id, for clusters of two or more
/// addresses (a lone address's figures are its own `addr_stats`).
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
    pub fn encode(&self) -> [u8; 40] {
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

    pub fn decode(b: &[u8]) -> Result<ClusterStats, RowError> {
        let mut d = Dec::new("cluster_stats", b);
        let s = ClusterStats {
            size: d.u64()?,
            tx_count: d.u64()?,
            received: d.u64()?,
            sent: d.u64()?,
            first_seen: d.u32()?,
            last_seen: d.u32()?,
        };
        d.done()?;
        Ok(s)
    }

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

/// What `cluster_rank` orders clusters by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rank {
    Size = 1,
    Balance = 2,
}

/// `cluster_rank` key: kind · value · cluster id. Read backwards from the
/// end of a kind for the largest first.
pub fn rank_key(rank: Rank, stats: &ClusterStats, cluster: u64) -> [u8; 17] {
    let value = match rank {
        Rank::Size => stats.size,
        Rank::Balance => stats.balance(),
    };
    let mut k = [0u8; 17];
    k[0] = rank as u8;
    k[1..].copy_from_slice(&key_pair(value, cluster));
    k
}

/// A list of ids as one value (the dirty list).
pub fn encode_ids(ids: &[u64]) -> Vec<u8> {
    ids.iter().flat_map(|&i| key_u64(i)).collect()
}

pub fn decode_ids(b: &[u8]) -> Result<Vec<u64>, RowError> {
    if !b.len().is_multiple_of(8) {
        return Err(RowError {
            row: "cluster id list",
            len: b.len(),
        });
    }
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect())
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
        let small = rank_key(Rank::Size, &s, 99);
        let big = rank_key(Rank::Size, &ClusterStats { size: 300, ..s }, 1);
        assert!(small < big);
        assert!(rank_key(Rank::Size, &s, 1) < rank_key(Rank::Balance, &s, 1));
        assert_eq!(
            decode_ids(&encode_ids(&[1, u64::MAX])).unwrap(),
            [1, u64::MAX]
        );
    }
}
