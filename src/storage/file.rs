//! File backend: Litestream 0.5's file-replica layout, `<root>/ltx/<level>/<min>-<max>.ltx`.
//!
//! Writes go to a temporary name in the same directory, are fsync'd, renamed, and the directory
//! is fsync'd, so a crash leaves either the whole file or none. Never writes outside `root`.
//!
//! Named objects (the lease) are `<root>/<name>`; their tag is the SHA-256 of the body. A
//! conditional write or delete holds an exclusive `flock` on `<root>/.<name>.lock` while it
//! compares and renames, so it is atomic among walship processes on hosts sharing the
//! directory (a filesystem without `flock`, such as some NFS setups, does not give that).

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::{FileInfo, Precondition, Storage, StorageError, Tagged};
use crate::ltx;

pub struct FileStorage {
    root: PathBuf,
}

impl FileStorage {
    pub fn new(root: PathBuf) -> FileStorage {
        FileStorage { root }
    }

    fn level_dir(&self, level: u8) -> PathBuf {
        self.root.join("ltx").join(level.to_string())
    }

    fn path(&self, level: u8, min: u64, max: u64) -> PathBuf {
        self.level_dir(level).join(ltx::file_name(min, max))
    }

    fn named(&self, op: &'static str, name: &str) -> Result<PathBuf, StorageError> {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(StorageError::Config {
                replica: self.describe(),
                message: format!("{op}: '{name}' is not a plain file name"),
            });
        }
        Ok(self.root.join(name))
    }

    /// Runs `f` holding the exclusive lock of named object `p` (blocking: holders keep it
    /// for one small read and rename).
    fn with_lock<T>(
        &self,
        op: &'static str,
        p: &Path,
        f: impl FnOnce() -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        fs::create_dir_all(&self.root).map_err(|e| io_err(op, &self.root, e))?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        let lock_path = self.root.join(format!(".{name}.lock"));
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_err(op, &lock_path, e))?;
        lock.lock().map_err(|e| io_err(op, &lock_path, e))?;
        f()
        // The lock is released when `lock` is dropped.
    }
}

fn tag_of(body: &[u8]) -> String {
    super::sigv4::sha256_hex(body)
}

/// The named object's current body, or `None`.
fn read_named(op: &'static str, p: &Path) -> Result<Option<Vec<u8>>, StorageError> {
    match fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(op, p, e)),
    }
}

fn io_err(op: &'static str, p: &Path, e: std::io::Error) -> StorageError {
    let hint = match e.kind() {
        std::io::ErrorKind::PermissionDenied => Some("check the replica directory's permissions"),
        _ => None,
    };
    if e.kind() == std::io::ErrorKind::NotFound && op != "put" {
        return StorageError::NotFound {
            op,
            object: p.display().to_string(),
        };
    }
    StorageError::Io {
        op,
        object: p.display().to_string(),
        source: e,
        hint,
    }
}

impl Storage for FileStorage {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        let dir = self.level_dir(level);
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err("list", &dir, e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| io_err("list", &dir, e))?;
            let name = ent.file_name();
            let Some((min_txid, max_txid)) = name.to_str().and_then(ltx::parse_file_name) else {
                continue;
            };
            // A directory (or other non-file) with an LTX name is not an LTX file.
            let Ok(meta) = fs::metadata(ent.path()) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let size = meta.len();
            out.push(FileInfo {
                level,
                min_txid,
                max_txid,
                size,
            });
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    fn put(
        &self,
        level: u8,
        min: u64,
        max: u64,
        timestamp_ms: i64,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let dir = self.level_dir(level);
        fs::create_dir_all(&dir).map_err(|e| io_err("put", &dir, e))?;
        let dst = self.path(level, min, max);
        let tmp = dir.join(format!(".{}.tmp", ltx::file_name(min, max)));
        let mut write = || -> std::io::Result<u64> {
            let mut f = fs::File::create(&tmp)?;
            let n = std::io::copy(src, &mut f)?;
            f.flush()?;
            // Litestream's restore reads a file replica's timestamps from mtime.
            let t = std::time::UNIX_EPOCH
                + std::time::Duration::from_millis(timestamp_ms.max(0) as u64);
            f.set_modified(t)?;
            f.sync_all()?;
            fs::rename(&tmp, &dst)?;
            fs::File::open(&dir)?.sync_all()?;
            Ok(n)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("put", &dst, e)
        })
    }

    fn open(&self, level: u8, min: u64, max: u64) -> Result<Box<dyn Read + Send>, StorageError> {
        let p = self.path(level, min, max);
        let f = fs::File::open(&p).map_err(|e| io_err("get", &p, e))?;
        Ok(Box::new(std::io::BufReader::with_capacity(1 << 20, f)))
    }

    fn delete(&self, level: u8, min: u64, max: u64) -> Result<(), StorageError> {
        let p = self.path(level, min, max);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("delete", &p, e)),
        }
    }

    fn get_named(&self, name: &str) -> Result<Option<Tagged>, StorageError> {
        let p = self.named("get", name)?;
        // Named objects are replaced by rename, so a plain read sees a whole version.
        Ok(read_named("get", &p)?.map(|body| Tagged {
            tag: tag_of(&body),
            body,
        }))
    }

    fn put_named_if(
        &self,
        name: &str,
        body: &[u8],
        cond: Precondition<'_>,
    ) -> Result<String, StorageError> {
        let p = self.named("put", name)?;
        self.with_lock("put", &p, || {
            let ok = match (read_named("put", &p)?, cond) {
                (None, Precondition::Absent) => true,
                (Some(cur), Precondition::Matches(t)) => tag_of(&cur) == t,
                _ => false,
            };
            if !ok {
                return Err(StorageError::PreconditionFailed {
                    op: "put",
                    object: p.display().to_string(),
                });
            }
            let tmp = self.root.join(format!(".{name}.tmp"));
            let write = || -> std::io::Result<()> {
                let mut f = fs::File::create(&tmp)?;
                f.write_all(body)?;
                f.sync_all()?;
                fs::rename(&tmp, &p)?;
                fs::File::open(&self.root)?.sync_all()
            };
            write().map_err(|e| {
                let _ = fs::remove_file(&tmp);
                io_err("put", &p, e)
            })?;
            Ok(tag_of(body))
        })
    }

    fn delete_named_if(&self, name: &str, tag: &str) -> Result<(), StorageError> {
        let p = self.named("delete", name)?;
        self.with_lock("delete", &p, || match read_named("delete", &p)? {
            None => Ok(()),
            Some(cur) if tag_of(&cur) == tag => match fs::remove_file(&p) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_err("delete", &p, e)),
            },
            Some(_) => Err(StorageError::PreconditionFailed {
                op: "delete",
                object: p.display().to_string(),
            }),
        })
    }
}
