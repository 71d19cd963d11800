//! The app's side of the shipper: what the app's threads hold. `notify` is the whole commit
//! path — two atomics, and a wake-up only when the shipper sleeps idle (the first commit of an
//! interval starts its clock) or the WAL grew past the early-ship mark — so it never blocks,
//! never fails and holds no copy of the data. `flush` and `shutdown` wait, bounded by their
//! timeout, for the shipper's answer (it runs on the process's shipper pool, `pool.rs`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};

use super::pool::Job;
use super::Shipper;
use crate::capture::Shared;
use crate::clock::now_ms;
use crate::storage::Storage;

#[derive(Debug, Clone)]
pub struct Settings {
    pub db_path: String,
    /// Directory for temporary files, next to the database.
    pub work_dir: PathBuf,
    pub sync_interval: Duration,
    /// Compaction, scheduled snapshots and retention.
    pub policy: super::Policy,
    /// The replica lease (`None`: no lease).
    pub lease: Option<super::lease::Settings>,
}

#[derive(Debug, Clone, Default)]
pub struct Status {
    pub replica: String,
    pub txid: u64,
    pub last_sync_ms: Option<i64>,
    pub pending_txns: usize,
    pub queued_bytes: usize,
    pub snapshots: u64,
    /// Resynchronisations: continuity was lost and the differing pages were shipped.
    pub resyncs: u64,
    /// The last snapshot or resync: what, why, how big.
    pub last_repair: Option<String>,
    /// Level-0 files waiting on local disk for storage to come back, and their size.
    pub spooled_files: usize,
    pub spooled_bytes: u64,
    pub last_error: Option<String>,
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

impl Status {
    /// The JSON of `walship_status()` and of the status file (`walship status`).
    pub fn to_json(&self, db_path: &str, running: bool) -> String {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
        let lag = self.last_sync_ms.map(|t| (now_ms() - t).max(0));
        format!(
            concat!(
                "{{\"path\":{},\"replicated\":true,\"running\":{},\"pid\":{},\"updated_ms\":{},",
                "\"replica\":{},\"txid\":\"{:016x}\",\"txid_int\":{},",
                "\"last_sync_ms\":{},\"lag_ms\":{},\"pending_txns\":{},\"backlog_bytes\":{},",
                "\"spooled_files\":{},\"spooled_bytes\":{},\"snapshots\":{},\"resyncs\":{},",
                "\"last_repair\":{},\"last_error\":{}}}"
            ),
            json_str(db_path),
            running,
            std::process::id(),
            now_ms(),
            json_str(&self.replica),
            self.txid,
            self.txid,
            opt(self.last_sync_ms),
            opt(lag),
            self.pending_txns,
            self.queued_bytes as u64 + self.spooled_bytes,
            self.spooled_files,
            self.spooled_bytes,
            self.snapshots,
            self.resyncs,
            self.last_repair
                .as_deref()
                .map(json_str)
                .unwrap_or_else(|| "null".into()),
            self.last_error
                .as_deref()
                .map(json_str)
                .unwrap_or_else(|| "null".into()),
        )
    }
}

/// Where the shipper keeps its status for `walship status`: `.<db>-walship/status.json`.
pub fn status_file(work_dir: &std::path::Path) -> PathBuf {
    work_dir.join("status.json")
}

/// Shared between the app's threads and the shipper thread: how to wake it and whether it wants to be.
pub(super) struct Wake {
    /// The shipper sleeps with nothing pending: the next commit should wake it.
    pub idle: AtomicBool,
    /// A commit (or checkpoint) ended since the shipper last looked.
    pub notified: AtomicBool,
    /// When the last notified commit ended (ms since the epoch): a level-0 file's timestamp,
    /// which point-in-time restores compare with.
    pub last_commit_ms: AtomicI64,
    /// A commit whose wal-index mxFrame reaches this wakes the shipper even mid-interval (a
    /// bulk load is shipped early rather than left to grow the WAL); `u32::MAX`: never.
    pub early_mx: AtomicU32,
    /// Every handle is gone: the shipper ships what it has and stops.
    pub closed: AtomicBool,
    job: OnceLock<Weak<Job>>,
}

impl Default for Wake {
    fn default() -> Wake {
        Wake {
            idle: AtomicBool::new(false),
            notified: AtomicBool::new(false),
            last_commit_ms: AtomicI64::new(0),
            early_mx: AtomicU32::new(u32::MAX),
            closed: AtomicBool::new(false),
            job: OnceLock::new(),
        }
    }
}

impl Wake {
    /// Asks the pool for a turn of this shipper (never waits for it).
    pub fn wake(&self) {
        if let Some(job) = self.job.get().and_then(Weak::upgrade) {
            job.wake();
        }
    }
}

pub(super) enum Msg {
    Flush(Sender<Result<u64, String>>),
    Shutdown(Sender<Result<u64, String>>),
}

pub struct Handle {
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
    wake: Arc<Wake>,
    status: Arc<Mutex<Status>>,
    job: Arc<Job>,
    /// The process that started the shipper: a forked child has no shipper to ask.
    owner: crate::process::Owner,
}

impl Handle {
    pub fn start(settings: Settings, storage: Box<dyn Storage>, shared: Arc<Shared>) -> Handle {
        let (tx, rx) = bounded(64);
        let queued = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(Mutex::new(Status {
            replica: storage.describe(),
            ..Status::default()
        }));
        let wake = Arc::new(Wake::default());
        let metrics = crate::metrics::for_db(&settings.db_path, &storage.describe());
        metrics.attach_queue(queued.clone());
        let s = Shipper::new(
            settings,
            storage,
            rx,
            wake.clone(),
            queued.clone(),
            status.clone(),
            metrics,
            shared,
        );
        let name = s.s.db_path.clone();
        let job = Job::start_with(s, &name, |job| {
            let _ = wake.job.set(Arc::downgrade(job));
        });
        Handle {
            tx,
            queued,
            wake,
            status,
            job,
            owner: crate::process::Owner::this(),
        }
    }

    /// A write transaction ended (`mx`: the wal-index mxFrame after it, when there is one). The
    /// frames stay in the WAL; the shipper reads them.
    pub fn notify(&self, mx: Option<u32>) {
        self.wake.last_commit_ms.store(now_ms(), Ordering::Relaxed);
        self.wake.notified.store(true, Ordering::SeqCst);
        // Pairs with the shipper's store of `idle` at the end of its turn: either it sees `notified`
        // or this sees it idle.
        if (self.wake.idle.load(Ordering::SeqCst) && self.wake.idle.swap(false, Ordering::SeqCst))
            || mx.is_some_and(|m| m >= self.wake.early_mx.load(Ordering::Relaxed))
        {
            self.wake.wake();
        }
    }

    fn request(
        &self,
        make: impl FnOnce(Sender<Result<u64, String>>) -> Msg,
        timeout: Duration,
    ) -> Result<u64, String> {
        if !self.owner.is_current() {
            return Err(
                "the database is replicated by the process that opened it, not by this \
                        forked child"
                    .into(),
            );
        }
        let (ack_tx, ack_rx) = bounded(1);
        self.tx
            .send_timeout(make(ack_tx), timeout)
            .map_err(|_| "the shipper is not running".to_string())?;
        self.wake.wake();
        match ack_rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => Err(format!("not everything was replicated within {timeout:?}")),
        }
    }

    /// Returns once every transaction committed before the call is durable in the replica.
    pub fn flush(&self, timeout: Duration) -> Result<u64, String> {
        self.request(Msg::Flush, timeout)
    }

    /// Ships what is left and stops the shipper, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) -> Result<u64, String> {
        let start = Instant::now();
        let r = self.request(Msg::Shutdown, timeout);
        // A reopen of the database must not overlap the old shipper's last act.
        if r.is_ok() {
            self.job
                .wait_finished(timeout.saturating_sub(start.elapsed()));
        }
        r
    }

    pub fn status(&self) -> Status {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        s.queued_bytes = self.queued.load(Ordering::Acquire);
        s
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.wake.closed.store(true, Ordering::SeqCst);
        self.wake.wake();
    }
}
