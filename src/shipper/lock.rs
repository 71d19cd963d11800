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

/// Tries once to take the lock; never waits.
pub fn try_take(work_dir: &Path) -> io::Result<Outcome> {
    fs::create_dir_all(work_dir)?;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(work_dir))?;
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
        let Outcome::Held(first) = try_take(&dir).unwrap() else {
            panic!("the first try must win")
        };
        match try_take(&dir).unwrap() {
            Outcome::Busy { holder } => assert_eq!(holder, Some(std::process::id())),
            Outcome::Held(_) => panic!("a second holder while the first holds the lock"),
        }
        drop(first);
        assert!(matches!(try_take(&dir).unwrap(), Outcome::Held(_)));
        let m = busy_message(Some(42), std::time::Duration::from_secs(2));
        assert!(m.starts_with("another process (pid 42) is replicating this database"));
        let _ = fs::remove_dir_all(&dir);
    }
}
