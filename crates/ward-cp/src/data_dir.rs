//! The data directory's lock: one control plane per directory, held for the process's
//! lifetime, so that two processes never write the same SQLite file.

use std::{
    fs::File,
    io::{Read, Seek, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// Name of the lock file inside the data directory; it holds the holder's pid.
const LOCK_FILE: &str = "lock";

/// An exclusive lock on a data directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: Flock<File>,
}

/// Why the data directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("--data-dir {dir}: is in use by process {pid}; stop it first or give another --data-dir")]
    InUse {
        /// The directory.
        dir: String,
        /// The holder's pid, as its lock file says (`unknown` when it cannot be read).
        pid: String,
    },
    /// The lock file cannot be opened, locked or written.
    #[error("--data-dir {dir}: cannot lock {LOCK_FILE}: {source}")]
    Io {
        /// The directory.
        dir: String,
        /// What failed.
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Locks `dir` (which must exist) and writes this process's pid into its lock file.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let io = |source: std::io::Error| LockError::Io { dir: dir.display().to_string(), source };
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let pid = if pid.is_empty() { "unknown".to_string() } else { pid.to_string() };
                return Err(LockError::InUse { dir: dir.display().to_string(), pid });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap().trim(), pid);
        // flock locks belong to the open file, so a second open in this process conflicts too.
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::InUse { pid: holder, .. }) => assert_eq!(holder, pid),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
