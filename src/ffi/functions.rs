//! SQL functions: `walship_default(on)`, `walship_status()`, `walship_flush(timeout_ms)`.
//!
//! Owns their C callbacks and their registration on every connection (the loading one, and every
//! later one through `sqlite3_auto_extension`). The work itself is done by safe code in
//! `registry`; this file only converts arguments and results.

use std::ffi::{c_char, c_int, c_void, CString};
use std::ptr;

use libsqlite3_sys as sys;

use super::{api, c_str, guard, vfs};
use crate::registry;

type Func = unsafe extern "C" fn(*mut sys::sqlite3_context, c_int, *mut *mut sys::sqlite3_value);

const FUNCTIONS: &[(&std::ffi::CStr, c_int, Func)] = &[
    (c"walship_default", 1, fn_default),
    (c"walship_status", 0, fn_status),
    (c"walship_status", 1, fn_status),
    (c"walship_flush", 0, fn_flush),
    (c"walship_flush", 1, fn_flush),
];

/// Registers the functions on `db` and on every connection opened later in this process.
pub fn register_everywhere(db: *mut sys::sqlite3) -> c_int {
    static AUTO: std::sync::Once = std::sync::Once::new();
    let mut rc = sys::SQLITE_OK;
    AUTO.call_once(|| {
        // SAFETY: auto_extension keeps the pointer; our library stays loaded for the life of the
        // process (the entry point returns SQLITE_OK_LOAD_PERMANENTLY).
        rc = unsafe {
            (api().auto_extension)(Some(
                std::mem::transmute::<AutoInit, unsafe extern "C" fn()>(auto_init),
            ))
        };
    });
    if rc != sys::SQLITE_OK {
        return rc;
    }
    let rc = register_on(db);
    if rc == sys::SQLITE_OK {
        sys::SQLITE_OK_LOAD_PERMANENTLY
    } else {
        rc
    }
}

type AutoInit = unsafe extern "C" fn(
    *mut sys::sqlite3,
    *mut *mut c_char,
    *const sys::sqlite3_api_routines,
) -> c_int;

unsafe extern "C" fn auto_init(
    db: *mut sys::sqlite3,
    _err: *mut *mut c_char,
    _api: *const sys::sqlite3_api_routines,
) -> c_int {
    guard(sys::SQLITE_ERROR, || register_on(db))
}

fn register_on(db: *mut sys::sqlite3) -> c_int {
    if db.is_null() {
        return sys::SQLITE_OK;
    }
    for (name, n_arg, f) in FUNCTIONS {
        // SAFETY: db is a live connection handed to us by SQLite; name is a static C string.
        let rc = unsafe {
            (api().create_function_v2)(
                db,
                name.as_ptr(),
                *n_arg,
                sys::SQLITE_UTF8,
                ptr::null_mut(),
                Some(*f),
                None,
                None,
                None,
            )
        };
        if rc != sys::SQLITE_OK {
            return rc;
        }
    }
    sys::SQLITE_OK
}

/// # Safety
/// `argv` must hold `argc` values (SQLite's contract for function callbacks).
unsafe fn arg_i64(argc: c_int, argv: *mut *mut sys::sqlite3_value, i: c_int) -> Option<i64> {
    if i >= argc {
        return None;
    }
    // SAFETY: i < argc.
    let v = unsafe { *argv.add(i as usize) };
    // SAFETY: v is a live sqlite3_value for the duration of the callback.
    if unsafe { (api().value_type)(v) } == sys::SQLITE_NULL {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { (api().value_int64)(v) })
}

fn result_text(ctx: *mut sys::sqlite3_context, s: &str) {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: SQLITE_TRANSIENT (-1) makes SQLite copy the bytes before we drop `c`.
    unsafe {
        (api().result_text)(
            ctx,
            c.as_ptr(),
            -1,
            Some(std::mem::transmute::<
                isize,
                unsafe extern "C" fn(*mut c_void),
            >(-1)),
        )
    };
}

fn result_error(ctx: *mut sys::sqlite3_context, s: &str) {
    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
    // SAFETY: SQLite copies the message.
    unsafe { (api().result_error)(ctx, c.as_ptr(), -1) };
}

/// The main database file name of the connection running the function.
fn db_path(ctx: *mut sys::sqlite3_context) -> Option<String> {
    // SAFETY: ctx is live during the callback; db_filename returns a string owned by SQLite that
    // outlives this call, which we copy.
    unsafe {
        let db = (api().context_db_handle)(ctx);
        c_str((api().db_filename)(db, c"main".as_ptr())).map(str::to_owned)
    }
}

unsafe extern "C" fn fn_default(
    ctx: *mut sys::sqlite3_context,
    argc: c_int,
    argv: *mut *mut sys::sqlite3_value,
) {
    guard((), || {
        // SAFETY: SQLite's callback contract.
        let on = unsafe { arg_i64(argc, argv, 0) }.unwrap_or(1) != 0;
        let rc = vfs::set_default(on);
        if rc == sys::SQLITE_OK {
            // SAFETY: ctx is live.
            unsafe { (api().result_int64)(ctx, on as i64) };
        } else {
            result_error(
                ctx,
                &format!("walship_default: could not change the default VFS ({rc})"),
            );
        }
    })
}

unsafe extern "C" fn fn_status(
    ctx: *mut sys::sqlite3_context,
    _argc: c_int,
    _argv: *mut *mut sys::sqlite3_value,
) {
    guard((), || {
        result_text(ctx, &registry::status_json(db_path(ctx).as_deref()))
    })
}

unsafe extern "C" fn fn_flush(
    ctx: *mut sys::sqlite3_context,
    argc: c_int,
    argv: *mut *mut sys::sqlite3_value,
) {
    guard((), || {
        // SAFETY: SQLite's callback contract.
        let ms = unsafe { arg_i64(argc, argv, 0) }.unwrap_or(30_000).max(0) as u64;
        match registry::flush(
            db_path(ctx).as_deref(),
            std::time::Duration::from_millis(ms),
        ) {
            // SAFETY: ctx is live.
            Ok(txid) => unsafe { (api().result_int64)(ctx, txid as i64) },
            Err(e) => result_error(ctx, &format!("walship_flush: {e}")),
        }
    })
}
