//! The shipper's view of its own replica: a `Storage` in front of the real one that remembers
//! the listing of every level and keeps a local copy of each level-0 file until it is deleted.
//!
//! The shipper is the replica's only writer, so after one LIST per level it knows every change
//! it makes; steady-state maintenance then costs no LIST (they were most of the requests that
//! were not uploads) and compaction reads level-0 files from local disk instead of GETting them
//! back. The listing is reloaded every `REFRESH` and after any error from storage, so a file
//! removed behind our back is noticed. Owns the local copies under `<work dir>/l0/`; never
//! caches anything but level 0 and never answers `open` from a copy it did not write itself
//! in this process (the directory is emptied by `reset`, when this process becomes the
//! replica's writer: taking the local lock and the lease). Named objects (the lease) pass
//! straight through, never cached. Every call that reaches storage is counted in the
//! database's metrics (`metrics.rs`: operations, errors, bytes); answers from the cache are not.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::{DbMetrics, Op};
use crate::storage::{FileInfo, Precondition, Storage, StorageError, Tagged};

/// How long a remembered listing is trusted.
const REFRESH: Duration = Duration::from_secs(600);

/// Level-0 copies kept at most; past this, new files are not copied (compaction GETs them).
const MAX_LOCAL_BYTES: u64 = 256 << 20;

struct Known {
    /// Level → files by (min, max) TXID (snapshots all start at TXID 1).
    levels: BTreeMap<u8, BTreeMap<(u64, u64), FileInfo>>,
    loaded_at: Instant,
}

pub struct Cached {
    inner: Box<dyn Storage>,
    dir: PathBuf,
    known: Mutex<Option<Known>>,
    /// Bytes of level-0 copies on disk.
    local_bytes: AtomicU64,
    metrics: Arc<DbMetrics>,
}

/// A GET body that counts its bytes as they are read.
struct CountingRead {
    inner: Box<dyn Read + Send>,
    metrics: Arc<DbMetrics>,
}

impl Read for CountingRead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.metrics.storage_bytes(Op::Get, n as u64);
        Ok(n)
    }
}

impl Cached {
    /// Touches nothing on disk until `reset`.
    pub fn new(inner: Box<dyn Storage>, work_dir: &Path, metrics: Arc<DbMetrics>) -> Cached {
        let dir = work_dir.join("l0");
        Cached {
            inner,
            dir,
            known: Mutex::new(None),
            local_bytes: AtomicU64::new(0),
            metrics,
        }
    }

    fn local(&self, min: u64, max: u64) -> PathBuf {
        self.dir.join(format!("{min:016x}-{max:016x}.ltx"))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Option<Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets every listing and every local copy: called whenever this process (re)gains the
    /// right to write the replica, since another writer may have changed it meanwhile.
    pub fn reset(&self) {
        *self.known() = None;
        let _ = fs::remove_dir_all(&self.dir);
        self.local_bytes.store(0, Ordering::Relaxed);
    }

    /// Forgets every listing (after an error: storage may not be what we think).
    fn forget(&self) {
        let mut k = self.known();
        if let Some(k) = k.as_mut() {
            k.levels.clear();
        }
    }

    fn note<T>(&self, r: Result<T, StorageError>) -> Result<T, StorageError> {
        if r.is_err() {
            self.forget();
        }
        r
    }

    /// Counts one call that reached storage. A failed precondition is an answer (the lease
    /// protocol expects them), not an error.
    fn count<T>(
        &self,
        op: Op,
        r: Result<T, StorageError>,
        bytes: impl FnOnce(&T) -> u64,
    ) -> Result<T, StorageError> {
        let ok = matches!(r, Ok(_) | Err(StorageError::PreconditionFailed { .. }));
        let n = r.as_ref().map_or(0, bytes);
        self.metrics.storage_op(op, ok, n);
        r
    }
}

impl Storage for Cached {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
        {
            let mut k = self.known();
            let fresh = k.as_ref().is_some_and(|k| k.loaded_at.elapsed() < REFRESH);
            if !fresh {
                *k = Some(Known {
                    levels: BTreeMap::new(),
                    loaded_at: Instant::now(),
                });
            }
            if let Some(files) = k.as_ref().and_then(|k| k.levels.get(&level)) {
                return Ok(files.values().cloned().collect());
            }
        }
        let files = self.note(self.count(Op::List, self.inner.list(level), |_| 0))?;
        if let Some(k) = self.known().as_mut() {
            k.levels.insert(
                level,
                files
                    .iter()
                    .map(|f| ((f.min_txid, f.max_txid), f.clone()))
                    .collect(),
            );
        }
        Ok(files)
    }

    fn put(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
        timestamp_ms: i64,
        src: &mut dyn Read,
    ) -> Result<u64, StorageError> {
        let room = self.local_bytes.load(Ordering::Relaxed) < MAX_LOCAL_BYTES;
        let size = if level == 0 && room {
            // The local copy is written while storage reads the file (a tee), so memory never
            // holds the file however large it is. Best effort: without the copy, compaction
            // reads the file from storage.
            let local = self.local(min_txid, max_txid);
            let tmp = local.with_extension("tmp");
            let copy = fs::create_dir_all(&self.dir)
                .and_then(|_| fs::File::create(&tmp))
                .ok();
            let mut tee = Tee {
                src,
                copy,
                written: 0,
            };
            let r = self
                .inner
                .put(level, min_txid, max_txid, timestamp_ms, &mut tee);
            let (copied, written) = (tee.copy.is_some(), tee.written);
            let size = self.note(self.count(Op::Put, r, |n| *n));
            if copied && size.is_ok() && fs::rename(&tmp, &local).is_ok() {
                self.local_bytes.fetch_add(written, Ordering::Relaxed);
            } else {
                let _ = fs::remove_file(&tmp);
            }
            size?
        } else {
            let r = self.inner.put(level, min_txid, max_txid, timestamp_ms, src);
            self.note(self.count(Op::Put, r, |n| *n))?
        };
        self.metrics.uploaded(level);
        if let Some(k) = self.known().as_mut() {
            if let Some(files) = k.levels.get_mut(&level) {
                files.insert(
                    (min_txid, max_txid),
                    FileInfo {
                        level,
                        min_txid,
                        max_txid,
                        size,
                    },
                );
            }
        }
        Ok(size)
    }

    fn open(
        &self,
        level: u8,
        min_txid: u64,
        max_txid: u64,
    ) -> Result<Box<dyn Read + Send>, StorageError> {
        if level == 0 {
            if let Ok(f) = fs::File::open(self.local(min_txid, max_txid)) {
                return Ok(Box::new(io::BufReader::with_capacity(64 << 10, f)));
            }
        }
        let r = self.inner.open(level, min_txid, max_txid);
        let body = self.note(self.count(Op::Get, r, |_| 0))?;
        Ok(Box::new(CountingRead {
            inner: body,
            metrics: self.metrics.clone(),
        }))
    }

    fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<(), StorageError> {
        let r = self.inner.delete(level, min_txid, max_txid);
        self.note(self.count(Op::Delete, r, |_| 0))?;
        let freed = if level == 0 {
            let path = self.local(min_txid, max_txid);
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            let _ = fs::remove_file(path);
            len
        } else {
            0
        };
        if freed > 0 {
            self.local_bytes.fetch_sub(freed, Ordering::Relaxed);
        }
        if let Some(k) = self.known().as_mut() {
            if let Some(files) = k.levels.get_mut(&level) {
                files.remove(&(min_txid, max_txid));
            }
        }
        Ok(())
    }

    fn get_named(&self, name: &str) -> Result<Option<Tagged>, StorageError> {
        let r = self.inner.get_named(name);
        self.count(Op::Get, r, |t| {
            t.as_ref().map_or(0, |t| t.body.len() as u64)
        })
    }

    fn put_named_if(
        &self,
        name: &str,
        body: &[u8],
        cond: Precondition<'_>,
    ) -> Result<String, StorageError> {
        let r = self.inner.put_named_if(name, body, cond);
        self.count(Op::Put, r, |_| body.len() as u64)
    }

    fn delete_named_if(&self, name: &str, tag: &str) -> Result<(), StorageError> {
        let r = self.inner.delete_named_if(name, tag);
        self.count(Op::Delete, r, |_| 0)
    }
}

/// A reader that also writes what it reads to a local file; a failed write drops the copy (and
/// never the read).
struct Tee<'a> {
    src: &'a mut dyn Read,
    copy: Option<fs::File>,
    written: u64,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.src.read(buf)?;
        if let Some(f) = self.copy.as_mut() {
            use std::io::Write;
            if f.write_all(&buf[..n]).is_ok() {
                self.written += n as u64;
            } else {
                self.copy = None;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::file::FileStorage;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A real file store that counts the requests reaching it.
    struct Counting {
        inner: FileStorage,
        lists: Arc<AtomicUsize>,
        opens: Arc<AtomicUsize>,
    }

    impl Storage for Counting {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        fn list(&self, level: u8) -> Result<Vec<FileInfo>, StorageError> {
            self.lists.fetch_add(1, Ordering::SeqCst);
            self.inner.list(level)
        }
        fn put(
            &self,
            level: u8,
            min: u64,
            max: u64,
            ts: i64,
            src: &mut dyn Read,
        ) -> Result<u64, StorageError> {
            self.inner.put(level, min, max, ts, src)
        }
        fn open(
            &self,
            level: u8,
            min: u64,
            max: u64,
        ) -> Result<Box<dyn Read + Send>, StorageError> {
            self.opens.fetch_add(1, Ordering::SeqCst);
            self.inner.open(level, min, max)
        }
        fn delete(&self, level: u8, min: u64, max: u64) -> Result<(), StorageError> {
            self.inner.delete(level, min, max)
        }
    }

    #[test]
    fn lists_once_per_level_and_reads_level0_locally() {
        let dir = std::env::temp_dir().join(format!("walship-cached-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (lists, opens) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let metrics = DbMetrics::detached("/d/a.db", "file:///r");
        let c = Cached::new(
            Box::new(Counting {
                inner: FileStorage::new(dir.join("replica")),
                lists: lists.clone(),
                opens: opens.clone(),
            }),
            &dir.join("work"),
            metrics.clone(),
        );
        assert!(c.list(0).unwrap().is_empty());
        for txid in 1..=3u64 {
            c.put(0, txid, txid, 0, &mut &b"ltx bytes"[..]).unwrap();
        }
        c.put(1, 1, 2, 0, &mut &b"l1"[..]).unwrap();
        // Snapshots share their min TXID: each is its own file.
        c.list(9).unwrap();
        c.put(9, 1, 2, 0, &mut &b"s1"[..]).unwrap();
        c.put(9, 1, 3, 0, &mut &b"s2"[..]).unwrap();
        assert_eq!(c.list(9).unwrap().len(), 2);
        lists.fetch_sub(1, Ordering::SeqCst);
        let l0: Vec<u64> = c.list(0).unwrap().iter().map(|f| f.min_txid).collect();
        assert_eq!(l0, vec![1, 2, 3]);
        assert_eq!(lists.load(Ordering::SeqCst), 1, "level 0 listed once");
        assert_eq!(c.list(1).unwrap().len(), 1);
        assert_eq!(lists.load(Ordering::SeqCst), 2);

        let mut got = Vec::new();
        c.open(0, 2, 2).unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ltx bytes");
        assert_eq!(
            opens.load(Ordering::SeqCst),
            0,
            "level 0 read from the local copy"
        );

        c.delete(0, 2, 2).unwrap();
        let l0: Vec<u64> = c.list(0).unwrap().iter().map(|f| f.min_txid).collect();
        assert_eq!(l0, vec![1, 3]);
        assert_eq!(
            lists.load(Ordering::SeqCst),
            2,
            "deletes kept the listing current"
        );
        assert!(!c.local(2, 2).exists());
        assert!(c.open(0, 2, 2).is_err());

        // An error from storage drops what was remembered: the next list asks again.
        let before = lists.load(Ordering::SeqCst);
        c.list(0).unwrap();
        assert_eq!(lists.load(Ordering::SeqCst), before + 1);

        // Metrics count the calls that reached storage, not the answers from the cache.
        let text = crate::metrics::render(&[metrics], 0);
        let op = |name: &str, op: &str| {
            let key = format!("{name}{{db=\"/d/a.db\",replica_type=\"file\",op=\"{op}\"}} ");
            let line = text.lines().find(|l| l.starts_with(&key)).unwrap();
            line[key.len()..].parse::<u64>().unwrap()
        };
        assert_eq!(
            op("walship_storage_operations_total", "list"),
            before as u64 + 2,
            "level 9 listed too"
        );
        assert_eq!(op("walship_storage_operations_total", "put"), 6);
        assert_eq!(
            op("walship_storage_operations_total", "get"),
            1,
            "the failed open"
        );
        assert_eq!(op("walship_storage_errors_total", "get"), 1);
        assert_eq!(op("walship_storage_operations_total", "delete"), 1);
        assert_eq!(op("walship_storage_bytes_total", "put"), 3 * 9 + 2 + 2 + 2);
        assert!(text.contains("walship_sync_count{db=\"/d/a.db\"} 3\n"));
        assert!(text.contains("walship_snapshot_count{db=\"/d/a.db\"} 2\n"));
        let _ = fs::remove_dir_all(&dir);
    }
}
