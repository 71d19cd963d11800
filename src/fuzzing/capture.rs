//! The capture fuzz target: arbitrary bytes interpreted as VFS observations driving a
//! [`Capture`], checked against a shadow copy of the WAL file (see [`capture_sequence`]).

use std::collections::HashMap;

use crate::capture::{Capture, Event, Txn};
use crate::wal::{self, ShmHeader, WalHeader, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};

/// Byte source for the interpreters: reads past the end as zeros.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

/// What the WAL file holds: every byte written, by offset (4 KiB blocks; holes read as 0).
#[derive(Default)]
struct Shadow {
    blocks: HashMap<u64, Box<[u8]>>,
}

const BLOCK: u64 = 4096;

impl Shadow {
    fn write(&mut self, mut off: u64, mut data: &[u8]) {
        while !data.is_empty() {
            let (b, within) = (off / BLOCK, (off % BLOCK) as usize);
            let n = data.len().min(BLOCK as usize - within);
            let block = self
                .blocks
                .entry(b)
                .or_insert_with(|| vec![0; BLOCK as usize].into_boxed_slice());
            block[within..within + n].copy_from_slice(&data[..n]);
            off += n as u64;
            data = &data[n..];
        }
    }

    fn read(&self, mut off: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let (b, within) = (off / BLOCK, (off % BLOCK) as usize);
            let n = (len - out.len()).min(BLOCK as usize - within);
            match self.blocks.get(&b) {
                Some(block) => out.extend_from_slice(&block[within..within + n]),
                None => out.resize(out.len() + n, 0),
            }
            off += n as u64;
        }
        out
    }

    fn truncate(&mut self, size: u64) {
        self.blocks.retain(|&b, _| b * BLOCK < size);
        if let Some(block) = self.blocks.get_mut(&(size / BLOCK)) {
            block[(size % BLOCK) as usize..].fill(0);
        }
    }
}

/// The driver's idea of the database: what a well-behaved SQLite would do next. Operations
/// follow it most of the time and depart from it on purpose the rest of the time.
struct Model {
    page_size: u32,
    salt1: u32,
    salt2: u32,
    ichange: u32,
    mx_frame: u32,
    /// Next frame SQLite would append.
    next: u32,
    /// A write lock is held or a WAL write happened since the last end of transaction (a
    /// superset of capture's own notion): SQLite never truncates the WAL then.
    in_txn: bool,
    /// Frame writes so far, bounding how far back a commit's frames can reach.
    frame_writes: u32,
}

fn wal_header_bytes(page_size: u32, salt1: u32, salt2: u32) -> [u8; WAL_HEADER_SIZE] {
    let mut h = [0u8; WAL_HEADER_SIZE];
    h[..4].copy_from_slice(&0x377f_0682u32.to_be_bytes());
    h[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
    let field = if page_size == 65536 { 1 } else { page_size };
    h[8..12].copy_from_slice(&field.to_be_bytes());
    h[16..20].copy_from_slice(&salt1.to_be_bytes());
    h[20..24].copy_from_slice(&salt2.to_be_bytes());
    let c = wal::checksum(false, (0, 0), &h[..24]);
    h[24..28].copy_from_slice(&c.0.to_be_bytes());
    h[28..32].copy_from_slice(&c.1.to_be_bytes());
    h
}

fn frame_header_bytes(pgno: u32, commit: u32, salt1: u32, salt2: u32) -> [u8; FRAME_HEADER_SIZE] {
    let mut h = [0u8; FRAME_HEADER_SIZE];
    h[..4].copy_from_slice(&pgno.to_be_bytes());
    h[4..8].copy_from_slice(&commit.to_be_bytes());
    h[8..12].copy_from_slice(&salt1.to_be_bytes());
    h[12..16].copy_from_slice(&salt2.to_be_bytes());
    h
}

/// Recognisable page bytes: a fill byte, the frame index and a running counter.
fn page_bytes(len: usize, fill: u8, tag: u32) -> Vec<u8> {
    let mut p = vec![fill; len];
    for (i, b) in tag.to_be_bytes().iter().enumerate() {
        if i < len {
            p[i] = *b;
        }
    }
    p
}

const PAGE_SIZES: [u32; 4] = [512, 1024, 2048, 4096];

/// Interprets `data` as a sequence of VFS observations (WAL header writes, frame header and
/// page writes at computed offsets, split and stray writes, write lock and unlock with
/// wal-index headers, commit phase two, truncation, foreign-commit checks, WAL headers read at
/// open) and drives a [`Capture`] with them. Every event must be well formed, and every page of
/// a commit must be what the WAL file holds for a frame with that page number at or before
/// the commit frame, whose header holds the commit's database size: capture never ships bytes
/// that were not written.
pub fn capture_sequence(data: &[u8]) {
    let mut input = Input { data, at: 0 };
    let first = input.u8();
    let page_size = if first == 0xff {
        65536
    } else {
        PAGE_SIZES[usize::from(first) % 4]
    };
    let mut m = Model {
        page_size,
        salt1: input.u32(),
        salt2: input.u32(),
        ichange: 0,
        mx_frame: 0,
        next: 1,
        in_txn: false,
        frame_writes: 0,
    };
    let mut c = Capture::new();
    let mut file = Shadow::default();
    let mut counter = 0u32;
    let mut ops = 0;
    while !input.done() && ops < 4096 {
        ops += 1;
        counter = counter.wrapping_add(1);
        let op = input.u8();
        let events = match op % 16 {
            0 => {
                let shm = shm_variant(&mut input, &m);
                m.in_txn = true;
                if let Some(s) = shm.filter(|s| s.is_init) {
                    m.next = s.mx_frame.saturating_add(1);
                }
                c.write_lock(shm)
            }
            1 => {
                // A WAL restart: SQLite writes exactly the 32-byte header at offset 0.
                let v = input.u8();
                if v.is_multiple_of(8) {
                    m.page_size = PAGE_SIZES[usize::from(v >> 3) % 4];
                }
                m.salt1 = m.salt1.wrapping_add(1);
                m.salt2 = input.u32();
                let mut h = wal_header_bytes(m.page_size, m.salt1, m.salt2).to_vec();
                match v % 5 {
                    1 => h[usize::from(v) % 32] ^= 1 << (v % 7), // damaged
                    2 => h.extend_from_slice(&page_bytes(usize::from(v), v, counter)), // longer
                    3 => h.truncate(usize::from(v) % 32),        // shorter
                    _ => {}
                }
                m.next = 1;
                write(&mut c, &mut file, &mut m, 0, &h);
                Vec::new()
            }
            2 => {
                let i = pick_frame(&mut input, &m);
                let h = frame_header(&mut input, &m);
                let at = frame_at(i, &m);
                write(&mut c, &mut file, &mut m, at, &h);
                Vec::new()
            }
            3 => {
                let i = pick_frame(&mut input, &m);
                let p = page_bytes(m.page_size as usize, input.u8(), counter);
                let at = frame_at(i, &m) + 24;
                write(&mut c, &mut file, &mut m, at, &p);
                Vec::new()
            }
            4 => {
                // A frame written in two pieces at an arbitrary point (sync-point splits), or
                // any run of bytes across frames.
                let i = pick_frame(&mut input, &m);
                let fsz = FRAME_HEADER_SIZE + m.page_size as usize;
                let within = usize::from(input.u16()) % fsz;
                let len = 1 + usize::from(input.u16()) % (2 * fsz - within);
                let mut bytes = frame_header(&mut input, &m).to_vec();
                bytes.extend_from_slice(&page_bytes(m.page_size as usize, input.u8(), counter));
                bytes.extend_from_slice(&bytes.clone());
                let at = frame_at(i, &m);
                write(&mut c, &mut file, &mut m, at, &bytes[..within]);
                write(
                    &mut c,
                    &mut file,
                    &mut m,
                    at + within as u64,
                    &bytes[within..][..len],
                );
                Vec::new()
            }
            5 => {
                // A stray write anywhere a file offset can be.
                let off = input.u64() & (i64::MAX as u64 >> 1);
                let len = 1 + usize::from(input.u8());
                let bytes = page_bytes(len, input.u8(), counter);
                write(&mut c, &mut file, &mut m, off, &bytes);
                Vec::new()
            }
            6 | 7 => {
                // W-: mxFrame is the last frame written (a commit), unchanged (a rollback), or
                // something else.
                let v = input.u8();
                let mx = match v % 4 {
                    0 | 1 => m.next.saturating_sub(1),
                    2 => m.mx_frame,
                    _ => input.u32() % (m.next.saturating_add(4)),
                };
                let changed = mx != m.mx_frame;
                if changed {
                    m.ichange = m.ichange.wrapping_add(1);
                }
                m.mx_frame = mx;
                m.in_txn = false;
                let shm = (v & 0x80 == 0).then(|| shm_of(&m));
                c.end_transaction(shm, i64::from(counter))
            }
            8 => {
                // Commit phase two (EXCLUSIVE locking mode: no wal-index, or one).
                m.in_txn = false;
                m.mx_frame = m.next.saturating_sub(1);
                let shm = (input.u8() & 1 == 1).then(|| shm_of(&m));
                c.end_transaction(shm, i64::from(counter))
            }
            9 => {
                // SQLite truncates or deletes the WAL only outside a write transaction.
                if m.in_txn {
                    Vec::new()
                } else {
                    let size = if input.u8() & 1 == 0 {
                        0
                    } else {
                        u64::from(input.u32())
                    };
                    file.truncate(size);
                    if size == 0 {
                        m.next = 1;
                        m.mx_frame = 0;
                    }
                    c.wal_truncated(size)
                }
            }
            10 => {
                let shm = shm_variant(&mut input, &m);
                c.check_foreign(shm)
            }
            11 => {
                // Another connection opened the WAL and read its header.
                let h = wal_header_bytes(m.page_size, m.salt1, m.salt2);
                if let Some(h) = WalHeader::parse(&h) {
                    c.observe_wal_header(&h);
                }
                Vec::new()
            }
            _ => {
                // The common case: frame `next` (or a rewrite nearby), header then page.
                let i = pick_frame(&mut input, &m);
                let h = frame_header(&mut input, &m);
                let p = page_bytes(m.page_size as usize, input.u8(), counter);
                let at = frame_at(i, &m);
                write(&mut c, &mut file, &mut m, at, &h);
                write(&mut c, &mut file, &mut m, at + 24, &p);
                if i >= m.next {
                    m.next = i.saturating_add(1);
                }
                Vec::new()
            }
        };
        for e in events {
            check_event(&e, &file, &m);
        }
    }
}

fn write(c: &mut Capture, file: &mut Shadow, m: &mut Model, off: u64, data: &[u8]) {
    if data.is_empty() {
        return; // the shim forwards only writes of at least one byte
    }
    m.in_txn = true;
    m.frame_writes = m.frame_writes.saturating_add(1);
    file.write(off, data);
    c.wal_write(off, data);
}

fn frame_at(i: u32, m: &Model) -> u64 {
    wal::frame_offset(i.max(1), m.page_size)
}

/// Mostly near the append point (appends, rewrites of recent frames), sometimes anywhere.
fn pick_frame(input: &mut Input, m: &Model) -> u32 {
    let v = input.u8();
    if v < 240 {
        let back = u32::from(v % 8);
        m.next.saturating_add(2).saturating_sub(back).max(1)
    } else {
        input.u32().max(1)
    }
}

/// A frame header as SQLite writes it: a small page number, the commit size or 0, the salts
/// or zeros (rewritten later), and sometimes anything at all.
fn frame_header(input: &mut Input, m: &Model) -> [u8; FRAME_HEADER_SIZE] {
    let v = input.u8();
    let pgno = match v % 16 {
        0 => 0,
        1 => input.u32(),
        _ => 1 + u32::from(v >> 4),
    };
    let commit = match (v >> 2) % 4 {
        0 => pgno.max(1).saturating_add(u32::from(v & 3)),
        1 => input.u32() % 64,
        _ => 0,
    };
    if v & 0x40 != 0 {
        frame_header_bytes(pgno, commit, 0, 0)
    } else {
        frame_header_bytes(pgno, commit, m.salt1, m.salt2)
    }
}

fn shm_of(m: &Model) -> ShmHeader {
    let mut salt = [0u8; 8];
    salt[..4].copy_from_slice(&m.salt1.to_be_bytes());
    salt[4..].copy_from_slice(&m.salt2.to_be_bytes());
    ShmHeader {
        ichange: m.ichange,
        is_init: true,
        page_size: Some(m.page_size),
        mx_frame: m.mx_frame,
        n_page: 0,
        salt,
    }
}

/// The wal-index header at W+: as the model says, none (no shm mapped), uninitialised,
/// moved on by someone else, or any 48 bytes at all.
fn shm_variant(input: &mut Input, m: &Model) -> Option<ShmHeader> {
    let v = input.u8();
    match v % 8 {
        0..=3 => Some(shm_of(m)),
        4 => None,
        5 => Some(ShmHeader {
            is_init: false,
            ..shm_of(m)
        }),
        6 => Some(ShmHeader {
            ichange: m.ichange.wrapping_add(u32::from(v >> 4)),
            mx_frame: u32::from(input.u8()),
            ..shm_of(m)
        }),
        _ => {
            let mut b = [0u8; 48];
            b.iter_mut().for_each(|x| *x = input.u8());
            Some(ShmHeader::parse(&b))
        }
    }
}

fn check_event(e: &Event, file: &Shadow, m: &Model) {
    match e {
        Event::Commit(t) => check_commit(t, file, m),
        Event::Reset { .. } => {}
        Event::Discontinuity { reason } => assert!(!reason.is_empty()),
    }
}

fn check_commit(t: &Txn, file: &Shadow, m: &Model) {
    let ps = t.page_size;
    assert!(
        wal::decode_page_size(ps) == Some(ps),
        "commit page size {ps}"
    );
    assert!(t.db_size > 0 && t.end.frame > 0, "{t:?}");
    let mut prev = 0;
    for (pgno, page) in &t.pages {
        assert!(
            *pgno > prev && *pgno <= t.db_size,
            "page order: {prev} then {pgno}"
        );
        assert_eq!(page.len(), ps as usize, "page {pgno} length");
        prev = *pgno;
    }
    let _ = t.bytes();
    let fsz = FRAME_HEADER_SIZE + ps as usize;
    let frame = |i: u32| file.read(wal::frame_offset(i, ps), fsz);
    let end = frame(t.end.frame);
    let commit = u32::from_be_bytes([end[4], end[5], end[6], end[7]]);
    assert_eq!(
        commit, t.db_size,
        "the commit frame's header holds the db size"
    );
    // Frames of a commit were all written in this input, so they lie within this many frames
    // of the commit frame.
    let lowest = t.end.frame.saturating_sub(m.frame_writes).max(1);
    let mut by_pgno: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in lowest..=t.end.frame {
        let h = file.read(wal::frame_offset(i, ps), 4);
        by_pgno
            .entry(u32::from_be_bytes([h[0], h[1], h[2], h[3]]))
            .or_default()
            .push(i);
    }
    for (pgno, page) in &t.pages {
        let found = by_pgno.get(pgno).is_some_and(|frames| {
            frames
                .iter()
                .any(|&i| frame(i)[FRAME_HEADER_SIZE..] == page[..])
        });
        assert!(
            found,
            "page {pgno} of the commit ending at frame {} is not in any WAL frame for that page",
            t.end.frame
        );
    }
}
