//! Where a finished level-0 file goes: storage, or the spool while storage is down or files
//! wait before it; and where encoding scratch files live (walship's directory, else the
//! system's temporary one). Never holds a file in memory, never reorders TXIDs.

use super::Shipper;
use crate::storage::Storage;

impl Shipper {
    /// Runs `encode` into the scratch file `name`, and once more in the system's temporary
    /// directory when it fails in a way `local` calls local (a full or read-only directory).
    pub(super) fn encode_scratch<T, E>(
        &self,
        name: &str,
        local: impl Fn(&E) -> bool,
        mut encode: impl FnMut(&std::path::Path) -> Result<T, E>,
    ) -> (std::path::PathBuf, Result<T, E>) {
        let path = self.scratch(name);
        let r = encode(&path);
        match &r {
            Err(e) if local(e) && path != self.fallback_path(name) => {
                let _ = std::fs::remove_file(&path);
                let path = self.fallback(name);
                let r = encode(&path);
                (path, r)
            }
            _ => (path, r),
        }
    }

    /// Uploads the level-0 file at `path` (or spools it: storage down, or files waiting before
    /// it). Returns whether the file is kept (uploaded or spooled: the replica's TXID moves) and
    /// `Err` when it is not in storage yet.
    pub(super) fn upload_level0(
        &mut self,
        txid: u64,
        ts: i64,
        path: &std::path::Path,
        pages: usize,
    ) -> (bool, Result<(), String>) {
        let mut upload_error = None;
        if self.gate.paused() {
            upload_error = Some(format!(
                "TXID {txid:016x} not uploaded: the replica's lease could not be renewed"
            ));
        } else if self.spooled == 0 {
            let r = std::fs::File::open(path)
                .map_err(|e| e.to_string())
                .and_then(|mut f| {
                    self.storage
                        .put(0, txid, txid, ts, &mut f)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = r {
                upload_error = Some(format!("upload of TXID {txid:016x} failed: {e}"));
            }
        }
        if self.spooled > 0 || upload_error.is_some() {
            if let Err(e) = self.spool.push_file(txid, txid, path) {
                let _ = std::fs::remove_file(path);
                // No disk either: the file is dropped, the replica stays where it was, and a
                // resync ships the pages (they are in the database) when storage returns.
                self.need_snapshot = Some(format!("the spool could not be written ({e})"));
                return (
                    false,
                    Err(format!(
                        "{}; spooling it failed too ({e}): the changes are shipped when storage returns",
                        upload_error.unwrap_or_else(|| "storage is behind".into())
                    )),
                );
            }
            self.spooled += 1;
            self.publish_spool();
        } else {
            let _ = std::fs::remove_file(path);
        }
        if let Some(e) = upload_error {
            return (
                true,
                Err(format!(
                    "{e}; spooled locally ({} file(s) waiting)",
                    self.spooled
                )),
            );
        }
        log::debug!(
            "{}: shipped TXID {txid:016x} ({pages} pages)",
            self.s.db_path
        );
        (true, Ok(()))
    }

    /// A scratch file for encoding: in walship's directory, or the system's temporary one when
    /// that cannot be written (said once).
    pub(super) fn scratch(&self, name: &str) -> std::path::PathBuf {
        let here = self.s.work_dir.join(name);
        let ok = std::fs::create_dir_all(&self.s.work_dir)
            .and_then(|_| std::fs::File::create(&here).map(|_| ()))
            .is_ok();
        if ok {
            return here;
        }
        self.fallback(name)
    }

    /// The scratch file `name` in the system's temporary directory, one per database and
    /// process.
    pub(super) fn fallback_path(&self, name: &str) -> std::path::PathBuf {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.s.db_path.hash(&mut h);
        std::env::temp_dir().join(format!(
            "walship-{}-{:016x}-{name}",
            std::process::id(),
            h.finish()
        ))
    }

    /// `fallback_path`, saying once that walship's directory could not be used.
    pub(super) fn fallback(&self, name: &str) -> std::path::PathBuf {
        let tmp = self.fallback_path(name);
        crate::logging::warn_once(&format!("scratch {}", self.s.work_dir.display()), || {
            format!(
                "{}: cannot write in {}; encoding in {} instead",
                self.s.db_path,
                self.s.work_dir.display(),
                tmp.display()
            )
        });
        tmp
    }
}
