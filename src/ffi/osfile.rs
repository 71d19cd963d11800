//! Read-only access to a database or WAL file through the OS VFS that the shim wraps.
//!
//! Why not `std::fs`: POSIX advisory locks belong to the process, and closing *any* descriptor
//! of a file drops all of them, so a plain open/close of the database in the app's process would
//! silently release the app's SQLite locks. The unix VFS knows this and defers such closes; going
//! through it keeps the app's locks intact. Never writes, never locks.

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
