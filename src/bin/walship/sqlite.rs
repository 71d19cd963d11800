//! The few SQLite C calls the CLI needs (an integrity check), against the system libsqlite3.
//!
//! Fenced here: the only `unsafe` in the binary. Not `libsqlite3-sys`/`rusqlite`: the library
//! crate enables `libsqlite3-sys`'s `loadable_extension` feature, which turns its functions
//! into calls through an extension API table that only exists inside a host process.

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;

use anyhow::{anyhow, Result};

#[repr(C)]
struct Sqlite3 {
    _opaque: [u8; 0],
}

#[repr(C)]
struct Stmt {
    _opaque: [u8; 0],
}

const SQLITE_OK: c_int = 0;
const SQLITE_ROW: c_int = 100;
const SQLITE_DONE: c_int = 101;
const SQLITE_OPEN_READONLY: c_int = 0x0000_0001;
const SQLITE_OPEN_URI: c_int = 0x0000_0040;

#[link(name = "sqlite3")]
extern "C" {
    fn sqlite3_open_v2(
        filename: *const c_char,
        db: *mut *mut Sqlite3,
        flags: c_int,
        vfs: *const c_char,
    ) -> c_int;
    fn sqlite3_prepare_v2(
        db: *mut Sqlite3,
        sql: *const c_char,
        n_byte: c_int,
        stmt: *mut *mut Stmt,
        tail: *mut *const c_char,
    ) -> c_int;
    fn sqlite3_step(stmt: *mut Stmt) -> c_int;
    fn sqlite3_column_text(stmt: *mut Stmt, col: c_int) -> *const u8;
    fn sqlite3_finalize(stmt: *mut Stmt) -> c_int;
    fn sqlite3_close(db: *mut Sqlite3) -> c_int;
    fn sqlite3_errmsg(db: *mut Sqlite3) -> *const c_char;
}

/// An open connection, closed on drop.
struct Conn(*mut Sqlite3);

impl Conn {
    fn errmsg(&self) -> String {
        // SAFETY: self.0 is a handle returned by sqlite3_open_v2 and not yet closed;
        // sqlite3_errmsg returns a NUL-terminated string owned by SQLite, valid until the
        // next call on this handle, and we copy it out at once.
        unsafe {
            let p = sqlite3_errmsg(self.0);
            if p.is_null() {
                "unknown SQLite error".into()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: self.0 came from sqlite3_open_v2 (possibly a handle for a failed open, which
        // must still be closed) and every statement on it was finalized by Statement's Drop.
        unsafe {
            sqlite3_close(self.0);
        }
    }
}

/// A prepared statement, finalized on drop.
struct Statement(*mut Stmt);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful sqlite3_prepare_v2 (or is NULL, which
        // sqlite3_finalize accepts) and is finalized exactly once.
        unsafe {
            sqlite3_finalize(self.0);
        }
    }
}

/// A `file:` URI for `path` opened immutable (read-only, no locks, no -wal/-shm files): the
/// file is ours alone while we check it.
fn immutable_uri(path: &Path) -> Result<CString> {
    let abs = std::path::absolute(path)?;
    let mut uri = String::from("file:");
    for &b in abs.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    Ok(CString::new(uri)?)
}

/// Runs `sql` on the database at `path` (opened read-only, immutable) and returns the first
/// column of every row as text (NULL as an empty string).
pub fn query_strings(path: &Path, sql: &str) -> Result<Vec<String>> {
    let uri = immutable_uri(path)?;
    let csql = CString::new(sql)?;
    let mut db: *mut Sqlite3 = std::ptr::null_mut();
    // SAFETY: uri is a valid NUL-terminated string, db a valid out-pointer, vfs NULL selects
    // the default VFS.
    let rc = unsafe {
        sqlite3_open_v2(
            uri.as_ptr(),
            &mut db,
            SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
            std::ptr::null(),
        )
    };
    if db.is_null() {
        return Err(anyhow!(
            "opening {} with SQLite: out of memory",
            path.display()
        ));
    }
    let conn = Conn(db);
    if rc != SQLITE_OK {
        return Err(anyhow!(
            "opening {} with SQLite: {}",
            path.display(),
            conn.errmsg()
        ));
    }
    let mut raw: *mut Stmt = std::ptr::null_mut();
    // SAFETY: conn.0 is an open handle, csql is NUL-terminated (-1 = read to the NUL), raw is a
    // valid out-pointer, and a NULL tail pointer is allowed.
    let rc =
        unsafe { sqlite3_prepare_v2(conn.0, csql.as_ptr(), -1, &mut raw, std::ptr::null_mut()) };
    let stmt = Statement(raw);
    if rc != SQLITE_OK {
        return Err(anyhow!("{sql} on {}: {}", path.display(), conn.errmsg()));
    }
    let mut rows = Vec::new();
    loop {
        // SAFETY: stmt.0 is a prepared statement of conn, which outlives it.
        let rc = unsafe { sqlite3_step(stmt.0) };
        match rc {
            SQLITE_ROW => {
                // SAFETY: after SQLITE_ROW, column 0 exists for these single-column queries (a
                // statement without columns returns NULL); the text pointer is valid and
                // NUL-terminated until the next step/finalize, and we copy it out at once.
                let text = unsafe {
                    let p = sqlite3_column_text(stmt.0, 0);
                    if p.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(p.cast::<c_char>())
                            .to_string_lossy()
                            .into_owned()
                    }
                };
                rows.push(text);
            }
            SQLITE_DONE => break,
            _ => return Err(anyhow!("{sql} on {}: {}", path.display(), conn.errmsg())),
        }
    }
    drop(stmt);
    drop(conn);
    Ok(rows)
}
