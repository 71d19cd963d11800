//! Whether this process may write the replica now. Two checks, in order: the local writer lock
//! (`lock.rs`: one process per database on this machine) and the replica lease (`lease.rs`:
//! one walship per replica path, across hosts). A process that fails either stays out of the
//! replica entirely — it uploads, spools and compacts nothing, reads nothing from the WAL (the
//! app keeps working), says why once in its log and in its status, and tries again later. When
//! it gets in (the other process exited, the lease was released or expired) it starts from
//! scratch: a fresh view of the replica, and the usual first-open logic (resume only when the
//! replica provably matches the database, else a snapshot as the next TXID).
//!
//! Owns the lock, the lease and the "writing" state. Never sleeps and never waits for the lock.

use std::time::{Duration, Instant};

use super::lease::{self, Ensured, Lease, LeaseError};
use super::lock::{self, LocalLock, Outcome};
use super::Shipper;
use crate::clock::now_ms;
use crate::storage::{Storage, StorageError};

/// How often a process that does not hold the local lock tries again.
pub(super) const LOCK_RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub(super) struct Gate {
    lock: Option<LocalLock>,
    lease: Option<Lease>,
    /// Why this process may not write the replica now, if it may not.
    blocked: Option<String>,
    next_try: Option<Instant>,
    /// This process writes the replica (lock and lease held, its view of the replica fresh).
    writing: bool,
    /// Blocked because another process or host is the replica's writer (not by a failure).
    other_writer: bool,
    /// Writing, but the lease expired and could not be renewed (storage unreachable): batches
    /// go to the spool, nothing is uploaded until a renewal proves the lease is still ours.
    paused: bool,
}

impl Gate {
    /// `lease`: `None` (or a zero TTL) replicates without a lease.
    pub(super) fn new(lease: Option<lease::Settings>) -> Gate {
        Gate {
            lease: lease
                .filter(|s| !s.ttl.is_zero())
                .map(|s| Lease::new(s, lease::Owner::this_process())),
            ..Gate::default()
        }
    }

    pub(super) fn holds_lock(&self) -> bool {
        self.lock.is_some()
    }

    pub(super) fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    pub(super) fn paused(&self) -> bool {
        self.paused
    }

    /// Another process or host writes the replica: this one has nothing to ship.
    pub(super) fn other_writer(&self) -> bool {
        self.other_writer && !self.writing
    }

    /// When the gate next needs the thread: a retry while blocked, a lease renewal while
    /// writing.
    pub(super) fn next_due(&self) -> Option<Instant> {
        if self.blocked.is_some() {
            return self.next_try;
        }
        let due = self.lease.as_ref()?.renew_due_ms()?;
        let wait = (due - now_ms()).max(0) as u64;
        Some(Instant::now() + Duration::from_millis(wait))
    }
}

impl Shipper {
    /// True when this process may write the replica now: takes the local lock and takes or
    /// renews the lease as needed (quick, non-blocking checks; a lease renewal is one PUT every
    /// `lease-renew-interval`). False: stay out of the replica, and try again at `retry_at`.
    /// `force` (flush, close) tries at once instead of waiting for the next scheduled try.
    pub(super) fn may_write(&mut self, force: bool) -> bool {
        if !force
            && (self.gate.blocked.is_some() || self.gate.paused)
            && self.gate.next_try.is_some_and(|t| Instant::now() < t)
        {
            return false;
        }
        if self.gate.lock.is_none() {
            match lock::try_take(&self.s.work_dir, std::path::Path::new(&self.s.db_path)) {
                Ok(Outcome::Held(l)) => self.gate.lock = Some(l),
                Ok(Outcome::Busy { holder }) => {
                    return self.block(lock::busy_message(holder, LOCK_RETRY), LOCK_RETRY, true)
                }
                Err(e) => {
                    let why = format!(
                        "cannot take the writer lock {}: {e} (check that the database's directory is writable); not shipping",
                        lock::lock_path(&self.s.work_dir).display()
                    );
                    return self.block(why, LOCK_RETRY, false);
                }
            }
        }
        let mut taken = false;
        if let Some(l) = self.gate.lease.as_mut() {
            match l.ensure(&self.storage, now_ms()) {
                Ok(Ensured::Kept) => {}
                Ok(Ensured::Taken) => taken = true,
                Err(LeaseError::Storage {
                    source: StorageError::Unsupported { .. },
                    ..
                }) => {
                    log::warn!(
                        "{}: {} cannot hold a lease; replicating without one",
                        self.s.db_path,
                        self.storage.describe()
                    );
                    self.gate.lease = None;
                }
                Err(e @ LeaseError::Storage { .. }) if self.gate.writing => {
                    return self.pause(e.to_string());
                }
                Err(e) => {
                    let retry = match &e {
                        LeaseError::HeldByOther {
                            expires_ms,
                            retry_s,
                            ..
                        } => {
                            let to_expiry = (*expires_ms - now_ms()).max(0) as u64 + 50;
                            Duration::from_millis(to_expiry).min(Duration::from_secs(*retry_s))
                        }
                        _ => self.backoff.max(Duration::from_secs(1)),
                    };
                    let other = matches!(e, LeaseError::HeldByOther { .. });
                    if !other {
                        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                    }
                    return self.block(e.to_string(), retry, other);
                }
            }
        }
        if !self.gate.writing || taken {
            self.start_writing();
        } else if std::mem::take(&mut self.gate.paused) {
            self.gate.next_try = None;
            self.retry_at = None;
        }
        true
    }

    /// Keeps the replica position and batches (spooled) while the lease cannot be confirmed.
    fn pause(&mut self, why: String) -> bool {
        self.gate.paused = true;
        let retry = self.backoff.max(Duration::from_secs(1));
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        self.gate.next_try = Some(Instant::now() + retry);
        self.retry_at = self.gate.next_try;
        self.set_error(Some(why));
        false
    }

    fn block(&mut self, why: String, retry: Duration, other_writer: bool) -> bool {
        self.gate.other_writer = other_writer;
        if self.gate.writing {
            self.stop_writing();
        }
        self.gate.next_try = Some(Instant::now() + retry);
        self.retry_at = self.gate.next_try;
        self.gate.blocked = Some(why.clone());
        if other_writer {
            // Expected, not a failure (a second process on the same database, a child of the
            // app): said once at info level, so it never reaches stderr under a `warn` level,
            // where hosts such as Tcl's `exec` take any output as an error.
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            let state = |m: &str| m.replace(|c: char| c.is_ascii_digit(), "#");
            if st.last_error.as_deref().map(state) != Some(state(&why)) {
                log::info!("{}: {why}", self.s.db_path);
            }
            st.last_error = Some(why);
            drop(st);
            self.publish_status(true, true);
            return false;
        }
        // Logged once per state (messages differing only in numbers are one state).
        self.set_error(Some(why));
        false
    }

    /// This process just became the replica's writer: nothing it knew about the replica is
    /// trusted (another writer may have changed it), so the position is established anew.
    fn start_writing(&mut self) {
        let was_blocked = self.gate.blocked.take().is_some();
        if self.gate.writing {
            self.stop_writing(); // a lease taken back: someone else may have written meanwhile
        }
        self.gate.writing = true;
        self.gate.paused = false;
        self.gate.next_try = None;
        self.retry_at = None;
        self.storage.reset();
        self.spooled = self.spool.files().len();
        self.publish_spool();
        if self.need_snapshot.is_none() {
            self.need_snapshot = Some("this process became the replica's writer".into());
        }
        if was_blocked {
            log::info!(
                "{}: this process now replicates this database (to {}); a snapshot is taken unless the replica provably matches it",
                self.s.db_path,
                self.storage.describe()
            );
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_error = None;
        }
    }

    fn stop_writing(&mut self) {
        self.gate.writing = false;
        self.gate.paused = false;
        self.replica = None;
        self.shared.tail().stop();
        self.batch_started = None;
        self.need_snapshot = Some("this process stopped being the replica's writer".into());
    }

    /// Clean close: give the lease back so another walship can take over at once, and the
    /// local lock (dropped).
    pub(super) fn release_writer(&mut self) {
        if let Some(l) = self.gate.lease.as_mut() {
            if self.gate.writing {
                l.release(&self.storage);
            } else {
                l.forget();
            }
        }
        self.gate.writing = false;
        self.gate.lock = None;
    }

    /// Before the spool is drained by a writer that just (re)started: spooled files at or
    /// below the replica's newest TXID were uploaded already (a crash between upload and
    /// removal) or belong to a history another writer replaced; files that would leave a gap
    /// after it cannot be replayed either. Both are removed; the snapshot that follows holds
    /// their changes (they are in the database).
    pub(super) fn drop_superseded_spool(&mut self) -> Result<(), String> {
        let files = self.spool.files();
        if files.is_empty() {
            return Ok(());
        }
        let mut tail = 0;
        for level in 0..=crate::storage::SNAPSHOT_LEVEL {
            for f in self.storage.list(level).map_err(|e| e.to_string())? {
                tail = tail.max(f.max_txid);
            }
        }
        let continues = files.iter().find(|f| f.0 > tail).map(|f| f.0) == Some(tail + 1);
        let stale: Vec<_> = files
            .iter()
            .filter(|f| f.0 <= tail || !continues)
            .map(|f| f.2.clone())
            .collect();
        if !stale.is_empty() {
            log::warn!(
                "{}: removing {} spooled file(s) that no longer continue the replica (it is at TXID {tail:016x}); a snapshot covers their changes",
                self.s.db_path,
                stale.len()
            );
            self.spool.discard(&stale);
            self.spooled = self.spool.files().len();
            self.publish_spool();
        }
        Ok(())
    }
}
