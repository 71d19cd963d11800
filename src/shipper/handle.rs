//! The sending side of the shipper: what the app's threads hold. `send` never blocks and never
//! fails (over budget, the event is dropped and a discontinuity recorded); `flush` and `shutdown`
//! wait, bounded by their timeout, for the shipper thread's answer.
//!
//! Waking: the shipper sleeps until its next deadline (the end of the sync interval). A commit
//! wakes it only when it sleeps with nothing pending (the first commit of an interval starts
//! the interval's clock) or when the queue passes a wake mark, so a busy app makes no system
//! call per commit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crossbeam_channel::{bounded, Sender, TrySendError};

use super::Shipper;
use crate::capture::Event;
use crate::clock::now_ms;
use crate::storage::Storage;

#[derive(Debug, Clone)]
pub struct Settings {
    pub db_path: String,
    /// Directory for temporary files, next to the database.
    pub work_dir: PathBuf,
    pub sync_interval: Duration,
    /// Byte budget of events waiting in the channel.
    pub queue_limit: usize,
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
                "\"spooled_files\":{},\"spooled_bytes\":{},\"snapshots\":{},\"last_error\":{}}}"
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

/// Messages in the queue past which a sender wakes the shipper (the queue holds 65 536).
const WAKE_LEN: usize = 8192;

/// Queued bytes past which a sender wakes the shipper to merge them into its batch: small
/// enough that page buffers go back to the pool (`pool.rs`) while still warm in cache, large
/// enough that one-row commits wake it once per ~100 commits, not per commit.
const WAKE_BYTES: usize = 1 << 20;

/// Shared between the senders and the shipper thread: how to wake it and whether it wants to be.
#[derive(Default)]
pub(super) struct Wake {
    /// The shipper sleeps with nothing pending: the next event should wake it.
    pub idle: AtomicBool,
    /// Every handle is gone: the shipper ships what it has and stops.
    pub closed: AtomicBool,
    pub thread: OnceLock<Thread>,
}

impl Wake {
    pub fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

pub(super) enum Msg {
    Event(Event),
    Flush(Sender<Result<u64, String>>),
    Shutdown(Sender<Result<u64, String>>),
}

pub struct Handle {
    tx: Sender<Msg>,
    queued: Arc<AtomicUsize>,
    wake: Arc<Wake>,
    overflow: AtomicBool,
    limit: usize,
    status: Arc<Mutex<Status>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Handle {
    pub fn start(settings: Settings, storage: Box<dyn Storage>) -> Handle {
        let (tx, rx) = bounded(65_536);
        let queued = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(Mutex::new(Status {
            replica: storage.describe(),
            ..Status::default()
        }));
        let limit = settings.queue_limit;
        let wake = Arc::new(Wake::default());
        let metrics = crate::metrics::for_db(&settings.db_path, &storage.describe());
        metrics.attach_queue(queued.clone());
        let mut s = Shipper::new(
            settings,
            storage,
            rx,
            wake.clone(),
            queued.clone(),
            status.clone(),
            metrics,
        );
        let thread = std::thread::Builder::new()
            .name("walship-shipper".into())
            .spawn(move || s.run())
            .ok();
        Handle {
            tx,
            queued,
            wake,
            overflow: AtomicBool::new(false),
            limit,
            status,
            thread: Mutex::new(thread),
        }
    }

    /// Queues a capture event. Never blocks: over budget, the event is dropped and the stream
    /// is marked broken, so the shipper takes a snapshot instead.
    pub fn send(&self, ev: Event) {
        let size = match &ev {
            Event::Commit(t) => t.bytes(),
            _ => 64,
        };
        if self.overflow.load(Ordering::Acquire) {
            let gap = Msg::Event(Event::Discontinuity {
                reason: "the replication queue was full".into(),
            });
            if self.tx.try_send(gap).is_ok() {
                self.overflow.store(false, Ordering::Release);
                self.wake.wake();
            } else {
                return;
            }
        }
        if self.queued.load(Ordering::Acquire) + size > self.limit {
            self.overflow.store(true, Ordering::Release);
            return;
        }
        let queued = self.queued.fetch_add(size, Ordering::AcqRel) + size;
        match self.tx.try_send(Msg::Event(ev)) {
            Ok(()) => {
                // Pairs with the shipper's store of `idle` before its last look at the queue:
                // either it sees this event or this sees it idle.
                if (self.wake.idle.load(Ordering::SeqCst)
                    && self.wake.idle.swap(false, Ordering::SeqCst))
                    || self.tx.len() >= WAKE_LEN
                    || queued >= WAKE_BYTES.min(self.limit / 8)
                {
                    self.wake.wake();
                }
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(size, Ordering::AcqRel);
                self.overflow.store(true, Ordering::Release);
                self.wake.wake();
            }
        }
    }

    fn request(
        &self,
        make: impl FnOnce(Sender<Result<u64, String>>) -> Msg,
        timeout: Duration,
    ) -> Result<u64, String> {
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

    /// Ships what is left and stops the thread, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) -> Result<u64, String> {
        let r = self.request(Msg::Shutdown, timeout);
        if r.is_ok() {
            if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = t.join();
            }
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
