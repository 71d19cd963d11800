//! Read-only access to a database or WAL file through the OS VFS that the shim wraps.
//!
//! Why not `std::fs`: POSIX advisory locks belong to the process, and closing *any* descriptor
//! of a file drops all of them, so a plain open/close of the database in the app's process would
//! silently release the app's SQLite locks. The unix VFS knows this and defers such closes; going
//! through it keeps the app's locks intact. Never writes; the one lock it takes is a WAL read
//! lock (`hold_wal_reader`), which only keeps the WAL from restarting while it is held.

use std::ffi::{c_int, CString};
use std::io;
use std::ptr;

use libsqlite3_sys as sys;

use super::vfs;

pub struct OsFile {
    vfs: *mut sys::sqlite3_vfs,
    file: *mut sys::sqlite3_file,
    _mem: Vec<u64>,
    _name: Vec<u8>,
}

// SAFETY: the handle is used by one thread at a time (the shipper owns it); the unix VFS file
// methods are safe to call from any thread.
unsafe impl Send for OsFile {}

impl OsFile {
    /// Opens `path` read-only; `wal` selects WAL-file open flags. `Ok(None)` if it does not exist.
    pub fn open(path: &str, wal: bool) -> io::Result<Option<OsFile>> {
        let lower =
            vfs::lower().ok_or_else(|| io::Error::other("walship VFS is not registered"))?;
        // A file that is not there is not opened at all: the OS VFS would report the failure
        // through sqlite3_log, running the app's log callback on this thread.
        if std::fs::symlink_metadata(path).is_err() {
            return Ok(None);
        }
        // SQLite's file names end in two NULs (URI parameters follow the first); the OS VFS
        // may look past the first one.
        let mut name = CString::new(path)
            .map_err(|_| io::Error::other("path contains NUL"))?
            .into_bytes_with_nul();
        name.push(0);
        // SAFETY: `lower` is the registered OS VFS, alive for the process.
        let sz = unsafe { (*lower).szOsFile } as usize;
        let mut mem = vec![0u64; sz.div_ceil(8) + 1];
        let file = mem.as_mut_ptr() as *mut sys::sqlite3_file;
        let kind = if wal {
            sys::SQLITE_OPEN_WAL
        } else {
            sys::SQLITE_OPEN_MAIN_DB
        };
        let mut out: c_int = 0;
        // SAFETY: `file` points to szOsFile zeroed, 8-aligned bytes that outlive the handle
        // (kept in `_mem`); the double-NUL name outlives it too (kept in `_name`), as xOpen
        // requires.
        let rc = unsafe {
            (*lower).xOpen.unwrap()(
                lower,
                name.as_ptr() as *const std::ffi::c_char,
                file,
                kind | sys::SQLITE_OPEN_READONLY,
                &mut out,
            )
        };
        if rc != sys::SQLITE_OK {
            // SAFETY: on failure pMethods may still be set; close only then, as SQLite does.
            unsafe {
                if !(*file).pMethods.is_null() {
                    (*(*file).pMethods).xClose.unwrap()(file);
                }
            }
            if std::path::Path::new(path).exists() {
                return Err(io::Error::other(format!(
                    "cannot open {path} read-only (SQLite error {rc})"
                )));
            }
            return Ok(None);
        }
        Ok(Some(OsFile {
            vfs: lower,
            file,
            _mem: mem,
            _name: name,
        }))
    }

    pub fn size(&self) -> io::Result<u64> {
        let mut n: i64 = 0;
        // SAFETY: the file is open; xFileSize writes one i64.
        let rc = unsafe { (*(*self.file).pMethods).xFileSize.unwrap()(self.file, &mut n) };
        if rc != sys::SQLITE_OK {
            return Err(io::Error::other(format!(
                "file size failed (SQLite error {rc})"
            )));
        }
        Ok(n as u64)
    }

    /// Reads exactly `buf.len()` bytes at `off`; `Ok(false)` on a short read (buf zero-filled).
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<bool> {
        // SAFETY: buf is writable for its length; the file is open.
        let rc = unsafe {
            (*(*self.file).pMethods).xRead.unwrap()(
                self.file,
                buf.as_mut_ptr() as _,
                buf.len() as c_int,
                off as i64,
            )
        };
        match rc {
            sys::SQLITE_OK => Ok(true),
            sys::SQLITE_IOERR_SHORT_READ => Ok(false),
            _ => Err(io::Error::other(format!(
                "read at {off} failed (SQLite error {rc})"
            ))),
        }
    }
}

/// SQLite's wal-index lock slots: `WAL_READ_LOCK(i)` is slot 3 + i, for readers 0..5.
const WAL_READ_LOCK_1: c_int = 4;
const WAL_NREADER: c_int = 5;
/// The wal-index's first region, as SQLite maps it.
const SHM_REGION: c_int = 32 * 1024;

/// A shared lock on one of the WAL's read-lock slots 1..4, released on drop.
///
/// A writer restarts the WAL (rewinding it to frame 1 and, with `journal_size_limit` or a
/// TRUNCATE checkpoint, shrinking it) only after taking every one of those slots exclusively, so
/// while this is held the WAL only grows. That is all it is for: it claims no read mark and
/// reads nothing through the wal-index.
pub struct WalReadLock<'a> {
    file: &'a OsFile,
    slot: c_int,
}

impl OsFile {
    /// Takes a WAL read lock through the OS VFS's wal-index of this database file (opened with
    /// `wal == false`). `Ok(None)` when none can be had now: no `-shm` file (EXCLUSIVE locking
    /// mode keeps the wal-index in memory), an empty one, or every slot held exclusively.
    pub fn hold_wal_reader(&self, db_path: &str) -> io::Result<Option<WalReadLock<'_>>> {
        // Mapping creates a missing -shm file; a database without one is not in shared WAL mode.
        if std::fs::metadata(format!("{db_path}-shm")).map_or(true, |m| m.len() == 0) {
            return Ok(None);
        }
        // SAFETY: the file is open; the methods table outlives it.
        let m = unsafe { &*(*self.file).pMethods };
        let (Some(map), Some(lock), Some(unmap)) = (m.xShmMap, m.xShmLock, m.xShmUnmap) else {
            return Ok(None);
        };
        if m.iVersion < 2 {
            return Ok(None);
        }
        let mut region: *mut std::ffi::c_void = ptr::null_mut();
        // SAFETY: the file is open; xShmMap writes one pointer. bExtend=0 never grows the file.
        let rc = unsafe { map(self.file, 0, SHM_REGION, 0, &mut region) };
        if rc != sys::SQLITE_OK || region.is_null() {
            // SAFETY: unmapping (without deleting) is valid whether or not the map succeeded.
            unsafe { unmap(self.file, 0) };
            return if rc == sys::SQLITE_OK || rc & 0xff == sys::SQLITE_READONLY {
                Ok(None)
            } else {
                Err(io::Error::other(format!(
                    "mapping the wal-index failed (SQLite error {rc})"
                )))
            };
        }
        for slot in WAL_READ_LOCK_1..WAL_READ_LOCK_1 + WAL_NREADER - 1 {
            // SAFETY: the wal-index is mapped on this file; one slot, shared.
            let rc = unsafe {
                lock(
                    self.file,
                    slot,
                    1,
                    sys::SQLITE_SHM_LOCK | sys::SQLITE_SHM_SHARED,
                )
            };
            if rc == sys::SQLITE_OK {
                return Ok(Some(WalReadLock { file: self, slot }));
            }
        }
        // SAFETY: mapped above, no lock held.
        unsafe { unmap(self.file, 0) };
        Ok(None)
    }
}

impl Drop for WalReadLock<'_> {
    fn drop(&mut self) {
        // SAFETY: `hold_wal_reader` mapped the wal-index on this open file and took this slot
        // shared; both are released exactly once here (unmapping never deletes the -shm file).
        unsafe {
            let m = &*(*self.file.file).pMethods;
            if let Some(lock) = m.xShmLock {
                lock(
                    self.file.file,
                    self.slot,
                    1,
                    sys::SQLITE_SHM_UNLOCK | sys::SQLITE_SHM_SHARED,
                );
            }
            if let Some(unmap) = m.xShmUnmap {
                unmap(self.file.file, 0);
            }
        }
    }
}

impl Drop for OsFile {
    fn drop(&mut self) {
        let _ = self.vfs;
        // SAFETY: opened successfully in `open`, closed exactly once here.
        unsafe {
            if !(*self.file).pMethods.is_null() {
                (*(*self.file).pMethods).xClose.unwrap()(self.file);
                (*self.file).pMethods = ptr::null();
            }
        }
    }
}
