//! The local writer lock: of the processes on this machine that open a database through
//! walship (a deploy overlap, a cron job next to the app), only the one holding an exclusive
//! `flock` on `.<db>-walship/lock` ships it; the file holds that process's pid, for the others'
//! messages. The lock goes with the process (exit, crash or kill), so a waiting process gets it
//! on its next try.
//!
//! Owns the lock file only. Never blocks (a non-blocking try), never touches the database or
//! the rest of the work directory. `flock` is per open file description: a second try from the
//! same process fails too, which is what one shipper per database per process needs.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held while this process may ship the database; dropping it releases the lock.
#[derive(Debug)]
pub struct LocalLock {
    _file: File,
}

/// What a try found.
#[derive(Debug)]
pub enum Outcome {
    Held(LocalLock),
    /// Another process holds it (its pid, when it has written it yet).
    Busy {
        holder: Option<u32>,
    },
}

/// `.<db>-walship/lock`.
pub fn lock_path(work_dir: &Path) -> PathBuf {
    work_dir.join("lock")
}

/// Where the lock lives when walship's directory cannot hold it (read-only, full): the system's
/// temporary directory, named by the database file's device and inode, which every process
/// opening that file agrees on.
pub fn fallback_path(db_path: &Path) -> io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(db_path)?;
    Ok(std::env::temp_dir().join(format!("walship-{:x}-{:x}.lock", m.dev(), m.ino())))
}

/// Tries once to take the lock in `.<db>-walship/`, or, when that directory cannot hold it, at
/// [`fallback_path`] (said once); never waits.
pub fn try_take(work_dir: &Path, db_path: &Path) -> io::Result<Outcome> {
    match try_take_at(&lock_path(work_dir)) {
        Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock) => {
            let alt = fallback_path(db_path)?;
            crate::logging::warn_once(&format!("lock {}", work_dir.display()), || {
                format!(
                    "{}: cannot hold the writer lock in {} ({e}); using {} instead. Make that directory writable",
                    db_path.display(),
                    work_dir.display(),
                    alt.display()
                )
            });
            try_take_at(&alt)
        }
        r => r,
    }
}

fn try_take_at(path: &Path) -> io::Result<Outcome> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    match f.try_lock() {
        Ok(()) => {
            f.set_len(0)?;
            f.rewind()?;
            f.write_all(format!("{}\n", std::process::id()).as_bytes())?;
            Ok(Outcome::Held(LocalLock { _file: f }))
        }
        Err(TryLockError::WouldBlock) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            Ok(Outcome::Busy {
                holder: s.trim().parse().ok(),
            })
        }
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// The line the process that does not hold the lock logs (once) and shows in its status.
pub fn busy_message(holder: Option<u32>, retry: std::time::Duration) -> String {
    let who = match holder {
        Some(pid) if pid == std::process::id() => {
            return format!(
                "an earlier shipper of this process (its last connection closed before \
                 replication finished) still holds the database; this one takes over when it \
                 exits (checking every {}s)",
                retry.as_secs().max(1)
            )
        }
        Some(pid) => format!("another process (pid {pid})"),
        None => "another process".to_string(),
    };
    format!(
        "{who} is replicating this database; this process will not ship until it exits \
         (it checks every {}s, then takes over with a snapshot if needed)",
        retry.as_secs().max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_pid_is_shown() {
        let dir = std::env::temp_dir().join(format!("walship-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let db = dir.with_extension("db");
        let Outcome::Held(first) = try_take(&dir, &db).unwrap() else {
            panic!("the first try must win")
        };
        match try_take(&dir, &db).unwrap() {
            Outcome::Busy { holder } => assert_eq!(holder, Some(std::process::id())),
            Outcome::Held(_) => panic!("a second holder while the first holds the lock"),
        }
        drop(first);
        assert!(matches!(try_take(&dir, &db).unwrap(), Outcome::Held(_)));
        let m = busy_message(Some(42), std::time::Duration::from_secs(2));
        assert!(m.starts_with("another process (pid 42) is replicating this database"));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_that_cannot_hold_the_lock_falls_back_to_one_named_by_the_file() {
        let base = std::env::temp_dir().join(format!("walship-lockfb-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).unwrap();
        let db = base.join("app.db");
        fs::write(&db, b"").unwrap();
        // A regular file where the directory should be: nothing can be created inside it.
        let work = base.join(".app.db-walship");
        fs::write(&work, b"not a directory").unwrap();
        let Outcome::Held(first) = try_take(&work, &db).unwrap() else {
            panic!("the fallback lock must be taken")
        };
        assert!(fallback_path(&db).unwrap().exists());
        // Everyone opening this file agrees on the fallback: a second try is refused.
        assert!(matches!(
            try_take(&work, &db).unwrap(),
            Outcome::Busy { .. }
        ));
        drop(first);
        let _ = fs::remove_file(fallback_path(&db).unwrap());
        let _ = fs::remove_dir_all(&base);
    }
}
