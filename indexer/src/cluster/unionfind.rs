//! Union-find over dense ids in a memory-mapped scratch file: the parent
//! array of a mainnet-sized chain (~2 billion addresses, 8 GB as u32s) is
//! paged by the OS rather than held in the heap, so resident memory stays
//! what the page cache can spare. While a bulk run finds links, their sets
//! grow with the addresses on the heap instead (`Forest`, within the bulk
//! maps' budget), and a whole build takes them on.
//!
//! Roots are always the lowest id of their set (a larger root is linked
//! under a smaller one), which is what makes cluster ids stable: merging
//! newer addresses into an old cluster keeps the old cluster's id.

use std::path::Path;

use anyhow::{bail, Context, Result};
use memmap2::MmapMut;

/// Names of scratch files, so that a killed build's can be found.
pub const SCRATCH_PREFIX: &str = "cluster-scratch-";

/// A `u32` array in a scratch file, deleted with the value.
pub struct MappedArray {
    map: MmapMut,
    len: usize,
    _file: tempfile::NamedTempFile,
}

impl MappedArray {
    pub fn zeroed(dir: &Path, len: usize) -> Result<MappedArray> {
        let file = tempfile::Builder::new()
            .prefix(SCRATCH_PREFIX)
            .tempfile_in(dir)
            .with_context(|| format!("creating a scratch file in {}", dir.display()))?;
        let bytes = (len.max(1) * 4) as u64;
        file.as_file()
            .set_len(bytes)
            .with_context(|| format!("sizing scratch file to {bytes} bytes"))?;
        // SAFETY: the file is ours alone (a fresh temp file), and lives as
        // long as the map.
        let map = unsafe { MmapMut::map_mut(file.as_file()) }.context("mapping scratch file")?;
        Ok(MappedArray {
            map,
            len,
            _file: file,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get(&self, i: usize) -> u32 {
        u32::from_ne_bytes(self.map[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
    }

    pub fn set(&mut self, i: usize, v: u32) {
        self.map[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }

    /// Entry `i` of the array read as u64s (slots 2i and 2i + 1).
    pub fn get_u64(&self, i: usize) -> u64 {
        u64::from(self.get(2 * i)) | u64::from(self.get(2 * i + 1)) << 32
    }

    pub fn set_u64(&mut self, i: usize, v: u64) {
        self.set(2 * i, v as u32);
        self.set(2 * i + 1, (v >> 32) as u32);
    }
}

/// Where a union-find keeps its parents, one `u32` per id.
pub trait Parents {
    fn get(&self, i: usize) -> u32;
    fn set(&mut self, i: usize, v: u32);
    fn len(&self) -> usize;
}

impl Parents for MappedArray {
    fn get(&self, i: usize) -> u32 {
        MappedArray::get(self, i)
    }

    fn set(&mut self, i: usize, v: u32) {
        MappedArray::set(self, i, v)
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl Parents for Vec<u32> {
    fn get(&self, i: usize) -> u32 {
        self[i]
    }

    fn set(&mut self, i: usize, v: u32) {
        self[i] = v
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Sets of ids, in a scratch file (a whole build) or on the heap
/// (`Forest`).
pub struct UnionFind<P: Parents = MappedArray> {
    parent: P,
}

/// The sets a bulk run's epochs link as it goes, over the addresses
/// numbered so far: 4 bytes an address, where the pairs themselves cost 16
/// bytes a link (several links an address).
pub type Forest = UnionFind<Vec<u32>>;

impl UnionFind {
    /// `n` singleton sets, in a scratch file under `dir`.
    pub fn new(dir: &Path, n: u64) -> Result<UnionFind> {
        fits_u32(n)?;
        let mut parent = MappedArray::zeroed(dir, n as usize)?;
        for i in 0..n as usize {
            parent.set(i, i as u32);
        }
        Ok(UnionFind { parent })
    }

    /// Takes on the sets of `forest`, whose ids must be among these.
    pub fn adopt(&mut self, forest: &Forest) -> Result<()> {
        if forest.len() > self.len() {
            bail!(
                "links found over {} addresses, for a build of {}",
                forest.len(),
                self.len()
            );
        }
        for (i, &p) in forest.parent.iter().enumerate() {
            self.parent.set(i, p);
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
}

impl Forest {
    pub fn empty() -> Forest {
        UnionFind { parent: Vec::new() }
    }

    /// Singletons up to id `n`, for the addresses numbered since. Grown
    /// by an eighth at a time, not doubled: the forest counts against the
    /// bulk maps' budget.
    pub fn grow(&mut self, n: u64) -> Result<()> {
        fits_u32(n)?;
        let (from, n) = (self.parent.len(), n as usize);
        if n > self.parent.capacity() {
            self.parent.reserve_exact((n - from).max(from / 8));
        }
        self.parent.extend(from as u32..n as u32);
        Ok(())
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.parent.capacity() * 4
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

impl<P: Parents> UnionFind<P> {
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

    pub fn len(&self) -> u64 {
        self.parent.len() as u64
    }
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
    fn a_forest_grown_as_ids_come_is_adopted_by_a_whole_build() {
        let dir = tempfile::tempdir().unwrap();
        let mut forest = Forest::empty();
        forest.grow(4).unwrap();
        forest.union(3, 1);
        forest.grow(7).unwrap();
        forest.union(6, 3);
        forest.union(5, 4);
        // Ids the forest never saw stay singletons until united.
        let mut uf = UnionFind::new(dir.path(), 9).unwrap();
        uf.adopt(&forest).unwrap();
        uf.union(8, 4);
        let roots = uf.flatten();
        let all: Vec<u64> = (0..roots.len()).map(|x| roots.get(x)).collect();
        assert_eq!(all, [0, 1, 2, 1, 4, 4, 1, 7, 4]);
        assert!(UnionFind::new(dir.path(), 6)
            .unwrap()
            .adopt(&forest)
            .is_err());
        assert!(Forest::empty().grow(u64::from(u32::MAX) + 1).is_err());
    }
}
