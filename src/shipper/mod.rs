//! Shipper: one background thread per replicated database. Receives capture events from a
//! bounded channel, checks that they continue the replica's history, batches them per sync
//! interval into level-0 LTX files, and writes snapshots when continuity cannot be proven.
//!
//! Owns the replica's position (TXID, database checksum, per-page checksum terms) and the
//! channel's receiving end; the sending side is `handle.rs`. A dropped event (queue over budget)
//! arrives as a discontinuity, which the thread repairs with a snapshot. Never touches SQLite's
//! files except through `snapshot`.

mod cached;
mod encode;
mod gate;
mod handle;
pub mod lease;
mod lock;
mod maintain;
mod position;
mod spool;
mod state;

pub use handle::{json_str, status_file, Handle, Settings, Status};

/// How often an idle shipper looks for a `walship snapshot` request.
const SNAPSHOT_REQUEST_POLL: Duration = Duration::from_secs(1);

/// The file `walship snapshot` leaves for the process replicating the database: its presence
/// asks for a snapshot, which removes it.
pub fn snapshot_request_file(work_dir: &std::path::Path) -> std::path::PathBuf {
    work_dir.join("snapshot-request")
}
use handle::{Msg, Wake};
pub use maintain::Policy;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use crate::capture::{Event, Position};
use crate::clock::now_ms;
use crate::storage::Storage;

/// A batch holding this many bytes of pages is shipped before its sync interval ends.
const BATCH_SHIP_BYTES: usize = 16 << 20;

/// Where the replica stands.
struct Replica {
    txid: u64,
    checksum: u64,
    page_size: u32,
    db_size: u32,
    page_sums: Vec<u64>,
    /// The WAL position the replica's newest state corresponds to.
    position: Position,
    /// Timestamp of the newest file: file timestamps never go backwards, since point-in-time
    /// restores order files by them.
    last_ts: i64,
    /// True until the first event after a snapshot is accepted: events that predate the
    /// snapshot may still arrive and are already part of it.
    fresh: bool,
}

struct Shipper {
    s: Settings,
    storage: cached::Cached,
    rx: Receiver<Msg>,
    wake: Arc<Wake>,
    queued: Arc<AtomicUsize>,
    status: Arc<Mutex<Status>>,
    replica: Option<Replica>,
    need_snapshot: Option<String>,
    batch: encode::Pending,
    batch_started: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
    deferred: Vec<Msg>,
    maint: maintain::Maintenance,
    status_written: Option<Instant>,
    spool: spool::Spool,
    /// Files waiting in the spool (kept in step with it, to avoid a directory read per sync).
    spooled: usize,
    /// May this process write the replica (local lock, lease)?
    gate: gate::Gate,
    metrics: Arc<crate::metrics::DbMetrics>,
}

/// True when position `a` is at or before `b` in the WAL's history (salt-1 grows by one on
/// every restart, so it orders generations).
fn at_or_before(a: &Position, b: &Position) -> bool {
    if a == b {
        return true;
    }
    if (a.salt1, a.salt2) == (b.salt1, b.salt2) {
        return a.frame <= b.frame;
    }
    (a.salt1.wrapping_sub(b.salt1) as i32) < 0
}

impl Shipper {
    pub(super) fn new(
        s: Settings,
        storage: Box<dyn Storage>,
        rx: Receiver<Msg>,
        wake: Arc<Wake>,
        queued: Arc<AtomicUsize>,
        status: Arc<Mutex<Status>>,
        metrics: Arc<crate::metrics::DbMetrics>,
    ) -> Shipper {
        let maint = maintain::Maintenance::new(s.policy.clone());
        let spool = spool::Spool::new(&s.work_dir);
        let storage = cached::Cached::new(storage, &s.work_dir, metrics.clone());
        let gate = gate::Gate::new(s.lease);
        Shipper {
            s,
            storage,
            rx,
            wake,
            queued,
            status,
            replica: None,
            need_snapshot: Some("first open of the database in this process".into()),
            batch: encode::Pending::default(),
            batch_started: None,
            retry_at: None,
            backoff: Duration::from_millis(100),
            deferred: Vec::new(),
            maint,
            status_written: None,
            spool,
            // Counted when this process becomes the writer (the spool is the writer's).
            spooled: 0,
            gate,
            metrics,
        }
    }

    pub(super) fn run(&mut self) {
        let _ = self.wake.thread.set(std::thread::current());
        loop {
            if self.may_write(false) {
                self.try_repair();
            }
            let wait = self.next_wakeup().saturating_duration_since(Instant::now());
            let msg = match self.deferred.pop() {
                Some(m) => Ok(m),
                None => self.next_msg(wait),
            };
            match msg {
                Ok(Msg::Event(e)) => {
                    self.on_event(e);
                    // The clock and schedule checks below are per wakeup, not per commit.
                    self.take_queued_events();
                }
                Ok(Msg::Flush(ack)) => {
                    let r = self.sync_all();
                    let _ = ack.send(r);
                }
                Ok(Msg::Shutdown(ack)) => {
                    if self.gate.other_writer() {
                        // Not this process's replica: nothing of ours to ship (and the reason
                        // was logged already).
                        log::debug!("{}: closed without shipping", self.s.db_path);
                        self.publish_status(true, false);
                        self.release_writer();
                        let _ = ack.send(Ok(0));
                        return;
                    }
                    let r = self.sync_all();
                    if r.is_ok() {
                        self.mark_clean();
                    }
                    self.publish_status(true, false);
                    self.release_writer();
                    let _ = ack.send(r);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.sync_all();
                    self.release_writer();
                    return;
                }
            }
            if self
                .batch_started
                .is_some_and(|t| t.elapsed() >= self.s.sync_interval)
            {
                // Everything committed by the deadline belongs in this file, not the next.
                self.take_queued_events();
                self.ship_batch_logged();
            }
            self.maintain();
        }
    }

    /// The next message, sleeping at most `wait` for one. Senders wake this thread only when it
    /// sleeps idle (see `handle.rs`), so events of a running interval wait in the queue until
    /// its deadline.
    fn next_msg(&self, wait: Duration) -> Result<Msg, RecvTimeoutError> {
        let take = |rx: &Receiver<Msg>, closed: bool| match rx.try_recv() {
            Ok(m) => Ok(m),
            Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) if closed => Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
        };
        let closed = || self.wake.closed.load(Ordering::SeqCst);
        match take(&self.rx, closed()) {
            Err(RecvTimeoutError::Timeout) if !wait.is_zero() => {}
            r => return r,
        }
        // Idle means the next commit would open a batch. While a snapshot is due, commits are
        // only drained (the snapshot reads the files), so they need not wake this thread.
        self.wake.idle.store(
            self.batch.is_empty() && self.need_snapshot.is_none(),
            Ordering::SeqCst,
        );
        if self.rx.is_empty() && !closed() {
            std::thread::park_timeout(wait);
        }
        self.wake.idle.store(false, Ordering::SeqCst);
        take(&self.rx, closed())
    }

    fn next_wakeup(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        let batch = self
            .batch_started
            .map(|t| t + self.s.sync_interval)
            .unwrap_or(far);
        // `try_repair` ran just before: whatever it could do now is done, so only a scheduled
        // retry is a reason to wake (waking "now" here would spin while a batch is open).
        let retry = match self.retry_at {
            Some(t)
                if self.need_snapshot.is_some() || !self.batch.is_empty() || self.spooled > 0 =>
            {
                t
            }
            _ => far,
        };
        let maint = if self.replica.is_some() {
            self.maint.next_due()
        } else {
            far
        };
        let gate = self.gate.next_due().unwrap_or(far);
        // Once a second at most while idle: a `walship snapshot` request is a file, not a wake.
        let request = Instant::now() + SNAPSHOT_REQUEST_POLL;
        batch.min(retry).min(maint).min(gate).min(request)
    }

    /// Compaction, scheduled snapshots and retention, when due and the replica is healthy; and
    /// a snapshot `walship snapshot` asked for (a file it leaves in the work directory).
    fn maintain(&mut self) {
        let Some(txid) = self.replica.as_ref().map(|r| r.txid) else {
            return;
        };
        if self.need_snapshot.is_none() && snapshot_request_file(&self.s.work_dir).exists() {
            self.need_snapshot = Some("requested by `walship snapshot`".into());
            return;
        }
        if self.need_snapshot.is_some()
            || self.retry_at.is_some()
            || Instant::now() < self.maint.next_due()
        {
            return;
        }
        if let Err(e) = self.maint.run(&self.storage, &self.s.work_dir, txid) {
            log::warn!(
                "{}: replica maintenance failed (will retry): {e}",
                self.s.db_path
            );
        }
    }

    /// Records the replica's error state; logs only when the state changes. Messages that
    /// differ only in numbers (TXIDs, counts) are the same state.
    fn set_error(&mut self, e: Option<String>) {
        let state = |m: &Option<String>| {
            m.as_deref()
                .map(|m| m.replace(|c: char| c.is_ascii_hexdigit(), "#"))
        };
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let changed = state(&st.last_error) != state(&e);
        if e.is_some() && changed {
            log::warn!("{}: {}", self.s.db_path, e.as_deref().unwrap_or(""));
        } else if e.is_none() && st.last_error.is_some() {
            log::info!("{}: replication recovered", self.s.db_path);
        }
        st.last_error = e;
        drop(st);
        self.publish_status(changed, true);
    }

    /// Writes the status file `walship status` reads: on every error state change, and after
    /// syncs at most once a second. Best effort (a status file never fails replication).
    fn publish_status(&mut self, force: bool, running: bool) {
        // The status file belongs to the process holding the local lock.
        if !self.gate.holds_lock() {
            return;
        }
        if !force
            && self
                .status_written
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.status_written = Some(Instant::now());
        let mut st = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        st.queued_bytes = self.queued.load(Ordering::Acquire);
        let json = st.to_json(&self.s.db_path, running);
        let path = status_file(&self.s.work_dir);
        let tmp = path.with_extension("json.tmp");
        let r = std::fs::create_dir_all(&self.s.work_dir)
            .and_then(|_| std::fs::write(&tmp, json))
            .and_then(|_| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            crate::logging::warn_once(&format!("status {}", path.display()), || {
                format!(
                    "{}: cannot write {} ({e}); `walship status` will not show this database \
                     (SELECT walship_status() still does)",
                    self.s.db_path,
                    path.display()
                )
            });
        }
    }

    /// After each shipping step: metrics (TXID, errors, what is still behind for the lag).
    fn note_step(&self, ok: bool) {
        let behind = self.spooled > 0 || self.need_snapshot.is_some() || self.replica.is_none();
        let txid = self.replica.as_ref().map_or(0, |r| r.txid);
        self.metrics.step(ok, txid, self.batch.is_empty(), behind);
    }

    fn failed(&mut self, e: String) {
        self.note_step(false);
        self.set_error(Some(e));
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
    }

    fn succeeded(&mut self) {
        {
            let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
            st.txid = self.replica.as_ref().map(|r| r.txid).unwrap_or(0);
            st.pending_txns = self.batch.len();
            st.last_sync_ms = Some(now_ms());
        }
        self.note_step(true);
        self.retry_at = None;
        self.backoff = Duration::from_millis(100);
        self.set_error(None);
        self.publish_status(false, true);
    }

    fn on_event(&mut self, e: Event) {
        if let Event::Commit(t) = &e {
            self.queued.fetch_sub(t.bytes(), Ordering::AcqRel);
            if !self.gate.other_writer() {
                self.metrics.commit_seen(t.committed_at_ms); // a standby's lag means nothing
            }
        }
        if self.need_snapshot.is_some() {
            return; // the snapshot will read this state from the files
        }
        let Some(r) = self.replica.as_mut() else {
            return;
        };
        match e {
            Event::Discontinuity { reason } => {
                log::warn!("{}: {reason}; a new snapshot will be taken", self.s.db_path);
                self.need_snapshot = Some(reason);
            }
            Event::Reset { from, to } => match from {
                Some(f) if f == r.position => {
                    r.position = to;
                    r.fresh = false;
                }
                Some(f) if r.fresh && at_or_before(&f, &r.position) => {}
                _ => {
                    self.need_snapshot = Some(format!(
                        "the WAL was reset from an unexpected position ({from:?} -> {to:?}, replica at {:?})",
                        r.position
                    ))
                }
            },
            Event::Commit(t) => {
                let base = t.base;
                if base == Some(r.position) {
                    r.position = t.end;
                    r.fresh = false;
                    if self.batch.is_empty() {
                        self.batch_started = Some(Instant::now());
                    }
                    self.batch.push(t);
                    if self.batch.bytes() >= BATCH_SHIP_BYTES {
                        // A bulk load: ship now rather than hold the interval's pages in memory.
                        self.ship_batch_logged();
                    }
                } else if r.fresh
                    && (at_or_before(&t.end, &r.position)
                        || (r.position.frame == 0 && base.is_some_and(|b| b.frame != 0)))
                {
                    // Committed before the snapshot was read: already in it.
                } else {
                    self.need_snapshot = Some(format!(
                        "a transaction does not continue the replicated history (expected WAL position {:?}, got {:?})",
                        r.position, base
                    ));
                }
            }
        }
    }

    fn try_repair(&mut self) {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if self.need_snapshot.is_some() {
            match self.snapshot() {
                Err(e) => {
                    self.failed(e);
                    return;
                }
                // Nothing to copy yet (an empty database): look again soon, quietly.
                Ok(false) => {
                    self.retry_at = Some(Instant::now() + Duration::from_millis(250));
                    return;
                }
                Ok(true) => {
                    // Whatever `walship snapshot` asked for, this snapshot answers.
                    let _ = std::fs::remove_file(snapshot_request_file(&self.s.work_dir));
                    self.succeeded();
                    self.publish_status(true, true);
                }
            }
        }
        if self.spooled > 0 {
            match self.drain_spool() {
                Ok(()) => self.succeeded(),
                Err(e) => {
                    self.failed(e);
                    return;
                }
            }
        }
        if !self.batch.is_empty() && self.retry_at.is_none() && self.batch_started.is_none() {
            self.ship_batch_logged();
        }
    }

    /// Uploads what the spool holds, in order.
    fn drain_spool(&mut self) -> Result<(), String> {
        let r = self.spool.drain(&self.storage);
        let left = self.spool.files().len();
        if left < self.spooled {
            log::info!(
                "{}: uploaded {} spooled file(s); {left} left",
                self.s.db_path,
                self.spooled - left
            );
        }
        self.spooled = left;
        self.publish_spool();
        // The status keeps saying where the backlog is for as long as the outage lasts.
        r.map(|_| ())
            .map_err(|e| format!("{e}; spooled locally ({left} file(s) waiting)"))
    }

    fn publish_spool(&self) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.spooled_files = self.spooled;
        st.spooled_bytes = if self.spooled == 0 {
            0
        } else {
            self.spool.bytes()
        };
        self.metrics.set_spooled_bytes(st.spooled_bytes);
    }

    fn ship_batch_logged(&mut self) {
        match self.ship_batch() {
            Ok(()) => self.succeeded(),
            Err(e) => {
                self.batch_started = None;
                self.failed(e)
            }
        }
    }

    /// Moves the events queued now into the batch (not those sent meanwhile, so a busy app
    /// cannot keep this going); other messages wait their turn, after anything deferred.
    fn take_queued_events(&mut self) {
        for _ in 0..self.rx.len() {
            match self.rx.try_recv() {
                Ok(Msg::Event(e)) => self.on_event(e),
                Ok(other) => self.deferred.insert(0, other),
                Err(_) => break,
            }
        }
    }

    /// Everything received so far, shipped now.
    fn sync_all(&mut self) -> Result<u64, String> {
        if !self.may_write(true) {
            return Err(self.gate.blocked().unwrap_or("not the writer").to_string());
        }
        // Events already in the channel were committed before the request: take them first.
        self.take_queued_events();
        if self.need_snapshot.is_some() && !self.snapshot()? {
            return Ok(0);
        }
        self.ship_batch()?;
        if self.spooled > 0 {
            self.drain_spool()?;
        }
        self.succeeded();
        Ok(self.replica.as_ref().map(|r| r.txid).unwrap_or(0))
    }

    /// Writes one level-0 file with every batched transaction (pages merged, sorted).
    fn ship_batch(&mut self) -> Result<(), String> {
        if self.batch.is_empty() {
            self.batch_started = None;
            return Ok(());
        }
        let Some(r) = self.replica.as_mut() else {
            return Err("no replica position".into());
        };
        let page_size = self.batch.page_size;
        if page_size != r.page_size || self.batch.mixed_page_sizes {
            self.need_snapshot = Some(format!(
                "page size changed from {} to {page_size}",
                r.page_size
            ));
            self.batch.clear();
            return Ok(());
        }
        let txid = r.txid + 1;
        let b = encode::batch(&self.batch, txid, r.last_ts, &r.page_sums)?;
        let ts = b.header.timestamp_ms;
        // Straight to storage while nothing waits before it; otherwise, or if storage fails,
        // into the spool, so the outage costs disk and not memory.
        let mut upload_error = None;
        if self.gate.paused() {
            upload_error = Some(format!(
                "TXID {txid:016x} not uploaded: the replica's lease could not be renewed"
            ));
        } else if self.spooled == 0 {
            if let Err(e) = self.storage.put(0, txid, txid, ts, &mut b.bytes.as_slice()) {
                upload_error = Some(format!("upload of TXID {txid:016x} failed: {e}"));
            }
        }
        if self.spooled > 0 || upload_error.is_some() {
            if let Err(e) = self.spool.push(txid, txid, &b.bytes) {
                // No disk either: give up on this history; a snapshot restarts it later.
                self.batch.clear();
                self.batch_started = None;
                self.need_snapshot = Some(format!("the spool could not be written ({e})"));
                return Err(format!(
                    "{}; spooling it failed too ({e}): replication restarts with a snapshot when storage returns",
                    upload_error.unwrap_or_else(|| "storage is behind".into())
                ));
            }
            self.spooled += 1;
        }
        r.txid = txid;
        r.last_ts = ts;
        r.checksum = b.checksum;
        r.page_sums = b.sums;
        r.db_size = b.header.commit;
        self.local_state(None).save(&self.s.work_dir);
        self.batch.clear();
        self.batch_started = None;
        if self.spooled > 0 {
            self.publish_spool();
        }
        if let Some(e) = upload_error {
            return Err(format!(
                "{e}; spooled locally ({} file(s) waiting)",
                self.spooled
            ));
        }
        log::debug!(
            "{}: shipped TXID {txid:016x} ({} pages)",
            self.s.db_path,
            b.pages
        );
        Ok(())
    }
}
