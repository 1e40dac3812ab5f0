//! A loser tree: which of k sorted inputs holds the least next item, found
//! again after the winner moves on with one comparison per level (log2 k),
//! where a binary heap takes about two per level to pop and more to push.
//! The run-file merge reads every row of a bulk run's largest families
//! through it.

/// The players are numbered 0..k; the tree keeps no keys, only who lost
/// where, and asks the caller's `beats(a, b)` (a's item comes before b's)
/// whenever it plays a match. `beats` must be a strict total order over
/// the players: break ties by player number.
pub(super) struct LoserTree {
    /// `[0]`: the winner; `[1..k]`: the loser of the match at each inner
    /// node. Player i sits at leaf `k + i`; node n's parent is n / 2.
    nodes: Vec<usize>,
}

impl LoserTree {
    /// Plays every match once. `players` must be at least 1.
    pub fn new(players: usize, beats: impl Fn(usize, usize) -> bool) -> LoserTree {
        assert!(players > 0, "a tournament of no players");
        // Winners of each subtree, leaves included, bottom up.
        let mut winners = vec![0; 2 * players];
        let mut nodes = vec![0; players];
        for (i, w) in winners[players..].iter_mut().enumerate() {
            *w = i;
        }
        for n in (1..players).rev() {
            let (a, b) = (winners[2 * n], winners[2 * n + 1]);
            let (win, lose) = if beats(b, a) { (b, a) } else { (a, b) };
            winners[n] = win;
            nodes[n] = lose;
        }
        // One player: its leaf is node 1, the root.
        nodes[0] = winners[1];
        LoserTree { nodes }
    }

    pub fn winner(&self) -> usize {
        self.nodes[0]
    }

    /// Plays `player`'s way back up after its item changed (the winner,
    /// moved on to its next item, or run out).
    pub fn replay(&mut self, player: usize, beats: impl Fn(usize, usize) -> bool) {
        let mut winner = player;
        let mut n = (self.nodes.len() + player) / 2;
        while n > 0 {
            if beats(self.nodes[n], winner) {
                std::mem::swap(&mut self.nodes[n], &mut winner);
            }
            n /= 2;
        }
        self.nodes[0] = winner;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Merges sorted lists through the tree, as the run-file merge does.
    fn merge(lists: &[Vec<u32>]) -> Vec<u32> {
        let mut at = vec![0; lists.len()];
        let item = |at: &[usize], p: usize| lists[p].get(at[p]).copied();
        // Run-out players lose to every other; ties go to the lower number.
        let beats = |at: &[usize], a: usize, b: usize| match (item(at, a), item(at, b)) {
            (Some(x), Some(y)) => (x, a) < (y, b),
            (x, y) => x.is_some() || (y.is_none() && a < b),
        };
        let mut tree = LoserTree::new(lists.len(), |a, b| beats(&at, a, b));
        let mut out = Vec::new();
        while let Some(x) = item(&at, tree.winner()) {
            out.push(x);
            let w = tree.winner();
            at[w] += 1;
            tree.replay(w, |a, b| beats(&at, a, b));
        }
        out
    }

    #[test]
    fn merges_any_number_of_lists_in_order() {
        // splitmix64, for list lengths and items.
        let mut x = 11u64;
        let mut next = move || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        // Powers of two and not, one list, empty lists among full ones.
        for players in [1, 2, 3, 5, 8, 13, 64, 100] {
            let lists: Vec<Vec<u32>> = (0..players)
                .map(|_| {
                    let mut l: Vec<u32> = (0..next() % 50).map(|_| (next() % 200) as u32).collect();
                    l.sort_unstable();
                    l
                })
                .collect();
            let mut all: Vec<u32> = lists.concat();
            all.sort_unstable();
            assert_eq!(merge(&lists), all, "{players} lists");
        }
    }
}
