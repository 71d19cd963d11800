//! Registry: the process-wide table of databases opened through the walship VFS.
//!
//! Owns, per database, the shared capture state (all connections of the process share one, as
//! they share one WAL) and the shipper handle, and decides at first open whether a database is
//! replicated (a config entry names it) or merely served. Called from the VFS callbacks: a commit
//! is a notification (atomics, at most one wake-up per sync interval); the guards before a WAL
//! restart, truncation or deletion do local I/O only (`capture::Tail::guard`); nothing here
//! touches the network — except closing the last connection, which waits (bounded by
//! `shutdown-sync-timeout`) until what was committed is shipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use once_cell::sync::{Lazy, OnceCell};

use crate::capture::{Shared, Tail};
use crate::config::Config;
use crate::shipper::{self, Handle};
use crate::storage::Storage;
use crate::wal::ShmHeader;

pub struct Db {
    pub path: String,
    opens: Mutex<usize>,
    /// Capture state and the wal-index mapping, shared with the shipper.
    shared: Arc<Shared>,
    ship: Option<Handle>,
    shutdown_timeout: Duration,
}

/// The tail held across a guarded call (a WAL restart, truncation or deletion), so the shipper
/// cannot read between the guard and what follows it.
pub struct Guarded<'a>(Option<std::sync::MutexGuard<'a, Tail>>);

impl Guarded<'_> {
    /// No guard was needed for this call.
    pub fn none() -> Self {
        Guarded(None)
    }
}

static DBS: Lazy<Mutex<HashMap<String, Arc<Db>>>> = Lazy::new(|| Mutex::new(HashMap::new()));
static CONFIG: OnceCell<Option<Config>> = OnceCell::new();
/// Replica → the database that ships to it, for this process's life.
static CLAIMED: Lazy<Mutex<HashMap<String, String>>> = Lazy::new(Default::default);
/// Set when a configuration exists but could not be loaded (its error was logged).
static CONFIG_BROKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn config() -> Option<&'static Config> {
    CONFIG
        .get_or_init(|| match Config::discover() {
            Ok(Some(c)) => {
                crate::logging::configure(&c.logging);
                for w in &c.warnings {
                    log::warn!("{w}");
                }
                if let Some(addr) = &c.addr {
                    crate::metrics::http::start(addr);
                }
                Some(c)
            }
            Ok(None) => None,
            Err(e) => {
                log::error!("{e}; databases are served but NOT replicated until this is fixed");
                CONFIG_BROKEN.store(true, std::sync::atomic::Ordering::Relaxed);
                None
            }
        })
        .as_ref()
}

/// Directory for walship's own files next to the database: `.<name>-walship`.
pub fn work_dir(db_path: &str) -> PathBuf {
    let p = Path::new(db_path);
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    p.with_file_name(format!(".{name}-walship"))
}

fn start_replication(path: &str, shared: &Arc<Shared>) -> (Option<Handle>, Duration) {
    let default_timeout = Duration::from_secs(30);
    let Some(cfg) = config() else {
        if CONFIG_BROKEN.load(std::sync::atomic::Ordering::Relaxed) {
            log::warn!(
                "{path}: served without replication because of the configuration error above"
            );
        } else {
            log::info!("{path}: no walship configuration found; served without replication");
        }
        return (None, default_timeout);
    };
    let timeout = cfg.shutdown_sync_timeout;
    let Some(db) = cfg.db_for(Path::new(path)) else {
        log::info!(
            "{path}: not listed in the configuration ({:?}); served without replication",
            cfg.source
        );
        return (None, timeout);
    };
    let replica = &db.replica;
    let storage: Box<dyn Storage> = match crate::storage::open(&replica.kind) {
        Ok(s) => s,
        Err(e) => {
            log::error!("{path}: {e}; served without replication until this is fixed");
            return (None, timeout);
        }
    };
    // One replica, one database: two databases shipping to one place would interleave their
    // histories (two files with one name under `WALSHIP_REPLICA_URL`, or a config mistake).
    {
        let mut claimed = lock(&CLAIMED);
        let other = claimed
            .entry(storage.describe())
            .or_insert_with(|| path.to_string());
        if other != path {
            log::error!(
                "{path}: NOT replicated: its replica {} is already the replica of {other} in \
                 this process ({}). Give the databases different file names, or list each in \
                 a config file with its own replica path",
                storage.describe(),
                if db.key == crate::config::ENV_REPLICA_URL {
                    "WALSHIP_REPLICA_URL names each replica after the database's file name"
                } else {
                    "two config entries name the same replica"
                }
            );
            return (None, timeout);
        }
    }
    log::info!(
        "{path}: replicating to {} every {:?}",
        storage.describe(),
        replica.sync_interval
    );
    let policy = shipper::Policy {
        levels: cfg.levels.clone(),
        snapshot_interval: db.snapshot.interval,
        retention: cfg
            .retention_enabled
            .then(|| replica.effective_retention(&db.snapshot)),
        l0_retention: cfg.l0_retention,
    };
    let settings = shipper::Settings {
        db_path: path.to_string(),
        work_dir: work_dir(path),
        sync_interval: replica.sync_interval,
        policy,
        lease: Some(shipper::lease::Settings {
            ttl: cfg.lease_ttl,
            renew_every: cfg.lease_renew_interval,
        }),
    };
    (
        Some(Handle::start(settings, storage, shared.clone())),
        timeout,
    )
}

/// A main database file was opened through the VFS.
pub fn open_main(path: &str) -> Arc<Db> {
    let mut dbs = lock(&DBS);
    if let Some(db) = dbs.get(path) {
        *lock(&db.opens) += 1;
        return db.clone();
    }
    let shared = Arc::new(Shared::new(path, &work_dir(path)));
    let (ship, shutdown_timeout) = start_replication(path, &shared);
    let db = Arc::new(Db {
        path: path.to_string(),
        opens: Mutex::new(1),
        shared,
        ship,
        shutdown_timeout,
    });
    dbs.insert(path.to_string(), db.clone());
    db
}

/// A main database handle was closed; the last close ships what is left.
pub fn close_main(db: Arc<Db>) {
    let last = {
        let mut dbs = lock(&DBS);
        let mut n = lock(&db.opens);
        *n = n.saturating_sub(1);
        if *n == 0 {
            dbs.remove(&db.path);
            true
        } else {
            false
        }
    };
    if last {
        if let Some(ship) = &db.ship {
            match ship.shutdown(db.shutdown_timeout) {
                Ok(txid) => log::debug!("{}: closed; replica at TXID {txid:016x}", db.path),
                Err(e) => log::error!("{}: closed before replication finished: {e}", db.path),
            }
        }
    }
}

/// The database a WAL file belongs to, if it was opened through the VFS.
pub fn lookup_wal(wal_path: &str) -> Option<Arc<Db>> {
    let db = wal_path.strip_suffix("-wal")?;
    lock(&JOURNALED).remove(db);
    lock(&DBS).get(db).cloned()
}

/// `WALSHIP_TRACE=/path`: one line per call the shim observes, for the test that records
/// SQLite's real call sequences (tests/python/test_wal_sequences.py). Off by default.
static TRACE: Lazy<Option<Mutex<std::fs::File>>> = Lazy::new(|| {
    let path = std::env::var_os("WALSHIP_TRACE")?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()
        .map(Mutex::new)
});

/// True when `WALSHIP_TRACE` is set (the shim then also reads the WAL header at open).
pub fn tracing() -> bool {
    TRACE.is_some()
}

/// Writes one trace line. A macro, so that with tracing off (the default) nothing is formatted
/// on the commit path.
macro_rules! trace {
    ($db:expr, $($fmt:tt)*) => {
        if let Some(f) = TRACE.as_ref() {
            use std::io::Write;
            let _ = writeln!(lock(f), "{} {}", $db, format_args!($($fmt)*));
        }
    };
}

/// Databases whose last transaction used a rollback journal with no WAL opened since. The
/// switch to WAL itself commits through a journal once; a second journal means the database
/// stayed out of WAL mode.
static JOURNALED: Lazy<Mutex<std::collections::HashSet<String>>> = Lazy::new(Default::default);

/// A rollback journal was opened for a database served through the VFS. The second time with
/// no WAL in between, it is not in WAL mode: its commits never reach the WAL and are not
/// replicated. Said once per database.
pub fn rollback_journal_opened(journal_path: &str) {
    let Some(path) = journal_path.strip_suffix("-journal") else {
        return;
    };
    let db = lock(&DBS).get(path).cloned();
    let replicated = db.as_ref().is_some_and(|db| db.ship.is_some());
    if let Some(db) = db.filter(|d| d.ship.is_some() && d.shared.in_owner()) {
        trace!(&db.path, "JOURNAL");
        // The file is about to change outside the WAL: the next position must be proven anew.
        db.shared
            .tail()
            .lose("a rollback-journal transaction changed the database file outside the WAL");
    }
    if replicated && !lock(&JOURNALED).insert(path.to_string()) {
        crate::logging::warn_once(&format!("journal {path}"), || {
            format!(
                "{path}: not in WAL mode (SQLite opened a rollback journal), so its changes are NOT \
                 replicated; run PRAGMA journal_mode=WAL on it"
            )
        });
    }
}

fn shm_fields(shm: &Option<ShmHeader>) -> String {
    match shm {
        Some(s) => format!(
            "mx={} ichange={} salt1={}",
            s.mx_frame,
            s.ichange,
            s.salts().0
        ),
        None => "mx=- ichange=- salt1=-".into(),
    }
}

impl Db {
    /// Guards run only where this process ships (not in a forked child, not unreplicated).
    fn guarding(&self) -> bool {
        self.ship.is_some() && self.shared.in_owner()
    }

    /// Before SQLite restarts, truncates or deletes the WAL: every committed frame is read and
    /// what is unshipped copied aside (`Tail::guard`). Hold the result across the call.
    pub fn guard_wal(&self, what: &str) -> Guarded<'_> {
        if !self.guarding() {
            return Guarded(None);
        }
        trace!(&self.path, "GUARD {what}");
        let (now, seen) = (self.shared.shm_header(), self.shared.seen());
        let mut t = self.shared.tail();
        t.guard(now, seen);
        Guarded(Some(t))
    }

    /// After a guarded header write at offset 0 succeeded: a new WAL generation.
    pub fn wal_header_written(&self, mut g: Guarded<'_>, data: &[u8]) {
        if let Some(t) = g.0.as_mut() {
            t.after_header_write(data);
        }
    }

    /// After a guarded truncation succeeded.
    pub fn wal_truncated(&self, mut g: Guarded<'_>, size: u64) {
        trace!(&self.path, "WAL-TRUNCATE size={size}");
        match g.0.as_mut() {
            Some(t) => t.after_truncate(size),
            None if self.guarding() => self.shared.tail().after_truncate(size),
            None => {}
        }
    }

    /// After a guarded deletion succeeded.
    pub fn wal_deleted(&self, mut g: Guarded<'_>) {
        trace!(&self.path, "WAL-DELETE");
        if let Some(t) = g.0.as_mut() {
            t.after_emptied();
        }
    }

    /// Traced only: whether the WAL had a valid header when a connection opened it.
    pub fn wal_opened(&self, header: bool) {
        trace!(&self.path, "WAL-OPEN header={header}");
    }

    /// A write to the WAL past its header: read back from the WAL later; commit frames are
    /// noted (see `Shared::wal_written`).
    pub fn wal_write(&self, offset: u64, data: &[u8]) {
        if offset > 0 && self.guarding() {
            self.shared.wal_written(offset, data);
        }
        if TRACE.is_some() {
            let fields = if data.len() == crate::wal::FRAME_HEADER_SIZE {
                let h = crate::wal::FrameHeader::parse(data);
                format!(" pgno={} commit={} salt1={}", h.pgno, h.commit, h.salt1)
            } else {
                String::new()
            };
            trace!(
                &self.path,
                "WAL-WRITE off={offset} len={}{fields}",
                data.len()
            );
        }
    }

    /// W+: what is committed now is what the guards may read up to in this transaction.
    pub fn write_lock(&self, shm: Option<ShmHeader>) {
        trace!(&self.path, "W+ {}", shm_fields(&shm));
        if self.guarding() {
            self.shared.saw(shm);
        }
    }

    /// W-: a transaction (or a checkpoint) ended; `shm` read while the lock was still held.
    pub fn write_unlock(&self, shm: Option<ShmHeader>) {
        trace!(&self.path, "W- {}", shm_fields(&shm));
        if self.guarding() {
            self.shared.saw(shm);
        }
        if let Some(ship) = &self.ship {
            ship.notify(shm.map(|s| s.mx_frame));
        }
    }

    /// The commit's second phase (the only end-of-commit signal in EXCLUSIVE mode).
    /// With a wal-index, W- just before said everything (the commit path does its work once);
    /// without one (EXCLUSIVE mode) this is the only signal.
    pub fn commit_phase_two(&self, shm: Option<ShmHeader>) {
        trace!(&self.path, "PH2 {}", shm_fields(&shm));
        if shm.is_some() {
            return;
        }
        if self.guarding() {
            self.shared.commit_confirmed();
        }
        if let Some(ship) = &self.ship {
            ship.notify(None);
        }
    }

    /// A connection mapped wal-index region 0 at `addr` (one call per connection).
    pub fn shm_attach(&self, addr: usize) {
        self.shared.shm_attach(addr);
    }

    /// A connection is unmapping: `unmap` runs under the lock, so no reader sees a dead region.
    /// `last` is the header just before (a closing connection unmaps before deleting the WAL).
    pub fn shm_detach<R>(&self, last: Option<ShmHeader>, unmap: impl FnOnce() -> R) -> R {
        if self.guarding() {
            self.shared.saw(last);
        }
        self.shared.shm_detach(unmap)
    }
}

fn db_status_json(db: &Db) -> String {
    match &db.ship {
        Some(ship) => ship.status().to_json(&db.path, true),
        None => format!(
            "{{\"path\":{},\"replicated\":false}}",
            crate::shipper::json_str(&db.path)
        ),
    }
}

/// JSON status of one database (the calling connection's), or of all when it is not ours.
pub fn status_json(path: Option<&str>) -> String {
    let dbs = lock(&DBS);
    if let Some(db) = path.and_then(|p| dbs.get(p)) {
        return db_status_json(db);
    }
    let all: Vec<String> = dbs.values().map(|d| db_status_json(d)).collect();
    format!("{{\"databases\":[{}]}}", all.join(","))
}

/// Waits until everything the database committed so far is in its replica; returns the TXID.
pub fn flush(path: Option<&str>, timeout: Duration) -> Result<u64, String> {
    let db = {
        let dbs = lock(&DBS);
        path.and_then(|p| dbs.get(p).cloned())
    };
    let db = db.ok_or("this connection's database was not opened through the walship VFS")?;
    let ship = db
        .ship
        .as_ref()
        .ok_or("this database is not replicated (no configuration names it)")?;
    ship.flush(timeout)
}
