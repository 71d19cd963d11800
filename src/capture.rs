//! Capture: turns the WAL writes and lock calls the VFS shim observes into committed transactions.
//!
//! Owns the per-database state machine (one `Capture` per database, shared by all its connections
//! in this process). Pure: it never does I/O, never blocks, never panics on odd input; anything it
//! cannot account for becomes a `Discontinuity` event, never a silently shipped hole.
//!
//! What SQLite does, and which event of ours it drives (see ../shared/design-notes.md and the
//! recording test `tests/python/test_wal_sequences.py`, which proves these on the host SQLite):
//!
//! | SQLite call (observed)                         | capture method            | effect                          |
//! |-----------------------------------------------|---------------------------|---------------------------------|
//! | `xShmLock(0,1,LOCK|EXCL)` on the db handle (W+) | `write_lock(shm)`        | txn starts at shm mxFrame; shm compared with our last W- to detect foreign commits |
//! | `xWrite(wal, 0, 32)`                            | `wal_write`               | WAL restart: new salts, frames restart at 1 |
//! | `xWrite(wal, frame hdr, 24)` / page / split page | `wal_write`              | copy bytes into the frame slot (rewrites of a slot replace it) |
//! | `xShmLock(0,1,UNLOCK|EXCL)` (W-)                | `end_transaction(Some(shm))` | frames (start, mxFrame] are the commit; none: rollback/checkpoint |
//! | `xFileControl(COMMIT_PHASETWO)` without W+ (EXCLUSIVE mode) | `end_transaction(shm or None)` | commit ends at shm mxFrame, or at the last frame header with a commit size |
//! | `xTruncate(wal, 0)`, `xDelete(wal)`             | `wal_truncated`           | next write starts with a new header |
//!
//! Frame headers written during a transaction may carry zero salts and checksums until SQLite
//! rewrites them after the commit frame; we never trust header salts, only the page number and
//! the commit field, which do not change in the rewrite.

use crate::wal::{self, FrameHeader, ShmHeader, WalHeader, WalRegion, FRAME_HEADER_SIZE};

/// A point in the WAL's history: after frame `frame` of the WAL whose header has these salts.
/// `frame == 0` means an empty WAL: the database file alone holds the state.
#[derive(Debug, Clone, Copy, Eq)]
pub struct Position {
    pub salt1: u32,
    pub salt2: u32,
    pub frame: u32,
}

impl PartialEq for Position {
    fn eq(&self, o: &Self) -> bool {
        self.frame == o.frame && (self.frame == 0 || (self.salt1, self.salt2) == (o.salt1, o.salt2))
    }
}

/// One committed transaction, as full page images.
#[derive(Debug, Clone)]
pub struct Txn {
    /// Position before the transaction; `None` when this process had no earlier knowledge of
    /// the WAL (first write after open), so the shipper must prove continuity itself.
    pub base: Option<Position>,
    pub end: Position,
    pub page_size: u32,
    /// Database size in pages after the commit.
    pub db_size: u32,
    /// Page number and latest image, sorted by page number, each page once.
    pub pages: Vec<(u32, Box<[u8]>)>,
    pub committed_at_ms: i64,
}

impl Txn {
    pub fn bytes(&self) -> usize {
        self.pages.len() * (self.page_size as usize + 8)
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Commit(Txn),
    /// The WAL moved on without new data (a checkpoint restarted it); continuity holds.
    Reset {
        from: Option<Position>,
        to: Position,
    },
    /// Something committed that this process did not see, or capture lost track of a frame.
    Discontinuity {
        reason: String,
    },
}

/// One WAL frame as written so far in the current transaction. SQLite writes the 24-byte
/// header and the page separately; without powersafe overwrite, a write that crosses the sync
/// point is split there, which can cut a header or a page in two. Whole writes take the fast
/// path; pieces are assembled in place and counted until the part is complete.
#[derive(Default)]
struct Slot {
    header: [u8; FRAME_HEADER_SIZE],
    page: Option<Box<[u8]>>,
    header_done: bool,
    page_done: bool,
    /// Byte ranges written so far of a part that is not complete, in frame coordinates.
    pieces: Vec<(usize, usize)>,
}

impl Slot {
    /// Writes `chunk` at `within` bytes into the frame; returns true when this write completed
    /// (or rewrote) the header.
    fn write(&mut self, within: usize, chunk: &[u8], ps: usize) -> bool {
        let end = within + chunk.len();
        let h = FRAME_HEADER_SIZE;
        if within < h {
            let n = end.min(h) - within;
            self.header[within..within + n].copy_from_slice(&chunk[..n]);
        }
        if within == h && chunk.len() == ps {
            // The common case: a whole page in one write, copied once, no zeroing.
            match self.page.as_mut() {
                Some(page) => page.copy_from_slice(chunk),
                None => {
                    let mut page = crate::pool::take(ps);
                    page.copy_from_slice(chunk);
                    self.page = Some(page);
                }
            }
        } else if end > h {
            let from = within.max(h);
            let page = self
                .page
                .get_or_insert_with(|| crate::pool::take_zeroed(ps));
            page[from - h..end - h].copy_from_slice(&chunk[from - within..]);
        }
        let header_before = self.header_done;
        if within == 0 && end >= h {
            self.header_done = true;
        }
        if within <= h && end >= h + ps {
            self.page_done = true;
        }
        if !(self.header_done && (self.page_done || end <= h)) {
            self.pieces.push((within, end));
            self.header_done |= covered(&mut self.pieces, 0, h);
            self.page_done |= covered(&mut self.pieces, h, h + ps);
        }
        self.header_done && (!header_before || within < h)
    }
}

/// True when the union of `pieces` covers `[from, to)`.
fn covered(pieces: &mut [(usize, usize)], from: usize, to: usize) -> bool {
    pieces.sort_unstable();
    let mut reach = from;
    for &(a, b) in pieces.iter() {
        if a > reach {
            break;
        }
        reach = reach.max(b);
    }
    reach >= to
}

#[derive(Default)]
pub struct Capture {
    page_size: Option<u32>,
    salts: Option<(u32, u32)>,
    /// Position after the last commit this process knows of.
    known: Option<Position>,
    /// wal-index header at our last write-lock release: what must still be there at the next W+.
    shm_seen: Option<ShmHeader>,
    /// The transaction in progress.
    in_txn: bool,
    txn_base: Option<Position>,
    /// Frames with an index above this belong to the transaction in progress.
    txn_start: Option<u32>,
    /// Frames written in the transaction in progress: `slots[i]` is frame `slot_base + i`
    /// (frames of a transaction are contiguous; the vector keeps its capacity between them).
    slots: Vec<Slot>,
    slot_base: u32,
    last_commit_header: Option<u32>,
    /// A write capture could not interpret; the next commit becomes a discontinuity.
    damaged: Option<String>,
}

impl Capture {
    pub fn new() -> Capture {
        Capture::default()
    }

    pub fn page_size(&self) -> Option<u32> {
        self.page_size
    }

    /// The position after the last commit this process saw, if any.
    pub fn known_position(&self) -> Option<Position> {
        self.known
    }

    /// A WAL header read from the file (not written by SQLite now): learn page size and salts.
    pub fn observe_wal_header(&mut self, h: &WalHeader) {
        if self.in_txn && self.page_size.is_some_and(|ps| ps != h.page_size) {
            // A stale header (read by another connection while a transaction writes frames):
            // the frames in progress keep the page size they are written with.
            return;
        }
        self.page_size = Some(h.page_size);
        if self.salts.is_none() {
            self.salts = Some((h.salt1, h.salt2));
        }
    }

    fn begin_if_needed(&mut self) {
        if !self.in_txn {
            self.in_txn = true;
            self.txn_base = self.known;
            self.txn_start = self.known.map(|p| p.frame);
            self.slots.clear();
            self.last_commit_header = None;
        }
    }

    /// W+: the WAL write lock was taken. `shm` is the wal-index header right after taking it.
    pub fn write_lock(&mut self, shm: Option<ShmHeader>) -> Vec<Event> {
        let mut events = Vec::new();
        if let Some(shm) = shm.filter(|s| s.is_init) {
            if let Some(ps) = shm.page_size {
                self.page_size = Some(ps);
            }
            let (s1, s2) = shm.salts();
            let now = Position {
                salt1: s1,
                salt2: s2,
                frame: shm.mx_frame,
            };
            if let Some(seen) = self.shm_seen {
                let seen_pos = Position {
                    salt1: seen.salts().0,
                    salt2: seen.salts().1,
                    frame: seen.mx_frame,
                };
                if shm.ichange != seen.ichange {
                    events.push(Event::Discontinuity {
                        reason: format!(
                            "{} transaction(s) were committed by a connection that does not use the walship VFS",
                            shm.ichange.wrapping_sub(seen.ichange)
                        ),
                    });
                } else if now != seen_pos {
                    events.push(Event::Reset {
                        from: Some(seen_pos),
                        to: now,
                    });
                }
            }
            if shm.mx_frame > 0 || self.salts.is_none() {
                self.salts = Some((s1, s2));
            }
            self.known = Some(now);
            self.shm_seen = Some(shm);
        }
        self.in_txn = false;
        self.begin_if_needed();
        events
    }

    /// Outside a transaction, compares the wal-index with our last W-: commits we did not see
    /// (a connection bypassing the VFS) become a discontinuity now rather than at the next write.
    pub fn check_foreign(&mut self, shm: Option<ShmHeader>) -> Vec<Event> {
        let (Some(shm), Some(seen)) = (shm.filter(|s| s.is_init), self.shm_seen) else {
            return Vec::new();
        };
        if self.in_txn || shm.ichange == seen.ichange {
            return Vec::new();
        }
        let (s1, s2) = shm.salts();
        self.known = Some(Position {
            salt1: s1,
            salt2: s2,
            frame: shm.mx_frame,
        });
        self.salts = Some((s1, s2));
        self.shm_seen = Some(shm);
        vec![Event::Discontinuity {
            reason: format!(
                "{} transaction(s) were committed by a connection that does not use the walship VFS",
                shm.ichange.wrapping_sub(seen.ichange)
            ),
        }]
    }

    /// An xWrite on the WAL file. Copies what it needs; never fails.
    pub fn wal_write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.len() >= wal::WAL_HEADER_SIZE {
            if let Some(h) = WalHeader::parse(data) {
                self.begin_if_needed();
                // A new WAL starts from the database file alone: with no earlier position
                // known (first open in EXCLUSIVE mode, where no wal-index tells us one), that is
                // the base, the same "no WAL frames" position a snapshot of the file records.
                if self.txn_base.is_none() {
                    self.txn_base = Some(Position {
                        salt1: 0,
                        salt2: 0,
                        frame: 0,
                    });
                }
                // A restart: frames begin again at 1, earlier slots are stale.
                self.page_size = Some(h.page_size);
                self.salts = Some((h.salt1, h.salt2));
                self.txn_start = Some(0);
                self.slots.clear();
                self.last_commit_header = None;
                if data.len() == wal::WAL_HEADER_SIZE {
                    return;
                }
            }
        }
        let Some(ps) = self.page_size else {
            self.damaged = Some("a WAL frame was written before its page size was known".into());
            return;
        };
        self.begin_if_needed();
        let frame_size = FRAME_HEADER_SIZE as u64 + ps as u64;
        let mut off = offset;
        let mut rest = data;
        // Frame numbers are 32-bit: no WAL has a byte past frame u32::MAX.
        let wal_end = wal::frame_offset(u32::MAX, ps) + frame_size;
        while !rest.is_empty() {
            if off >= wal_end {
                self.damaged = Some(format!("WAL write at offset {off}, past the last frame"));
                return;
            }
            let (index, within) = match wal::locate(off, ps) {
                WalRegion::Header => {
                    self.damaged = Some(format!("partial WAL header write at offset {off}"));
                    return;
                }
                WalRegion::Frame { index, within } => (index, within as usize),
            };
            let take = rest.len().min((frame_size as usize) - within);
            let (chunk, tail) = rest.split_at(take);
            self.write_slot(index, within, chunk, ps as usize);
            off += take as u64;
            rest = tail;
        }
    }

    fn write_slot(&mut self, index: u32, within: usize, chunk: &[u8], ps: usize) {
        if self.txn_start.is_none() {
            // No lock call told us where the transaction starts (EXCLUSIVE mode, first write
            // after open): the first frame written is the one after the last commit.
            self.txn_start = Some(index - 1);
            if self.known.is_none() {
                if let Some((s1, s2)) = self.salts {
                    self.known = Some(Position {
                        salt1: s1,
                        salt2: s2,
                        frame: index - 1,
                    });
                    self.txn_base = self.known;
                }
            }
        }
        let Some(slot) = self.slot_mut(index) else {
            self.damaged = Some(format!(
                "WAL frame {index} was written far from the transaction's other frames"
            ));
            return;
        };
        // Bytes 4..8 of a frame header: the database size after a commit, 0 otherwise.
        if slot.write(within, chunk, ps) && slot.header[4..8] != [0; 4] {
            self.last_commit_header = Some(index);
        }
    }

    /// The slot of frame `index`, created if new; `None` for an index implausibly far from the
    /// others (a write capture cannot place).
    fn slot_mut(&mut self, index: u32) -> Option<&mut Slot> {
        const MAX_SPAN: u32 = 1 << 20;
        if self.slots.is_empty() {
            self.slot_base = index;
        }
        if index < self.slot_base {
            let n = self.slot_base - index;
            if n > MAX_SPAN {
                return None;
            }
            self.slots.splice(0..0, (0..n).map(|_| Slot::default()));
            self.slot_base = index;
        }
        let i = index - self.slot_base;
        if i > MAX_SPAN {
            return None;
        }
        let i = i as usize;
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, Slot::default);
        }
        Some(&mut self.slots[i])
    }

    /// The WAL file was truncated to `size` bytes, or deleted (size 0). SQLite empties the WAL
    /// only after every frame was backfilled, so the history continues from an empty WAL.
    pub fn wal_truncated(&mut self, size: u64) -> Vec<Event> {
        if size != 0 || self.in_txn {
            return Vec::new();
        }
        match self.known {
            Some(from) if from.frame != 0 => {
                let to = Position { frame: 0, ..from };
                self.known = Some(to);
                vec![Event::Reset {
                    from: Some(from),
                    to,
                }]
            }
            _ => Vec::new(),
        }
    }

    /// End of a write transaction: W- (`shm` read while still holding the lock), or the
    /// commit-phase-two file control when no lock was taken (EXCLUSIVE locking mode).
    pub fn end_transaction(&mut self, shm: Option<ShmHeader>, now_ms: i64) -> Vec<Event> {
        if !self.in_txn {
            return Vec::new();
        }
        let shm = shm.filter(|s| s.is_init);
        let end_frame = match (shm, self.last_commit_header) {
            (Some(s), _) => s.mx_frame,
            (None, Some(f)) => f,
            (None, None) => {
                // Rollback in EXCLUSIVE mode, or nothing written.
                self.finish(None);
                return Vec::new();
            }
        };
        let start = self.txn_start.unwrap_or(end_frame);
        let salts = match shm {
            Some(s) if s.mx_frame > 0 || self.salts.is_none() => s.salts(),
            _ => self.salts.unwrap_or((0, 0)),
        };
        let end = Position {
            salt1: salts.0,
            salt2: salts.1,
            frame: end_frame,
        };
        let mut events = Vec::new();
        if end_frame > start {
            match self.collect(start, end_frame) {
                Ok((pages, db_size)) => events.push(Event::Commit(Txn {
                    base: self.txn_base,
                    end,
                    page_size: self.page_size.unwrap_or(0),
                    db_size,
                    pages,
                    committed_at_ms: now_ms,
                })),
                Err(reason) => events.push(Event::Discontinuity { reason }),
            }
        } else if self.txn_base.is_some_and(|b| b != end) {
            // A checkpoint moved the WAL. Without an earlier position (the wal-index recovery
            // at first open) there is nothing to move from: the next commit's base is checked
            // against the replica instead.
            events.push(Event::Reset {
                from: self.txn_base,
                to: end,
            });
        }
        self.salts = Some(salts);
        self.known = Some(end);
        self.finish(shm);
        events
    }

    fn finish(&mut self, shm: Option<ShmHeader>) {
        if shm.is_some() {
            self.shm_seen = shm;
        }
        self.in_txn = false;
        self.txn_start = None;
        self.txn_base = None;
        self.slots.clear();
        self.last_commit_header = None;
        self.damaged = None;
    }

    /// Frames (start, end]: merged page images and the commit's database size.
    #[allow(clippy::type_complexity)]
    fn collect(&mut self, start: u32, end: u32) -> Result<(Vec<(u32, Box<[u8]>)>, u32), String> {
        if let Some(d) = self.damaged.take() {
            return Err(d);
        }
        // In frame order; a page written twice keeps its last image (below). At most one page
        // per slot: the wal-index's mxFrame may claim any number of frames.
        let mut pages: Vec<(u32, Box<[u8]>)> =
            Vec::with_capacity(((end - start) as usize).min(self.slots.len()));
        let mut db_size = 0;
        for i in start + 1..=end {
            let slot = i
                .checked_sub(self.slot_base)
                .and_then(|k| self.slots.get_mut(k as usize))
                .map(std::mem::take);
            let (h, p) = match slot {
                Some(Slot {
                    header,
                    page: Some(page),
                    header_done: true,
                    page_done: true,
                    ..
                }) => (header, page),
                _ => {
                    return Err(format!(
                        "frame {i} of a commit was not completely seen by the walship VFS"
                    ))
                }
            };
            let fh = FrameHeader::parse(&h);
            if fh.pgno == 0 {
                return Err(format!("frame {i} has page number 0"));
            }
            if i == end {
                db_size = fh.commit;
            }
            pages.push((fh.pgno, p));
        }
        if db_size == 0 {
            return Err(format!(
                "frame {end} ends a commit but has no database size"
            ));
        }
        // Stable: equal page numbers stay in frame order, so the last of each run is the newest.
        pages.sort_by_key(|&(pgno, _)| pgno);
        let mut merged: Vec<(u32, Box<[u8]>)> = Vec::with_capacity(pages.len());
        for (pgno, page) in pages {
            if pgno > db_size {
                crate::pool::give(page);
            } else if let Some(last) = merged.last_mut().filter(|l| l.0 == pgno) {
                crate::pool::give(std::mem::replace(&mut last.1, page));
            } else {
                merged.push((pgno, page));
            }
        }
        Ok((merged, db_size))
    }
}

#[cfg(test)]
mod tests;
