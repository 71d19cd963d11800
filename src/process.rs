//! Which process this is, without a system call on the commit path.
//!
//! Owns the count of forks this process image went through (bumped in the child by a
//! `pthread_atfork` handler the FFI fence installs at load) and [`Owner`], the mark a database's
//! state keeps of the process that opened it. `getpid` is a real system call in current glibc,
//! and the commit path asked it several times a commit; with the handler installed the check is
//! one atomic load. Never blocks, never allocates; without the handler it falls back to `getpid`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

static FORKS: AtomicU64 = AtomicU64::new(0);
static WATCHED: AtomicBool = AtomicBool::new(false);

/// Called in the child right after a fork (from the atfork handler: one atomic add).
pub(crate) fn forked() {
    FORKS.fetch_add(1, Ordering::SeqCst);
}

/// The atfork handler is installed: fork generations can be trusted from now on.
pub(crate) fn watching() {
    WATCHED.store(true, Ordering::SeqCst);
}

/// The process that created it.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pid: u32,
    generation: u64,
}

impl Owner {
    pub fn this() -> Owner {
        Owner {
            pid: std::process::id(),
            generation: FORKS.load(Ordering::SeqCst),
        }
    }

    /// True in the process that created it (false in a forked child).
    pub fn is_current(&self) -> bool {
        if WATCHED.load(Ordering::Relaxed) {
            self.generation == FORKS.load(Ordering::Relaxed)
        } else {
            std::process::id() == self.pid
        }
    }
}
