//! What the app's threads and the shipper share for one database: the tail, the wal-index
//! mapping (read only while it cannot be unmapped) and the newest wal-index header this process
//! saw, and without a wal-index, the last commit frame SQLite confirmed. Never blocks beyond an
//! uncontended lock; never does I/O.

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
    owner: crate::process::Owner,
    /// The wal-index header as this process last saw it (write lock and unlock, commit, and
    /// just before unmapping): how far the guards may read (see `Tail::guard`).
    seen: Mutex<Option<ShmHeader>>,
    /// Without a wal-index walship can read (EXCLUSIVE mode, or a VFS above walship that keeps
    /// its own, such as SQLite's test VFS): the commit frame last written through the shim,
    /// and the last one a successful commit confirmed (SQLite signals the end of a commit that
    /// succeeded with COMMIT_PHASETWO; a failed one may leave a valid commit frame behind).
    commits: Mutex<Commits>,
    /// Connections of this process with the wal-index mapped (mirrors `shm.1`, read without a
    /// lock on the commit path).
    mapped: std::sync::atomic::AtomicUsize,
}

/// A commit frame written to the WAL through the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CommitFrame {
    salts: (u32, u32),
    offset: u64,
    /// Its index, once the page written after the header gave the frame size.
    frame: Option<u32>,
    page_size: u32,
}

#[derive(Debug, Default)]
struct Commits {
    written: Option<CommitFrame>,
    confirmed: Option<CommitFrame>,
}

impl Shared {
    pub fn new(db_path: &str, work_dir: &Path) -> Shared {
        Shared {
            tail: Mutex::new(Tail::new(db_path, work_dir)),
            shm: Mutex::new((0, 0)),
            owner: crate::process::Owner::this(),
            seen: Mutex::new(None),
            commits: Mutex::new(Commits::default()),
            mapped: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A frame header or a page was written to the WAL at `offset` (app thread, commit path:
    /// a few comparisons). Only commit frames, and the page that follows one, are noted.
    pub fn wal_written(&self, offset: u64, data: &[u8]) {
        use crate::wal::{FrameHeader, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};
        // With a wal-index mapped, readers take the limit from it: nothing to note, and the
        // commit path stays one atomic load here.
        if self.mapped.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            return;
        }
        let mut c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        if data.len() == FRAME_HEADER_SIZE {
            let h = FrameHeader::parse(data);
            // SQLite only ever rewrites frames past the last commit; a write at or before the
            // confirmed one means the WAL was replaced under this process (a restored copy):
            // what follows is unconfirmed until the next commit is.
            if let Some(cf) = c.confirmed {
                let size = FRAME_HEADER_SIZE as u64 + cf.page_size as u64;
                if (h.salt1, h.salt2) == cf.salts && offset <= cf.offset {
                    let frame = offset
                        .checked_sub(WAL_HEADER_SIZE as u64)
                        .map(|at| at / size + 1)
                        .and_then(|f| u32::try_from(f).ok());
                    c.confirmed = match frame {
                        Some(f) if f > 1 => Some(CommitFrame {
                            offset: offset - size,
                            frame: Some(f - 1),
                            ..cf
                        }),
                        _ => None,
                    };
                }
            }
            if h.commit == 0 {
                return;
            }
            // The same frame written again (SQLite rewrites the headers of a transaction's
            // frames to fix their checksums) keeps the index its page gave it.
            let (frame, page_size) = match c.written {
                Some(w) if w.offset == offset => (w.frame, w.page_size),
                _ => (None, 0),
            };
            c.written = Some(CommitFrame {
                salts: (h.salt1, h.salt2),
                offset,
                frame,
                page_size,
            });
        } else if let Some(w) = c
            .written
            .as_mut()
            .filter(|w| w.frame.is_none() && offset == w.offset + FRAME_HEADER_SIZE as u64)
        {
            let size = (FRAME_HEADER_SIZE + data.len()) as u64;
            if let Some(at) = w.offset.checked_sub(WAL_HEADER_SIZE as u64) {
                if at % size == 0 {
                    w.frame = u32::try_from(at / size + 1).ok();
                    w.page_size = data.len() as u32;
                }
            }
        }
    }

    /// SQLite confirmed a commit (COMMIT_PHASETWO without a wal-index): the commit frame last
    /// written is committed.
    pub fn commit_confirmed(&self) {
        let mut c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = c.written.filter(|w| w.frame.is_some()) {
            c.confirmed = Some(w);
        }
    }

    /// With no wal-index mapped: a header standing for the last confirmed commit of the WAL
    /// generation this process last wrote a commit frame to (frame 0 when none of them was
    /// confirmed), so that readers stop there: frames past it belong to a commit SQLite
    /// reported failed (or one still being written).
    fn confirmed_header(&self) -> Option<ShmHeader> {
        let c = self.commits.lock().unwrap_or_else(|e| e.into_inner());
        let w = c.written?;
        let mx_frame = match c.confirmed {
            Some(cf) if cf.salts == w.salts => cf.frame?,
            _ => 0,
        };
        let mut salt = [0u8; 8];
        salt[..4].copy_from_slice(&w.salts.0.to_be_bytes());
        salt[4..].copy_from_slice(&w.salts.1.to_be_bytes());
        Some(ShmHeader {
            ichange: 0,
            is_init: true,
            page_size: (w.page_size > 0).then_some(w.page_size),
            mx_frame,
            n_page: 0,
            salt,
        })
    }

    pub fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True in the process that opened the database (false in a forked child).
    pub fn in_owner(&self) -> bool {
        self.owner.is_current()
    }

    pub fn shm_attach(&self, addr: usize) {
        let mut g = self.shm.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = addr;
        g.1 += 1;
        self.mapped.store(g.1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A connection is unmapping: `unmap` runs under the lock, so no reader sees a dead region.
    pub fn shm_detach<R>(&self, unmap: impl FnOnce() -> R) -> R {
        let mut g = self.shm.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = g.1.saturating_sub(1);
        self.mapped.store(g.1, std::sync::atomic::Ordering::Relaxed);
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

    /// The wal-index header, read while the region cannot be unmapped; with none mapped, the
    /// last commit this process confirmed without one (see `commits`).
    pub fn shm_header(&self) -> Option<ShmHeader> {
        let g = self.shm.lock().unwrap_or_else(|e| e.into_inner());
        if g.0 == 0 {
            drop(g);
            self.confirmed_header()
        } else {
            crate::ffi::vfs::read_shm_at(g.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PS: u64 = 1024;

    /// Byte offset of frame `i`'s header in a WAL of 1024-byte pages.
    fn at(i: u64) -> u64 {
        32 + (i - 1) * (24 + PS)
    }

    fn header(pgno: u32, commit: u32, salts: (u32, u32)) -> Vec<u8> {
        let mut h = vec![0u8; 24];
        h[0..4].copy_from_slice(&pgno.to_be_bytes());
        h[4..8].copy_from_slice(&commit.to_be_bytes());
        h[8..12].copy_from_slice(&salts.0.to_be_bytes());
        h[12..16].copy_from_slice(&salts.1.to_be_bytes());
        h
    }

    fn frame(s: &Shared, i: u64, commit: u32, salts: (u32, u32)) {
        s.wal_written(at(i), &header(i as u32, commit, salts));
        s.wal_written(at(i) + 24, &[7u8; PS as usize]);
    }

    fn shared() -> Shared {
        let dir = std::env::temp_dir().join(format!("walship-shared-test-{}", std::process::id()));
        Shared::new(dir.join("x.db").to_str().unwrap(), &dir)
    }

    /// Without a wal-index, readers stop at the last commit SQLite confirmed: a commit frame
    /// written without COMMIT_PHASETWO after it (a commit SQLite reported failed) is past it.
    #[test]
    fn only_confirmed_commits_count_without_a_wal_index() {
        let s = shared();
        let salts = (11, 22);
        assert!(s.shm_header().is_none(), "nothing written: no limit");
        frame(&s, 1, 0, salts);
        frame(&s, 2, 2, salts);
        let h = s
            .shm_header()
            .expect("a commit frame of this generation was written");
        assert_eq!((h.mx_frame, h.salts()), (0, salts), "not confirmed yet");
        s.commit_confirmed();
        assert_eq!(s.shm_header().unwrap().mx_frame, 2);
        // The next transaction's commit frame reaches the WAL, then the commit fails.
        frame(&s, 3, 0, salts);
        frame(&s, 4, 3, salts);
        assert_eq!(
            s.shm_header().unwrap().mx_frame,
            2,
            "an unconfirmed commit is past the limit"
        );
        // Padding frames after a commit frame (psow=0, synchronous=FULL) are commit frames too.
        frame(&s, 5, 3, salts);
        s.commit_confirmed();
        assert_eq!(s.shm_header().unwrap().mx_frame, 5);
    }

    /// SQLite rewrites a transaction's frame headers to fix their checksums, the commit frame's
    /// last (its first header has zero salts, and no page follows the rewrite): the frame keeps
    /// the index its page gave it.
    #[test]
    fn a_rewritten_commit_header_keeps_its_frame() {
        let s = shared();
        let salts = (5, 6);
        frame(&s, 1, 0, salts);
        frame(&s, 2, 2, (0, 0));
        s.wal_written(at(1), &header(1, 0, salts));
        s.wal_written(at(2), &header(2, 2, salts));
        s.commit_confirmed();
        let h = s.shm_header().unwrap();
        assert_eq!((h.mx_frame, h.salts()), (2, salts));
    }

    /// A write at or before the confirmed commit (the WAL was replaced under the process, as a
    /// restored copy does) makes what follows unconfirmed until its own commit is.
    #[test]
    fn a_rewound_wal_is_unconfirmed_from_the_rewrite() {
        let s = shared();
        let salts = (8, 9);
        for i in 1..=4 {
            frame(&s, i, if i == 4 { 4 } else { 0 }, salts);
        }
        s.commit_confirmed();
        assert_eq!(s.shm_header().unwrap().mx_frame, 4);
        frame(&s, 3, 0, salts);
        frame(&s, 4, 4, salts);
        assert_eq!(
            s.shm_header().unwrap().mx_frame,
            2,
            "frames 3.. are the new, unconfirmed ones"
        );
        s.commit_confirmed();
        assert_eq!(s.shm_header().unwrap().mx_frame, 4);
    }
}
