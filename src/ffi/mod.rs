//! The FFI fence: everything that touches C pointers lives under `src/ffi/`.
//!
//! Owns: the table of host SQLite functions (taken from the `sqlite3_api_routines` pointer SQLite
//! hands a loadable extension — we never link an SQLite of our own), the extension entry point,
//! the VFS shim callbacks (`vfs.rs`) and the SQL functions (`functions.rs`).
//! Rules: every `unsafe` block carries a `// SAFETY:` comment; every callback from C runs inside
//! `guard`, so no panic crosses into SQLite and failures become real SQLite result codes. Safe
//! code outside this module never sees a raw pointer.

pub mod functions;
pub mod osfile;
mod preload;
pub mod vfs;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libsqlite3_sys as sys;
use once_cell::sync::OnceCell;

/// An SQL scalar function callback.
pub(crate) type ScalarFn =
    unsafe extern "C" fn(*mut sys::sqlite3_context, c_int, *mut *mut sys::sqlite3_value);

/// The host SQLite's functions we call, copied out of `sqlite3_api_routines` once.
/// Every field exists since SQLite 3.8; the struct only ever grows at its end.
pub(crate) struct Api {
    pub vfs_find: unsafe extern "C" fn(*const c_char) -> *mut sys::sqlite3_vfs,
    pub vfs_register: unsafe extern "C" fn(*mut sys::sqlite3_vfs, c_int) -> c_int,
    pub create_function_v2: unsafe extern "C" fn(
        *mut sys::sqlite3,
        *const c_char,
        c_int,
        c_int,
        *mut c_void,
        Option<ScalarFn>,
        Option<ScalarFn>,
        Option<unsafe extern "C" fn(*mut sys::sqlite3_context)>,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ) -> c_int,
    pub result_int64: unsafe extern "C" fn(*mut sys::sqlite3_context, i64),
    pub result_text: unsafe extern "C" fn(
        *mut sys::sqlite3_context,
        *const c_char,
        c_int,
        Option<unsafe extern "C" fn(*mut c_void)>,
    ),
    pub result_error: unsafe extern "C" fn(*mut sys::sqlite3_context, *const c_char, c_int),
    pub value_int64: unsafe extern "C" fn(*mut sys::sqlite3_value) -> i64,
    pub value_type: unsafe extern "C" fn(*mut sys::sqlite3_value) -> c_int,
    pub context_db_handle: unsafe extern "C" fn(*mut sys::sqlite3_context) -> *mut sys::sqlite3,
    pub db_filename: unsafe extern "C" fn(*mut sys::sqlite3, *const c_char) -> *const c_char,
    pub malloc: unsafe extern "C" fn(c_int) -> *mut c_void,
    pub auto_extension: unsafe extern "C" fn(Option<unsafe extern "C" fn()>) -> c_int,
    pub libversion_number: unsafe extern "C" fn() -> c_int,
}

static API: OnceCell<Api> = OnceCell::new();

pub(crate) fn api() -> &'static Api {
    API.get()
        .expect("walship: SQLite API used before sqlite3_walvfs_init")
}

/// Oldest SQLite we accept: WAL, shm v2 and COMMIT_PHASETWO are all older than this.
const MIN_SQLITE: c_int = 3_022_000;

impl Api {
    /// # Safety
    /// `p` must be the `sqlite3_api_routines` pointer SQLite passed to the entry point.
    unsafe fn from_routines(p: *const sys::sqlite3_api_routines) -> Option<Api> {
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` is non-null and points to SQLite's static routine table, valid for the
        // life of the process; we only read fields that exist in every supported version.
        let r = unsafe { &*p };
        Some(Api {
            vfs_find: r.vfs_find?,
            vfs_register: r.vfs_register?,
            create_function_v2: r.create_function_v2?,
            result_int64: r.result_int64?,
            result_text: r.result_text?,
            result_error: r.result_error?,
            value_int64: r.value_int64?,
            value_type: r.value_type?,
            context_db_handle: r.context_db_handle?,
            db_filename: r.db_filename?,
            malloc: r.malloc?,
            auto_extension: r.auto_extension?,
            libversion_number: r.libversion_number?,
        })
    }
}

/// Runs a callback body; a panic becomes `on_panic` (a real SQLite error code) and is logged.
pub(crate) fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!("internal error caught at the SQLite boundary: {msg}");
            on_panic
        }
    }
}

/// Copies an error message into SQLite-owned memory for `*pzErrMsg`.
///
/// # Safety
/// `pz` must be null or the `pzErrMsg` out-pointer SQLite passed to the entry point.
unsafe fn set_err(pz: *mut *mut c_char, msg: &str) {
    if pz.is_null() {
        return;
    }
    let Some(api) = API.get() else { return };
    let bytes = msg.as_bytes();
    // SAFETY: malloc comes from the host SQLite; we write len+1 bytes into a buffer of that size
    // and hand ownership to SQLite, which frees it with sqlite3_free.
    unsafe {
        let p = (api.malloc)(bytes.len() as c_int + 1) as *mut u8;
        if p.is_null() {
            return;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
        *pz = p as *mut c_char;
    }
}

/// The loadable-extension entry point. SQLite derives its name from `libwalvfs`.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and routine table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_walvfs_init(
    db: *mut sys::sqlite3,
    pz_err: *mut *mut c_char,
    p_api: *const sys::sqlite3_api_routines,
) -> c_int {
    guard(sys::SQLITE_ERROR, || {
        // SAFETY: p_api is the routine table SQLite passed us.
        let Some(api) = (unsafe { Api::from_routines(p_api) }) else {
            return sys::SQLITE_ERROR;
        };
        // SAFETY: a plain function from the table, no arguments.
        let version = unsafe { (api.libversion_number)() };
        let _ = API.set(api);
        if version < MIN_SQLITE {
            // SAFETY: pz_err is SQLite's out-pointer.
            unsafe {
                set_err(
                    pz_err,
                    &format!("walship needs SQLite 3.22 or newer; this is {version}"),
                )
            };
            return sys::SQLITE_ERROR;
        }
        crate::logging::init();
        watch_forks();
        if let Err(msg) = vfs::register() {
            // SAFETY: as above.
            unsafe { set_err(pz_err, &msg) };
            return sys::SQLITE_ERROR;
        }
        functions::register_everywhere(db)
    })
}

/// In a forked child, bumps the fork count `crate::process` compares (async-signal-safe: one
/// atomic add).
extern "C" fn after_fork_in_child() {
    crate::process::forked();
}

/// Installs the atfork handler once per process image.
fn watch_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain `extern "C"` function with no captured state, which only
        // performs an atomic add; the other two handlers are absent.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        if rc == 0 {
            crate::process::watching();
        }
    });
}

/// A NUL-terminated C string as `&str`, if it is valid UTF-8.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated string that outlives the returned reference.
pub(crate) unsafe fn c_str<'a>(p: *const c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_str().ok()
}
