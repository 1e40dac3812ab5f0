//! A follower's scratch directory: RocksDB's secondary instance keeps its
//! info log there. A server that is killed never removes it, so each holds
//! a lock for as long as its process lives, and a follower opening finds
//! and removes the directories whose lock is free. A lock, not a process
//! id: servers in other containers may share the temporary directory.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use tempfile::TempDir;

const PREFIX: &str = "satflow-follower-";
const LOCK: &str = "lock";
/// A directory changed this recently is left alone: its follower may not
/// have taken its lock yet.
const GRACE: Duration = Duration::from_secs(60);

/// A follower's directory, removed when dropped (or by a later follower,
/// once its process is gone).
pub struct FollowerDir {
    dir: TempDir,
    _lock: File,
}

impl FollowerDir {
    pub fn create() -> Result<FollowerDir> {
        let parent = std::env::temp_dir();
        remove_abandoned(&parent);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&parent)
            .with_context(|| {
                format!(
                    "creating a follower's scratch directory in {}",
                    parent.display()
                )
            })?;
        let path = dir.path().join(LOCK);
        let lock = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        lock.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(FollowerDir { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Removes the follower directories in `parent` that no live process
/// holds. Best effort: what cannot be read or removed is left.
fn remove_abandoned(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .map_or(true, |t| t.elapsed().map_or(true, |age| age < GRACE));
        let dir = entry.path();
        // No lock file: its process died before taking it.
        let held = File::open(dir.join(LOCK))
            .is_ok_and(|lock| matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
        if !young && !held {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_followers_directory_stays_and_an_abandoned_one_goes() {
        let parent = tempfile::tempdir().unwrap();
        let live = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(parent.path())
            .unwrap();
        let lock = File::create(live.path().join(LOCK)).unwrap();
        lock.lock().unwrap();
        let abandoned = parent.path().join(format!("{PREFIX}gone"));
        std::fs::create_dir(&abandoned).unwrap();
        File::create(abandoned.join(LOCK)).unwrap();
        std::fs::write(abandoned.join("LOG"), b"log").unwrap();
        let other = parent.path().join("someone-else");
        std::fs::create_dir(&other).unwrap();
        let unlocked = parent.path().join(format!("{PREFIX}unlocked"));
        std::fs::create_dir(&unlocked).unwrap();
        let young = parent.path().join(format!("{PREFIX}young"));
        std::fs::create_dir(&young).unwrap();
        let old = std::time::SystemTime::now() - 2 * GRACE;
        for dir in [live.path(), &abandoned, &other, &unlocked] {
            File::open(dir).unwrap().set_modified(old).unwrap();
        }

        remove_abandoned(parent.path());
        assert!(live.path().exists());
        assert!(!abandoned.exists());
        assert!(!unlocked.exists());
        assert!(young.exists());
        assert!(other.exists());
        drop(lock);
        remove_abandoned(parent.path());
        assert!(!live.path().exists());
    }
}
