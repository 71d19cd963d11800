//! Where the replica stands, established or re-established: at first open (resume after a clean
//! close, resume when an image of the database matches what was shipped, or a snapshot), after a
//! lost continuity (a snapshot as the next TXID), and at a clean close (recording the database
//! file's identity so the next open resumes without reading it). Never uploads a snapshot ahead
//! of spooled files.

use std::sync::atomic::Ordering;

use super::state::{self, LocalState};
use super::{encode, Msg, Replica, Shipper};
use crate::capture::{Event, Position};
use crate::clock::now_ms;
use crate::ltx;
use crate::snapshot;
use crate::storage::{Storage, SNAPSHOT_LEVEL};

impl Shipper {
    pub(super) fn local_state(&self, clean: Option<state::FileId>) -> LocalState {
        let r = self.replica.as_ref();
        LocalState {
            replica: self.storage.describe(),
            txid: r.map(|r| r.txid).unwrap_or(0),
            checksum: r.map(|r| r.checksum).unwrap_or(0),
            page_size: r.map(|r| r.page_size).unwrap_or(0),
            db_size: r.map(|r| r.db_size).unwrap_or(0),
            clean,
        }
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
        if !wal_gone || !self.batch.is_empty() {
            return;
        }
        if let Some(id) = state::file_id(db) {
            state::save_sums(&self.s.work_dir, &r.page_sums);
            self.local_state(Some(id)).save(&self.s.work_dir);
        }
    }

    /// At first open: the state file says the database file is exactly as it was at a clean
    /// close that had shipped everything, so the replica is current — resume with no reading.
    fn resume_from_clean_close(&mut self, tail_txid: u64) -> bool {
        let Some(st) = LocalState::load(&self.s.work_dir) else {
            return false;
        };
        let same_file =
            st.clean.is_some() && st.clean == state::file_id(std::path::Path::new(&self.s.db_path));
        if !same_file || st.txid != tail_txid || st.replica != self.storage.describe() {
            return false;
        }
        let Some(sums) = state::load_sums(&self.s.work_dir, st.db_size, st.checksum) else {
            return false;
        };
        self.replica = Some(Replica {
            txid: st.txid,
            checksum: st.checksum,
            page_size: st.page_size,
            db_size: st.db_size,
            page_sums: sums,
            // The database file alone: the WAL is empty or was created after this open, and
            // every commit on it must continue from frame 0.
            position: Position {
                salt1: 0,
                salt2: 0,
                frame: 0,
            },
            last_ts: now_ms(),
            fresh: false,
        });
        // From here on the file changes: the mark is spent.
        self.local_state(None).save(&self.s.work_dir);
        log::info!(
            "{}: replica is current at TXID {:016x} (database unchanged since its last clean close); resuming",
            self.s.db_path, st.txid
        );
        true
    }

    /// The newest file in the replica: (txid, database checksum if this host's state file
    /// vouches for it, page size). Litestream-format files carry no database checksum.
    fn replica_tail(&self) -> Result<Option<(u64, u64, u32)>, String> {
        let mut best: Option<crate::storage::FileInfo> = None;
        for level in [0u8, 1, 2, 3, SNAPSHOT_LEVEL] {
            for f in self.storage.list(level).map_err(|e| e.to_string())? {
                if best.as_ref().is_none_or(|b| f.max_txid > b.max_txid) {
                    best = Some(f);
                }
            }
        }
        let Some(f) = best else { return Ok(None) };
        let rd = self
            .storage
            .open(f.level, f.min_txid, f.max_txid)
            .map_err(|e| e.to_string())?;
        let dec =
            ltx::Decoder::new(rd).map_err(|e| format!("reading the replica's newest file: {e}"))?;
        let (page_size, txid) = (dec.header().page_size, dec.header().max_txid);
        let checksum = LocalState::load(&self.s.work_dir)
            .filter(|st| {
                st.txid == txid
                    && st.replica == self.storage.describe()
                    && st.page_size == page_size
            })
            .map(|st| st.checksum)
            .unwrap_or(0);
        Ok(Some((txid, checksum, page_size)))
    }

    /// Reads a consistent image and makes the replica match it: resume if it already does,
    /// otherwise write a snapshot as the next TXID. `Ok(false)`: the database is still empty.
    pub(super) fn snapshot(&mut self) -> Result<bool, String> {
        // Files spooled before (an outage, maybe in an earlier process) come first: a snapshot's
        // TXID follows theirs, so it may not reach storage before them.
        if self.spooled > 0 {
            if self.replica.is_none() {
                self.drop_superseded_spool()?;
            }
            self.drain_spool()?;
        }
        if self.replica.is_none() {
            let tail = self.replica_tail()?;
            if let Some((txid, _, _)) = tail {
                let requested = super::snapshot_request_file(&self.s.work_dir).exists();
                if !requested && self.resume_from_clean_close(txid) {
                    self.need_snapshot = None;
                    return Ok(true);
                }
            }
        }
        // Commits already queued predate the image: the image will contain them.
        while let Ok(m) = self.rx.try_recv() {
            match m {
                Msg::Event(Event::Commit(t)) => {
                    self.queued.fetch_sub(t.bytes(), Ordering::AcqRel);
                }
                Msg::Event(_) => {}
                other => self.deferred.insert(0, other),
            }
        }
        let tail = match &self.replica {
            Some(r) => Some((r.txid, r.checksum, r.page_size)),
            None => self.replica_tail()?,
        };
        let img = snapshot::take(&self.s.db_path, &self.s.work_dir).map_err(|e| e.to_string())?;
        // The image holds every commit made before this moment, and none made after it.
        let taken_at = now_ms();
        if img.db_size == 0 {
            return Ok(false);
        }
        // A pending `walship snapshot` request is answered here rather than by resuming.
        let requested = super::snapshot_request_file(&self.s.work_dir).exists();
        let resumed = self.replica.is_none()
            && !requested
            && tail.is_some_and(|(_, c, ps)| {
                c == img.checksum && ps == img.page_size && img.db_size > 0
            });
        let txid = if resumed {
            tail.map(|t| t.0).unwrap_or(1)
        } else {
            let txid = tail.map(|t| t.0 + 1).unwrap_or(1);
            self.write_snapshot(&img, txid, taken_at)?;
            txid
        };
        if resumed {
            log::info!(
                "{}: replica is current at TXID {txid:016x}; resuming",
                self.s.db_path
            );
        } else {
            let why = self.need_snapshot.as_deref().unwrap_or("");
            log::info!(
                "{}: wrote snapshot at TXID {txid:016x} ({why})",
                self.s.db_path
            );
            self.status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .snapshots += 1;
        }
        self.replica = Some(Replica {
            txid,
            checksum: img.checksum,
            page_size: img.page_size,
            db_size: img.db_size,
            page_sums: img.page_sums.clone(),
            position: img.position,
            last_ts: taken_at,
            fresh: true,
        });
        self.local_state(None).save(&self.s.work_dir);
        self.need_snapshot = None;
        self.batch.clear();
        self.batch_started = None;
        Ok(true)
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
        let fallback = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.s.db_path.hash(&mut h); // one name per database and process
            let name = format!(
                "walship-{}-{:016x}-snapshot.ltx.tmp",
                std::process::id(),
                h.finish()
            );
            std::env::temp_dir().join(name)
        };
        if let Err(e) = &encoded {
            if tmp_path != fallback {
                crate::logging::warn_once(&format!("snapshot.ltx {}", tmp_path.display()), || {
                    format!(
                        "{}: {e}; encoding snapshots in {} instead",
                        self.s.db_path,
                        fallback.display()
                    )
                });
                let _ = std::fs::remove_file(&tmp_path);
                tmp_path = fallback;
                encoded = encode::snapshot(img, txid, taken_at, &tmp_path);
            }
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
