//! `walship replicate -exec`: the extension inside a program that does not load it itself.
//!
//! Owns three things, all asked for by the environment `walship replicate` gives its command:
//! * For programs on a shared SQLite library (the `sqlite3` shell, Debian's python3), loaded
//!   through `LD_PRELOAD`: `sqlite3_open`, `sqlite3_open_v2` and `sqlite3_open16` are interposed.
//!   Each call is forwarded unchanged to the function the caller would have bound to without
//!   this library (the next definition in the global scope, else the one in the caller's own
//!   scope, found by walking the call stack: Python's `_sqlite3` keeps libsqlite3 out of the
//!   global scope). With `WALSHIP_PRELOAD` set, the first call also binds walship to that SQLite
//!   library: an auto-extension, then a `:memory:` open through it that runs the extension's
//!   entry point, then walship made the default VFS — all before the program's own open, so
//!   its first database already goes through walship. SQLite is initialised by the program's
//!   own first open, never earlier: a program may still call `sqlite3_config` before it (the
//!   `sqlite3` shell does, and warns on stdout if SQLite was initialised already).
//! * `sqlite3_walship_exec_init`: the entry point the node preload loads into better-sqlite3's
//!   SQLite (`loadExtension(path, entry)`): the extension, plus `walship_exec_replicates(path)`
//!   on the loading connection, so the preload opens exactly the databases the configuration
//!   names through walship (the same discovery and path matching as the registry).
//! * The note of each main database opened through walship (`WALSHIP_EXEC_OPENED`, one path per
//!   line), from which `walship replicate` reports a command that never opened a configured
//!   database and ships what the command left unshipped.
//!
//! Never: initialises SQLite before the program does; puts an SQLite library into the global
//! symbol scope; forwards to another SQLite than the caller's (a program with its own SQLite
//! keeps it); changes or fails an open (a problem is logged and the open goes ahead without
//! walship); binds walship to a second SQLite library in one process; acts when
//! `WALSHIP_PRELOAD` is unset (then the interposed calls are only forwarded); lets a panic out.

use std::collections::HashSet;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::Write;
use std::path::Path;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use libsqlite3_sys as sys;
use once_cell::sync::OnceCell;

use super::{api, c_str, guard, vfs};
use crate::config::Config;

/// Set by `walship replicate` for its command: the extension's path (what `LD_PRELOAD` and the
/// node preload load). Unset: nothing here acts.
const ENV_PRELOAD: &str = "WALSHIP_PRELOAD";
/// Set by `walship replicate`: the file each process appends the databases it opened through
/// walship to.
const ENV_OPENED: &str = "WALSHIP_EXEC_OPENED";

type OpenV2 =
    unsafe extern "C" fn(*const c_char, *mut *mut sys::sqlite3, c_int, *const c_char) -> c_int;
type Open = unsafe extern "C" fn(*const c_char, *mut *mut sys::sqlite3) -> c_int;
type Open16 = unsafe extern "C" fn(*const c_void, *mut *mut sys::sqlite3) -> c_int;
type Close = unsafe extern "C" fn(*mut sys::sqlite3) -> c_int;
type AutoExtension = unsafe extern "C" fn(Option<unsafe extern "C" fn()>) -> c_int;
type EntryPoint = unsafe extern "C" fn(
    *mut sys::sqlite3,
    *mut *mut c_char,
    *const sys::sqlite3_api_routines,
) -> c_int;

// ---------------------------------------------------------------------------------------------
// The interposed open functions.

/// # Safety
/// SQLite's contract for `sqlite3_open_v2`; the arguments are passed on untouched.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_open_v2(
    filename: *const c_char,
    pp_db: *mut *mut sys::sqlite3,
    flags: c_int,
    z_vfs: *const c_char,
) -> c_int {
    match guard(None, || forward(c"sqlite3_open_v2")) {
        // SAFETY: `f` is the caller's own `sqlite3_open_v2` (see `forward`), so it has this type.
        Some(f) => unsafe {
            std::mem::transmute::<*mut c_void, OpenV2>(f)(filename, pp_db, flags, z_vfs)
        },
        // SAFETY: pp_db is the caller's out-pointer, as SQLite requires on any failure.
        None => unsafe { unresolved(pp_db) },
    }
}

/// # Safety
/// SQLite's contract for `sqlite3_open`; the arguments are passed on untouched.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_open(
    filename: *const c_char,
    pp_db: *mut *mut sys::sqlite3,
) -> c_int {
    match guard(None, || forward(c"sqlite3_open")) {
        // SAFETY: `f` is the caller's own `sqlite3_open`.
        Some(f) => unsafe { std::mem::transmute::<*mut c_void, Open>(f)(filename, pp_db) },
        // SAFETY: as above.
        None => unsafe { unresolved(pp_db) },
    }
}

/// # Safety
/// SQLite's contract for `sqlite3_open16`; the arguments are passed on untouched.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_open16(
    filename: *const c_void,
    pp_db: *mut *mut sys::sqlite3,
) -> c_int {
    match guard(None, || forward(c"sqlite3_open16")) {
        // SAFETY: `f` is the caller's own `sqlite3_open16`.
        Some(f) => unsafe { std::mem::transmute::<*mut c_void, Open16>(f)(filename, pp_db) },
        // SAFETY: as above.
        None => unsafe { unresolved(pp_db) },
    }
}

/// No definition to forward to: cannot happen for a caller that was linked against SQLite.
///
/// # Safety
/// `pp_db` must be null or SQLite's `ppDb` out-pointer.
unsafe fn unresolved(pp_db: *mut *mut sys::sqlite3) -> c_int {
    if !pp_db.is_null() {
        // SAFETY: a valid out-pointer by the caller's contract.
        unsafe { *pp_db = ptr::null_mut() };
    }
    sys::SQLITE_ERROR
}

/// The definition of `name` the caller would have bound to without this library, after
/// binding walship to its SQLite library when `WALSHIP_PRELOAD` asks for it.
fn forward(name: &CStr) -> Option<*mut c_void> {
    let f = resolve(name)?;
    if preload_requested() {
        bind_once(f);
    }
    Some(f)
}

fn preload_requested() -> bool {
    std::env::var_os(ENV_PRELOAD).is_some_and(|v| !v.is_empty())
}

/// The dynamic linker's own choice with this library left out: the next definition in the
/// global scope, else the first in the scope (itself, then its dependencies) of the innermost
/// caller on the stack that has one.
fn resolve(name: &CStr) -> Option<*mut c_void> {
    // SAFETY: RTLD_NEXT lookup of a NUL-terminated name.
    let next = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
    if !next.is_null() {
        return Some(next);
    }
    callers().into_iter().find_map(|caller| {
        // SAFETY: RTLD_NOLOAD only returns a handle to an object already loaded (one on the
        // call stack); dlclose drops the reference this dlopen added.
        unsafe {
            let h = libc::dlopen(caller.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            if h.is_null() {
                return None;
            }
            let f = libc::dlsym(h, name.as_ptr());
            libc::dlclose(h);
            (!f.is_null() && object_of(f).map(|o| o.base) != Some(own_base())).then_some(f)
        }
    })
}

/// The loaded object holding `addr`: its base address and file name.
struct Object {
    base: usize,
    name: CString,
}

fn object_of(addr: *const c_void) -> Option<Object> {
    // SAFETY: dladdr only reads the loader's tables; `info` is plain data it fills in.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    Some(Object {
        base: info.dli_fbase as usize,
        // SAFETY: dli_fname is a NUL-terminated string owned by the loader; copied at once.
        name: unsafe { CStr::from_ptr(info.dli_fname) }.to_owned(),
    })
}

/// Base address of this library.
fn own_base() -> usize {
    static BASE: AtomicUsize = AtomicUsize::new(0);
    let b = BASE.load(Ordering::Relaxed);
    if b != 0 {
        return b;
    }
    let b = object_of(own_base as *const c_void).map_or(usize::MAX, |o| o.base);
    BASE.store(b, Ordering::Relaxed);
    b
}

extern "C" {
    fn _Unwind_Backtrace(
        trace: extern "C" fn(*mut c_void, *mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> c_int;
    fn _Unwind_GetIP(ctx: *mut c_void) -> usize;
}

/// `_URC_NO_REASON` (go on) and `_URC_END_OF_STACK` (stop) of the unwinder's ABI.
const URC_CONTINUE: c_int = 0;
const URC_STOP: c_int = 5;

/// How many distinct objects `callers` reports.
const MAX_CALLERS: usize = 8;

/// File names of the objects on the call stack outside this library, innermost first: the
/// program or module that called the interposed function (after the unwinder's own library, if
/// it shows), then its callers.
fn callers() -> Vec<CString> {
    extern "C" fn frame(ctx: *mut c_void, arg: *mut c_void) -> c_int {
        let step = || {
            // SAFETY: `arg` is the Vec passed below, alive for the whole walk; `ctx` is the
            // unwinder's context for this frame.
            let (found, ip) = unsafe { (&mut *(arg as *mut Vec<CString>), _Unwind_GetIP(ctx)) };
            if ip == 0 {
                return URC_CONTINUE;
            }
            // The return address may be one past the call, at the start of the next symbol.
            match object_of((ip - 1) as *const c_void) {
                Some(o) if o.base == own_base() || found.contains(&o.name) => URC_CONTINUE,
                Some(o) => {
                    found.push(o.name);
                    if found.len() < MAX_CALLERS {
                        URC_CONTINUE
                    } else {
                        URC_STOP
                    }
                }
                None => URC_STOP,
            }
        };
        // Called from the unwinder (C): no panic may leave.
        std::panic::catch_unwind(step).unwrap_or(URC_STOP)
    }
    let mut found: Vec<CString> = Vec::new();
    // SAFETY: the callback only touches `found` through `arg`, which outlives the call.
    unsafe { _Unwind_Backtrace(frame, &mut found as *mut _ as *mut c_void) };
    found
}

// ---------------------------------------------------------------------------------------------
// Binding walship to the program's SQLite library.

/// Base address of the SQLite library walship serves in this process (0: none yet).
static BOUND: AtomicUsize = AtomicUsize::new(0);
static BINDING: Mutex<()> = Mutex::new(());
/// The routine table of the SQLite library walship serves.
static ROUTINES: AtomicPtr<sys::sqlite3_api_routines> = AtomicPtr::new(ptr::null_mut());
/// The extension's entry point succeeded.
static READY: AtomicBool = AtomicBool::new(false);

/// Binds walship to the SQLite library that defines `f`, once per process.
fn bind_once(f: *mut c_void) {
    let Some(lib) = object_of(f) else { return };
    let bound = BOUND.load(Ordering::Acquire);
    if bound == lib.base {
        return;
    }
    let _g = BINDING.lock().unwrap_or_else(|p| p.into_inner());
    match BOUND.load(Ordering::Acquire) {
        0 => {}
        b if b == lib.base => return,
        _ => {
            crate::logging::warn_once("preload second sqlite", || {
                format!(
                    "walship serves one SQLite library per process; {} is a second one and its \
                     databases are not replicated",
                    lib.name.to_string_lossy()
                )
            });
            return;
        }
    }
    bind(&lib.name);
    // Only now: another thread's open waits on the lock above until walship is the default.
    BOUND.store(lib.base, Ordering::Release);
}

fn bind(lib: &CStr) {
    // SAFETY: RTLD_NOLOAD returns the already-loaded library that defines the caller's open
    // function; the symbols looked up in it are SQLite's public API, of the types named (and
    // since 3.x). The handle is kept: the library stays loaded while the program uses it.
    let (auto_extension, open_v2, close) = unsafe {
        let h = libc::dlopen(lib.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if h.is_null() {
            return;
        }
        let sym = |n: &CStr| libc::dlsym(h, n.as_ptr());
        let (a, o, c) = (
            sym(c"sqlite3_auto_extension"),
            sym(c"sqlite3_open_v2"),
            sym(c"sqlite3_close"),
        );
        if a.is_null() || o.is_null() || c.is_null() {
            return;
        }
        (
            std::mem::transmute::<*mut c_void, AutoExtension>(a),
            std::mem::transmute::<*mut c_void, OpenV2>(o),
            std::mem::transmute::<*mut c_void, Close>(c),
        )
    };
    // SAFETY: the auto-extension has the entry-point signature SQLite calls it with (SQLite
    // declares it `void(*)(void)` and casts back); it stays valid for the life of the process.
    let rc = unsafe {
        auto_extension(Some(std::mem::transmute::<
            EntryPoint,
            unsafe extern "C" fn(),
        >(on_open)))
    };
    if rc != sys::SQLITE_OK {
        return;
    }
    // An open runs the auto-extension, which runs the extension's entry point on this library.
    let mut db: *mut sys::sqlite3 = ptr::null_mut();
    // SAFETY: a NUL-terminated name, a valid out-pointer, the default VFS; the handle (also the
    // one of a failed open) is closed right after.
    unsafe {
        open_v2(
            c":memory:".as_ptr(),
            &mut db,
            sys::SQLITE_OPEN_READWRITE | sys::SQLITE_OPEN_CREATE,
            ptr::null(),
        );
        close(db);
    }
    if READY.load(Ordering::Acquire) && vfs::set_default(true) != sys::SQLITE_OK {
        log::error!("walship replicate: could not make walship the default VFS");
    }
}

/// The auto-extension: the extension's entry point on the first connection, then the note of
/// each connection's main database. Always SQLITE_OK: an open never fails because of walship.
unsafe extern "C" fn on_open(
    db: *mut sys::sqlite3,
    err: *mut *mut c_char,
    p_api: *const sys::sqlite3_api_routines,
) -> c_int {
    guard(sys::SQLITE_OK, || {
        if !READY.load(Ordering::Acquire) {
            // SAFETY: SQLite's arguments for an auto-extension, passed on as the entry point's.
            if let Err(e) = unsafe { init(db, err, p_api) } {
                crate::logging::warn_once("preload init", || {
                    format!("walship replicate: the extension did not start ({e}); databases are served without it")
                });
                return sys::SQLITE_OK;
            }
        }
        if ptr::eq(ROUTINES.load(Ordering::Acquire), p_api) {
            // SAFETY: db is the connection being opened; p_api is its library's routine table.
            unsafe { note_opened(db, p_api) };
        }
        sys::SQLITE_OK
    })
}

/// Why walship could not start on an SQLite library.
#[derive(Debug, thiserror::Error)]
enum InitError {
    #[error("walship already serves another SQLite library in this process")]
    OtherLibrary,
    #[error("the extension's entry point failed: {0}")]
    EntryPoint(String),
}

/// Runs the extension's entry point for the library of `p_api`, unless walship serves another.
///
/// # Safety
/// SQLite's arguments to an extension entry point.
unsafe fn init(
    db: *mut sys::sqlite3,
    err: *mut *mut c_char,
    p_api: *const sys::sqlite3_api_routines,
) -> Result<(), InitError> {
    let mine = p_api as *mut sys::sqlite3_api_routines;
    if let Err(other) =
        ROUTINES.compare_exchange(ptr::null_mut(), mine, Ordering::AcqRel, Ordering::Acquire)
    {
        if other != mine {
            return Err(InitError::OtherLibrary);
        }
    }
    // SAFETY: forwarded from SQLite's call.
    let rc = unsafe { super::sqlite3_walvfs_init(db, err, p_api) };
    if rc != sys::SQLITE_OK && rc != sys::SQLITE_OK_LOAD_PERMANENTLY {
        // SAFETY: the entry point leaves a message there or null.
        let msg = unsafe { err.as_ref().and_then(|p| c_str(*p)) };
        return Err(InitError::EntryPoint(
            msg.unwrap_or("no message").to_string(),
        ));
    }
    READY.store(true, Ordering::Release);
    Ok(())
}

/// Appends the connection's main database to `WALSHIP_EXEC_OPENED` if it was opened through
/// walship, once per path and process.
///
/// # Safety
/// `db` is a live connection of the library whose routine table is `p_api`.
unsafe fn note_opened(db: *mut sys::sqlite3, p_api: *const sys::sqlite3_api_routines) {
    let Some(file) = std::env::var_os(ENV_OPENED).filter(|v| !v.is_empty()) else {
        return;
    };
    // SAFETY: p_api is SQLite's routine table, valid for the life of the process.
    let r = unsafe { &*p_api };
    let (Some(db_filename), Some(file_control)) = (r.db_filename, r.file_control) else {
        return;
    };
    // SAFETY: db is live; the returned name is owned by SQLite and copied at once.
    let Some(path) = (unsafe { c_str(db_filename(db, c"main".as_ptr())) })
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
    else {
        return;
    };
    let mut vfs: *mut sys::sqlite3_vfs = ptr::null_mut();
    // SAFETY: SQLITE_FCNTL_VFS_POINTER writes one `sqlite3_vfs*` into the pointer given.
    let rc = unsafe {
        file_control(
            db,
            c"main".as_ptr(),
            sys::SQLITE_FCNTL_VFS_POINTER,
            &mut vfs as *mut _ as *mut c_void,
        )
    };
    // SAFETY: a registered VFS's name is a static NUL-terminated string.
    if rc != sys::SQLITE_OK || vfs.is_null() || unsafe { c_str((*vfs).zName) } != Some("walship") {
        return;
    }
    static NOTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut noted = NOTED.lock().unwrap_or_else(|p| p.into_inner());
    if !noted.get_or_insert_with(HashSet::new).insert(path.clone()) {
        return;
    }
    // One short O_APPEND write per line: lines from several processes do not interleave.
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .and_then(|mut f| f.write_all(format!("{path}\n").as_bytes()));
}

// ---------------------------------------------------------------------------------------------
// The node preload's entry point.

/// `db.loadExtension(path, "sqlite3_walship_exec_init")`: the extension's entry point, the note
/// of later connections opened through walship, and `walship_exec_replicates(path)` (1 when the
/// configuration replicates the database at `path`) on `db`.
///
/// # Safety
/// Called by SQLite's extension loader with a valid connection and routine table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_walship_exec_init(
    db: *mut sys::sqlite3,
    pz_err: *mut *mut c_char,
    p_api: *const sys::sqlite3_api_routines,
) -> c_int {
    guard(sys::SQLITE_ERROR, || {
        // SAFETY: SQLite's arguments, passed on.
        if let Err(e) = unsafe { init(db, pz_err, p_api) } {
            // SAFETY: pz_err is SQLite's out-pointer (possibly already set by the entry point).
            unsafe { set_error(pz_err, &e.to_string()) };
            return sys::SQLITE_ERROR;
        }
        // SAFETY: p_api is SQLite's routine table; on_open has the entry-point signature.
        let rc = unsafe {
            ((*p_api).auto_extension.expect("auto_extension"))(Some(std::mem::transmute::<
                EntryPoint,
                unsafe extern "C" fn(),
            >(on_open)))
        };
        if rc != sys::SQLITE_OK {
            return rc;
        }
        // SAFETY: db is live; the name is static; fn_replicates matches ScalarFn.
        let rc = unsafe {
            (api().create_function_v2)(
                db,
                c"walship_exec_replicates".as_ptr(),
                1,
                sys::SQLITE_UTF8,
                ptr::null_mut(),
                Some(fn_replicates),
                None,
                None,
                None,
            )
        };
        if rc == sys::SQLITE_OK {
            sys::SQLITE_OK_LOAD_PERMANENTLY
        } else {
            rc
        }
    })
}

/// Copies `msg` into SQLite-owned memory at `*pz` (replacing nothing: a message already there
/// is SQLite's to free, so it is kept).
///
/// # Safety
/// `pz` must be null or an extension entry point's `pzErrMsg`.
unsafe fn set_error(pz: *mut *mut c_char, msg: &str) {
    // SAFETY: checked for null; SQLite initialises *pz to null before calling the entry point.
    if pz.is_null() || unsafe { !(*pz).is_null() } {
        return;
    }
    let bytes = msg.as_bytes();
    // SAFETY: a buffer of len+1 bytes from SQLite's allocator, filled and NUL-terminated, then
    // handed to SQLite, which frees it.
    unsafe {
        let p = (api().malloc)(bytes.len() as c_int + 1) as *mut u8;
        if p.is_null() {
            return;
        }
        ptr::copy_nonoverlapping(bytes.as_ptr(), p, bytes.len());
        *p.add(bytes.len()) = 0;
        *pz = p as *mut c_char;
    }
}

/// The configuration, found as the registry finds it.
fn config() -> Option<&'static Config> {
    static CONFIG: OnceCell<Option<Config>> = OnceCell::new();
    CONFIG
        .get_or_init(|| Config::discover().ok().flatten())
        .as_ref()
}

unsafe extern "C" fn fn_replicates(
    ctx: *mut sys::sqlite3_context,
    argc: c_int,
    argv: *mut *mut sys::sqlite3_value,
) {
    guard((), || {
        let routines = ROUTINES.load(Ordering::Acquire);
        // SAFETY: argv holds argc values; value_text's result is owned by SQLite and copied at
        // once; routines is the table of the library calling us.
        let path = unsafe {
            if argc < 1 || routines.is_null() {
                None
            } else {
                (*routines)
                    .value_text
                    .and_then(|f| c_str(f(*argv) as *const c_char))
                    .map(str::to_owned)
            }
        };
        let yes = path
            .filter(|p| !p.is_empty() && p != ":memory:")
            .and_then(|p| config().map(|c| c.db_for(Path::new(&p)).is_some()))
            .unwrap_or(false);
        // SAFETY: ctx is live during the callback.
        unsafe { (api().result_int64)(ctx, yes as i64) };
    })
}
