//! Union-find over dense ids in a memory-mapped scratch file: the parent
//! array of a mainnet-sized chain (~2 billion addresses, 8 GB as u32s) is
//! paged by the OS rather than held in the heap, so resident memory stays
//! what the page cache can spare. A bulk run grows its sets with the
//! addresses as it finds links, and the whole build that follows goes on
//! with the same file rather than a copy.
//!
//! Roots are always the lowest id of their set (a larger root is linked
//! under a smaller one), which is what makes cluster ids stable: merging
//! newer addresses into an old cluster keeps the old cluster's id.

use std::path::Path;

use anyhow::{bail, Result};

use crate::scratch::MappedArray;

/// Prefix of the named scratch files (`runs`), so that a killed build's
/// can be found.
pub const SCRATCH_PREFIX: &str = "cluster-scratch-";

/// Sets of ids, in a scratch file.
pub struct UnionFind {
    parent: MappedArray,
}

impl UnionFind {
    /// `n` singleton sets, in a scratch file under `dir`.
    pub fn new(dir: &Path, n: u64) -> Result<UnionFind> {
        fits_u32(n)?;
        let mut sets = UnionFind {
            parent: MappedArray::zeroed(dir, 0)?,
        };
        sets.grow(n)?;
        Ok(sets)
    }

    /// Singletons up to id `n`, for the ids numbered since.
    pub fn grow(&mut self, n: u64) -> Result<()> {
        fits_u32(n)?;
        let from = self.parent.len();
        self.parent.grow(n as usize)?;
        for i in from..n as usize {
            self.parent.set(i, i as u32);
        }
        Ok(())
    }

    /// Points every id straight at its root, for passes that read roots
    /// on every worker.
    pub fn flatten(mut self) -> Roots {
        for x in 0..self.len() {
            let root = self.find(x);
            self.parent.set(x as usize, root as u32);
        }
        Roots {
            parent: self.parent,
        }
    }

    /// The root of `x`'s set, halving the path on the way.
    pub fn find(&mut self, x: u64) -> u64 {
        let mut x = x as usize;
        loop {
            let p = self.parent.get(x) as usize;
            if p == x {
                return x as u64;
            }
            let gp = self.parent.get(p);
            self.parent.set(x, gp);
            x = gp as usize;
        }
    }

    pub fn union(&mut self, a: u64, b: u64) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (low, high) = (ra.min(rb), ra.max(rb));
            self.parent.set(high as usize, low as u32);
        }
    }

    pub(crate) fn len(&self) -> u64 {
        self.parent.len() as u64
    }
}

fn fits_u32(n: u64) -> Result<()> {
    if n > u64::from(u32::MAX) {
        bail!(
            "{n} addresses: clustering holds address ids as u32, up to {}",
            u32::MAX
        );
    }
    Ok(())
}

/// Each id's root, read-only: a union-find whose paths are one step long.
pub struct Roots {
    parent: MappedArray,
}

impl Roots {
    pub fn get(&self, x: u64) -> u64 {
        u64::from(self.parent.get(x as usize))
    }

    pub fn len(&self) -> u64 {
        self.parent.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_the_lowest_member() {
        let dir = tempfile::tempdir().unwrap();
        let mut uf = UnionFind::new(dir.path(), 10).unwrap();
        uf.union(7, 9);
        uf.union(9, 3);
        uf.union(5, 6);
        assert_eq!([uf.find(7), uf.find(9), uf.find(3)], [3, 3, 3]);
        assert_eq!([uf.find(5), uf.find(6), uf.find(0)], [5, 5, 0]);
        uf.union(6, 9);
        assert_eq!(uf.find(5), 3);
        let roots = uf.flatten();
        let all: Vec<u64> = (0..roots.len()).map(|x| roots.get(x)).collect();
        assert_eq!(all, [0, 1, 2, 3, 4, 3, 3, 3, 8, 3]);
    }

    #[test]
    fn sets_grown_as_ids_come_keep_their_unions() {
        let dir = tempfile::tempdir().unwrap();
        let mut sets = UnionFind::new(dir.path(), 0).unwrap();
        sets.grow(4).unwrap();
        sets.union(3, 1);
        // Past the first mapping's room: mapped again, unions kept.
        sets.grow(7).unwrap();
        sets.union(6, 3);
        sets.union(5, 4);
        sets.grow(5_000).unwrap();
        sets.union(4_999, 4);
        // Ids never united stay singletons.
        let roots = sets.flatten();
        assert_eq!(roots.len(), 5_000);
        let all: Vec<u64> = (0..9).map(|x| roots.get(x)).collect();
        assert_eq!(all, [0, 1, 2, 1, 4, 4, 1, 7, 8]);
        assert_eq!(roots.get(4_999), 4);
        let mut sets = UnionFind::new(dir.path(), 0).unwrap();
        assert!(sets.grow(u64::from(u32::MAX) + 1).is_err());
    }
}
