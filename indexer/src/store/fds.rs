//! File descriptors: a reader holds every table file of the index open
//! (see `Store::open_with_cache`), a mainnet index has thousands, and the
//! usual soft limit is 1,024. The soft limit is raised to the hard one at
//! open, and a reader that would still run out says so before it starts.

use std::path::Path;

use anyhow::{bail, Result};

/// Descriptors kept free for everything that is not a table file: blk
/// files read by the writer, sockets of a server's callers, logs.
pub(super) const RESERVE: u64 = 512;

/// Raises this process's soft limit on open files to its hard limit;
/// returns the limit now in force.
pub(super) fn raise_limit() -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            bail!(
                "reading the open-file limit: {}",
                std::io::Error::last_os_error()
            );
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                ..lim
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// Fails, naming the limit, when the index at `path` has more table files
/// than `limit` leaves room for.
pub(super) fn check_room(path: &Path, limit: u64, handles: u64) -> Result<()> {
    let tables = table_files(path) * handles;
    if tables + RESERVE > limit {
        bail!(
            "{} has {} table files, and each of this process's {handles} reader(s) keeps each open, but it may open only {limit} files (RLIMIT_NOFILE, hard limit); raise it to at least {} (`ulimit -Hn` as root, or LimitNOFILE= in a systemd unit)",
            path.display(),
            tables / handles,
            tables + RESERVE
        );
    }
    Ok(())
}

/// The table files of the index at `path`: RocksDB keeps each open.
pub(super) fn table_files(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sst"))
        .count() as u64
}
