//! `_satflow_export.json`, the record of what an export directory holds:
//! each chain table's height partitions (with the hash of their last block,
//! how a later export notices a reorg), each snapshot table's files, and
//! the index tip they were exported from. Engines ignore files starting
//! with `_`; the manifest is replaced atomically after every partition, so
//! it never names a file that is not complete.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::files::FileEntry;

pub const FILE_NAME: &str = "_satflow_export.json";
/// Bumped when the layout of the directory or of a table changes.
pub const LAYOUT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub layout_version: u32,
    pub network: String,
    /// The first height exported.
    pub from: u32,
    /// A partition closes once its blocks hold this many bytes of blk data.
    pub partition_bytes: u64,
    /// The index tip at the last export.
    pub tip: Option<Tip>,
    /// Chain tables: partitions in height order, contiguous from `from`.
    pub partitions: BTreeMap<String, Vec<Partition>>,
    /// Tables rewritten whole: what they were last written from.
    pub snapshots: BTreeMap<String, Snapshot>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    pub height: u32,
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    pub height_from: u32,
    pub height_to: u32,
    /// Hash of block `height_to`: if the best chain no longer holds it, a
    /// reorg replaced this partition's blocks.
    pub last_hash: String,
    pub blk_bytes: u64,
    /// False for the last partition when it ended at the tip (or `--to`)
    /// before reaching `partition_bytes`: the next export rewrites it with
    /// the blocks that follow.
    pub complete: bool,
    pub files: Vec<FileEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What the rows reflect: for clusters the cluster tip, for labels a
    /// digest of the label rows. Unchanged, the table is not rewritten.
    pub source: String,
    pub files: Vec<FileEntry>,
}

impl Partition {
    /// The partition's directory under its table's, Hive-style so that
    /// engines read `height_from` as a column and prune on it.
    pub fn dir_name(height_from: u32) -> String {
        format!("height_from={height_from}")
    }
}

impl Manifest {
    /// The manifest of `out`, None when `out` holds no export yet.
    pub fn load(out: &Path) -> Result<Option<Manifest>> {
        let path = out.join(FILE_NAME);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a satflow export manifest", path.display()))?;
        if m.layout_version != LAYOUT_VERSION {
            bail!(
                "{} is an export of layout version {}, this satflow writes version {LAYOUT_VERSION}: export into a new --out",
                path.display(),
                m.layout_version
            );
        }
        Ok(Some(m))
    }

    /// Replaces the manifest atomically and durably.
    pub fn save(&self, out: &Path) -> Result<()> {
        let path = out.join(FILE_NAME);
        let tmp = out.join(format!("{FILE_NAME}.tmp"));
        let text = serde_json::to_string_pretty(self)?;
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::File::open(&tmp)?.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
        sync_dir(out)
    }
}

/// Makes renames and removals in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}
