//! Where the replica stands, established or re-established: at first open and at takeover
//! (resume from the state file when the WAL position or the file it records is provably still
//! there), after continuity was lost (a resync: an image of the database compared page by page
//! with the replica's page record, and only the differing pages shipped as the next TXID), and
//! a full snapshot only when no trusted page record exists, the page size changed, or one was
//! asked for. At a clean close it records the database file's identity. Never uploads a
//! snapshot ahead of spooled files, never ships a state the database did not have.

use super::state::{self, LocalState};
use super::{encode, Replica, Shipper};
use crate::capture::Position;
use crate::clock::now_ms;
use crate::snapshot;
use crate::storage::{Storage, SNAPSHOT_LEVEL};
use crate::wal_reader;

/// Why a repair did not complete.
enum Repair {
    /// The replica is unchanged: the repair is still due.
    Failed(String),
    /// The replica equals the image, but its file waits in the spool (storage is down).
    Behind(String),
}

impl Shipper {
    pub(super) fn local_state(&self, clean: Option<state::FileId>) -> LocalState {
        let r = self.replica.as_ref();
        LocalState {
            replica: self.storage.describe(),
            txid: r.map(|r| r.txid).unwrap_or(0),
            checksum: r.map(|r| r.checksum).unwrap_or(0),
            page_size: r.map(|r| r.page_size).unwrap_or(0),
            db_size: r.map(|r| r.db_size).unwrap_or(0),
            // The database file as it is now: a WAL position proves only the frames, not a file
            // replaced under them (a file-level restore of a backup).
            clean: clean.or_else(|| state::file_id(std::path::Path::new(&self.s.db_path))),
            position: r.and_then(|r| r.position),
        }
    }

    /// After a shipped file: the page terms (in place: `changed` pages, the record held
    /// `old_len` terms before) and then the state that vouches for them.
    pub(super) fn save_state(&self, old_len: usize, changed: &[u32]) {
        let Some(r) = self.replica.as_ref() else {
            return;
        };
        state::update_sums(&self.s.work_dir, &r.page_sums, old_len, changed);
        self.local_state(None).save(&self.s.work_dir);
    }

    /// After the last connection closed with everything shipped: if SQLite checkpointed and
    /// deleted the WAL, the database file alone is the replica's newest state; remember it.
    pub(super) fn mark_clean(&self) {
        let db = std::path::Path::new(&self.s.db_path);
        let wal_gone = std::fs::symlink_metadata(format!("{}-wal", self.s.db_path))
            .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        let Some(r) = self.replica.as_ref() else {
            return;
        };
        let tail_clean = {
            let t = self.shared.tail();
            t.is_empty() && t.lost().is_none() && t.position() == r.position
        };
        if !wal_gone || !tail_clean || !matches!(r.position, Some(Position::File { .. })) {
            return;
        }
        if let Some(id) = state::file_id(db) {
            state::save_sums(&self.s.work_dir, &r.page_sums);
            self.local_state(Some(id)).save(&self.s.work_dir);
        }
    }

    /// The replica's newest TXID (one LIST per level).
    fn replica_tail_txid(&self) -> Result<Option<u64>, String> {
        let mut best = None;
        for level in [0u8, 1, 2, 3, SNAPSHOT_LEVEL] {
            for f in self.storage.list(level).map_err(|e| e.to_string())? {
                best = best.max(Some(f.max_txid));
            }
        }
        Ok(best)
    }

    /// At first open or takeover: if the state file describes the replica's newest TXID and its
    /// page record adds up, adopt it; resume at once when its position is provably still
    /// there (the WAL still holds the recorded frame, or the file is untouched since a clean
    /// close). Returns true when resumed; with a trusted record but no proof, `self.replica`
    /// is set and the caller compares an image with it.
    fn resume_from_state(&mut self, tail_txid: u64) -> bool {
        let Some(st) = LocalState::load(&self.s.work_dir) else {
            return false;
        };
        if st.txid != tail_txid || st.replica != self.storage.describe() {
            return false;
        }
        let Some(sums) = state::load_sums(&self.s.work_dir, st.db_size, st.checksum) else {
            return false;
        };
        let wal = std::fs::File::open(format!("{}-wal", self.s.db_path)).ok();
        let wal_header = wal
            .as_ref()
            .and_then(|f| wal_reader::header(f).ok().flatten());
        let born = self.shared.tail().born();
        // The file is byte for byte the one the position recorded: its stamp proves it (a racy
        // stamp, taken within a clock tick of a write, proves nothing: see `FileStamp`).
        let untouched = |stamp: &Option<state::FileId>| {
            let now = state::file_id(std::path::Path::new(&self.s.db_path));
            matches!((stamp, now), (Some(s), Some(n)) if s.proves(&n))
        };
        let proven = match st.position {
            Some(Position::Wal(p)) if untouched(&st.clean) => wal
                .as_ref()
                .is_some_and(|f| wal_reader::holds(f, &p).unwrap_or(false))
                .then_some(Position::Wal(p)),
            // The file as a clean close left it, and no WAL — or only the one this process
            // began since it opened the database (nothing was checkpointed into the file yet).
            Some(Position::File { counter, stamp }) if untouched(&stamp) => match wal_header {
                None => Some(Position::File { counter, stamp }),
                Some(h) if Some(h) == born => Some(Position::Wal(wal_reader::WalPos::start(&h))),
                Some(_) => None,
            },
            _ => None,
        };
        self.replica = Some(Replica {
            txid: st.txid,
            checksum: st.checksum,
            page_size: st.page_size,
            db_size: st.db_size,
            page_sums: sums,
            position: st.position,
            last_ts: now_ms(),
        });
        let Some(pos) = proven else {
            return false;
        };
        self.shared.tail().start(pos);
        // From here on the file changes: the clean mark is spent.
        self.local_state(None).save(&self.s.work_dir);
        log::info!(
            "{}: replica is current at TXID {:016x} (the {} it was shipped from is unchanged); resuming",
            self.s.db_path,
            st.txid,
            if matches!(pos, Position::Wal(_)) { "WAL position" } else { "database file" }
        );
        true
    }

    /// Establishes continuity: resume, resync (ship the pages that differ from the replica's
    /// page record), or a full snapshot. `Ok(false)`: the database is still empty.
    pub(super) fn snapshot(&mut self) -> Result<bool, String> {
        // Files spooled before (an outage, maybe in an earlier process) come first: a snapshot's
        // TXID follows theirs, so it may not reach storage before them.
        if self.spooled > 0 {
            if self.replica.is_none() {
                self.drop_superseded_spool()?;
            }
            self.drain_spool()?;
        }
        let requested = super::snapshot_request_file(&self.s.work_dir).exists();
        let mut tail_txid = None;
        if self.replica.is_none() {
            tail_txid = self.replica_tail_txid()?;
            if let Some(t) = tail_txid.filter(|_| !requested) {
                if self.resume_from_state(t) {
                    self.need_snapshot = None;
                    return Ok(true);
                }
            }
        }
        let reason = self.need_snapshot.clone().unwrap_or_default();
        // Nothing is tracked while the image is read: the tail restarts from the image's
        // position, and a WAL restart in between (a moment) shows up as a lost position.
        self.shared.tail().stop();
        let img = snapshot::take(&self.s.db_path, &self.s.work_dir, Some(&self.shared))
            .map_err(|e| e.to_string())?;
        if img.db_size == 0 {
            return Ok(false);
        }
        // Track from the image at once, not after the upload: a busy writer restarts the WAL
        // while a large repair uploads, and that restart must be guarded (its unshipped frames
        // staged) rather than found afterwards as a restart nobody saw, which would cost
        // another repair, and so on for as long as the writer keeps up.
        self.shared.tail().start(img.position);
        let full = requested
            || self.force_full
            || self
                .replica
                .as_ref()
                .is_none_or(|r| r.page_size != img.page_size);
        let result = if full {
            self.full_snapshot(&img, tail_txid, &reason)
        } else {
            self.resync(&img, &reason)
        };
        match result {
            Err(Repair::Failed(e)) => {
                // The replica is where it was: the repair is still due, from a new image.
                self.shared.tail().stop();
                self.need_snapshot = Some(reason);
                Err(e)
            }
            ok_or_behind => {
                // The replica equals the image (uploaded, or waiting in the spool); the tail
                // has tracked from there since the image was read.
                self.need_snapshot = None;
                self.force_full = false;
                self.batch_started = None;
                match ok_or_behind {
                    Err(Repair::Behind(e)) => Err(e),
                    _ => Ok(true),
                }
            }
        }
    }

    fn full_snapshot(
        &mut self,
        img: &snapshot::Image,
        tail_txid: Option<u64>,
        reason: &str,
    ) -> Result<(), Repair> {
        let taken_at = now_ms().max(self.replica.as_ref().map_or(0, |r| r.last_ts));
        let txid = match self.replica.as_ref() {
            Some(r) => r.txid + 1,
            None => tail_txid.map_or(1, |t| t + 1),
        };
        self.write_snapshot(img, txid, taken_at)
            .map_err(Repair::Failed)?;
        let what = format!(
            "snapshot at TXID {txid:016x} ({reason}): {} pages of {} bytes",
            img.db_size, img.page_size
        );
        log::info!("{}: wrote {what}", self.s.db_path);
        self.note_repair(true, what);
        self.replica = Some(Replica {
            txid,
            checksum: img.checksum,
            page_size: img.page_size,
            db_size: img.db_size,
            page_sums: img.page_sums.clone(),
            position: Some(img.position),
            last_ts: taken_at,
        });
        state::save_sums(&self.s.work_dir, &img.page_sums);
        self.local_state(None).save(&self.s.work_dir);
        Ok(())
    }

    /// Ships the pages of `img` that differ from the replica as its next TXID.
    fn resync(&mut self, img: &snapshot::Image, reason: &str) -> Result<(), Repair> {
        let r = self.replica.as_ref().expect("resync needs a page record");
        let changed = encode::diff(img, &r.page_sums);
        if changed.is_empty() && img.db_size == r.db_size {
            log::info!(
                "{}: replica is current at TXID {:016x} (the database matches it page for page); resuming",
                self.s.db_path,
                r.txid
            );
            let old_len = r.page_sums.len();
            if let Some(r) = self.replica.as_mut() {
                r.position = Some(img.position);
            }
            self.save_state(old_len, &[]);
            return Ok(());
        }
        let txid = r.txid + 1;
        let ts = now_ms().max(r.last_ts);
        let (path, enc) = self.encode_scratch(
            "resync.ltx.tmp",
            |_| true,
            |p| encode::from_image_diff(img, &changed, &r.page_sums, txid, ts, p),
        );
        let enc = enc.map_err(|e| {
            let _ = std::fs::remove_file(&path);
            match e {
                encode::Error::Lost(m) | encode::Error::Local(m) => {
                    Repair::Failed(format!("encoding the resync locally failed: {m}"))
                }
            }
        })?;
        let (kept, uploaded) = self.upload_level0(txid, ts, &path, enc.pages);
        if !kept {
            return Err(Repair::Failed(uploaded.err().unwrap_or_default()));
        }
        let rep = self.replica.as_mut().expect("checked above");
        let old_len = rep.page_sums.len();
        rep.txid = txid;
        rep.last_ts = ts;
        rep.checksum = enc.checksum;
        rep.db_size = img.db_size;
        rep.position = Some(img.position);
        let pgnos = encode::apply_sums(&mut rep.page_sums, &enc.sums, img.db_size);
        self.save_state(old_len, &pgnos);
        let what = format!(
            "resync at TXID {txid:016x} ({reason}): {} changed pages of {}",
            enc.pages, img.db_size
        );
        log::info!("{}: {what}", self.s.db_path);
        self.note_repair(false, what);
        uploaded.map_err(Repair::Behind)
    }

    /// Counts a snapshot (`true`) or a resync in the status, with what it was.
    /// Snapshots and resyncs written so far (each from an image read when it was written).
    pub(super) fn repairs(&self) -> u64 {
        let st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        st.snapshots + st.resyncs
    }

    fn note_repair(&self, snapshot: bool, what: String) {
        let mut st = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if snapshot {
            st.snapshots += 1;
        } else {
            st.resyncs += 1;
        }
        st.last_repair = Some(what);
    }

    fn write_snapshot(
        &self,
        img: &snapshot::Image,
        txid: u64,
        taken_at: i64,
    ) -> Result<(), String> {
        // Beside the image (in walship's directory, or the system's temporary one when that is
        // full or read-only: `snapshot::take`), and in the temporary one if it fills up here.
        let mut tmp_path = img.path.with_extension("ltx.tmp");
        let mut encoded = encode::snapshot(img, txid, taken_at, &tmp_path);
        if encoded.is_err() && tmp_path != self.fallback_path("snapshot.ltx.tmp") {
            let fallback = self.fallback("snapshot.ltx.tmp");
            let _ = std::fs::remove_file(&tmp_path);
            tmp_path = fallback;
            encoded = encode::snapshot(img, txid, taken_at, &tmp_path);
        }
        let r = encoded.and_then(|mut f| {
            self.storage
                .put(SNAPSHOT_LEVEL, 1, txid, taken_at, &mut f)
                .map(|_| ())
                .map_err(|e| format!("upload of snapshot TXID {txid:016x} failed: {e}"))
        });
        let _ = std::fs::remove_file(&tmp_path);
        r
    }
}
