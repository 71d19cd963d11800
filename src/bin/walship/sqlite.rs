//! The few SQLite C calls the CLI needs — an integrity check, and the final sync `walship
//! replicate` runs through the extension — against the system's libsqlite3.so.0.
//!
//! Fenced here with `child.rs` (the only `unsafe` in the binary). Not `libsqlite3-sys`/
//! `rusqlite`: the library crate enables `libsqlite3-sys`'s `loadable_extension` feature, which
//! turns its functions into calls through an extension API table that only exists inside a host
//! process. The library is opened with `dlopen` and its functions taken from its handle rather
//! than linked by name: the library crate defines `sqlite3_open_v2` and friends itself (the
//! `LD_PRELOAD` interposers of `src/ffi/preload.rs`), and a name-linked call would go to those.
//! Every open names its VFS: `unix` for checks, so a restore's scratch file never goes through
//! walship even when the extension is loaded in this process.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

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
const SQLITE_OPEN_READWRITE: c_int = 0x0000_0002;
const SQLITE_OPEN_CREATE: c_int = 0x0000_0004;
const SQLITE_OPEN_URI: c_int = 0x0000_0040;

/// The functions used, from the system library's handle.
struct Lib {
    open_v2: unsafe extern "C" fn(*const c_char, *mut *mut Sqlite3, c_int, *const c_char) -> c_int,
    prepare_v2: unsafe extern "C" fn(
        *mut Sqlite3,
        *const c_char,
        c_int,
        *mut *mut Stmt,
        *mut *const c_char,
    ) -> c_int,
    step: unsafe extern "C" fn(*mut Stmt) -> c_int,
    column_text: unsafe extern "C" fn(*mut Stmt, c_int) -> *const u8,
    finalize: unsafe extern "C" fn(*mut Stmt) -> c_int,
    close: unsafe extern "C" fn(*mut Sqlite3) -> c_int,
    errmsg: unsafe extern "C" fn(*mut Sqlite3) -> *const c_char,
    enable_load_extension: unsafe extern "C" fn(*mut Sqlite3, c_int) -> c_int,
    load_extension:
        unsafe extern "C" fn(*mut Sqlite3, *const c_char, *const c_char, *mut *mut c_char) -> c_int,
    free: unsafe extern "C" fn(*mut c_void),
}

fn lib() -> Result<&'static Lib> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(|e| anyhow!("{e}"))
}

fn load() -> Result<Lib, String> {
    // SAFETY: dlopen of the system library by its soname; RTLD_LOCAL keeps its symbols out of
    // the global scope. The handle is never closed.
    let h = unsafe {
        libc::dlopen(
            c"libsqlite3.so.0".as_ptr(),
            libc::RTLD_NOW | libc::RTLD_LOCAL,
        )
    };
    if h.is_null() {
        return Err(
            "cannot load the system SQLite (libsqlite3.so.0), which checks restored databases: \
             install it (Debian/Ubuntu: apt-get install libsqlite3-0)"
                .into(),
        );
    }
    let sym = |name: &CStr| -> Result<*mut c_void, String> {
        // SAFETY: a lookup in the handle just opened.
        let p = unsafe { libc::dlsym(h, name.as_ptr()) };
        if p.is_null() {
            Err(format!("libsqlite3.so.0 has no {}", name.to_string_lossy()))
        } else {
            Ok(p)
        }
    };
    /// A function pointer from a symbol's address.
    ///
    /// # Safety
    /// `p` must be the address of a function of type `T` (a C function pointer type).
    unsafe fn cast<T>(p: *mut c_void) -> T {
        assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
        // SAFETY: same size, and the caller guarantees the type.
        unsafe { std::mem::transmute_copy(&p) }
    }
    // SAFETY: each pointer is the library's public function of that name, whose C signature
    // the field's type spells out (sqlite3.h, unchanged since 3.7).
    unsafe {
        Ok(Lib {
            open_v2: cast(sym(c"sqlite3_open_v2")?),
            prepare_v2: cast(sym(c"sqlite3_prepare_v2")?),
            step: cast(sym(c"sqlite3_step")?),
            column_text: cast(sym(c"sqlite3_column_text")?),
            finalize: cast(sym(c"sqlite3_finalize")?),
            close: cast(sym(c"sqlite3_close")?),
            errmsg: cast(sym(c"sqlite3_errmsg")?),
            enable_load_extension: cast(sym(c"sqlite3_enable_load_extension")?),
            load_extension: cast(sym(c"sqlite3_load_extension")?),
            free: cast(sym(c"sqlite3_free")?),
        })
    }
}

/// An open connection, closed on drop.
struct Conn {
    lib: &'static Lib,
    db: *mut Sqlite3,
    /// For messages.
    name: String,
}

impl Conn {
    fn open(name: &str, target: &CStr, flags: c_int, vfs: &CStr) -> Result<Conn> {
        let lib = lib()?;
        let mut db: *mut Sqlite3 = std::ptr::null_mut();
        // SAFETY: NUL-terminated strings and a valid out-pointer.
        let rc = unsafe { (lib.open_v2)(target.as_ptr(), &mut db, flags, vfs.as_ptr()) };
        if db.is_null() {
            return Err(anyhow!("opening {name} with SQLite: out of memory"));
        }
        let conn = Conn {
            lib,
            db,
            name: name.to_string(),
        };
        if rc != SQLITE_OK {
            return Err(anyhow!("opening {name} with SQLite: {}", conn.errmsg()));
        }
        Ok(conn)
    }

    fn errmsg(&self) -> String {
        // SAFETY: self.db is a handle returned by sqlite3_open_v2 and not yet closed;
        // sqlite3_errmsg returns a NUL-terminated string owned by SQLite, valid until the
        // next call on this handle, and we copy it out at once.
        unsafe {
            let p = (self.lib.errmsg)(self.db);
            if p.is_null() {
                "unknown SQLite error".into()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        }
    }

    /// The first column of every row of `sql`, as text (NULL as an empty string).
    fn query(&self, sql: &str) -> Result<Vec<String>> {
        let csql = CString::new(sql)?;
        let mut raw: *mut Stmt = std::ptr::null_mut();
        // SAFETY: self.db is an open handle, csql is NUL-terminated (-1 = read to the NUL), raw
        // is a valid out-pointer, and a NULL tail pointer is allowed.
        let rc = unsafe {
            (self.lib.prepare_v2)(self.db, csql.as_ptr(), -1, &mut raw, std::ptr::null_mut())
        };
        let stmt = Statement(self.lib, raw);
        if rc != SQLITE_OK {
            return Err(anyhow!("{sql} on {}: {}", self.name, self.errmsg()));
        }
        let mut rows = Vec::new();
        loop {
            // SAFETY: stmt.1 is a prepared statement of this connection, which outlives it.
            match unsafe { (self.lib.step)(stmt.1) } {
                SQLITE_ROW => {
                    // SAFETY: after SQLITE_ROW, column 0 exists for these single-column queries
                    // (a statement without columns returns NULL); the text pointer is valid and
                    // NUL-terminated until the next step/finalize, and we copy it out at once.
                    let text = unsafe {
                        let p = (self.lib.column_text)(stmt.1, 0);
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
                SQLITE_DONE => return Ok(rows),
                _ => return Err(anyhow!("{sql} on {}: {}", self.name, self.errmsg())),
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: self.db came from sqlite3_open_v2 (possibly a handle for a failed open, which
        // must still be closed) and every statement on it was finalized by Statement's Drop.
        unsafe {
            (self.lib.close)(self.db);
        }
    }
}

/// A prepared statement, finalized on drop.
struct Statement(&'static Lib, *mut Stmt);

impl Drop for Statement {
    fn drop(&mut self) {
        // SAFETY: self.1 came from a successful sqlite3_prepare_v2 (or is NULL, which
        // sqlite3_finalize accepts) and is finalized exactly once.
        unsafe {
            (self.0.finalize)(self.1);
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

/// Runs `sql` on the database at `path` (opened read-only, immutable, on the `unix` VFS) and
/// returns the first column of every row as text (NULL as an empty string).
pub fn query_strings(path: &Path, sql: &str) -> Result<Vec<String>> {
    let conn = Conn::open(
        &path.display().to_string(),
        &immutable_uri(path)?,
        SQLITE_OPEN_READONLY | SQLITE_OPEN_URI,
        c"unix",
    )?;
    conn.query(sql)
}

/// Loads the extension at `ext` into this process's SQLite (once), opens the existing database
/// `db` through the `walship` VFS and returns `walship_flush(timeout)`: the replica's TXID once
/// everything committed in the database is in it. Closing it then ships anything left.
pub fn flush_through_extension(ext: &Path, db: &Path, timeout: Duration) -> Result<String> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| load_extension(ext).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))?;
    let name = db.display().to_string();
    let conn = Conn::open(
        &name,
        &CString::new(db.as_os_str().as_encoded_bytes())?,
        SQLITE_OPEN_READWRITE,
        c"walship",
    )?;
    // A read opens the WAL (recovering the wal-index of a process that died), then the flush.
    conn.query("SELECT count(*) FROM sqlite_schema")?;
    let rows = conn.query(&format!("SELECT walship_flush({})", timeout.as_millis()))?;
    Ok(rows.into_iter().next().unwrap_or_default())
}

/// Loads the extension through a `:memory:` connection (which registers the `walship` VFS in this
/// process's SQLite), left open for the process's life.
fn load_extension(ext: &Path) -> Result<()> {
    let conn = Conn::open(
        ":memory:",
        c":memory:",
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
        c"unix",
    )?;
    let path = CString::new(ext.as_os_str().as_encoded_bytes())?;
    let mut err: *mut c_char = std::ptr::null_mut();
    // SAFETY: conn.db is open; path is NUL-terminated; a NULL entry point lets SQLite derive
    // sqlite3_walvfs_init from the file name; err is a valid out-pointer whose message (if any)
    // is copied and then freed with sqlite3_free, as SQLite requires.
    let rc = unsafe {
        (conn.lib.enable_load_extension)(conn.db, 1);
        (conn.lib.load_extension)(conn.db, path.as_ptr(), std::ptr::null(), &mut err)
    };
    if rc != SQLITE_OK {
        // SAFETY: as above.
        let msg = unsafe {
            let m = if err.is_null() {
                conn.errmsg()
            } else {
                CStr::from_ptr(err).to_string_lossy().into_owned()
            };
            (conn.lib.free)(err as *mut c_void);
            m
        };
        return Err(anyhow!("loading {}: {msg}", ext.display()));
    }
    std::mem::forget(conn);
    Ok(())
}
