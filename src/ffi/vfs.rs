//! The `walship` VFS: a shim over the default OS VFS.
//!
//! Owns the C callbacks. Every method forwards to the lower (OS) file. Observed: the end of a
//! write transaction (W-, read while the lock is still held, and the commit file-control), which
//! only notifies the shipper; and the three calls that destroy WAL frames — a header write at
//! offset 0 (a restart), `xTruncate` and `xDelete` of the WAL — which are guarded: capture reads
//! what is unread before the call goes through (`registry::Db::guard_wal`). Files other than main
//! databases and their WALs are opened straight on the lower VFS in the memory SQLite gave us, as
//! `ext/misc/cksumvfs.c` does. Never touches the network, never panics into SQLite (every
//! callback runs in `guard`).

use std::ffi::{c_char, c_int, c_void};
use std::mem::size_of;
use std::ptr;
use std::sync::Arc;

use libsqlite3_sys as sys;

use super::{api, c_str, guard};
use crate::registry::{self, Db};
use crate::wal::{ShmHeader, WAL_HEADER_SIZE};

pub const VFS_NAME: &CStr0 = c"walship";
type CStr0 = std::ffi::CStr;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Role {
    MainDb,
    Wal,
}

/// Our part of a file handle; the lower VFS's file follows it in the same allocation.
#[repr(C)]
struct ShimFile {
    base: sys::sqlite3_file,
    lower: *mut sys::sqlite3_file,
    role: Role,
    /// `Arc::into_raw` of the database's shared state; released in xClose.
    db: *const Db,
    /// Region 0 of the wal-index (main db only), as returned by the lower xShmMap.
    shm0: *mut c_void,
}

const SHIM_SIZE: usize = (size_of::<ShimFile>() + 7) & !7;

static mut VFS: Option<sys::sqlite3_vfs> = None;

fn lower_vfs(vfs: *mut sys::sqlite3_vfs) -> *mut sys::sqlite3_vfs {
    // SAFETY: pAppData was set to the lower VFS at registration and never changes.
    unsafe { (*vfs).pAppData as *mut sys::sqlite3_vfs }
}

/// Registers the shim once; default VFS only if `WALSHIP_DEFAULT=1`.
pub fn register() -> Result<(), String> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        // SAFETY: vfs_find(NULL) returns the current default VFS or null.
        let lower = unsafe { (api().vfs_find)(ptr::null()) };
        if lower.is_null() {
            result = Err("walship: SQLite has no default VFS to wrap".to_string());
            return;
        }
        // SAFETY: `lower` is a live, registered VFS; VFS structs are never freed by SQLite.
        let l = unsafe { &*lower };
        let vfs = sys::sqlite3_vfs {
            iVersion: l.iVersion.min(3),
            szOsFile: (SHIM_SIZE as c_int) + l.szOsFile,
            mxPathname: l.mxPathname,
            pNext: ptr::null_mut(),
            zName: VFS_NAME.as_ptr(),
            pAppData: lower as *mut c_void,
            xOpen: Some(x_open),
            xDelete: Some(x_delete),
            xAccess: l.xAccess.map(|_| x_access as _),
            xFullPathname: Some(x_full_pathname),
            xDlOpen: Some(x_dl_open),
            xDlError: Some(x_dl_error),
            xDlSym: Some(x_dl_sym),
            xDlClose: Some(x_dl_close),
            xRandomness: Some(x_randomness),
            xSleep: Some(x_sleep),
            xCurrentTime: Some(x_current_time),
            xGetLastError: Some(x_get_last_error),
            xCurrentTimeInt64: l.xCurrentTimeInt64.map(|_| x_current_time_int64 as _),
            xSetSystemCall: l.xSetSystemCall,
            xGetSystemCall: l.xGetSystemCall,
            xNextSystemCall: l.xNextSystemCall,
        };
        let default = std::env::var("WALSHIP_DEFAULT")
            .map(|v| v == "1")
            .unwrap_or(false);
        // SAFETY: VFS is written once, here, inside call_once, before any pointer to it exists;
        // afterwards it is only read by SQLite through the pointer we register.
        let rc = unsafe {
            let slot = &mut *ptr::addr_of_mut!(VFS);
            *slot = Some(vfs);
            (api().vfs_register)(slot.as_mut().unwrap() as *mut _, default as c_int)
        };
        if rc != sys::SQLITE_OK {
            result = Err(format!("walship: sqlite3_vfs_register failed ({rc})"));
        }
    });
    result
}

/// Makes the shim (true) or the OS VFS (false) the default for new connections.
pub fn set_default(on: bool) -> c_int {
    // SAFETY: VFS was initialised by register() (the extension entry ran first); registering
    // an already-registered VFS only moves it in SQLite's list.
    unsafe {
        let Some(v) = (*ptr::addr_of_mut!(VFS)).as_mut() else {
            return sys::SQLITE_MISUSE;
        };
        let target = if on {
            v as *mut _
        } else {
            v.pAppData as *mut sys::sqlite3_vfs
        };
        (api().vfs_register)(target, 1)
    }
}

/// # Safety
/// `f` must be a file opened by `x_open` with our methods.
unsafe fn shim<'a>(f: *mut sys::sqlite3_file) -> &'a mut ShimFile {
    // SAFETY: our methods are installed only on ShimFile allocations.
    unsafe { &mut *(f as *mut ShimFile) }
}

/// The shared database state of a shim file, borrowed for the duration of a call.
fn db_of(s: &ShimFile) -> Option<&Db> {
    // SAFETY: `db` is an Arc::into_raw pointer kept alive until xClose.
    (!s.db.is_null()).then(|| unsafe { &*s.db })
}

unsafe extern "C" fn x_open(
    vfs: *mut sys::sqlite3_vfs,
    name: *const c_char,
    file: *mut sys::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(sys::SQLITE_CANTOPEN, || {
        let lower = lower_vfs(vfs);
        // SAFETY: lower is a live VFS with xOpen.
        let l = unsafe { &*lower };
        let role = if flags & sys::SQLITE_OPEN_MAIN_DB != 0 {
            Role::MainDb
        } else if flags & sys::SQLITE_OPEN_WAL != 0 {
            Role::Wal
        } else {
            if flags & sys::SQLITE_OPEN_MAIN_JOURNAL != 0 {
                // SAFETY: name is SQLite's full pathname for a main journal.
                if let Some(path) = unsafe { c_str(name) } {
                    registry::rollback_journal_opened(path);
                }
            }
            // SAFETY: szOsFile covers the lower file; SQLite zeroed nothing we rely on.
            return unsafe { l.xOpen.unwrap()(lower, name, file, flags, out_flags) };
        };
        // SAFETY: the allocation is szOsFile = SHIM_SIZE + lower size bytes.
        let lower_file = unsafe { (file as *mut u8).add(SHIM_SIZE) } as *mut sys::sqlite3_file;
        // SAFETY: forwarding SQLite's own arguments with the lower part of the allocation.
        let rc = unsafe { l.xOpen.unwrap()(lower, name, lower_file, flags, out_flags) };
        if rc != sys::SQLITE_OK {
            // SAFETY: tells SQLite not to call xClose on a file that did not open.
            unsafe { (*file).pMethods = ptr::null() };
            return rc;
        }
        // SAFETY: name is SQLite's full pathname for main db and WAL files.
        let path = unsafe { c_str(name) }.unwrap_or("");
        let db: Option<Arc<Db>> = match role {
            Role::MainDb => Some(registry::open_main(path)),
            Role::Wal => registry::lookup_wal(path),
        };
        let s = ShimFile {
            base: sys::sqlite3_file {
                pMethods: &IO_METHODS,
            },
            lower: lower_file,
            role,
            db: db.map(Arc::into_raw).unwrap_or(ptr::null()),
            shm0: ptr::null_mut(),
        };
        // SAFETY: `file` is SHIM_SIZE bytes of writable memory owned by SQLite for this handle.
        unsafe { ptr::write(file as *mut ShimFile, s) };
        // SAFETY: just written.
        let s = unsafe { shim(file) };
        if role == Role::Wal && registry::tracing() {
            if let Some(db) = db_of(s) {
                let mut hdr = [0u8; WAL_HEADER_SIZE];
                // SAFETY: reading 32 bytes into a 32-byte buffer through the lower file.
                let rc = unsafe {
                    ((*(*s.lower).pMethods).xRead.unwrap())(s.lower, hdr.as_mut_ptr() as _, 32, 0)
                };
                db.wal_opened(rc == sys::SQLITE_OK && crate::wal::WalHeader::parse(&hdr).is_some());
            }
        }
        sys::SQLITE_OK
    })
}

unsafe extern "C" fn x_delete(
    vfs: *mut sys::sqlite3_vfs,
    name: *const c_char,
    sync: c_int,
) -> c_int {
    guard(sys::SQLITE_IOERR_DELETE, || {
        let lower = lower_vfs(vfs);
        // SAFETY: name is a NUL-terminated path from SQLite.
        let db = unsafe { c_str(name) }.and_then(registry::lookup_wal);
        let g = db.as_ref().map(|d| d.guard_wal("delete"));
        // SAFETY: forwarding to the lower VFS.
        let rc = unsafe { (*lower).xDelete.unwrap()(lower, name, sync) };
        if let (Some(db), Some(g)) = (db.as_ref(), g) {
            if rc == sys::SQLITE_OK {
                db.wal_deleted(g);
            }
        }
        rc
    })
}

macro_rules! vfs_forward {
    ($name:ident, $field:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty, $err:expr) => {
        unsafe extern "C" fn $name(vfs: *mut sys::sqlite3_vfs, $($arg: $ty),*) -> $ret {
            guard($err, || {
                let lower = lower_vfs(vfs);
                // SAFETY: forwarding SQLite's arguments unchanged to the lower VFS's method.
                unsafe { (*lower).$field.unwrap()(lower, $($arg),*) }
            })
        }
    };
}
vfs_forward!(x_access, xAccess, (n: *const c_char, f: c_int, out: *mut c_int) -> c_int, sys::SQLITE_IOERR_ACCESS);
vfs_forward!(x_full_pathname, xFullPathname, (n: *const c_char, sz: c_int, out: *mut c_char) -> c_int, sys::SQLITE_CANTOPEN);
vfs_forward!(x_dl_open, xDlOpen, (n: *const c_char) -> *mut c_void, ptr::null_mut());
vfs_forward!(x_dl_error, xDlError, (n: c_int, msg: *mut c_char) -> (), ());
vfs_forward!(x_dl_sym, xDlSym, (h: *mut c_void, s: *const c_char) -> Option<unsafe extern "C" fn(*mut sys::sqlite3_vfs, *mut c_void, *const c_char)>, None);
vfs_forward!(x_dl_close, xDlClose, (h: *mut c_void) -> (), ());
vfs_forward!(x_randomness, xRandomness, (n: c_int, out: *mut c_char) -> c_int, 0);
vfs_forward!(x_sleep, xSleep, (us: c_int) -> c_int, 0);
vfs_forward!(x_current_time, xCurrentTime, (t: *mut f64) -> c_int, sys::SQLITE_ERROR);
vfs_forward!(x_get_last_error, xGetLastError, (n: c_int, msg: *mut c_char) -> c_int, 0);
vfs_forward!(x_current_time_int64, xCurrentTimeInt64, (t: *mut i64) -> c_int, sys::SQLITE_ERROR);

static IO_METHODS: sys::sqlite3_io_methods = sys::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(f_close),
    xRead: Some(f_read),
    xWrite: Some(f_write),
    xTruncate: Some(f_truncate),
    xSync: Some(f_sync),
    xFileSize: Some(f_file_size),
    xLock: Some(f_lock),
    xUnlock: Some(f_unlock),
    xCheckReservedLock: Some(f_check_reserved_lock),
    xFileControl: Some(f_file_control),
    xSectorSize: Some(f_sector_size),
    xDeviceCharacteristics: Some(f_device_characteristics),
    xShmMap: Some(f_shm_map),
    xShmLock: Some(f_shm_lock),
    xShmBarrier: Some(f_shm_barrier),
    xShmUnmap: Some(f_shm_unmap),
    xFetch: Some(f_fetch),
    xUnfetch: Some(f_unfetch),
};

/// Calls method `$m` of the lower file, or returns `$missing` if the lower VFS lacks it.
macro_rules! lower_call {
    ($s:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {{
        let lf = $s.lower;
        // SAFETY: `lf` is the lower file opened in x_open; its pMethods is valid until xClose.
        match unsafe { (*(*lf).pMethods).$m } {
            // SAFETY: forwarding SQLite's arguments to the lower file's own method.
            Some(f) => unsafe { f(lf $(, $arg)*) },
            None => $missing,
        }
    }};
}

macro_rules! file_forward {
    ($name:ident, $m:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty, $err:expr) => {
        unsafe extern "C" fn $name(f: *mut sys::sqlite3_file, $($arg: $ty),*) -> $ret {
            guard($err, || {
                // SAFETY: f carries our methods, so it is a ShimFile.
                let s = unsafe { shim(f) };
                lower_call!(s, $m, $err $(, $arg)*)
            })
        }
    };
}
file_forward!(f_read, xRead, (buf: *mut c_void, n: c_int, off: i64) -> c_int, sys::SQLITE_IOERR_READ);
file_forward!(f_sync, xSync, (flags: c_int) -> c_int, sys::SQLITE_IOERR_FSYNC);
file_forward!(f_file_size, xFileSize, (out: *mut i64) -> c_int, sys::SQLITE_IOERR_FSTAT);
file_forward!(f_lock, xLock, (l: c_int) -> c_int, sys::SQLITE_IOERR_LOCK);
file_forward!(f_unlock, xUnlock, (l: c_int) -> c_int, sys::SQLITE_IOERR_UNLOCK);
file_forward!(f_check_reserved_lock, xCheckReservedLock, (out: *mut c_int) -> c_int, sys::SQLITE_IOERR_CHECKRESERVEDLOCK);
file_forward!(f_sector_size, xSectorSize, () -> c_int, 4096);
file_forward!(f_device_characteristics, xDeviceCharacteristics, () -> c_int, 0);
file_forward!(f_shm_barrier, xShmBarrier, () -> (), ());
file_forward!(f_fetch, xFetch, (off: i64, n: c_int, pp: *mut *mut c_void) -> c_int, sys::SQLITE_IOERR_READ);
file_forward!(f_unfetch, xUnfetch, (off: i64, p: *mut c_void) -> c_int, sys::SQLITE_IOERR);

unsafe extern "C" fn f_close(f: *mut sys::sqlite3_file) -> c_int {
    guard(sys::SQLITE_IOERR_CLOSE, || {
        // SAFETY: f is a ShimFile; after this call SQLite frees the memory, so we take the Arc
        // out exactly once and never touch `s` again after the lower close.
        let s = unsafe { shim(f) };
        if !s.shm0.is_null() {
            if let Some(db) = db_of(s) {
                db.shm_detach(read_shm(s), || ());
            }
            s.shm0 = ptr::null_mut();
        }
        let rc = lower_call!(s, xClose, sys::SQLITE_OK);
        let db = std::mem::replace(&mut s.db, ptr::null());
        if !db.is_null() {
            // SAFETY: created by Arc::into_raw in x_open; released once here.
            let db = unsafe { Arc::from_raw(db) };
            if s.role == Role::MainDb {
                registry::close_main(db);
            }
        }
        rc
    })
}

unsafe extern "C" fn f_write(
    f: *mut sys::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    off: i64,
) -> c_int {
    guard(sys::SQLITE_IOERR_WRITE, || {
        // SAFETY: f is a ShimFile.
        let s = unsafe { shim(f) };
        let db = db_of(s).filter(|_| s.role == Role::Wal && n > 0);
        let Some(db) = db else {
            return lower_call!(s, xWrite, sys::SQLITE_IOERR_WRITE, buf, n, off);
        };
        // SAFETY: SQLite passed `n` readable bytes at `buf` for the duration of the call.
        let data = unsafe { std::slice::from_raw_parts(buf as *const u8, n as usize) };
        if off != 0 {
            db.wal_write(off as u64, data);
            return lower_call!(s, xWrite, sys::SQLITE_IOERR_WRITE, buf, n, off);
        }
        // A header write: the WAL restarts, and the old generation's frames become stale.
        let g = db.guard_wal("restart");
        let rc = lower_call!(s, xWrite, sys::SQLITE_IOERR_WRITE, buf, n, off);
        db.wal_write(0, data);
        if rc == sys::SQLITE_OK && data.len() >= WAL_HEADER_SIZE {
            db.wal_header_written(g, data);
        }
        rc
    })
}

unsafe extern "C" fn f_truncate(f: *mut sys::sqlite3_file, size: i64) -> c_int {
    guard(sys::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: f is a ShimFile.
        let s = unsafe { shim(f) };
        let Some(db) = db_of(s).filter(|_| s.role == Role::Wal) else {
            return lower_call!(s, xTruncate, sys::SQLITE_IOERR_TRUNCATE, size);
        };
        // Only emptying the WAL destroys frames: a truncation to a size (journal_size_limit)
        // cuts stale bytes past the last frame, and comes after the commit frame was written
        // but before the wal-index shows it, so guarding it would see a commit "past mxFrame".
        if size > 0 {
            let rc = lower_call!(s, xTruncate, sys::SQLITE_IOERR_TRUNCATE, size);
            if rc == sys::SQLITE_OK {
                db.wal_truncated(registry::Guarded::none(), size as u64);
            }
            return rc;
        }
        let g = db.guard_wal("truncate");
        let rc = lower_call!(s, xTruncate, sys::SQLITE_IOERR_TRUNCATE, size);
        if rc == sys::SQLITE_OK {
            db.wal_truncated(g, size as u64);
        }
        rc
    })
}

unsafe extern "C" fn f_file_control(
    f: *mut sys::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    guard(sys::SQLITE_IOERR, || {
        // SAFETY: f is a ShimFile.
        let s = unsafe { shim(f) };
        let rc = lower_call!(s, xFileControl, sys::SQLITE_NOTFOUND, op, arg);
        if op == sys::SQLITE_FCNTL_COMMIT_PHASETWO && s.role == Role::MainDb {
            if let Some(db) = db_of(s) {
                db.commit_phase_two(read_shm(s));
            }
        }
        rc
    })
}

unsafe extern "C" fn f_shm_map(
    f: *mut sys::sqlite3_file,
    pg: c_int,
    pgsz: c_int,
    extend: c_int,
    pp: *mut *mut c_void,
) -> c_int {
    guard(sys::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: f is a ShimFile.
        let s = unsafe { shim(f) };
        let rc = lower_call!(s, xShmMap, sys::SQLITE_IOERR_SHMMAP, pg, pgsz, extend, pp);
        // SAFETY: pp is SQLite's out-pointer, filled by the lower call on success.
        let region = if rc == sys::SQLITE_OK && pg == 0 && !pp.is_null() {
            unsafe { *pp }
        } else {
            ptr::null_mut()
        };
        if !region.is_null() && s.shm0.is_null() {
            s.shm0 = region;
            if let Some(db) = db_of(s) {
                db.shm_attach(region as usize);
            }
        }
        rc
    })
}

unsafe extern "C" fn f_shm_unmap(f: *mut sys::sqlite3_file, delete: c_int) -> c_int {
    guard(sys::SQLITE_IOERR_SHMMAP, || {
        // SAFETY: f is a ShimFile.
        let s = unsafe { shim(f) };
        let mapped = std::mem::replace(&mut s.shm0, ptr::null_mut());
        match db_of(s) {
            Some(db) if !mapped.is_null() => {
                let last = read_shm_at(mapped as usize);
                db.shm_detach(last, || lower_call!(s, xShmUnmap, sys::SQLITE_OK, delete))
            }
            _ => lower_call!(s, xShmUnmap, sys::SQLITE_OK, delete),
        }
    })
}

const LOCK_EXCL: c_int = sys::SQLITE_SHM_LOCK | sys::SQLITE_SHM_EXCLUSIVE;
const UNLOCK_EXCL: c_int = sys::SQLITE_SHM_UNLOCK | sys::SQLITE_SHM_EXCLUSIVE;

unsafe extern "C" fn f_shm_lock(
    f: *mut sys::sqlite3_file,
    ofst: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(sys::SQLITE_IOERR_SHMLOCK, || {
        // SAFETY: f is a ShimFile.
        let s = unsafe { shim(f) };
        // Slot 0 is WAL_WRITE_LOCK.
        let write_lock = ofst == 0 && n >= 1 && s.role == Role::MainDb;
        if write_lock && flags == UNLOCK_EXCL {
            // W-: read the header while the lock is still ours.
            if let Some(db) = db_of(s) {
                db.write_unlock(read_shm(s));
            }
        }
        let rc = lower_call!(s, xShmLock, sys::SQLITE_IOERR_SHMLOCK, ofst, n, flags);
        if write_lock && flags == LOCK_EXCL && rc == sys::SQLITE_OK {
            if let Some(db) = db_of(s) {
                db.write_lock(read_shm(s));
            }
        }
        rc
    })
}

/// Reads the wal-index header from mapped region 0 (two copies; SQLite writes the second, then
/// the first, so equal copies mean a complete header).
fn read_shm(s: &ShimFile) -> Option<ShmHeader> {
    read_shm_at(s.shm0 as usize)
}

/// Reads the wal-index header at address `addr` (region 0 of a live mapping; 0 means none).
/// Callers guarantee the mapping outlives the call: a handle's own `shm0`, or the registry's
/// copy read under the lock that `xShmUnmap` takes.
pub fn read_shm_at(addr: usize) -> Option<ShmHeader> {
    let shm0 = addr as *const u8;
    if shm0.is_null() {
        return None;
    }
    let mut a = [0u8; 48];
    let mut b = [0u8; 48];
    for _ in 0..4 {
        // SAFETY: region 0 is at least 32 KiB and stays mapped until xShmUnmap, which clears
        // shm0 on this handle; the header is plain bytes, so racy reads are only ever torn, and
        // torn reads are rejected by the copy comparison.
        unsafe {
            ptr::copy_nonoverlapping(shm0, a.as_mut_ptr(), 48);
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            ptr::copy_nonoverlapping(shm0.add(48), b.as_mut_ptr(), 48);
        }
        if a == b {
            return Some(ShmHeader::parse(&a));
        }
    }
    None
}

/// The OS VFS under the shim, once registered.
pub fn lower() -> Option<*mut sys::sqlite3_vfs> {
    // SAFETY: read-only access to the VFS struct written once in register().
    unsafe {
        (*ptr::addr_of!(VFS))
            .as_ref()
            .map(|v| v.pAppData as *mut sys::sqlite3_vfs)
    }
}
