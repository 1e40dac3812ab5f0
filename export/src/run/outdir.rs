//! The export directory's bookkeeping: one export at a time (the lock),
//! a staging area for what is being written, and reconciliation with the
//! index and the manifest at the start of a run.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use satflow_indexer::Store;
use satflow_schema::Height;

use crate::files::FileEntry;
use crate::manifest::{Manifest, Partition};
use crate::tables::Table;

/// Where partitions and snapshots are written before they are moved into
/// place: outside the table directories, so no engine reading a table
/// meets a half-written file (and `_` makes engines skip it).
pub(super) const STAGING: &str = "_staging";

const LOCK: &str = "_satflow_export.lock";

/// One export at a time per directory; the lock goes with the process.
pub(super) fn lock(out: &Path) -> Result<fs::File> {
    let path = out.join(LOCK);
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => {
            bail!("another satflow export is writing {}", out.display())
        }
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

/// A first export goes into an empty directory: cleaning up after an
/// interrupted run removes what the manifest does not name.
pub(super) fn refuse_foreign(out: &Path) -> Result<()> {
    for e in fs::read_dir(out).with_context(|| format!("listing {}", out.display()))? {
        let name = e?.file_name();
        if name != LOCK && name != STAGING {
            bail!(
                "{} holds files but no export manifest: export into an empty or new --out",
                out.display()
            );
        }
    }
    Ok(())
}

/// Drops, from the manifest and then from disk, every partition whose last
/// block left the best chain or whose files are missing (and all after it),
/// and removes whatever the manifest does not name (unfinished partitions
/// of an interrupted run). Returns how many height ranges were dropped.
pub(super) fn reconcile(store: &Store, out: &Path, m: &mut Manifest) -> Result<u64> {
    let mut dropped = BTreeSet::new();
    for (name, parts) in m.partitions.iter_mut() {
        let dir = out.join(name);
        let mut keep = 0;
        for p in parts.iter() {
            let on_chain = store
                .block(Height(p.height_to))?
                .is_some_and(|b| b.hash.to_string() == p.last_hash);
            let pdir = dir.join(Partition::dir_name(p.height_from));
            if !on_chain || !intact(&pdir, &p.files) {
                break;
            }
            keep += 1;
        }
        dropped.extend(parts.drain(keep..).map(|p| p.height_from));
    }
    // A snapshot with files missing is forgotten: its table's next export
    // rewrites it whole.
    m.snapshots
        .retain(|name, snap| intact(&out.join(name), &snap.files));
    m.save(out)?;

    let staging = out.join(STAGING);
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }

    for table in Table::ALL.into_iter().filter(|t| t.by_height()) {
        let dir = out.join(table.name());
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let named: Vec<String> = m
            .partitions
            .get(table.name())
            .into_iter()
            .flatten()
            .map(|p| Partition::dir_name(p.height_from))
            .collect();
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let name = e.file_name();
            let ours = name.to_string_lossy().starts_with("height_from=");
            if ours && !named.iter().any(|n| name == n.as_str()) {
                fs::remove_dir_all(e.path())
                    .with_context(|| format!("removing {}", e.path().display()))?;
            }
        }
    }
    Ok(dropped.len() as u64)
}

/// Whether every file is there with the size it was written with.
fn intact(dir: &Path, files: &[FileEntry]) -> bool {
    files
        .iter()
        .all(|f| fs::metadata(dir.join(&f.name)).is_ok_and(|meta| meta.len() == f.bytes))
}
