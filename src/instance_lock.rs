//! SQLite is single-instance, and that is enforced: a service on a SQLite file holds an
//! exclusive lock on `<database>.lock` beside it for as long as it runs, with its pid
//! written inside. A second service on the same file finds the lock taken and refuses to
//! start, naming the file and the holder's pid. The operating system drops the lock
//! when the holder exits, however it exits (`kill -9` included), so a stale lock file
//! never blocks a restart.
//!
//! Only the service takes it: `pack load`, `rule test` or `prune` may run beside it, as
//! SQLite's own locking keeps their writes safe.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The lock a running service holds on its SQLite database; released when dropped.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the SQLite database {database} is in use by another attune-sensor ({holder}; lock file {lock}). \
         SQLite supports one instance: stop that one, or use PostgreSQL to run several"
    )]
    Held {
        database: PathBuf,
        lock: PathBuf,
        holder: String,
    },
    #[error("cannot lock the SQLite database {database} (lock file {lock}): {source}")]
    Io {
        database: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The database file of a SQLite URL; `None` for an in-memory database, which no other
/// process can open.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    if !url.starts_with("sqlite:") || url.contains(":memory:") || url.contains("mode=memory") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    Some(options.get_filename().to_path_buf())
}

/// Takes the lock of `database` (the file needs not exist yet), or says who holds it.
pub fn acquire(database: &Path) -> Result<InstanceLock, LockError> {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let io = |source| LockError::Io {
        database: database.to_owned(),
        lock: lock.clone(),
        source,
    };
    if let Some(dir) = lock.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "pid unknown".to_owned(),
            };
            return Err(LockError::Held {
                database: database.to_owned(),
                lock,
                holder,
            });
        }
        Err(TryLockError::Error(error)) => return Err(io(error)),
    }
    // Ours now: the pid says who holds it to whoever is refused.
    file.set_len(0).map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    file.flush().map_err(io)?;
    Ok(InstanceLock {
        _file: file,
        path: lock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_file_and_memory_has_none() {
        assert_eq!(
            sqlite_file("sqlite:///var/lib/attune/a.db"),
            Some(PathBuf::from("/var/lib/attune/a.db"))
        );
        assert_eq!(
            sqlite_file("sqlite://data/a.db?mode=rwc"),
            Some(PathBuf::from("data/a.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://db/attune"), None);
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = dir.path().join("attune.db");
        let first = acquire(&database).expect("free");
        let refused = acquire(&database).expect_err("held").to_string();
        assert!(
            refused.contains(&database.display().to_string()),
            "{refused}"
        );
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        drop(first);
        acquire(&database).expect("free again once dropped");
    }
}
