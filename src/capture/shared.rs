//! What the app's threads and the shipper share for one database: the tail, the wal-index
//! mapping (read only while it cannot be unmapped) and the newest wal-index header this process
//! saw. Never blocks beyond an uncontended lock; never does I/O.

use std::path::Path;
use std::sync::Mutex;

use super::Tail;
use crate::wal::ShmHeader;

/// What the app's threads and the shipper share for one database.
pub struct Shared {
    pub tail: Mutex<Tail>,
    /// The wal-index region 0 mapped by this process's connections (address, how many map it).
    shm: Mutex<(usize, usize)>,
    /// The process that opened the database (a forked child neither guards nor stages: its
    /// parent ships, and sees the child's restarts as another writer's).
    pid: u32,
    /// The wal-index header as this process last saw it (write lock and unlock, commit, and
    /// just before unmapping): how far the guards may read (see `Tail::guard`).
    seen: Mutex<Option<ShmHeader>>,
}

impl Shared {
    pub fn new(db_path: &str, work_dir: &Path) -> Shared {
        Shared {
            tail: Mutex::new(Tail::new(db_path, work_dir)),
            shm: Mutex::new((0, 0)),
            pid: std::process::id(),
            seen: Mutex::new(None),
        }
    }

    pub fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True in the process that opened the database (false in a forked child).
    pub fn in_owner(&self) -> bool {
        std::process::id() == self.pid
    }

    pub fn shm_attach(&self, addr: usize) {
        let mut g = self.shm.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = addr;
        g.1 += 1;
    }

    /// A connection is unmapping: `unmap` runs under the lock, so no reader sees a dead region.
    pub fn shm_detach<R>(&self, unmap: impl FnOnce() -> R) -> R {
        let mut g = self.shm.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = g.1.saturating_sub(1);
        if g.1 == 0 {
            g.0 = 0;
        }
        unmap()
    }

    /// Records a wal-index header this process read (`None` changes nothing).
    pub fn saw(&self, shm: Option<ShmHeader>) {
        if let Some(h) = shm.filter(|h| h.is_init) {
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
        }
    }

    pub fn seen(&self) -> Option<ShmHeader> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` while a connection of this process has the wal-index mapped (so that mapping
    /// it again only adds a reference: it cannot create, reset or truncate the `-shm` file), or
    /// returns `None`.
    pub fn while_mapped<R>(&self, f: impl FnOnce() -> R) -> Option<R> {
        let g = self.shm.lock().unwrap_or_else(|e| e.into_inner());
        (g.0 != 0).then(f)
    }

    /// The wal-index header, read while the region cannot be unmapped.
    pub fn shm_header(&self) -> Option<ShmHeader> {
        let g = self.shm.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            None
        } else {
            crate::ffi::vfs::read_shm_at(g.0)
        }
    }
}
