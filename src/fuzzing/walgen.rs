//! A WAL writer for tests and the capture fuzz target: writes a WAL file the way SQLite lays it
//! out (header, frames with salts and the cumulative checksum, commits, restarts that leave the
//! old frames in place) and remembers the committed database state, so a reader can be checked
//! against it. Pure (bytes in a `Vec`); never used by the extension at run time.

use std::collections::BTreeMap;

use crate::wal::{self, WalHeader, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};
use crate::wal_reader::WalPos;

pub struct WalGen {
    pub bytes: Vec<u8>,
    pub page_size: u32,
    pub header: WalHeader,
    /// The last committed frame of the current generation (the wal-index's mxFrame).
    pub mx: u32,
    /// The position after `mx`.
    pub end: WalPos,
    /// The database as the last commit left it (page → fill byte), and its size in pages.
    pub committed: BTreeMap<u32, u8>,
    pub db_size: u32,
    /// The frames a transaction in progress has written past `mx`.
    open: Vec<(u32, u8)>,
}

fn be(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Page `pgno` filled with `fill` (its first 4 bytes carry the page number).
pub fn page(page_size: u32, pgno: u32, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; page_size as usize];
    p[..4].copy_from_slice(&pgno.to_be_bytes());
    p
}

impl WalGen {
    pub fn new(page_size: u32, salt1: u32, salt2: u32) -> WalGen {
        let mut g = WalGen {
            bytes: Vec::new(),
            page_size,
            header: WalHeader {
                big_endian_cksum: false,
                page_size,
                checkpoint_seq: 0,
                salt1,
                salt2,
                cksum: (0, 0),
            },
            mx: 0,
            end: WalPos {
                salt1,
                salt2,
                frame: 0,
                cksum: (0, 0),
                page_size,
                big_endian: false,
            },
            committed: BTreeMap::new(),
            db_size: 0,
            open: Vec::new(),
        };
        g.write_header(0, salt1, salt2);
        g
    }

    fn write_header(&mut self, seq: u32, salt1: u32, salt2: u32) {
        let mut h = [0u8; WAL_HEADER_SIZE];
        be(&mut h, 0, 0x377f_0682);
        be(&mut h, 4, 3_007_000);
        be(&mut h, 8, self.page_size);
        be(&mut h, 12, seq);
        be(&mut h, 16, salt1);
        be(&mut h, 20, salt2);
        let c = wal::checksum(false, (0, 0), &h[..24]);
        be(&mut h, 24, c.0);
        be(&mut h, 28, c.1);
        if self.bytes.len() < WAL_HEADER_SIZE {
            self.bytes.resize(WAL_HEADER_SIZE, 0);
        }
        self.bytes[..WAL_HEADER_SIZE].copy_from_slice(&h);
        self.header = WalHeader::parse(&h).expect("a valid header");
        self.mx = 0;
        self.end = WalPos::start(&self.header);
        self.open.clear();
    }

    /// The wal-index header SQLite would show now (mxFrame at the last commit).
    pub fn shm(&self) -> crate::wal::ShmHeader {
        let mut salt = [0u8; 8];
        salt[..4].copy_from_slice(&self.header.salt1.to_be_bytes());
        salt[4..].copy_from_slice(&self.header.salt2.to_be_bytes());
        crate::wal::ShmHeader {
            ichange: 0,
            is_init: true,
            page_size: Some(self.page_size),
            mx_frame: self.mx,
            n_page: self.db_size,
            salt,
        }
    }

    /// The header bytes now at offset 0.
    pub fn header_bytes(&self) -> Vec<u8> {
        self.bytes[..WAL_HEADER_SIZE].to_vec()
    }

    /// A restart: a new header (salt-1 + 1, a new salt-2); old frames stay in the file.
    pub fn restart(&mut self, salt2: u32) {
        let (seq, s1) = (
            self.header.checkpoint_seq + 1,
            self.header.salt1.wrapping_add(1),
        );
        self.write_header(seq, s1, salt2);
    }

    /// The WAL emptied (a TRUNCATE checkpoint, or deleted): the next write starts a header.
    pub fn truncate(&mut self, salt2: u32) {
        self.bytes.clear();
        self.restart(salt2);
    }

    fn write_frame(
        &mut self,
        index: u32,
        pgno: u32,
        commit: u32,
        fill: u8,
        cksum: (u32, u32),
    ) -> (u32, u32) {
        let mut fh = [0u8; FRAME_HEADER_SIZE];
        be(&mut fh, 0, pgno);
        be(&mut fh, 4, commit);
        be(&mut fh, 8, self.header.salt1);
        be(&mut fh, 12, self.header.salt2);
        let p = page(self.page_size, pgno, fill);
        let c = wal::checksum(false, cksum, &fh[..8]);
        let c = wal::checksum(false, c, &p);
        be(&mut fh, 16, c.0);
        be(&mut fh, 20, c.1);
        let off = wal::frame_offset(index, self.page_size) as usize;
        let end = off + FRAME_HEADER_SIZE + self.page_size as usize;
        if self.bytes.len() < end {
            self.bytes.resize(end, 0);
        }
        self.bytes[off..off + FRAME_HEADER_SIZE].copy_from_slice(&fh);
        self.bytes[off + FRAME_HEADER_SIZE..end].copy_from_slice(&p);
        c
    }

    /// Frames of a transaction not committed yet (a cache spill), after `mx`.
    pub fn spill(&mut self, pages: &[(u32, u8)]) {
        self.open.extend_from_slice(pages);
        let mut c = self.end.cksum;
        for (i, &(pgno, fill)) in self.open.clone().iter().enumerate() {
            c = self.write_frame(self.mx + 1 + i as u32, pgno, 0, fill, c);
        }
    }

    /// Ends the open transaction without committing: its frames stay in the file, stale.
    pub fn rollback(&mut self) {
        self.open.clear();
    }

    /// Commits the open transaction plus `pages`; returns the new mxFrame.
    pub fn commit(&mut self, pages: &[(u32, u8)]) -> u32 {
        self.open.extend_from_slice(pages);
        let frames = std::mem::take(&mut self.open);
        if frames.is_empty() {
            return self.mx;
        }
        let size = frames
            .iter()
            .map(|f| f.0)
            .max()
            .unwrap_or(0)
            .max(self.db_size);
        let mut c = self.end.cksum;
        for (i, &(pgno, fill)) in frames.iter().enumerate() {
            let last = i + 1 == frames.len();
            c = self.write_frame(
                self.mx + 1 + i as u32,
                pgno,
                if last { size } else { 0 },
                fill,
                c,
            );
            self.committed.insert(pgno, fill);
        }
        self.mx += frames.len() as u32;
        self.db_size = size;
        self.end = WalPos {
            frame: self.mx,
            cksum: c,
            ..self.end
        };
        self.mx
    }
}
