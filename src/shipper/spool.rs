//! The spool: level-0 files that could not be uploaded yet, kept on local disk next to the
//! database (`.<db>-walship/spool/<min>-<max>.ltx`), so an outage costs disk, not memory.
//!
//! Owns writing them durably (temp file, fsync, rename, fsync the directory) and draining them
//! to storage strictly in TXID order, deleting each only after storage acknowledged it. Never
//! reorders, never deletes an unuploaded file (except by `discard`, for files the replica's
//! history no longer continues from: see `gate.rs`), never touches the database.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::ltx;
use crate::storage::Storage;

pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn new(work_dir: &Path) -> Spool {
        Spool {
            dir: work_dir.join("spool"),
        }
    }

    /// Spooled files, oldest first: (min TXID, max TXID, path, size).
    pub fn files(&self) -> Vec<(u64, u64, PathBuf, u64)> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<_> = rd
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let (min, max) = ltx::parse_file_name(name.to_str()?)?;
                let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                Some((min, max, e.path(), size))
            })
            .collect();
        out.sort_by_key(|f| (f.0, f.1));
        out
    }

    pub fn bytes(&self) -> u64 {
        self.files().iter().map(|f| f.3).sum()
    }

    /// Writes one file durably. An error (full disk, unwritable directory) leaves no partial file.
    pub fn push(&self, min: u64, max: u64, bytes: &[u8]) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let name = ltx::file_name(min, max);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(&name))?;
            File::open(&self.dir)?.sync_all()
        };
        write().inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
    }

    /// Moves the finished file at `path` (on the same file system) into the spool, durably.
    pub fn push_file(&self, min: u64, max: u64, path: &Path) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let dest = self.dir.join(ltx::file_name(min, max));
        File::open(path)?.sync_all()?;
        if fs::rename(path, &dest).is_err() {
            // Another file system (the scratch file fell back to the temporary directory).
            let bytes = fs::read(path)?;
            self.push(min, max, &bytes)?;
            let _ = fs::remove_file(path);
            return Ok(());
        }
        File::open(&self.dir)?.sync_all()
    }

    /// Removes files that can no longer be uploaded (best effort).
    pub fn discard(&self, paths: &[PathBuf]) {
        for p in paths {
            let _ = fs::remove_file(p);
        }
    }

    /// Uploads spooled files in order until one fails. Returns how many were uploaded.
    pub fn drain(&self, storage: &dyn Storage) -> Result<usize, String> {
        let mut n = 0;
        for (min, max, path, _) in self.files() {
            let bytes =
                fs::read(&path).map_err(|e| format!("reading spooled {}: {e}", path.display()))?;
            let ts = ltx::Header::decode(&bytes)
                .map(|h| h.timestamp_ms)
                .unwrap_or(0);
            storage
                .put(0, min, max, ts, &mut bytes.as_slice())
                .map_err(|e| format!("upload of spooled TXID {max:016x} failed: {e}"))?;
            fs::remove_file(&path)
                .map_err(|e| format!("removing spooled {}: {e}", path.display()))?;
            n += 1;
        }
        Ok(n)
    }
}
