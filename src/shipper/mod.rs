//! Shipper: one per replicated database, stepped by the process's shipper pool (`pool.rs`, a
//! few threads for every database). Woken by commits (or by its clock, which also notices
//! commits made by other processes), it reads the committed WAL frames once
//! per sync interval through `capture::Tail`, encodes them into one level-0 LTX file (streamed to
//! a local file, never held in memory), and uploads it — or spools it while storage is down.
//! When continuity cannot be proven it resynchronises: the pages that differ between an image of
//! the database and the replica's page record become the next TXID (`position.rs`).
//!
//! Owns the replica's state (TXID, database checksum, per-page checksum terms) and the requests
//! channel's receiving end; the app's side is `handle.rs`. Never touches SQLite's files except
//! through `capture` and `snapshot`, never makes the app wait on storage.

mod cached;
mod encode;
mod gate;
mod handle;
#[cfg(feature = "judge")]
mod judge;
pub mod lease;
mod lock;
mod maintain;
mod pool;
mod position;
mod spool;
mod state;
mod upload;

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

use crossbeam_channel::{Receiver, TryRecvError};

use crate::capture::{Position, Shared};
use crate::clock::now_ms;
use crate::storage::Storage;

/// WAL bytes past which a batch is shipped before its sync interval ends (a bulk load).
const BATCH_SHIP_BYTES: u64 = 16 << 20;

/// Where the replica stands.
struct Replica {
    txid: u64,
    checksum: u64,
    page_size: u32,
    db_size: u32,
    page_sums: Vec<u64>,
    /// Where the replica's newest state is in the database's files (what the state file says).
    position: Option<Position>,
    /// Timestamp of the newest file: file timestamps never go backwards, since point-in-time
    /// restores order files by them.
    last_ts: i64,
}

struct Shipper {
    s: Settings,
    storage: cached::Cached,
    rx: Receiver<Msg>,
    wake: Arc<Wake>,
    queued: Arc<AtomicUsize>,
    status: Arc<Mutex<Status>>,
    replica: Option<Replica>,
    /// Continuity must be (re-)established, and why.
    need_snapshot: Option<String>,
    /// The next repair must be a full snapshot (requested, or the page size changed).
    force_full: bool,
    shared: Arc<Shared>,
    batch_started: Option<Instant>,
    /// The open batch has commits nobody notified (another process's): its file gets the
    /// reading time rather than the last notified commit's.
    foreign_read: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
    maint: maintain::Maintenance,
    status_written: Option<Instant>,
    spool: spool::Spool,
    /// Files waiting in the spool (kept in step with it, to avoid a directory read per sync).
    spooled: usize,
    /// May this process write the replica (local lock, lease)?
    gate: gate::Gate,
    metrics: Arc<crate::metrics::DbMetrics>,
    /// Judge mode (feature `judge`): verdicts asked for so far.
    #[cfg(feature = "judge")]
    judged: u64,
}

impl Shipper {
    #[allow(clippy::too_many_arguments)] // the shared handles of `Handle::start`, once
    pub(super) fn new(
        s: Settings,
        storage: Box<dyn Storage>,
        rx: Receiver<Msg>,
        wake: Arc<Wake>,
        queued: Arc<AtomicUsize>,
        status: Arc<Mutex<Status>>,
        metrics: Arc<crate::metrics::DbMetrics>,
        shared: Arc<Shared>,
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
            force_full: false,
            shared,
            batch_started: None,
            foreign_read: false,
            retry_at: None,
            backoff: Duration::from_millis(100),
            maint,
            status_written: None,
            spool,
            // Counted when this process becomes the writer (the spool is the writer's).
            spooled: 0,
            gate,
            metrics,
            #[cfg(feature = "judge")]
            judged: 0,
        }
    }

    /// One turn of the shipper on a pool worker (`pool.rs`): repairs, one request, the commits
    /// since the last turn, a batch if its interval is over, maintenance. Returns when it wants
    /// its next turn (a commit or a request wakes it sooner), or `None` once it has stopped.
    pub(super) fn step(&mut self) -> Option<Instant> {
        // Commits made during this turn are seen at its end, without a wake-up.
        self.wake.idle.store(false, Ordering::SeqCst);
        if self.may_write(false) {
            self.try_repair();
        }
        match self.take_msg() {
            Ok(Msg::Flush(ack)) => {
                let r = self.sync_all();
                let _ = ack.send(r);
            }
            Ok(Msg::Shutdown(ack)) => {
                // The other writer may have exited meanwhile: this process's commits since
                // are then its own to ship (take over now rather than at the next retry).
                if self.gate.other_writer() && !self.may_write(true) {
                    // Not this process's replica: nothing of ours to ship (and the reason
                    // was logged already).
                    log::debug!("{}: closed without shipping", self.s.db_path);
                    self.publish_status(true, false);
                    self.release_writer();
                    let _ = ack.send(Ok(0));
                    return None;
                }
                let r = self.sync_all();
                if r.is_ok() {
                    self.mark_clean();
                    #[cfg(feature = "judge")]
                    self.judge(true);
                }
                self.publish_status(true, false);
                self.release_writer();
                let _ = ack.send(r);
                return None;
            }
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                let _ = self.sync_all();
                self.release_writer();
                return None;
            }
        }
        self.note_commits();
        // What the wal-index says is committed and not yet read: the status's backlog.
        self.queued
            .store(self.wal_backlog() as usize, Ordering::Relaxed);
        let due = self
            .batch_started
            .is_some_and(|t| t.elapsed() >= self.s.sync_interval);
        // While storage is down (a retry pending with files spooled), each interval's
        // file still goes to the spool: an outage costs local disk, not WAL growth.
        if (due || self.wal_backlog() >= BATCH_SHIP_BYTES)
            && self.need_snapshot.is_none()
            && (self.retry_at.is_none() || self.spooled > 0)
        {
            // Everything committed by the deadline belongs in this file, not the next.
            self.ship_batch_logged();
        }
        self.maintain();
        // Idle means the next commit would open a batch, so it should wake this shipper;
        // while a batch is open, commits wait for its deadline. While a repair is due,
        // commits need not wake it either (the repair reads the files).
        self.wake.idle.store(
            self.batch_started.is_none() && self.need_snapshot.is_none(),
            Ordering::SeqCst,
        );
        // A request, a close or a commit that came during this turn (it may have seen the
        // shipper busy and not woken it): another turn now.
        if !self.rx.is_empty()
            || self.wake.closed.load(Ordering::SeqCst)
            || self.wake.notified.load(Ordering::SeqCst)
        {
            self.wake.idle.store(false, Ordering::SeqCst);
            return Some(Instant::now());
        }
        Some(self.next_wakeup())
    }

    /// The next request, if one is waiting; `Disconnected` once every handle is gone.
    fn take_msg(&self) -> Result<Msg, TryRecvError> {
        match self.rx.try_recv() {
            Err(TryRecvError::Empty) if self.wake.closed.load(Ordering::SeqCst) => {
                Err(TryRecvError::Disconnected)
            }
            r => r,
        }
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
                if self.need_snapshot.is_some()
                    || self.batch_started.is_some()
                    || self.spooled > 0 =>
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
        self.metrics
            .step(ok, txid, self.batch_started.is_none(), behind);
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
            st.pending_txns = usize::from(self.batch_started.is_some());
            st.last_sync_ms = Some(now_ms());
        }
        self.note_step(true);
        self.retry_at = None;
        self.backoff = Duration::from_millis(100);
        self.set_error(None);
        self.publish_status(false, true);
    }

    /// Commits since the last look (notified by this process's connections, or seen in the
    /// wal-index when another process made them) open the interval's batch.
    fn note_commits(&mut self) {
        let notified = self.wake.notified.swap(false, Ordering::AcqRel);
        if self.replica.is_none() {
            return;
        }
        let foreign = !notified && self.foreign_commits();
        self.foreign_read |= foreign;
        if self.batch_started.is_none() && (notified || foreign) {
            self.batch_started = Some(Instant::now());
            if !self.gate.other_writer() {
                self.metrics.commit_seen(now_ms()); // a standby's lag means nothing
            }
        }
    }

    /// Did the wal-index move past what the tail has read (a commit made without notifying:
    /// another process, or a connection that does not use walship)?
    fn foreign_commits(&self) -> bool {
        let Some(shm) = self.shared.shm_header().filter(|s| s.is_init) else {
            return false;
        };
        match self.shared.tail().position() {
            Some(Position::Wal(p)) => {
                (shm.salts() != p.salts() && shm.mx_frame > 0) || shm.mx_frame > p.frame
            }
            Some(Position::File { .. }) => shm.mx_frame > 0,
            None => false,
        }
    }

    /// Bytes of WAL frames committed and not yet read, by the wal-index (0 when unknown).
    fn wal_backlog(&self) -> u64 {
        let Some(shm) = self.shared.shm_header().filter(|s| s.is_init) else {
            return 0;
        };
        match self.shared.tail().position() {
            Some(Position::Wal(p)) if p.salts() == shm.salts() => {
                shm.mx_frame.saturating_sub(p.frame) as u64 * p.page_size as u64
            }
            _ => 0,
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
                Err(e) => self.failed(e),
            }
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
            Ok(()) => {
                self.succeeded();
                #[cfg(feature = "judge")]
                self.judge(false);
            }
            Err(e) => {
                self.batch_started = None;
                self.failed(e)
            }
        }
    }

    /// Everything received so far, shipped now.
    fn sync_all(&mut self) -> Result<u64, String> {
        if !self.may_write(true) {
            return Err(self.gate.blocked().unwrap_or("not the writer").to_string());
        }
        // Everything committed before the request is in the WAL (or already read): read it all.
        self.wake.notified.store(false, Ordering::Release);
        // An image read from here on holds every commit made before the request, so once a
        // repair has shipped one, a writer that breaks continuity again (another process
        // restarting the WAL in a tight loop) cannot make the answer wrong, only later.
        let mut repaired = false;
        for _ in 0..2 {
            if self.need_snapshot.is_some() {
                let before = self.repairs();
                if !self.snapshot()? {
                    return Ok(0);
                }
                repaired |= self.repairs() > before;
            }
            self.ship_batch()?;
            if self.need_snapshot.is_none() || repaired {
                break;
            }
        }
        if let (Some(why), false) = (&self.need_snapshot, repaired) {
            return Err(format!(
                "the replica could not be brought up to date: {why}"
            ));
        }
        if self.spooled > 0 {
            self.drain_spool()?;
        }
        self.succeeded();
        Ok(self.replica.as_ref().map(|r| r.txid).unwrap_or(0))
    }

    /// Reads what was committed since the last file and ships it as one level-0 file.
    fn ship_batch(&mut self) -> Result<(), String> {
        self.batch_started = None;
        if self.replica.is_none() {
            return Err("no replica position".into());
        }
        let shm = self.shared.shm_header();
        let shared = self.shared.clone();
        let mut tail = shared.tail();
        let before = tail.position();
        tail.advance(shm);
        log::debug!(
            "{}: read the WAL from {before:?} to {:?} ({} frames pending, shm {:?})",
            self.s.db_path,
            tail.position(),
            tail.pending_frames(),
            shm.map(|s| (s.mx_frame, s.salts()))
        );
        if let Some(why) = tail.lost() {
            self.need_snapshot = Some(why.to_string());
            return Ok(());
        }
        let Some(taken) = tail.peek() else {
            // Nothing new; the position may still have moved (a restart, an emptied WAL).
            let pos = tail.position();
            drop(tail);
            if let Some(r) = self.replica.as_mut().filter(|r| r.position != pos) {
                r.position = pos;
                let len = r.page_sums.len();
                self.save_state(len, &[]);
            }
            return Ok(());
        };
        let r = self.replica.as_ref().expect("checked above");
        if taken.page_size != r.page_size {
            self.need_snapshot = Some(format!(
                "page size changed from {} to {}",
                r.page_size, taken.page_size
            ));
            self.force_full = true;
            return Ok(());
        }
        let txid = r.txid + 1;
        // The last commit this process notified ended by now (read after the WAL was): the
        // file's time. Commits of other processes notify nothing; they get the reading time.
        let notified = self.wake.last_commit_ms.load(Ordering::Relaxed);
        let ts = if self.foreign_read {
            now_ms()
        } else {
            notified.max(1)
        }
        .max(r.last_ts);
        let (path, enc) = self.encode_scratch(
            "level0.ltx.tmp",
            |e| matches!(e, encode::Error::Local(_)),
            |p| encode::from_tail(&tail, &taken, txid, ts, &r.page_sums, p),
        );
        let enc = match enc {
            Ok(e) => e,
            Err(encode::Error::Lost(why)) => {
                tail.lose(why.clone());
                self.need_snapshot = Some(why);
                let _ = std::fs::remove_file(&path);
                return Ok(());
            }
            Err(encode::Error::Local(e)) => {
                let _ = std::fs::remove_file(&path);
                return Err(format!("encoding TXID {txid:016x} locally failed: {e}"));
            }
        };
        tail.shipped();
        drop(tail);
        self.foreign_read = false;
        self.queued.store(0, Ordering::Release);
        self.wake.early_mx.store(
            match taken.end {
                Position::Wal(p) => p
                    .frame
                    .saturating_add((BATCH_SHIP_BYTES / p.page_size as u64) as u32),
                Position::File { .. } => u32::MAX,
            },
            Ordering::Relaxed,
        );
        let (kept, r) = self.upload_level0(txid, ts, &path, enc.pages);
        if !kept {
            // Neither uploaded nor spooled: the replica stays where it was; the pages are in
            // the database, so the repair (a resync) ships them later.
            return r;
        }
        let rep = self.replica.as_mut().expect("checked above");
        rep.txid = txid;
        rep.last_ts = ts;
        rep.checksum = enc.checksum;
        rep.db_size = taken.db_size;
        rep.position = Some(taken.end);
        let old_len = rep.page_sums.len();
        let changed = encode::apply_sums(&mut rep.page_sums, &enc.sums, taken.db_size);
        self.save_state(old_len, &changed);
        r
    }
}
